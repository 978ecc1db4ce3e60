"""Claiming review tasks under a lease. Two reviewers never hold the same task: the next task
is taken with SELECT … FOR UPDATE SKIP LOCKED on PostgreSQL and under SQLite's write lock
(the IMMEDIATE transaction) on the embedded database. A task whose lease expired is claimable
again by the same query, so no sweeper is needed."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from controlplane.roles import Role, role_of
from review.models import ReviewQueue, ReviewTask
from review.selectors import queue_ids_for_user, task_list_for_user

# Renewed by the review screen while the reviewer works; a reviewer who leaves loses the task
# to the next claimer this long after their last renewal.
LEASE_SECONDS = 120

Status = ReviewTask.Status
CLAIM_ORDER = ("-priority", "due_at", "id")


def reviewer_role(user) -> Role:
    """The user's role when it may work review tasks; PermissionDenied otherwise."""
    role = role_of(user)
    if role not in (Role.OPERATOR, Role.REVIEWER):
        raise PermissionDenied("Only operators and reviewers work review tasks.")
    return role


def claimable(now: datetime) -> Q:
    """Open tasks, and claimed ones whose lease expired. The status list lets the database
    use the partial indexes on active tasks."""
    return Q(status__in=ReviewTask.ACTIVE) & (
        Q(status=Status.OPEN) | Q(status=Status.CLAIMED, lease_expires_at__lte=now)
    )


def independent(user) -> Q:
    """Every task except an audit whose item (at the same step) has another audit this user
    claimed or decided: the two opinions of an output come from two people. Review tasks never
    reach the subquery, so claims of held items stay a plain index scan."""
    own_copy = ReviewTask.objects.filter(
        item_id=OuterRef("item_id"), step_id=OuterRef("step_id"), kind=ReviewTask.Kind.AUDIT
    ).filter(Q(decided_by=user) | Q(status=Status.CLAIMED, claimed_by=user))
    return ~Q(kind=ReviewTask.Kind.AUDIT) | ~Exists(own_copy.exclude(pk=OuterRef("pk")))


def _within(tasks: QuerySet[ReviewTask], queue_ids: list[int] | None) -> QuerySet[ReviewTask]:
    return tasks if queue_ids is None else tasks.filter(queue_id__in=queue_ids)


def _first_unlocked(tasks: QuerySet[ReviewTask]) -> int | None:
    """The first task in claim order, locked for this transaction, skipping tasks another
    claimer has locked (PostgreSQL); SQLite's write lock already excludes other claimers."""
    tasks = tasks.order_by(*CLAIM_ORDER)
    if connection.vendor == "postgresql":
        tasks = tasks.select_for_update(skip_locked=True)
    return tasks.values_list("id", flat=True).first()


def _scope(user, role: Role, queue: ReviewQueue | None) -> list[int] | None:
    """Queue ids the claim may take from (None: every queue)."""
    queue_ids = queue_ids_for_user(user=user)
    if queue is None:
        return queue_ids
    if queue_ids is not None and queue.pk not in queue_ids:
        raise PermissionDenied("You are not a member of this review queue.")
    return [queue.pk]


def _release_others(user, *, keep: int | None = None) -> None:
    """A reviewer works one task at a time: claiming one gives back any other they hold."""
    others = ReviewTask.objects.filter(status=Status.CLAIMED, claimed_by=user)
    if keep is not None:
        others = others.exclude(pk=keep)
    others.update(status=Status.OPEN, claimed_by=None, claimed_at=None, lease_expires_at=None)


def _extend(task_id: int, user, now: datetime) -> bool:
    """Renew the user's lease on a task they still hold; False when someone took it since."""
    return bool(
        ReviewTask.objects.filter(pk=task_id, status=Status.CLAIMED, claimed_by=user).update(
            lease_expires_at=now + timedelta(seconds=LEASE_SECONDS)
        )
    )


def _loaded(task_id: int) -> ReviewTask:
    return ReviewTask.objects.select_related(
        "item__pipeline__client", "step", "queue", "assignee", "claimed_by"
    ).get(pk=task_id)


def task_claim_next(*, user, queue: ReviewQueue | None = None) -> ReviewTask | None:
    """Give the user the next task under a lease of LEASE_SECONDS, or None when nothing waits.

    Taken from the queues the user is a member of (operators: every queue; `queue` narrows it
    to one), within the clients they serve. A task the user already holds comes back first
    (its lease renewed); then tasks assigned to them; then the rest, assigned tasks of others
    only once overdue. Order: overdue first (escalation raised their priority), then
    priority, then due time. Claiming gives back any other task the user held."""
    role = reviewer_role(user)
    now = timezone.now()
    with transaction.atomic():
        scope = _scope(user, role, queue)
        if scope == []:
            return None
        # Every task the user holds, in one read: the one in scope comes back; the others (rare:
        # another tab, another queue) are given back.
        holding = list(
            ReviewTask.objects.filter(status=Status.CLAIMED, claimed_by=user)
            .order_by(*CLAIM_ORDER)
            .values_list("id", "queue_id")
        )
        in_scope = [pk for pk, queue_id in holding if scope is None or queue_id in scope]
        if in_scope and _extend(in_scope[0], user, now):
            if len(holding) > 1:
                _release_others(user, keep=in_scope[0])
            return _loaded(in_scope[0])
        if holding:
            _release_others(user)
        candidates = _within(ReviewTask.objects.filter(claimable(now), independent(user)), scope)
        task_id = _first_unlocked(candidates.filter(assignee=user))
        if task_id is None:
            task_id = _first_unlocked(candidates.filter(Q(assignee__isnull=True) | Q(overdue=True)))
        if task_id is None:
            return None
        ReviewTask.objects.filter(pk=task_id).update(
            status=Status.CLAIMED,
            claimed_by=user,
            claimed_at=now,
            lease_expires_at=now + timedelta(seconds=LEASE_SECONDS),
        )
    return _loaded(task_id)


def task_claim(*, task: ReviewTask, user) -> ReviewTask:
    """Claim one given task (opened from a list) under a lease. Raises ValidationError (code
    taken) when someone else holds it, it is reserved for its assignee, or it was decided, or
    it is a blind audit whose other opinion the user claimed or gave."""
    role = reviewer_role(user)
    now = timezone.now()
    with transaction.atomic():
        if not task_list_for_user(user=user).filter(pk=task.pk).exists():
            raise PermissionDenied("You are not a member of this task's queue.")
        if _extend(task.pk, user, now):
            _release_others(user, keep=task.pk)
            return _loaded(task.pk)
        if not ReviewTask.objects.filter(independent(user), pk=task.pk).exists():
            raise ValidationError(
                "You have this item's other blind audit: its second opinion must come from "
                "someone else.",
                code="second_opinion",
            )
        allowed = ReviewTask.objects.filter(claimable(now), pk=task.pk)
        if role != Role.OPERATOR:
            allowed = allowed.filter(Q(assignee__isnull=True) | Q(assignee=user) | Q(overdue=True))
        _release_others(user)
        # A conditional UPDATE: of two people claiming the same task at once, one wins.
        taken = allowed.update(
            status=Status.CLAIMED,
            claimed_by=user,
            claimed_at=now,
            lease_expires_at=now + timedelta(seconds=LEASE_SECONDS),
        )
        if not taken:
            raise ValidationError(
                "Someone else has this task, it waits for the person it is assigned to, or "
                "it was decided.",
                code="taken",
            )
    return _loaded(task.pk)


def task_renew(*, task: ReviewTask, user) -> ReviewTask:
    """Extend the user's lease on a task they hold. Raises ValidationError (code lease_lost)
    when they no longer hold it (another reviewer took it after the lease expired, or it was
    released or decided)."""
    reviewer_role(user)
    now = timezone.now()
    if not _extend(task.pk, user, now):
        raise ValidationError("You no longer hold this task.", code="lease_lost")
    task.lease_expires_at = now + timedelta(seconds=LEASE_SECONDS)
    return task


def task_release(*, task: ReviewTask, user) -> ReviewTask:
    """Give a held task back to its queue for the next reviewer. Reviewers release their own;
    operators any. Releasing a task nobody holds changes nothing."""
    role = reviewer_role(user)
    held = ReviewTask.objects.filter(pk=task.pk, status=Status.CLAIMED)
    if role != Role.OPERATOR:
        held = held.filter(claimed_by=user)
    held.update(status=Status.OPEN, claimed_by=None, claimed_at=None, lease_expires_at=None)
    task.refresh_from_db()
    return task
