"""Opening review tasks: for items the gate held, and for accepted outputs sampled for a blind
audit. Called by the receivers of the engine's signals, inside the engine's transaction: one
INSERT of tasks per batch (and one of queues when a step holds an item for the first time)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from pipelines.models import Item, Pipeline, Step
from pipelines.signals import Held, Sampled
from review.models import MAX_ITEM_PRIORITY, ReviewQueue, ReviewTask
from review.reasons import reason_code_of

AUDIT_REASON = "blind audit: a sample of the outputs the gate accepted"
# The model gave no usable output for these: there is nothing to show or approve.
_NO_OUTPUT = (ReviewTask.ReasonCode.PROCESSING_ERROR, ReviewTask.ReasonCode.CONTENT_POLICY)


def queue_name(*, pipeline: Pipeline, step: Step) -> str:
    return f"{pipeline.name} · {step.name}"[:200]


def queues_for_steps(steps: dict[int, tuple[Step, Pipeline]]) -> dict[int, ReviewQueue]:
    """The queue of each step ({step id: (step, its pipeline)}), by step id; missing ones are
    created in one INSERT."""
    found = {q.step_id: q for q in ReviewQueue.objects.filter(step_id__in=list(steps))}
    missing = [pk for pk in steps if pk not in found]
    if missing:
        ReviewQueue.objects.bulk_create(
            [
                ReviewQueue(
                    pipeline=steps[pk][1],
                    step=steps[pk][0],
                    name=queue_name(pipeline=steps[pk][1], step=steps[pk][0]),
                )
                for pk in missing
            ],
            ignore_conflicts=True,  # another worker may open the same queue at the same time
        )
        found.update({q.step_id: q for q in ReviewQueue.objects.filter(step_id__in=missing)})
    return found


def tasks_open_for_held(*, held: Sequence[Held], now: datetime | None = None) -> int:
    """Open a review task for each held item, with the gate's reason and its code, the item's
    priority and a due time from its pipeline's review SLA. Returns how many were written; an
    item already waiting at its step keeps its task."""
    entries = []
    for entry in held:
        item, step = entry.item, entry.step
        code = reason_code_of(entry.reason)
        answer = {} if code in _NO_OUTPUT else (item.outputs.get(step.slug) or {})
        fields = {
            "reason": entry.reason,
            "reason_code": code,
            "priority": min(item.priority, MAX_ITEM_PRIORITY),
            "model_output": answer.get("output"),
            "confidence": answer.get("confidence"),
        }
        entries.append((item, step, fields))
    return _tasks_write(entries, kind=ReviewTask.Kind.REVIEW, now=now)


def second_opinion_drawn(*, item: Item, step: Step, rate: float) -> bool:
    """Whether the audit of this item at this step gets a second, independent reviewer: true
    for a `rate` share of items. The draw is seeded by the item and step so that sampling the
    same output again opens the same tasks (the active-task constraint then drops them)."""
    if rate <= 0:
        return False
    return rate >= 1 or random.Random(f"{item.pk}:{step.pk}").random() < rate


def tasks_open_for_audit(*, sampled: Sequence[Sampled], now: datetime | None = None) -> int:
    """Open a blind audit task for each sampled output, and a second one for a share of them
    (their queue's second_opinion_rate), so that two reviewers answer the same output without
    seeing each other's answer. Audits hold nothing up, so they come after held items of any
    priority and are never escalated. Returns how many were written."""
    if not sampled:
        return 0
    queues = queues_for_steps({e.step.pk: (e.step, e.item.pipeline) for e in sampled})
    entries = []
    for entry in sampled:
        item, step = entry.item, entry.step
        fields = {
            "reason": AUDIT_REASON,
            "reason_code": ReviewTask.ReasonCode.AUDIT,
            "priority": 0,
            "model_output": entry.output,
            "confidence": (item.outputs.get(step.slug) or {}).get("confidence"),
        }
        entries.append((item, step, {**fields, "opinion": 1}))
        rate = float(queues[step.pk].second_opinion_rate)
        if second_opinion_drawn(item=item, step=step, rate=rate):
            entries.append((item, step, {**fields, "opinion": 2}))
    return _tasks_write(entries, kind=ReviewTask.Kind.AUDIT, now=now, queues=queues)


def _tasks_write(
    entries: Sequence[tuple[Item, Step, dict[str, Any]]],
    *,
    kind: str,
    now: datetime | None,
    queues: dict[int, ReviewQueue] | None = None,
) -> int:
    """One INSERT for a batch's tasks; the active-task constraint drops any an item already has."""
    if not entries:
        return 0
    now = now or timezone.now()
    if queues is None:
        queues = queues_for_steps({step.pk: (step, item.pipeline) for item, step, _ in entries})
    ReviewTask.objects.bulk_create(
        [
            ReviewTask(
                item=item,
                step=step,
                queue=queues[step.pk],
                kind=kind,
                opened_at=now,
                due_at=now + timedelta(seconds=item.pipeline.review_sla_seconds),
                **fields,
            )
            for item, step, fields in entries
        ],
        ignore_conflicts=True,
    )
    return len(entries)
