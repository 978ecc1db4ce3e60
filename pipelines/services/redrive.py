"""Dead letters and rejected items, sent through their pipeline again on purpose."""

from __future__ import annotations

from collections.abc import Sequence

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from controlplane.services import audit_record
from pipelines.models import Item, LedgerEvent
from pipelines.services.trial import Trial, step_try

REDRIVABLE = (Item.Status.DEAD_LETTERED, Item.Status.REJECTED)
DRY_RUN_SAMPLE = 5


def items_redrive_dry_run(*, items: Sequence[Item]) -> list[tuple[Item, Trial]]:
    """What re-running would do now, on a sample: each item through its step's production
    prompt and first matching model, once, writing nothing."""
    from pipelines.models import PromptLabel

    results = []
    for item in list(items)[:DRY_RUN_SAMPLE]:
        step = item.pipeline.steps.filter(position=item.step_position).first()
        label = (
            PromptLabel.objects.filter(step=step, name=PromptLabel.Name.PRODUCTION)
            .select_related("version")
            .first()
            if step
            else None
        )
        if step is None or label is None:
            results.append(
                (
                    item,
                    Trial(error="The item's step has no production prompt.", error_class="system"),
                )
            )
            continue
        results.append(
            (
                item,
                step_try(
                    step=step,
                    template=label.version.template,
                    parameters=label.version.parameters,
                    data=item.data,
                    priority=item.priority,
                ),
            )
        )
    return results


@transaction.atomic
def items_redrive(*, items: Sequence[Item], actor: AbstractBaseUser) -> int:
    """Queue dead-lettered or rejected items again from the step they stopped at, with fresh
    attempts; each gets a ledger event and the whole re-drive one audit entry."""
    ids = [item.pk for item in items]
    rows = list(
        Item.objects.select_for_update()
        .filter(pk__in=ids, status__in=REDRIVABLE)
        .select_related("pipeline__client")
    )
    if not rows:
        return 0
    now = timezone.now()
    by_label = actor.get_username()
    LedgerEvent.objects.bulk_create(
        [
            LedgerEvent(
                item=row,
                actor=f"user:{by_label}",
                from_status=row.status,
                to_status=Item.Status.QUEUED,
                detail={"reason": "re-drive"},
            )
            for row in rows
        ]
    )
    Item.objects.filter(pk__in=[row.pk for row in rows]).update(
        status=Item.Status.QUEUED,
        attempts=0,
        next_attempt_at=None,
        error_class="",
        error_message="",
        finished_at=None,
        updated_at=now,
    )
    clients = {row.pipeline.client for row in rows}
    audit_record(
        actor=actor,
        action="items.redrive",
        obj=rows[0].pipeline,
        client=clients.pop() if len(clients) == 1 else None,
        after={"items": len(rows), "ids": [row.pk for row in rows][:100]},
    )
    from pipelines.services.ingest import engine_wake

    transaction.on_commit(engine_wake)
    return len(rows)
