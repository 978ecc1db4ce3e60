"""Claiming review tasks under a lease. Two reviewers never hold the same task: the next task
is taken with SELECT … FOR UPDATE SKIP LOCKED on PostgreSQL and under SQLite's write lock
(the IMMEDIATE transaction) on the embedded database. A task whose lease expired is claimable
again by the same query, so no sweeper is needed."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from controlplane.roles import Role, role_of
from review.models import ReviewQueue, ReviewTask
from review.selectors import queue_list_for_user, task_list_for_user

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


def _member_check(user, role: Role, queue: ReviewQueue) -> None:
    """PermissionDenied unless the user works `queue`."""
    if role != Role.OPERATOR and not queue_list_for_user(user=user).filter(pk=queue.pk).exists():
        raise PermissionDenied("You are not a member of this review queue.")


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


# The claim in one statement. Hand-written rather than compiled from querysets: with many
# reviewers at once the claim's cost is mostly Python building SQL and PostgreSQL planning
# it, and this one is small. Its conditions are `claimable()`, `independent()` and
# `queue_list_for_user()` spelled in SQL (tests/test_review_claiming.py holds them equal).
_CLAIM_SQL = """
WITH scope AS MATERIALIZED ({scope}),
held AS (
    SELECT t.id FROM review_reviewtask t
    WHERE t.status = 'claimed' AND t.claimed_by_id = %s AND t.queue_id IN (SELECT id FROM scope)
    ORDER BY t.priority DESC, t.due_at, t.id LIMIT 1
)
UPDATE review_reviewtask SET
    status = 'claimed',
    claimed_by_id = %s,
    claimed_at = CASE WHEN status = 'claimed' AND claimed_by_id = %s THEN claimed_at ELSE %s END,
    lease_expires_at = %s
WHERE id = COALESCE(
    (SELECT id FROM held),
    ({candidate} AND c.assignee_id = %s {order}),
    ({candidate} AND (c.assignee_id IS NULL OR c.overdue) {order})
)
AND (status = 'open' OR (status = 'claimed' AND (claimed_by_id = %s OR lease_expires_at <= %s)))
RETURNING id
"""
_CANDIDATE_SQL = """
SELECT c.id FROM review_reviewtask c
WHERE c.status IN ('open', 'claimed')
AND (c.status = 'open' OR c.lease_expires_at <= %s)
AND c.queue_id IN (SELECT id FROM scope)
AND c.id <> %s
AND (c.kind <> 'audit' OR NOT EXISTS (
    SELECT 1 FROM review_reviewtask o
    WHERE o.item_id = c.item_id AND o.step_id = c.step_id AND o.kind = 'audit' AND o.id <> c.id
    AND (o.decided_by_id = %s OR (o.status = 'claimed' AND o.claimed_by_id = %s))
))
"""
_EVERY_QUEUE_SQL = "SELECT id FROM review_reviewqueue"
_MEMBER_QUEUES_SQL = """
SELECT m.queue_id AS id FROM review_queuemembership m
JOIN review_reviewqueue q ON q.id = m.queue_id
JOIN pipelines_pipeline p ON p.id = q.pipeline_id
JOIN controlplane_client cl ON cl.id = p.client_id AND cl.is_active
JOIN controlplane_membership cm ON cm.client_id = cl.id AND cm.user_id = m.user_id
WHERE m.user_id = %s
"""


def _claim_one(
    user, role: Role, queue: ReviewQueue | None, now: datetime, skip: int = 0
) -> int | None:
    """Claim (or renew) the user's next task in one UPDATE … RETURNING and return its id.

    The task is the first of: the one the user holds (its lease renewed, its claim time
    kept), one assigned to them, one nobody else waits for. COALESCE evaluates those lazily,
    in that order; on PostgreSQL the candidates are locked with SKIP LOCKED, and the UPDATE's
    own condition checks the row again once locked, so a task another claimer took in
    between is never overwritten. SQLite runs the statement under its write lock. The task
    with id `skip` is not taken."""
    if role == Role.OPERATOR:
        scope_sql, scope_params = _EVERY_QUEUE_SQL, []
    else:
        scope_sql, scope_params = _MEMBER_QUEUES_SQL, [user.pk]
    if queue is not None:
        scope_sql = f"SELECT id FROM ({scope_sql}) s WHERE id = %s"  # noqa: S608
        scope_params = [*scope_params, queue.pk]
    order = "ORDER BY c.priority DESC, c.due_at, c.id LIMIT 1"
    if connection.vendor == "postgresql":
        order += " FOR UPDATE OF c SKIP LOCKED"
    sql = _CLAIM_SQL.format(scope=scope_sql, candidate=_CANDIDATE_SQL, order=order)
    lease = now + timedelta(seconds=LEASE_SECONDS)
    candidate_params = [now, skip, user.pk, user.pk]
    params = [
        *scope_params,
        user.pk,  # held
        user.pk,
        user.pk,
        now,
        lease,  # SET
        *candidate_params,
        user.pk,  # assigned to the user
        *candidate_params,  # unassigned, or overdue
        user.pk,
        now,  # the row, once locked
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return None if row is None else row[0]


def task_claim_next(
    *, user, queue: ReviewQueue | None = None, skip: ReviewTask | None = None
) -> ReviewTask | None:
    """Give the user the next task under a lease of LEASE_SECONDS, or None when nothing waits.

    Taken from the queues the user is a member of (operators: every queue; `queue` narrows it
    to one, PermissionDenied when the user does not work it), within the clients they serve.
    A task the user already holds comes back first (its lease renewed); then tasks assigned to
    them; then the rest, assigned tasks of others only once overdue. Order: overdue first
    (escalation raised their priority), then priority, then due time. Claiming gives back any
    other task the user held.

    `skip`: the task the user passes over; what they hold goes back to its queue for others
    and this claim takes another task (None when no other waits)."""
    role = reviewer_role(user)
    if skip is not None:
        _release_others(user)
    task_id = _claim_one(user, role, queue, timezone.now(), skip=skip.pk if skip else 0)
    if task_id is None:
        if queue is not None:
            _member_check(user, role, queue)  # say so rather than "nothing waits"
        _release_others(user)
        return None
    _release_others(user, keep=task_id)
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
