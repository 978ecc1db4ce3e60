"""The review SLA: tasks past their due time are flagged overdue and rise above every task that
is still on time; the `review.signals.tasks_overdue` signal tells the alerts."""

from __future__ import annotations

from datetime import datetime
from functools import partial

from django.db import connection, transaction
from django.db.models import Case, F, PositiveSmallIntegerField, Value, When
from django.db.models.functions import Least
from django.utils import timezone

from controlplane.services import audit_record
from review.models import MAX_TASK_PRIORITY, OVERDUE_BOOST, ReviewQueue, ReviewTask
from review.signals import tasks_overdue

ESCALATION_BATCH = 1000
ACTOR = "review-escalation"


def tasks_escalate_overdue(now: datetime | None = None) -> int:
    """Flag every waiting task past its due time as overdue, once, with `escalated_at`; held
    items' tasks also rise in priority (by OVERDUE_BOOST, at most MAX_TASK_PRIORITY), audits
    only get the flag (they hold nothing up). Each queue that had tasks escalated gets an
    audit entry, and `tasks_overdue` is sent after each batch commits. Returns how many."""
    now = now or timezone.now()
    total = 0
    while True:
        escalated = _escalate_batch(now)
        total += escalated
        if escalated < ESCALATION_BATCH:
            return total


@transaction.atomic
def _escalate_batch(now: datetime) -> int:
    due = ReviewTask.objects.filter(
        status__in=ReviewTask.ACTIVE, overdue=False, due_at__lt=now
    ).order_by("due_at")
    if connection.vendor == "postgresql":
        due = due.select_for_update(skip_locked=True)
    found = list(due.values_list("id", "queue_id")[:ESCALATION_BATCH])
    if not found:
        return 0
    ids = [pk for pk, _ in found]
    ReviewTask.objects.filter(pk__in=ids).update(
        overdue=True,
        escalated_at=now,
        priority=Case(
            When(
                kind=ReviewTask.Kind.REVIEW,
                then=Least(F("priority") + OVERDUE_BOOST, Value(MAX_TASK_PRIORITY)),
            ),
            default=F("priority"),
            output_field=PositiveSmallIntegerField(),
        ),
    )
    per_queue: dict[int, list[int]] = {}
    for pk, queue_id in found:
        per_queue.setdefault(queue_id, []).append(pk)
    for queue in ReviewQueue.objects.filter(pk__in=per_queue).select_related("pipeline__client"):
        task_ids = per_queue[queue.pk]
        audit_record(
            actor=None,
            actor_label=ACTOR,
            action="review_queue.escalate",
            obj=queue,
            client=queue.pipeline.client,
            after={"overdue_tasks": len(task_ids), "task_ids": task_ids[:50]},
        )
    transaction.on_commit(
        partial(tasks_overdue.send, sender=ReviewTask, task_ids=ids, queue_ids=list(per_queue))
    )
    return len(ids)
