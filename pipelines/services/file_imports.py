"""What example imports and item uploads share: the checks on an uploaded file, and reading it
in the background batch by batch, with its progress and first rejected rows written to its row
as it goes, so that a page polling the row shows live progress."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import timedelta
from pathlib import PurePath
from typing import IO, Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from pipelines.models import FileImport
from pipelines.rows_io import (
    KEPT_REJECTIONS,
    SUFFIXES,
    ImportReport,
    RejectedRow,
    bytes_progress,
    report_add,
)

logger = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 50 * 1024 * 1024
BATCH = 1000
# A batch is also written once it holds this much of the file, so memory stays bounded when
# rows are large (a thousand 1 MB rows would be a gigabyte).
BATCH_BYTES = 4 * 1024 * 1024


def file_size_check(size: int) -> None:
    """Refuse a file over the upload limit; views call it before reading the file at all."""
    if size > MAX_UPLOAD_BYTES:
        raise ValidationError(
            {"file": [f"The file is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB."]}
        )


def file_check(*, filename: str, content: bytes) -> None:
    """Refuse a file that is not CSV or JSONL by its name, empty, or over the limit. Its rows
    are checked when it is read."""
    if PurePath(filename).suffix.lower() not in SUFFIXES:
        raise ValidationError({"file": ["Upload a .csv or .jsonl file."]})
    if not content:
        raise ValidationError({"file": ["The file is empty."]})
    file_size_check(len(content))


def file_import_create[J: FileImport](
    *,
    model: type[J],
    filename: str,
    content: bytes,
    actor: AbstractBaseUser | None,
    task: str,
    task_label: str,
    enqueue: bool = True,
    **fields: Any,
) -> J:
    """Store a checked file in a new row and, once the transaction commits, wake a worker to
    run `task` with the row's id (unless `enqueue` is off). Call inside a transaction."""
    file_check(filename=filename, content=content)
    job = model.objects.create(
        filename=filename[:255], content=content, size=len(content), created_by=actor, **fields
    )
    if enqueue:
        from django_q.tasks import async_task

        transaction.on_commit(lambda: async_task(task, job.pk, task_name=f"{task_label}-{job.pk}"))
    return job


def _time_budget() -> float:
    # The task queue kills a task that runs past its timeout, which would leave the row
    # `running` for ever; stopping first, and saying where, leaves it `failed` with the truth.
    return 0.8 * settings.Q_CLUSTER.get("timeout", 300)


class _OutOfTime(Exception):
    pass


def _failure_message(exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return "The file nests JSON too deeply to read."
    if isinstance(exc, ValidationError):
        return " ".join(exc.messages)
    if isinstance(exc, (ValueError, UnicodeError, _OutOfTime)):
        return str(exc)
    return f"The file could not be read: {type(exc).__name__}."


def file_import_run[J: FileImport, Row](
    *,
    model: type[J],
    pk: int,
    related: tuple[str, ...],
    read: Callable[[J, IO[bytes]], Iterator[Row | RejectedRow]],
    take: Callable[[J, list[Row]], Mapping[str, int]],
    counted: tuple[str, ...],
    audit: Callable[[J, dict[str, Any]], None],
    kept_rejections: int = KEPT_REJECTIONS,
) -> J | None:
    """Read a stored file row by row: `read` parses it, `take` stores a batch of good rows and
    says how many it counted under each of the `counted` fields of the row, `audit` records the
    end inside its transaction. Progress, counts and the first rejected rows are written after
    every batch. Safe to call twice: only the call that moves the row from pending to running
    does the work, and the row always ends `done` or `failed` (a worker killed mid-file
    aside)."""
    claimed = model.objects.filter(pk=pk, status=FileImport.Status.PENDING).update(
        status=FileImport.Status.RUNNING, progress_at=timezone.now()
    )
    if not claimed:
        return None
    job = model.objects.select_related(*related).get(pk=pk)
    stream = io.BytesIO(bytes(job.content))
    job.content = b""  # the stream has it; one copy of a 50 MB file is enough
    report = ImportReport(kept=kept_rejections)
    counts = dict.fromkeys(counted, 0)
    batch: list[Row] = []
    marks = {"rows": 0, "bytes": 0}
    started = time.monotonic()
    budget = _time_budget()

    def flush() -> None:
        if batch:
            # Emptied first: if storing fails, the failure path must not store it again.
            rows = batch.copy()
            batch.clear()
            for key, n in take(job, rows).items():
                counts[key] += n
        marks["rows"], marks["bytes"] = 0, bytes_progress(stream)
        model.objects.filter(pk=pk).update(
            progress_at=timezone.now(),
            bytes_done=marks["bytes"],
            rejected=report.rejected,
            rejected_rows=[{"line": r.line, "reason": r.reason} for r in report.rejected_rows],
            **counts,
        )

    try:
        for row in read(job, stream):
            if isinstance(row, RejectedRow):
                report_add(report=report, row=row)
            else:
                batch.append(row)
            marks["rows"] += 1
            full = len(batch) >= BATCH or bytes_progress(stream) - marks["bytes"] >= BATCH_BYTES
            if full or marks["rows"] >= BATCH:
                flush()
                if time.monotonic() - started > budget:
                    raise _OutOfTime(
                        f"Stopped after line {row.line}: reading took longer than "
                        f"{budget:.0f} s. The lines after it were not read; upload them as "
                        "another file."
                    )
        flush()
    except Exception as exc:  # a bad file must end the import, never leave it running
        if not isinstance(exc, (ValueError, UnicodeError, ValidationError, _OutOfTime)):
            logger.exception("%s %s failed", model.__name__, pk)
        try:
            # Keep what was read before a reading failure, and the true counts either way.
            flush()
        except Exception:
            logger.exception("%s %s: saving progress after a failure failed", model.__name__, pk)
        return _end(model=model, job=job, report=report, counts=counts, audit=audit, error=exc)
    return _end(model=model, job=job, report=report, counts=counts, audit=audit, error=None)


def file_imports_sweep(*, models: tuple[type[FileImport], ...]) -> int:
    """End as failed the running imports whose worker stopped (killed, or stopped by the task
    timeout): no progress for longer than a task may run. What was read before stays in."""
    from django.conf import settings

    stale = timezone.now() - timedelta(seconds=settings.Q_CLUSTER["timeout"] + 60)
    ended = 0
    for model in models:
        ended += model.objects.filter(
            status=FileImport.Status.RUNNING, progress_at__lt=stale
        ).update(
            status=FileImport.Status.FAILED,
            error="The worker reading this file stopped before the end. The rows counted "
            "above went in; the rest of the file did not.",
            content=b"",
            finished_at=timezone.now(),
        )
    return ended


def _end[J: FileImport](
    *,
    model: type[J],
    job: J,
    report: ImportReport,
    counts: dict[str, int],
    audit: Callable[[J, dict[str, Any]], None],
    error: Exception | None,
) -> J:
    after: dict[str, Any] = {"file": job.filename, **counts, "rejected": report.rejected}
    with transaction.atomic():
        if error is None:
            model.objects.filter(pk=job.pk).update(
                status=FileImport.Status.DONE,
                bytes_done=job.size,
                content=b"",
                finished_at=timezone.now(),
            )
        else:
            message = _failure_message(error)
            after["failed"] = message[:200]
            model.objects.filter(pk=job.pk).update(
                status=FileImport.Status.FAILED,
                error=message[:2000],
                content=b"",
                finished_at=timezone.now(),
            )
        audit(job, after)
    job.refresh_from_db()
    return job
