"""A person's decision on an item the gate held: it goes on to its next step or is finished
(accepted, or rejected), with its ledger event, rollup count and delivery, in the caller's
transaction. Layers above call these; `pipelines` never knows who decided or how."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from pipelines.models import Item, LedgerEvent, Step
from pipelines.services.delivery import deliveries_open
from pipelines.services.ingest import engine_wake
from pipelines.services.rollups import latencies_add, rollups_add, step_rollups_add

_SAVED = (
    "status",
    "step_position",
    "attempts",
    "next_attempt_at",
    "outputs",
    "result",
    "hold_reason",
    "error_class",
    "error_message",
    "finished_at",
    "updated_at",
)


def _held_item(item_id: int) -> tuple[Item, Step | None, bool]:
    """The item, locked, with the step it waits at and whether a step follows. Raises
    ValidationError (code not_in_review) unless it waits for a person."""
    items = Item.objects.select_related("pipeline__client")
    if connection.vendor == "postgresql":
        items = items.select_for_update(of=("self",))
    item = items.get(pk=item_id)
    if item.status != Item.Status.IN_REVIEW:
        raise ValidationError(
            f"Item {item.pk} is not waiting for review (it is {item.status}).",
            code="not_in_review",
        )
    steps = {step.position: step for step in Step.objects.filter(pipeline_id=item.pipeline_id)}
    return item, steps.get(item.step_position), item.step_position + 1 in steps


def _slug(item: Item, step: Step | None) -> str:
    return step.slug if step else f"step-{item.step_position}"


def _version_of(item: Item, slug: str) -> int | None:
    """The prompt version the held answer came from: in the item's outputs, else the arm a
    rollout gave it, else its ledger (a processing error leaves no output)."""
    number = (item.outputs.get(slug) or {}).get("prompt_version")
    if number is None:
        number = (item.rollout_arms.get(slug) or {}).get("version")
    if number is None:
        for detail in (
            item.ledger.filter(to_status=Item.Status.IN_REVIEW)
            .order_by("-id")
            .values_list("detail", flat=True)[:1]
        ):
            if detail.get("step") == slug:
                number = detail.get("prompt_version")
    return number if isinstance(number, int) else None


# A review decision, as the step rollup counts it.
_DECISION_COUNTER = {"approve": "approved", "edit": "edited", "reject": "rejected"}


def _finish(
    item: Item,
    *,
    step: Step | None,
    version: int | None,
    from_status: str,
    actor_label: str,
    detail: Mapping[str, Any],
    held_since: datetime,
) -> None:
    now = item.updated_at
    item.hold_reason = ""
    item.error_class = ""
    item.error_message = ""
    item.save(update_fields=_SAVED)
    LedgerEvent.objects.create(
        item=item,
        actor=actor_label[:150],
        from_status=from_status,
        to_status=item.status,
        detail=dict(detail),
    )
    counter = {
        Item.Status.ACCEPTED: "accepted",
        Item.Status.DELIVERING: "accepted",
        Item.Status.REJECTED: "rejected",
    }.get(item.status)
    rollups_add({item.pipeline_id: {"reviewed": 1, **({counter: 1} if counter else {})}}, at=now)
    decision = _DECISION_COUNTER.get(str(detail.get("decision", "")))
    if step is not None and version is not None and decision:
        step_rollups_add({(item.pipeline_id, step.pk, version): {decision: 1}}, at=now)
    samples = {(item.pipeline_id, "review_wait"): [(now - held_since).total_seconds()]}
    # As the engine counts it: end to end stops here unless a delivery is still to come.
    if item.status == Item.Status.ACCEPTED or (
        item.status == Item.Status.REJECTED and not item.pipeline.client.webhook_url
    ):
        samples[(item.pipeline_id, "end_to_end")] = [(now - item.created_at).total_seconds()]
    latencies_add(samples, at=now)
    if counter:
        deliveries_open(items=[item])


@transaction.atomic
def item_resume(*, item_id: int, output: Any, actor_label: str, detail: Mapping[str, Any]) -> Item:
    """Continue a held item with `output` as its step's output: queued at its next step, or
    accepted (delivering when its client has a webhook) after its last. Raises
    ValidationError (code not_in_review) when the item no longer waits for a person."""
    item, step, has_next = _held_item(item_id)
    slug = _slug(item, step)
    version = _version_of(item, slug)
    held_since, now = item.updated_at, timezone.now()
    entry = dict(item.outputs.get(slug) or {})
    entry["model_output"] = entry.get("output")
    entry.update(output=output, decided_by=actor_label)
    item.outputs = {**item.outputs, slug: entry}
    item.updated_at = now
    detail = {"step": slug, **detail}
    if has_next:
        item.status = Item.Status.QUEUED
        item.step_position += 1
        item.attempts = 0
        item.next_attempt_at = None
        detail["next_step"] = item.step_position
        transaction.on_commit(engine_wake)
    else:
        item.result = output
        item.finished_at = now
        has_webhook = bool(item.pipeline.client.webhook_url)
        item.status = Item.Status.DELIVERING if has_webhook else Item.Status.ACCEPTED
    _finish(
        item,
        step=step,
        version=version,
        from_status=Item.Status.IN_REVIEW,
        actor_label=actor_label,
        detail=detail,
        held_since=held_since,
    )
    return item


@transaction.atomic
def item_reject(*, item_id: int, reason: str, actor_label: str, detail: Mapping[str, Any]) -> Item:
    """End a held item rejected for `reason` (what its client reads), delivered as such when
    its client has a webhook. Raises ValidationError (code not_in_review) when the item no
    longer waits for a person."""
    item, step, _ = _held_item(item_id)
    slug = _slug(item, step)
    version = _version_of(item, slug)
    held_since, now = item.updated_at, timezone.now()
    entry = dict(item.outputs.get(slug) or {})
    entry.update(decided_by=actor_label, rejected_reason=reason)
    item.outputs = {**item.outputs, slug: entry}
    item.status = Item.Status.REJECTED
    item.finished_at = now
    item.updated_at = now
    _finish(
        item,
        step=step,
        version=version,
        from_status=Item.Status.IN_REVIEW,
        actor_label=actor_label,
        detail={"step": slug, "reason": reason, **detail},
        held_since=held_since,
    )
    return item


def item_ledger_note(*, item_id: int, actor_label: str, detail: Mapping[str, Any]) -> LedgerEvent:
    """Record on an item's timeline something a person did that does not change its status
    (a blind audit of its accepted output)."""
    status = Item.objects.filter(pk=item_id).values_list("status", flat=True).get()
    return LedgerEvent.objects.create(
        item_id=item_id,
        actor=actor_label[:150],
        from_status=status,
        to_status=status,
        detail=dict(detail),
    )
