"""Items in: each accepted item is queued, quarantined (bad input) or recognised as a duplicate,
with its first ledger event, in one transaction. Nothing accepted is lost."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from pipelines.models import Item, LedgerEvent, Pipeline
from pipelines.schemas import schema_errors
from pipelines.services.rollups import rollups_add
from pipelines.wake import wake_send


@dataclass(frozen=True)
class IngestOutcome:
    """What happened to one submitted item, in the order it was submitted."""

    id: int
    external_id: str
    status: str
    original_id: int | None = None
    reason: str = ""


def content_hash(data: Mapping[str, Any]) -> str:
    """SHA-256 of the data as canonical JSON: equal data, equal hash, whatever the key order."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def pipeline_ingest_check(*, pipeline: Pipeline) -> None:
    """Raise ValidationError (code pipeline_not_active) when the pipeline takes no items: a
    draft. A paused pipeline takes them and holds them queued."""
    if pipeline.status == Pipeline.Status.DRAFT:
        raise ValidationError(
            "This pipeline is a draft and does not accept items yet: activate it first.",
            code="pipeline_not_active",
        )


def items_submit(
    *, pipeline: Pipeline, entries: Sequence[Mapping[str, Any]], actor: str
) -> list[IngestOutcome]:
    """Accept a batch of items for a pipeline (each entry: data, optional external_id and
    priority). A draft pipeline refuses them; a paused one holds them queued."""
    pipeline_ingest_check(pipeline=pipeline)
    # A concurrent request may insert the same external id between our check and our insert;
    # the unique constraint catches it and the second attempt sees that item as the original.
    for attempt in range(2):
        try:
            with transaction.atomic():
                outcomes = _submit(pipeline=pipeline, entries=entries, actor=actor)
                if any(o.status == Item.Status.QUEUED for o in outcomes):
                    transaction.on_commit(engine_wake)
                return outcomes
        except IntegrityError:
            if attempt:
                raise
    raise AssertionError("unreachable")


ENGINE_WAKE_KEY = "engine-wake"


def engine_wake() -> None:
    """Ask the workers to drain the queue: one drain per worker process, so that all of them
    take batches at once. At most one wake-up a second, however many requests arrive: a drain
    takes every runnable item, not just the ones that woke it, and a drain that finds nothing
    ends at once. Best effort: see pipelines.wake."""
    from django.conf import settings

    wake_send(
        key=ENGINE_WAKE_KEY,
        func="pipelines.tasks.engine_drain_task",
        task_name="engine-drain",
        count=settings.SLUICE_ENGINE_DRAINS,
    )


def _submit(
    *, pipeline: Pipeline, entries: Sequence[Mapping[str, Any]], actor: str
) -> list[IngestOutcome]:
    now = timezone.now()
    prepared = []
    for entry in entries:
        data = dict(entry["data"])
        prepared.append(
            {
                "data": data,
                "external_id": (entry.get("external_id") or "").strip(),
                "priority": pipeline.default_priority
                if entry.get("priority") is None
                else int(entry["priority"]),
                "hash": content_hash(data),
            }
        )

    external_ids = {p["external_id"] for p in prepared if p["external_id"]}
    seen_external = dict(
        Item.objects.filter(pipeline=pipeline, external_id__in=external_ids).values_list(
            "external_id", "id"
        )
    )
    seen_content: dict[str, int] = {}
    if pipeline.dedup_window_seconds:
        since = now - timedelta(seconds=pipeline.dedup_window_seconds)
        for digest, pk in (
            Item.objects.filter(
                pipeline=pipeline,
                content_hash__in={p["hash"] for p in prepared},
                created_at__gte=since,
            )
            .exclude(status=Item.Status.QUARANTINED)
            .order_by("-id")
            .values_list("content_hash", "id")
        ):
            seen_content[digest] = pk

    # Decide each entry; duplicates inside the batch point at the batch's first occurrence.
    same_id, same_content = "same external id", "same content within the deduplication window"
    decisions: list[tuple[str, int, str]] = []
    rows: list[Item] = []
    batch_external: dict[str, int] = {}
    batch_content: dict[str, int] = {}
    for p in prepared:
        key = p["external_id"]
        if key and key in seen_external:
            decisions.append(("duplicate", seen_external[key], same_id))
            continue
        if key and key in batch_external:
            decisions.append(("duplicate_in_batch", batch_external[key], same_id))
            continue
        if pipeline.dedup_window_seconds:
            if p["hash"] in seen_content:
                decisions.append(("duplicate", seen_content[p["hash"]], same_content))
                continue
            if p["hash"] in batch_content:
                decisions.append(("duplicate_in_batch", batch_content[p["hash"]], same_content))
                continue
        problems = (
            schema_errors(schema=pipeline.input_schema, instance=p["data"], limit=5)
            if pipeline.input_schema
            else []
        )
        row = Item(
            pipeline=pipeline,
            data=p["data"],
            external_id=p["external_id"],
            priority=p["priority"],
            content_hash=p["hash"],
            status=Item.Status.QUARANTINED if problems else Item.Status.QUEUED,
            error_class="input" if problems else "",
            error_message="; ".join(str(problem) for problem in problems),
        )
        index = len(rows)
        rows.append(row)
        decisions.append(("new", index, ""))
        if p["external_id"]:
            batch_external[p["external_id"]] = index
        if not problems:
            batch_content[p["hash"]] = index

    created = Item.objects.bulk_create(rows)
    rollups_add(
        {
            pipeline.pk: {
                "ingested": len(created),
                "quarantined": sum(1 for i in created if i.status == Item.Status.QUARANTINED),
            }
        },
        at=now,
    )
    LedgerEvent.objects.bulk_create(
        [
            LedgerEvent(
                item=item,
                actor=actor,
                from_status="",
                to_status=item.status,
                detail={"error_class": "input", "error": item.error_message}
                if item.status == Item.Status.QUARANTINED
                else {},
            )
            for item in created
        ]
    )

    outcomes = []
    for (kind, ref, reason), p in zip(decisions, prepared, strict=True):
        if kind == "new":
            item = created[ref]
            outcomes.append(
                IngestOutcome(
                    id=item.pk,
                    external_id=item.external_id,
                    status=item.status,
                    reason=item.error_message,
                )
            )
        else:
            original = created[ref].pk if kind == "duplicate_in_batch" else ref
            outcomes.append(
                IngestOutcome(
                    id=original,
                    external_id=p["external_id"],
                    status=Item.Status.DEDUPLICATED,
                    original_id=original,
                    reason=reason,
                )
            )
    return outcomes


def item_ingest(*, pipeline: Pipeline, items: Sequence[Mapping[str, Any]], actor: str):
    """Accept items from inside Sluice (demo data, uploads): `items_submit` without the API."""
    outcomes = items_submit(pipeline=pipeline, entries=items, actor=actor)
    return list(Item.objects.filter(pk__in=[o.id for o in outcomes]).order_by("id"))
