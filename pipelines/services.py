"""Writes of the pipelines layer. The engine (claim, execute, gate, deliver) grows here."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from controlplane.models import Client
from controlplane.services import audit_record
from pipelines.models import Item, LedgerEvent, Pipeline


@transaction.atomic
def pipeline_create(
    *,
    client: Client,
    name: str,
    slug: str,
    description: str = "",
    status: str = Pipeline.Status.DRAFT,
    actor: AbstractBaseUser | None = None,
    actor_label: str | None = None,
) -> Pipeline:
    """Create a pipeline for a client; the slug is unique within the client."""
    pipeline = Pipeline(client=client, name=name, slug=slug, description=description, status=status)
    pipeline.full_clean()
    pipeline.save()
    audit_record(
        actor=actor,
        actor_label=actor_label,
        action="pipeline.create",
        obj=pipeline,
        client=client,
        after={"name": name, "slug": slug, "status": status, "description": description},
    )
    return pipeline


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
