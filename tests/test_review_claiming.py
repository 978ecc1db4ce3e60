"""Claiming review tasks: queue membership and client scoping, priority and due order, leases
that renew and expire, assignment, and concurrent claimers that never collide."""

from __future__ import annotations

import threading
from datetime import timedelta
from io import StringIO

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.db.models import F, Q
from django.http import Http404
from django.utils import timezone

from controlplane.models import AuditEntry
from controlplane.roles import Role
from review.models import ReviewTask
from review.selectors import (
    queue_list_for_user,
    task_get_for_user,
    task_held_get,
    task_list_for_user,
    task_open_list_for_user,
)
from review.services import (
    LEASE_SECONDS,
    queue_ensure,
    queue_member_add,
    queue_member_remove,
    task_assign,
    task_claim,
    task_claim_next,
    task_decide,
    task_release,
    task_renew,
)
from tests.factories import ItemFactory, make_user
from tests.reviewing import classify_step, hold, join


@pytest.fixture
def rex(acme):
    return make_user("rex", role=Role.REVIEWER, clients=[acme])


@pytest.fixture
def gus(globex):
    return make_user("gus", role=Role.REVIEWER, clients=[globex])


@pytest.fixture
def globex_step(globex_pipeline, operator):
    return classify_step(globex_pipeline, operator, slug="clause", name="Clause")


@pytest.fixture
def queue(acme_step, reviewer, rex):
    return join(acme_step, reviewer, rex)


def held(step, n=1, *, priority=5):
    return [hold(ItemFactory(pipeline=step.pipeline, priority=priority), step) for _ in range(n)]


def expire(task) -> None:
    ReviewTask.objects.filter(pk=task.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )


# --- Who sees and claims what ----------------------------------------------------------------


def test_a_reviewer_claims_only_from_queues_they_belong_to(acme_step, reviewer):
    [task] = held(acme_step)
    assert task_claim_next(user=reviewer) is None
    assert list(task_list_for_user(user=reviewer)) == []
    join(acme_step, reviewer)
    claimed = task_claim_next(user=reviewer)
    assert claimed == task
    assert claimed.status == ReviewTask.Status.CLAIMED and claimed.claimed_by == reviewer
    assert claimed.lease_expires_at > timezone.now() + timedelta(seconds=LEASE_SECONDS - 5)


def test_a_reviewer_of_one_client_never_sees_or_claims_anothers_tasks(
    acme_step, globex_step, reviewer, gus, queue
):
    [acme_task] = held(acme_step)
    [globex_task] = held(globex_step)
    join(globex_step, gus)
    with pytest.raises(Http404):
        task_get_for_user(user=gus, pk=acme_task.pk)
    with pytest.raises(Http404):
        task_get_for_user(user=reviewer, pk=globex_task.pk)
    assert task_get_for_user(user=reviewer, pk=str(acme_task.pk)) == acme_task
    assert [t.pk for t in task_open_list_for_user(user=gus)] == [globex_task.pk]
    assert task_claim_next(user=gus) == globex_task
    assert task_claim_next(user=reviewer) == acme_task
    with pytest.raises(PermissionDenied):
        task_claim(task=acme_task, user=gus)


def test_clients_see_no_tasks_and_cannot_claim(acme_step, client_a, queue):
    [task] = held(acme_step)
    assert list(task_list_for_user(user=client_a)) == []
    assert list(queue_list_for_user(user=client_a)) == []
    with pytest.raises(Http404):
        task_get_for_user(user=client_a, pk=task.pk)
    with pytest.raises(PermissionDenied):
        task_claim_next(user=client_a)


def test_a_reviewer_who_no_longer_serves_the_client_loses_the_queue(acme, acme_step, reviewer):
    from controlplane.models import Membership

    [task] = held(acme_step)
    join(acme_step, reviewer)
    Membership.objects.filter(user=reviewer, client=acme).delete()
    assert task_claim_next(user=reviewer) is None
    with pytest.raises(Http404):
        task_get_for_user(user=reviewer, pk=task.pk)


def test_operators_claim_from_every_queue_without_membership(
    acme_step, globex_step, operator, queue
):
    [acme_task] = held(acme_step, priority=2)
    [globex_task] = held(globex_step, priority=8)
    assert task_claim_next(user=operator) == globex_task
    assert task_claim_next(user=operator, queue=queue) == acme_task


def test_a_reviewer_cannot_claim_from_a_queue_they_are_not_in(globex_step, reviewer):
    held(globex_step)
    with pytest.raises(PermissionDenied):
        task_claim_next(user=reviewer, queue=queue_ensure(step=globex_step))


# --- Order and leases ------------------------------------------------------------------------


def test_claims_go_by_priority_then_due_time(acme_step, reviewer, rex, operator, queue):
    low = held(acme_step, priority=1)[0]
    later, sooner = held(acme_step, 2, priority=6)
    ReviewTask.objects.filter(pk=sooner.pk).update(due_at=later.due_at - timedelta(minutes=5))
    assert task_claim_next(user=reviewer) == sooner
    assert task_claim_next(user=rex) == later
    assert task_claim_next(user=operator) == low
    assert task_claim_next(user=make_user("rae", role=Role.REVIEWER)) is None


def test_a_second_reviewer_never_gets_a_claimed_task(acme_step, reviewer, rex, queue):
    [task] = held(acme_step)
    assert task_claim_next(user=reviewer) == task
    assert task_claim_next(user=rex) is None
    with pytest.raises(ValidationError) as raised:
        task_claim(task=task, user=rex)
    assert raised.value.code == "taken"


def test_a_reviewer_who_holds_a_task_gets_the_same_one_back(acme_step, reviewer, queue):
    held(acme_step, 2)
    claimed = task_claim_next(user=reviewer)
    ReviewTask.objects.filter(pk=claimed.pk).update(lease_expires_at=timezone.now())
    again = task_claim_next(user=reviewer)
    assert again == claimed
    assert again.lease_expires_at > timezone.now() + timedelta(seconds=LEASE_SECONDS - 5)
    assert task_held_get(user=reviewer) == claimed


def test_an_expired_lease_returns_the_task_to_the_next_reviewer(acme_step, reviewer, rex, queue):
    [task] = held(acme_step)
    task_claim_next(user=reviewer)
    expire(task)
    taken = task_claim_next(user=rex)
    assert taken == task and taken.claimed_by == rex
    # The first reviewer lost it: they can neither renew nor decide it.
    with pytest.raises(ValidationError) as raised:
        task_renew(task=task, user=reviewer)
    assert raised.value.code == "lease_lost"
    with pytest.raises(ValidationError) as raised:
        task_decide(task=task, user=reviewer, decision="approve")
    assert raised.value.code == "lease_lost"
    task_decide(task=task, user=rex, decision="approve")


def test_a_reviewer_whose_lease_expired_unnoticed_still_decides(acme_step, reviewer, queue):
    [task] = held(acme_step)
    task_claim_next(user=reviewer)
    expire(task)
    task_renew(task=task, user=reviewer)
    decided = task_decide(task=task, user=reviewer, decision="approve")
    assert decided.status == ReviewTask.Status.DECIDED


def test_renewing_extends_the_lease(acme_step, reviewer, queue):
    [task] = held(acme_step)
    task_claim_next(user=reviewer)
    ReviewTask.objects.filter(pk=task.pk).update(
        lease_expires_at=timezone.now() + timedelta(seconds=5)
    )
    renewed = task_renew(task=task, user=reviewer)
    task.refresh_from_db()
    assert task.lease_expires_at == renewed.lease_expires_at
    assert task.lease_expires_at > timezone.now() + timedelta(seconds=LEASE_SECONDS - 5)


def test_a_released_task_goes_to_the_next_reviewer(acme_step, reviewer, rex, queue):
    [task] = held(acme_step)
    task_claim_next(user=reviewer)
    task_release(task=task, user=rex)  # not theirs: nothing happens
    assert task_claim_next(user=rex) is None
    released = task_release(task=task, user=reviewer)
    assert released.status == ReviewTask.Status.OPEN and released.claimed_by is None
    assert task_claim_next(user=rex) == task


def test_claiming_gives_back_the_task_held_in_another_queue(
    acme_step, acme_pipeline, reviewer, queue, operator
):
    second_step = classify_step(acme_pipeline, operator)
    other_queue = join(second_step, reviewer)
    [first] = held(acme_step)
    [second] = held(second_step)
    assert task_claim_next(user=reviewer, queue=queue) == first
    assert task_claim_next(user=reviewer, queue=other_queue) == second
    first.refresh_from_db()
    assert first.status == ReviewTask.Status.OPEN and first.claimed_by is None


def _expected_next(user, now):
    """The task claim-next must give `user`, by the queryset definitions the claim's SQL
    spells out: held first, then assigned to them, then unassigned or overdue."""
    from review.services.claiming import CLAIM_ORDER, claimable, independent

    mine = task_list_for_user(user=user).filter(status="claimed", claimed_by=user)
    if (task := mine.order_by(*CLAIM_ORDER).first()) is not None:
        return task
    candidates = task_list_for_user(user=user).filter(claimable(now), independent(user))
    return (
        candidates.filter(assignee=user).order_by(*CLAIM_ORDER).first()
        or candidates.filter(Q(assignee__isnull=True) | Q(overdue=True))
        .order_by(*CLAIM_ORDER)
        .first()
    )


def test_claim_next_agrees_with_the_queryset_definitions(
    acme_step, globex_step, reviewer, rex, gus, operator, queue
):
    """A mixed queue worked to the end: every claim is the one the selectors' definitions of
    claimable, independent and in scope name, for a reviewer and for an operator."""
    join(globex_step, gus)
    tasks = held(acme_step, 4, priority=3) + held(acme_step, 3, priority=7) + held(globex_step, 2)
    task_assign(task=tasks[0], assignee=rex, actor=operator)
    task_assign(task=tasks[5], assignee=reviewer, actor=operator)
    ReviewTask.objects.filter(pk=tasks[1].pk).update(overdue=True, priority=9)
    task_claim(task=tasks[2], user=rex)  # a live lease of someone else
    ray = make_user("ray", role=Role.REVIEWER, clients=[acme_step.pipeline.client])
    join(acme_step, ray)
    task_claim(task=tasks[3], user=ray)
    expire(tasks[3])  # a lease that ran out
    for user in (reviewer, operator):
        while True:
            expected = _expected_next(user, timezone.now())
            got = task_claim_next(user=user)
            assert got == expected
            if got is None:
                break
            task_decide(task=got, user=user, decision="approve")
    # What nobody else may take is left: rex's assignment (not overdue) and rex's live lease.
    left = set(ReviewTask.objects.filter(status__in=ReviewTask.ACTIVE).values_list("pk", flat=True))
    assert left == {tasks[0].pk, tasks[2].pk}


# --- Assignment and membership ---------------------------------------------------------------


def test_an_assigned_task_goes_to_its_assignee_first_and_to_nobody_else(
    acme_step, reviewer, rex, operator, queue
):
    urgent, quiet = held(acme_step, priority=9)[0], held(acme_step, priority=1)[0]
    task_assign(task=quiet, assignee=reviewer, actor=operator)
    assert task_claim_next(user=rex) == urgent
    assert task_claim_next(user=make_user("rae", role=Role.REVIEWER)) is None
    assert task_claim_next(user=reviewer) == quiet
    entry = AuditEntry.objects.get(action="review_task.assign")
    assert entry.after == {"assignee": "rita"} and entry.client == acme_step.pipeline.client


def test_an_assigned_task_is_anyones_once_overdue(acme_step, reviewer, rex, operator, queue):
    from review.services import tasks_escalate_overdue

    [task] = held(acme_step)
    task_assign(task=task, assignee=reviewer, actor=operator)
    with pytest.raises(ValidationError):
        task_claim(task=task, user=rex)
    ReviewTask.objects.filter(pk=task.pk).update(due_at=timezone.now() - timedelta(minutes=1))
    assert tasks_escalate_overdue() == 1
    assert task_claim_next(user=rex) == task


def test_only_operators_assign_and_only_to_members(acme_step, reviewer, rex, operator, gus):
    [task] = held(acme_step)
    queue = join(acme_step, reviewer)
    with pytest.raises(PermissionDenied):
        task_assign(task=task, assignee=reviewer, actor=rex)
    with pytest.raises(ValidationError) as raised:
        task_assign(task=task, assignee=rex, actor=operator)
    assert "rex is not a member" in str(raised.value)
    with pytest.raises(ValidationError):
        task_assign(task=task, assignee=gus, actor=operator)
    assert task_assign(task=task, assignee=operator, actor=operator).assignee == operator
    assert task_assign(task=task, assignee=None, actor=operator).assignee is None
    assert queue.members.get() == reviewer


def test_queue_membership_is_for_operators_to_change_and_audited(
    acme_step, reviewer, rex, gus, operator, client_a
):
    queue = queue_ensure(step=acme_step)
    with pytest.raises(PermissionDenied):
        queue_member_add(queue=queue, user=rex, actor=reviewer)
    with pytest.raises(ValidationError):
        queue_member_add(queue=queue, user=gus, actor=operator)  # serves another client
    with pytest.raises(ValidationError):
        queue_member_add(queue=queue, user=client_a, actor=operator)
    queue_member_add(queue=queue, user=rex, actor=operator)
    queue_member_add(queue=queue, user=rex, actor=operator)  # idempotent
    assert list(queue.members.all()) == [rex]
    assert AuditEntry.objects.filter(action="review_queue.member_add").count() == 1
    [task] = held(acme_step)
    task_assign(task=task, assignee=rex, actor=operator)
    assert queue_member_remove(queue=queue, user=rex, actor=operator) is True
    assert queue_member_remove(queue=queue, user=rex, actor=operator) is False
    task.refresh_from_db()
    assert task.assignee is None
    assert AuditEntry.objects.filter(action="review_queue.member_remove").count() == 1
    assert task_claim_next(user=rex) is None


# --- Concurrency ----------------------------------------------------------------------------


def _in_threads(count, work):
    """Run work(index) in `count` threads, each with its own database connection, started
    together; returns their results and re-raises the first error."""
    barrier = threading.Barrier(count)
    results: list = [None] * count
    errors: list[BaseException] = []

    def run(index):
        try:
            barrier.wait(timeout=30)
            results[index] = work(index)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    if errors:
        raise errors[0]
    return results


@pytest.mark.django_db(transaction=True)
def test_concurrent_claimers_never_get_the_same_task(acme, acme_step):
    reviewers = [make_user(f"r{n}", role=Role.REVIEWER, clients=[acme]) for n in range(8)]
    join(acme_step, *reviewers)
    held(acme_step, 10)
    claimed = _in_threads(8, lambda i: task_claim_next(user=reviewers[i]).pk)
    assert len(set(claimed)) == 8
    holders = dict(
        ReviewTask.objects.filter(status="claimed").values_list("id", "claimed_by__username")
    )
    assert holders == {pk: f"r{n}" for n, pk in enumerate(claimed)}


@pytest.mark.django_db(transaction=True)
def test_concurrent_reviewers_drain_a_queue_each_task_once(acme, acme_step):
    reviewers = [make_user(f"r{n}", role=Role.REVIEWER, clients=[acme]) for n in range(6)]
    join(acme_step, *reviewers)
    tasks = held(acme_step, 30)

    def work(index):
        done = []
        while (task := task_claim_next(user=reviewers[index])) is not None:
            task_decide(task=task, user=reviewers[index], decision="approve")
            done.append(task.pk)
        return done

    decided = [pk for done in _in_threads(6, work) for pk in done]
    assert sorted(decided) == sorted(t.pk for t in tasks)
    assert ReviewTask.objects.filter(status="decided").count() == 30
    assert not ReviewTask.objects.exclude(decided_by=F("claimed_by")).exists()


def test_the_demo_reviewer_works_every_demo_queue(db):
    from django.core.management import call_command

    from pipelines.models import Step
    from review.models import ReviewQueue

    call_command("seed_demo", stdout=StringIO())
    steps = Step.objects.count()
    assert steps and ReviewQueue.objects.filter(members__username="reviewer").count() == steps


def test_a_new_step_has_its_queue_at_once_so_it_can_be_staffed_before_work(
    acme_pipeline, operator, reviewer
):
    step = classify_step(acme_pipeline, operator, slug="tone", name="Tone")
    [queue] = queue_list_for_user(user=operator).filter(step=step)
    assert queue.name == f"{acme_pipeline.name} · Tone" and not queue.tasks.exists()
    queue_member_add(queue=queue, user=reviewer, actor=operator)
    assert queue in queue_list_for_user(user=reviewer)
