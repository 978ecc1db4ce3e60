"""Item uploads: a CSV or JSONL file of items, submitted to a pipeline in the background through
`items_submit`, the same path as the REST API, so deduplication, schema quarantine and the
ledger apply to every row as they would to an API call."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import IO, Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from controlplane.services import audit_record
from pipelines.items_io import ParsedItem, iter_items
from pipelines.models import Item, ItemUpload, Pipeline
from pipelines.rows_io import RejectedRow
from pipelines.services.file_imports import file_import_create, file_import_run
from pipelines.services.ingest import items_submit, pipeline_ingest_check

# The first rejected rows kept for the report; the count covers them all.
KEPT_REJECTIONS = 50


@transaction.atomic
def item_upload_start(
    *,
    pipeline: Pipeline,
    filename: str,
    content: bytes,
    actor: AbstractBaseUser | None,
    enqueue: bool = True,
) -> ItemUpload:
    """Accept a file of items for a pipeline and (unless `enqueue` is off) wake a worker to
    submit them. Refuses a draft pipeline, and a file that is empty, too large, or not .csv or
    .jsonl; its rows are read and checked by the worker."""
    pipeline_ingest_check(pipeline=pipeline)
    return file_import_create(
        model=ItemUpload,
        filename=filename,
        content=content,
        actor=actor,
        task="pipelines.tasks.item_upload_task",
        task_label="upload",
        enqueue=enqueue,
        pipeline=pipeline,
    )


def _read(job: ItemUpload, stream: IO[bytes]) -> Iterator[ParsedItem | RejectedRow]:
    return iter_items(
        stream=stream, filename=job.filename, input_schema=job.pipeline.input_schema or {}
    )


def _submit(job: ItemUpload, rows: list[ParsedItem]) -> dict[str, int]:
    outcomes = items_submit(
        pipeline=job.pipeline, entries=[row.entry() for row in rows], actor=f"upload:{job.pk}"
    )
    statuses = Counter(outcome.status for outcome in outcomes)
    return {
        "accepted": statuses[Item.Status.QUEUED],
        "deduplicated": statuses[Item.Status.DEDUPLICATED],
        "quarantined": statuses[Item.Status.QUARANTINED],
    }


def _audit(job: ItemUpload, after: dict[str, Any]) -> None:
    audit_record(
        actor=job.created_by,
        action="items.upload",
        obj=job.pipeline,
        client=job.pipeline.client,
        after=after,
    )


def item_upload_run(*, upload_id: int) -> ItemUpload | None:
    """Submit an accepted file's items in batches of up to 1,000, writing progress, counts and
    the first rejected rows (with line numbers) to the upload after each batch. Safe to call
    twice: only the call that moves the upload from pending to running does the work, and the
    upload always ends `done` or `failed`."""
    return file_import_run(
        model=ItemUpload,
        pk=upload_id,
        related=("pipeline__client", "created_by"),
        read=_read,
        take=_submit,
        counted=("accepted", "deduplicated", "quarantined"),
        audit=_audit,
        kept_rejections=KEPT_REJECTIONS,
    )
