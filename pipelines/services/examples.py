"""Labeled examples: imported from CSV or JSONL in the background, listed, deleted."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import IO, Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from controlplane.services import audit_record
from pipelines.examples_io import ExampleFormat, ParsedExample, RejectedRow, iter_examples
from pipelines.models import Example, ExampleImport, Step
from pipelines.services.file_imports import file_import_create, file_import_run


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
    return file_import_create(
        model=ExampleImport,
        filename=filename,
        content=content,
        actor=actor,
        task="pipelines.tasks.example_import_task",
        task_label="examples",
        enqueue=enqueue,
        step=step,
    )


def _read(job: ExampleImport, stream: IO[bytes]) -> Iterator[ParsedExample | RejectedRow]:
    return iter_examples(stream=stream, filename=job.filename, fmt=example_format(job.step))


def _save(job: ExampleImport, rows: list[ParsedExample]) -> dict[str, int]:
    Example.objects.bulk_create(
        Example(step=job.step, data=row.data, expected=row.expected, source_import=job)
        for row in rows
    )
    return {"accepted": len(rows)}


def _audit(job: ExampleImport, after: dict[str, Any]) -> None:
    audit_record(
        actor=job.created_by,
        action="examples.import",
        obj=job.step,
        client=job.step.pipeline.client,
        after=after,
    )


def example_import_run(*, import_id: int) -> ExampleImport | None:
    """Read an accepted file into examples, batch by batch, recording progress. Safe to call
    twice: only the call that moves the import from pending to running does the work."""
    return file_import_run(
        model=ExampleImport,
        pk=import_id,
        related=("step__pipeline__client",),
        read=_read,
        take=_save,
        counted=("accepted",),
        audit=_audit,
    )


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
