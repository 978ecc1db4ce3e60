"""The review SLA and the numbers around the queue: overdue escalation, queue counts, backlog age
and the time to drain it, reviewer statistics and audit outcomes, on a small known fixture."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from controlplane.models import AuditEntry
from controlplane.roles import Role
from pipelines.threshold import Outcome
from review.models import MAX_TASK_PRIORITY, ReviewTask
from review.selectors import (
    audit_outcome_list,
    backlog_get,
    queue_counts_list,
    reviewer_stats_list,
)
from review.services import tasks_escalate_overdue, tasks_open_for_audit
from review.signals import tasks_overdue
from tests.factories import ItemFactory, make_user
from tests.reviewing import hold, join


@pytest.fixture
def rex(acme):
    return make_user("rex", role=Role.REVIEWER, clients=[acme])


@pytest.fixture
def queue(acme_step, reviewer, rex):
    return join(acme_step, reviewer, rex)


def task(step, *, priority=5, **fields):
    """A held item's task with `fields` set as if time had passed."""
    made = hold(ItemFactory(pipeline=step.pipeline, priority=priority), step)
    if fields:
        ReviewTask.objects.filter(pk=made.pk).update(**fields)
        made.refresh_from_db()
    return made


def audit(step, *, output, confidence):
    from pipelines.signals import Sampled

    item = ItemFactory(
        pipeline=step.pipeline,
        status="accepted",
        outputs={step.slug: {"output": output, "confidence": confidence}},
    )
    tasks_open_for_audit(sampled=[Sampled(item, step, output)])
    return ReviewTask.objects.get(item=item, opinion=1)


# --- Escalation ------------------------------------------------------------------------------


def test_overdue_tasks_are_flagged_raised_and_audited_once(
    acme_step, queue, django_capture_on_commit_callbacks
):
    now = timezone.now()
    late = task(acme_step, priority=3, due_at=now - timedelta(minutes=1))
    urgent_late = task(acme_step, priority=9, due_at=now - timedelta(minutes=2))
    on_time = task(acme_step, priority=9, due_at=now + timedelta(minutes=5))
    heard = []

    def listen(sender, task_ids, queue_ids, **kwargs):
        heard.append((sorted(task_ids), queue_ids))

    tasks_overdue.connect(listen)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            assert tasks_escalate_overdue(now=now) == 2
    finally:
        tasks_overdue.disconnect(listen)
    for each in (late, urgent_late, on_time):
        each.refresh_from_db()
    assert (late.overdue, late.priority, late.escalated_at) == (True, 13, now)
    assert (urgent_late.overdue, urgent_late.priority) == (True, MAX_TASK_PRIORITY)
    assert (on_time.overdue, on_time.priority, on_time.escalated_at) == (False, 9, None)
    assert heard == [(sorted([late.pk, urgent_late.pk]), [queue.pk])]
    entry = AuditEntry.objects.get(action="review_queue.escalate")
    assert entry.actor_label == "review-escalation" and entry.after["overdue_tasks"] == 2
    assert entry.client == acme_step.pipeline.client
    assert tasks_escalate_overdue(now=now + timedelta(minutes=1)) == 0
    late.refresh_from_db()
    assert late.priority == 13


def test_overdue_tasks_are_handed_out_before_tasks_still_on_time(acme_step, reviewer, queue):
    from review.services import task_claim_next

    now = timezone.now()
    task(acme_step, priority=9, due_at=now + timedelta(minutes=30))
    late = task(acme_step, priority=0, due_at=now - timedelta(seconds=1))
    tasks_escalate_overdue(now=now)
    assert task_claim_next(user=reviewer) == late


def test_overdue_audits_are_flagged_but_not_raised(acme_step, queue):
    made = audit(acme_step, output={"label": "bug"}, confidence=0.9)
    ReviewTask.objects.filter(pk=made.pk).update(due_at=timezone.now() - timedelta(minutes=1))
    assert tasks_escalate_overdue() == 1
    made.refresh_from_db()
    assert made.overdue and made.priority == 0


def test_decided_tasks_are_never_escalated(acme_step, queue):
    task(acme_step, status="decided", due_at=timezone.now() - timedelta(hours=1))
    assert tasks_escalate_overdue() == 0


def test_the_escalation_task_is_scheduled_every_minute():
    from controlplane.schedules import SCHEDULES
    from review.tasks import tasks_escalate_overdue_task

    [entry] = [s for s in SCHEDULES if s.name == "sluice.review_escalate"]
    assert entry.minutes == 1
    assert entry.func == f"{tasks_escalate_overdue_task.__module__}.tasks_escalate_overdue_task"


# --- Queue counts and backlog ----------------------------------------------------------------


def test_queue_counts_show_open_claimed_and_overdue(
    acme_step, globex_pipeline, queue, reviewer, rex, operator
):
    now = timezone.now()
    task(acme_step)
    task(acme_step, overdue=True)
    task(acme_step, status="claimed", claimed_by=rex, lease_expires_at=now + timedelta(minutes=1))
    # An expired lease counts as open again.
    task(acme_step, status="claimed", claimed_by=rex, lease_expires_at=now - timedelta(minutes=1))
    task(acme_step, status="decided")
    [counts] = queue_counts_list(user=reviewer, now=now)
    assert counts.queue == queue
    assert (counts.open, counts.claimed, counts.overdue) == (3, 1, 1)
    assert counts.oldest_due_at is not None
    assert queue_counts_list(user=make_user("rae", role=Role.REVIEWER)) == []
    assert [c.queue for c in queue_counts_list(user=operator)] == [queue]


def test_the_backlog_shows_age_buckets_throughput_and_time_to_drain(acme_step, queue, reviewer):
    now = timezone.now()
    for age in (timedelta(minutes=30), timedelta(hours=2), timedelta(hours=5), timedelta(days=2)):
        task(acme_step, opened_at=now - age)
    task(acme_step, opened_at=now - timedelta(minutes=10), overdue=True)
    for minutes in (5, 50):
        task(acme_step, status="decided", decided_at=now - timedelta(minutes=minutes))
    task(acme_step, status="decided", decided_at=now - timedelta(minutes=70))
    backlog = backlog_get(user=reviewer, now=now)
    assert backlog.waiting == 5 and backlog.overdue == 1
    assert [(b.label, b.count) for b in backlog.buckets] == [
        ("< 1 h", 2),
        ("1-4 h", 1),
        ("4-24 h", 1),
        ("> 24 h", 1),
    ]
    assert backlog.oldest_opened_at == now - timedelta(days=2)
    assert backlog.decided_last_hour == 2 and backlog.throughput_per_hour == 2.0
    assert backlog.drain_seconds == pytest.approx(5 / 2 * 3600)
    assert backlog_get(user=reviewer, queue=queue, now=now).waiting == 5


def test_without_recent_decisions_there_is_no_forecast(acme_step, queue, reviewer, client_a):
    task(acme_step)
    backlog = backlog_get(user=reviewer)
    assert backlog.waiting == 1 and backlog.drain_seconds is None
    assert backlog_get(user=client_a).waiting == 0


# --- Reviewer statistics and audit outcomes --------------------------------------------------


def test_reviewer_stats_count_decisions_rates_median_and_audit_agreement(
    acme_step, queue, reviewer, rex, operator, client_a
):
    now = timezone.now()
    decided = {"status": "decided", "decided_at": now - timedelta(hours=1)}
    for decision, seconds in (("approve", 5), ("approve", 9), ("edit", 10), ("reject", 30)):
        task(acme_step, decision=decision, handling_seconds=seconds, decided_by=reviewer, **decided)
    for agreed in (True, False):
        made = audit(acme_step, output={"label": "bug"}, confidence=0.9)
        ReviewTask.objects.filter(pk=made.pk).update(
            decision="edit", agreed=agreed, handling_seconds=20, decided_by=reviewer, **decided
        )
    task(acme_step, decision="approve", handling_seconds=3, decided_by=rex, **decided)
    # Outside the default 24 hours.
    task(
        acme_step,
        decision="approve",
        handling_seconds=99,
        decided_by=rex,
        status="decided",
        decided_at=now - timedelta(days=2),
    )
    rex_stats, rita_stats = reviewer_stats_list(user=operator, until=now)
    assert (rita_stats.username, rita_stats.decisions) == ("rita", 6)
    assert rita_stats.decisions_per_hour == pytest.approx(6 / 24)
    assert rita_stats.median_handling_seconds == 15  # 5, 9, 10, 20, 20, 30
    assert (rita_stats.approved, rita_stats.edited, rita_stats.rejected) == (2, 3, 1)
    assert rita_stats.approve_rate == pytest.approx(2 / 6)
    assert rita_stats.reject_rate == pytest.approx(1 / 6)
    assert (rita_stats.audits, rita_stats.audit_agreement) == (2, 0.5)
    assert (rex_stats.decisions, rex_stats.median_handling_seconds) == (1, 3)
    assert rex_stats.audit_agreement is None
    assert [s.username for s in reviewer_stats_list(user=reviewer, until=now)] == ["rita"]
    assert reviewer_stats_list(user=client_a) == []
    week = reviewer_stats_list(user=operator, since=now - timedelta(days=7), until=now)
    assert [s.decisions for s in week] == [2, 6]


def test_audit_outcomes_feed_the_threshold_tool(acme_step, queue):
    for confidence, agreed in ((0.95, True), (0.85, False), (0.7, None)):
        made = audit(acme_step, output={"label": "bug"}, confidence=confidence)
        ReviewTask.objects.filter(pk=made.pk).update(
            status="decided", decision="edit", agreed=agreed, decided_at=timezone.now()
        )
    audit(acme_step, output={"label": "bug"}, confidence=0.5)  # not decided yet
    outcomes = audit_outcome_list(step=acme_step)
    assert sorted(outcomes, key=lambda o: o.confidence) == [
        Outcome(confidence=0.85, correct=False),
        Outcome(confidence=0.95, correct=True),
    ]
