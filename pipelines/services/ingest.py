"""Items in: accepted as queued, each with its first ledger event."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.db import transaction

from pipelines.models import Item, LedgerEvent, Pipeline


@transaction.atomic
def item_ingest(
    *, pipeline: Pipeline, items: Iterable[Mapping[str, Any]], actor: str
) -> list[Item]:
    """Accept items as queued, each with its first ledger event, in one transaction."""
    rows = [
        Item(
            pipeline=pipeline,
            data=dict(entry["data"]),
            external_id=entry.get("external_id", ""),
            priority=entry.get("priority", 0),
        )
        for entry in items
    ]
    created = Item.objects.bulk_create(rows)
    LedgerEvent.objects.bulk_create(
        [
            LedgerEvent(item=item, actor=actor, from_status="", to_status=Item.Status.QUEUED)
            for item in created
        ]
    )
    return created
