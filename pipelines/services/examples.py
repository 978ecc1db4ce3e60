"""Labeled examples: imported from CSV or JSONL in the background, listed, deleted."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable
from pathlib import PurePath

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from controlplane.services import audit_record
from pipelines.examples_io import (
    STOPPED_PREFIX,
    ExampleFormat,
    ParsedExample,
    RejectedRow,
    bytes_progress,
    iter_examples,
)
from pipelines.models import Example, ExampleImport, Step

logger = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 50 * 1024 * 1024
BATCH = 1000
KEPT_REJECTIONS = 100
SUFFIXES = (".csv", ".jsonl", ".ndjson")


def example_format(step: Step) -> ExampleFormat:
    """How a file of examples is read and checked for this step."""
    return ExampleFormat(
        kind=step.kind,
        input_schema=step.pipeline.input_schema or {},
        output_schema=step.output_schema or {},
        labels=tuple(step.labels or ()),
    )


@transaction.atomic
def example_import_start(
    *,
    step: Step,
    filename: str,
    content: bytes,
    actor: AbstractBaseUser | None,
    enqueue: bool = True,
) -> ExampleImport:
    """Accept a file for import and (unless `enqueue` is off) wake a worker to read it; the
    file is checked row by row there, and only its name and size here."""
    if PurePath(filename).suffix.lower() not in SUFFIXES:
        raise ValidationError({"file": ["Upload a .csv or .jsonl file."]})
    if not content:
        raise ValidationError({"file": ["The file is empty."]})
    if len(content) > MAX_UPLOAD_BYTES:
        raise ValidationError(
            {"file": [f"The file is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB."]}
        )
    job = ExampleImport.objects.create(
        step=step, filename=filename[:255], content=content, size=len(content), created_by=actor
    )
    from django_q.tasks import async_task

    transaction.on_commit(
        lambda: async_task(
            "pipelines.tasks.example_import_task", job.pk, task_name=f"examples-{job.pk}"
        )
    )
    return job


def _failure_message(exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return "The file nests JSON too deeply to read."
    if isinstance(exc, (ValueError, UnicodeError)):
        return str(exc)
    return f"The file could not be read: {type(exc).__name__}."


def example_import_run(*, import_id: int) -> ExampleImport | None:
    """Read an accepted file into examples, batch by batch, recording progress. Safe to call
    twice: only the call that moves the import from pending to running does the work."""
    claimed = ExampleImport.objects.filter(
        pk=import_id, status=ExampleImport.Status.PENDING
    ).update(status=ExampleImport.Status.RUNNING)
    if not claimed:
        return None
    job = ExampleImport.objects.select_related("step__pipeline__client").get(pk=import_id)
    stream = io.BytesIO(bytes(job.content))
    batch: list[Example] = []
    rejections: list[dict] = []
    accepted = rejected = 0

    def flush() -> None:
        Example.objects.bulk_create(batch)
        batch.clear()
        ExampleImport.objects.filter(pk=job.pk).update(
            bytes_done=bytes_progress(stream),
            accepted=accepted,
            rejected=rejected,
            rejected_rows=rejections,
        )

    try:
        for row in iter_examples(
            stream=stream, filename=job.filename, fmt=example_format(job.step)
        ):
            if isinstance(row, ParsedExample):
                batch.append(
                    Example(step=job.step, data=row.data, expected=row.expected, source_import=job)
                )
                accepted += 1
            elif isinstance(row, RejectedRow) and row.reason.startswith(STOPPED_PREFIX):
                # Not a bad row: the file has more rows than one import takes.
                rejections.append({"line": row.line, "reason": row.reason})
            elif isinstance(row, RejectedRow):
                rejected += 1
                if len(rejections) < KEPT_REJECTIONS:
                    rejections.append({"line": row.line, "reason": row.reason})
            if len(batch) >= BATCH:
                flush()
        flush()
    except Exception as exc:  # a bad file must end the import, never leave it running
        if not isinstance(exc, (ValueError, UnicodeError)):
            logger.exception("example import %s failed", job.pk)
        # Keep what was read before the failure, and say so with the right counts.
        flush()
        with transaction.atomic():
            ExampleImport.objects.filter(pk=job.pk).update(
                status=ExampleImport.Status.FAILED,
                error=_failure_message(exc)[:2000],
                content=b"",
                finished_at=timezone.now(),
            )
            audit_record(
                actor=job.created_by,
                action="examples.import",
                obj=job.step,
                client=job.step.pipeline.client,
                after={
                    "file": job.filename,
                    "accepted": accepted,
                    "rejected": rejected,
                    "failed": _failure_message(exc)[:200],
                },
            )
        job.refresh_from_db()
        return job
    with transaction.atomic():
        ExampleImport.objects.filter(pk=job.pk).update(
            status=ExampleImport.Status.DONE,
            bytes_done=job.size,
            content=b"",
            finished_at=timezone.now(),
        )
        audit_record(
            actor=job.created_by,
            action="examples.import",
            obj=job.step,
            client=job.step.pipeline.client,
            after={"file": job.filename, "accepted": accepted, "rejected": rejected},
        )
    job.refresh_from_db()
    return job


@transaction.atomic
def example_delete(*, step: Step, ids: Iterable[int], actor: AbstractBaseUser | None) -> int:
    """Delete some of a step's examples; ids of other steps are ignored."""
    deleted, _ = Example.objects.filter(step=step, pk__in=list(ids)).delete()
    if deleted:
        audit_record(
            actor=actor,
            action="examples.delete",
            obj=step,
            client=step.pipeline.client,
            after={"deleted": deleted},
        )
    return deleted
