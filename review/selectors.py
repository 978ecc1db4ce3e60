"""Access-checked reads of review: a reviewer sees the queues they belong to, within the clients
they serve; operators see every queue; clients see none. Numbers are aggregate queries over
review tasks, never counts of the item table."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.db.models import Count, Exists, Max, Min, OuterRef, Q, QuerySet, Sum
from django.http import Http404
from django.utils import timezone

from controlplane.params import parse_id
from controlplane.roles import Role, role_of
from controlplane.selectors import client_list_for_user
from pipelines.models import Step
from pipelines.threshold import Outcome
from review.models import QueueMembership, ReviewQueue, ReviewTask

ACTIVE = ReviewTask.ACTIVE
# Ages of waiting tasks on the backlog view: (label, from seconds, below seconds).
AGE_BUCKETS = (
    ("< 1 h", 0, 3600),
    ("1-4 h", 3600, 4 * 3600),
    ("4-24 h", 4 * 3600, 24 * 3600),
    ("> 24 h", 24 * 3600, None),
)


def queue_list_for_user(*, user) -> QuerySet[ReviewQueue]:
    """Queues the user works: every queue for operators; for reviewers the queues they are a
    member of, of the clients they serve; none for anyone else."""
    role = role_of(user)
    queues = ReviewQueue.objects.select_related("pipeline__client", "step")
    if role == Role.OPERATOR:
        return queues.all()
    if role != Role.REVIEWER:
        return queues.none()
    return queues.filter(
        memberships__user=user, pipeline__client__in=client_list_for_user(user=user)
    )


def queue_get_for_user(*, user, pk: int | str) -> ReviewQueue:
    """One queue the user works; 404 for any other."""
    queue_id = parse_id(pk)
    try:
        return queue_list_for_user(user=user).get(pk=queue_id)
    except ReviewQueue.DoesNotExist:
        raise Http404("No such review queue") from None


def queue_ids_for_user(*, user) -> list[int] | None:
    """Ids of the queues the user works, or None for "every queue" (operators)."""
    if role_of(user) == Role.OPERATOR:
        return None
    return list(queue_list_for_user(user=user).values_list("id", flat=True))


def task_list_for_user(*, user) -> QuerySet[ReviewTask]:
    """Every task (any status) in the queues the user works."""
    role = role_of(user)
    if role == Role.OPERATOR:
        return ReviewTask.objects.all()
    if role != Role.REVIEWER:
        return ReviewTask.objects.none()
    return ReviewTask.objects.filter(queue__in=queue_list_for_user(user=user).values("id"))


def _with_relations(tasks: QuerySet[ReviewTask]) -> QuerySet[ReviewTask]:
    return tasks.select_related(
        "item__pipeline__client", "step", "queue", "assignee", "claimed_by", "decided_by"
    )


def task_get_for_user(*, user, pk: int | str) -> ReviewTask:
    """One task with its item, step, queue and people; 404 outside the user's queues (a client
    of one customer, or a reviewer of another, gets the same answer as for no task at all)."""
    task_id = parse_id(pk)
    try:
        return _with_relations(task_list_for_user(user=user)).get(pk=task_id)
    except ReviewTask.DoesNotExist:
        raise Http404("No such review task") from None


def task_open_list_for_user(
    *, user, queue: ReviewQueue | None = None, limit: int = 100
) -> QuerySet[ReviewTask]:
    """Tasks waiting for a person (open or claimed) in the order they are handed out: overdue
    first, then priority, then due time."""
    tasks = task_list_for_user(user=user).filter(status__in=ACTIVE)
    if queue is not None:
        tasks = tasks.filter(queue=queue)
    return _with_relations(tasks).order_by("-priority", "due_at", "id")[:limit]


def task_held_get(*, user) -> ReviewTask | None:
    """The task the user holds now (claimed and not taken by anyone since), if any."""
    return (
        _with_relations(ReviewTask.objects.filter(status=ReviewTask.Status.CLAIMED))
        .filter(claimed_by=user)
        .order_by("-priority", "due_at", "id")
        .first()
    )


@dataclass(frozen=True)
class QueueCounts:
    """A queue and its tasks: open (waiting for someone, expired leases included), claimed
    (held under a live lease) and overdue (either, past due)."""

    queue: ReviewQueue
    open: int
    claimed: int
    overdue: int
    oldest_due_at: datetime | None
    # Changes when the queue's waiting tasks change although the counts do not (one decided
    # and one opened, an assignment, a claim passing to someone else, an escalation): the live
    # page compares it between ticks.
    fingerprint: tuple = ()


def queue_counts_list(*, user, now: datetime | None = None) -> list[QueueCounts]:
    """Counts of every queue the user works (empty queues too), in one aggregate query over
    the active tasks."""
    now = now or timezone.now()
    queues = list(queue_list_for_user(user=user).order_by("pipeline__client__name", "name"))
    live = Q(status=ReviewTask.Status.CLAIMED, lease_expires_at__gt=now)
    rows = {
        row["queue_id"]: row
        for row in ReviewTask.objects.filter(status__in=ACTIVE, queue_id__in=[q.pk for q in queues])
        .order_by()
        .values("queue_id")
        .annotate(
            open=Count("id", filter=~live),
            claimed=Count("id", filter=live),
            overdue=Count("id", filter=Q(overdue=True)),
            oldest_due_at=Min("due_at"),
            newest=Max("id"),
            assignees=Sum("assignee_id"),
            holders=Sum("claimed_by_id", filter=live),
            priorities=Sum("priority"),
        )
    }
    empty = {"open": 0, "claimed": 0, "overdue": 0, "oldest_due_at": None}
    fingerprint_of = ("newest", "assignees", "holders", "priorities")
    return [
        QueueCounts(
            queue=queue,
            open=rows.get(queue.pk, empty)["open"],
            claimed=rows.get(queue.pk, empty)["claimed"],
            overdue=rows.get(queue.pk, empty)["overdue"],
            oldest_due_at=rows.get(queue.pk, empty)["oldest_due_at"],
            fingerprint=tuple(rows.get(queue.pk, {}).get(key) for key in fingerprint_of),
        )
        for queue in queues
    ]


@dataclass(frozen=True)
class AgeBucket:
    label: str
    count: int


@dataclass(frozen=True)
class Backlog:
    """Tasks waiting (open or claimed) by age since they were opened, what the last hour's
    decisions say about the pace, and when the backlog would be empty at that pace."""

    waiting: int
    overdue: int
    buckets: tuple[AgeBucket, ...]
    oldest_opened_at: datetime | None
    decided_last_hour: int
    # Decisions per hour, measured over the last hour.
    throughput_per_hour: float
    # Seconds to decide every waiting task at that pace; None when nobody decided anything.
    drain_seconds: float | None


def backlog_get(*, user, queue: ReviewQueue | None = None, now: datetime | None = None) -> Backlog:
    """The backlog of the queues the user works (or of one of them): two aggregate queries."""
    now = now or timezone.now()
    tasks = task_list_for_user(user=user)
    if queue is not None:
        tasks = tasks.filter(queue=queue)
    counts = {}
    for index, (_, start, end) in enumerate(AGE_BUCKETS):
        window = Q(opened_at__lte=now - timedelta(seconds=start))
        if end is not None:
            window &= Q(opened_at__gt=now - timedelta(seconds=end))
        counts[f"bucket{index}"] = Count("id", filter=window)
    waiting = (
        tasks.filter(status__in=ACTIVE)
        .order_by()
        .aggregate(
            waiting=Count("id"),
            overdue=Count("id", filter=Q(overdue=True)),
            oldest=Min("opened_at"),
            **counts,
        )
    )
    decided = tasks.filter(
        status=ReviewTask.Status.DECIDED, decided_at__gt=now - timedelta(hours=1)
    ).count()
    # Tasks opened a moment after `now` (a clock read before a concurrent insert) are newest.
    buckets = [waiting[f"bucket{i}"] for i in range(len(AGE_BUCKETS))]
    buckets[0] += waiting["waiting"] - sum(buckets)
    return Backlog(
        waiting=waiting["waiting"],
        overdue=waiting["overdue"],
        buckets=tuple(
            AgeBucket(label, count)
            for (label, _, _), count in zip(AGE_BUCKETS, buckets, strict=True)
        ),
        oldest_opened_at=waiting["oldest"],
        decided_last_hour=decided,
        throughput_per_hour=float(decided),
        drain_seconds=waiting["waiting"] / decided * 3600 if decided else None,
    )


@dataclass(frozen=True)
class ReviewerStats:
    """One person's decisions in a period. Rates are shares of their decisions (0 to 1);
    audit_agreement is the share of their blind audits that matched the model (None without
    audits); peer_audits counts their blind audits of outputs another person audited too, and
    peer_agreement the share of those where both gave the same answer (None without any)."""

    user_id: int
    username: str
    decisions: int
    decisions_per_hour: float
    median_handling_seconds: float | None
    approved: int
    edited: int
    rejected: int
    approve_rate: float
    edit_rate: float
    reject_rate: float
    audits: int
    audit_agreement: float | None
    peer_audits: int = 0
    peer_agreement: float | None = None


def _other_opinions() -> QuerySet[ReviewTask]:
    """Decided blind audits of the outer task's item and step by someone else."""
    return (
        ReviewTask.objects.filter(
            item_id=OuterRef("item_id"),
            step_id=OuterRef("step_id"),
            kind=ReviewTask.Kind.AUDIT,
            status=ReviewTask.Status.DECIDED,
            decided_by__isnull=False,
        )
        .exclude(decided_by=OuterRef("decided_by"))
        .order_by()
    )


def _same_answer() -> Q:
    """The other opinion gave the outer task's answer: the same output, or both rejected."""
    return Q(decided_output=OuterRef("decided_output")) | Q(
        decision=ReviewTask.Decision.REJECT, decision__exact=OuterRef("decision")
    )


def reviewer_stats_list(
    *, user, since: datetime | None = None, until: datetime | None = None
) -> list[ReviewerStats]:
    """Statistics of everyone who decided tasks from `since` (default: 24 hours ago) until
    `until` (default: now), by username. Operators see every person; a reviewer sees their
    own row; clients none. One aggregate query (agreement with other reviewers from
    correlated subqueries on each audit), and one indexed query per person for the median."""
    until = until or timezone.now()
    since = since or until - timedelta(hours=24)
    role = role_of(user)
    decided = ReviewTask.objects.filter(
        status=ReviewTask.Status.DECIDED,
        decided_at__gte=since,
        decided_at__lt=until,
        decided_by__isnull=False,
    )
    if role == Role.REVIEWER:
        decided = decided.filter(decided_by=user)
    elif role != Role.OPERATOR:
        return []
    Decision = ReviewTask.Decision
    audit = Q(kind=ReviewTask.Kind.AUDIT)
    rows = (
        decided.order_by()
        .annotate(
            peer=Exists(_other_opinions()),
            peer_agreed=Exists(_other_opinions().filter(_same_answer())),
        )
        .values("decided_by", "decided_by__username")
        .annotate(
            decisions=Count("id"),
            approved=Count("id", filter=Q(decision=Decision.APPROVE)),
            edited=Count("id", filter=Q(decision=Decision.EDIT)),
            rejected=Count("id", filter=Q(decision=Decision.REJECT)),
            audits=Count("id", filter=audit),
            audits_judged=Count("id", filter=audit & Q(agreed__isnull=False)),
            audits_agreed=Count("id", filter=audit & Q(agreed=True)),
            timed=Count("handling_seconds"),
            peer_audits=Count("id", filter=audit & Q(peer=True)),
            peer_agreed_audits=Count("id", filter=audit & Q(peer_agreed=True)),
        )
        .order_by("decided_by__username")
    )
    hours = max((until - since).total_seconds() / 3600, 1 / 60)
    stats = []
    for row in rows:
        n = row["decisions"]
        stats.append(
            ReviewerStats(
                user_id=row["decided_by"],
                username=row["decided_by__username"],
                decisions=n,
                decisions_per_hour=n / hours,
                median_handling_seconds=_median_handling(
                    decided.filter(decided_by=row["decided_by"]), row["timed"]
                ),
                approved=row["approved"],
                edited=row["edited"],
                rejected=row["rejected"],
                approve_rate=row["approved"] / n,
                edit_rate=row["edited"] / n,
                reject_rate=row["rejected"] / n,
                audits=row["audits"],
                audit_agreement=row["audits_agreed"] / row["audits_judged"]
                if row["audits_judged"]
                else None,
                peer_audits=row["peer_audits"],
                peer_agreement=row["peer_agreed_audits"] / row["peer_audits"]
                if row["peer_audits"]
                else None,
            )
        )
    return stats


@dataclass(frozen=True)
class PeerAgreement:
    """Outputs audited blind by two people whose second answer came in a period, and the share
    where both gave the same answer (None without any)."""

    pairs: int
    agreed: int
    rate: float | None


def peer_agreement_get(
    *, user, since: datetime | None = None, until: datetime | None = None
) -> PeerAgreement:
    """Agreement between reviewers over every pair of blind audits of the same output (for a
    reviewer: the pairs they are part of), each pair counted once when its later decision
    falls from `since` (default: 24 hours ago) until `until` (default: now). One aggregate
    query."""
    until = until or timezone.now()
    since = since or until - timedelta(hours=24)
    role = role_of(user)
    later = ReviewTask.objects.filter(
        kind=ReviewTask.Kind.AUDIT,
        status=ReviewTask.Status.DECIDED,
        decided_at__gte=since,
        decided_at__lt=until,
        decided_by__isnull=False,
    )
    if role != Role.OPERATOR and role != Role.REVIEWER:
        return PeerAgreement(pairs=0, agreed=0, rate=None)
    earlier = _other_opinions().filter(
        Q(decided_at__lt=OuterRef("decided_at"))
        | Q(decided_at=OuterRef("decided_at"), pk__lt=OuterRef("pk"))
    )
    if role == Role.REVIEWER:
        # Their own later answers, and the later answers of others to outputs they audited.
        later = later.filter(
            Q(decided_by=user)
            | Exists(
                ReviewTask.objects.filter(
                    item_id=OuterRef("item_id"),
                    step_id=OuterRef("step_id"),
                    kind=ReviewTask.Kind.AUDIT,
                    decided_by=user,
                ).exclude(pk=OuterRef("pk"))
            )
        )
    counts = (
        later.order_by()
        .annotate(pair=Exists(earlier), pair_agreed=Exists(earlier.filter(_same_answer())))
        .aggregate(
            pairs=Count("id", filter=Q(pair=True)),
            agreed=Count("id", filter=Q(pair_agreed=True)),
        )
    )
    pairs, agreed = counts["pairs"], counts["agreed"]
    return PeerAgreement(pairs=pairs, agreed=agreed, rate=agreed / pairs if pairs else None)


def _median_handling(tasks: QuerySet[ReviewTask], count: int) -> float | None:
    """The median handling time of `count` timed tasks: the middle one or two rows only."""
    if not count:
        return None
    middle = list(
        tasks.filter(handling_seconds__isnull=False)
        .order_by("handling_seconds")
        .values_list("handling_seconds", flat=True)[(count - 1) // 2 : count // 2 + 1]
    )
    return statistics.fmean(middle) if middle else None


def audit_outcome_list(*, step: Step, limit: int = 10_000) -> list[Outcome]:
    """The step's blind audits as threshold outcomes: the model's confidence in an accepted
    output and whether a person gave the same answer. Newest first, at most `limit`."""
    rows = (
        ReviewTask.objects.filter(
            step=step,
            kind=ReviewTask.Kind.AUDIT,
            status=ReviewTask.Status.DECIDED,
            confidence__isnull=False,
            agreed__isnull=False,
        )
        .order_by("-decided_at")
        .values_list("confidence", "agreed")[:limit]
    )
    return [Outcome(confidence=confidence, correct=agreed) for confidence, agreed in rows]


@dataclass(frozen=True)
class QueueBacklog:
    queue: ReviewQueue
    backlog: Backlog


def queue_backlog_list(*, user, now: datetime | None = None) -> list[QueueBacklog]:
    """The backlog of each queue the user works (empty queues too), by client and name, all
    measured at the same `now`: two aggregate queries per queue."""
    now = now or timezone.now()
    queues = queue_list_for_user(user=user).order_by("pipeline__client__name", "name")
    return [
        QueueBacklog(queue=queue, backlog=backlog_get(user=user, queue=queue, now=now))
        for queue in queues
    ]


def _people():
    return get_user_model().objects.filter(is_active=True).order_by("username")


def _operators() -> Q:
    return Q(is_superuser=True) | Q(groups__name=Role.OPERATOR.value)


def queue_member_list(*, queue: ReviewQueue) -> QuerySet:
    """The people who work a queue, by username."""
    return _people().filter(review_memberships__queue=queue)


def queue_candidate_list(*, queue: ReviewQueue) -> QuerySet:
    """Reviewers who serve the queue's client and are not members of the queue yet."""
    return (
        _people()
        .filter(groups__name=Role.REVIEWER.value, memberships__client_id=queue.pipeline.client_id)
        .exclude(review_memberships__queue=queue)
        .distinct()
    )


def queue_person_get(*, queue: ReviewQueue, pk: int | str):
    """A person who may be named on a queue (a member, a reviewer of its client, or an
    operator); 404 for anyone else, so a form cannot probe other users."""
    person_id = parse_id(pk)
    people = _people().filter(
        _operators()
        | Q(review_memberships__queue=queue)
        | Q(groups__name=Role.REVIEWER.value, memberships__client_id=queue.pipeline.client_id)
    )
    person = people.filter(pk=person_id).first()
    if person is None:
        raise Http404("No such person")
    return person


def queue_assignee_lists(*, queue_ids: list[int]) -> dict[int, list]:
    """Per queue, the people a task of it may be assigned to: its members, then operators.
    Two queries whatever the number of queues."""
    operators = list(_people().filter(_operators()).distinct())
    members: dict[int, list] = {queue_id: [] for queue_id in queue_ids}
    rows = (
        QueueMembership.objects.filter(queue_id__in=queue_ids, user__is_active=True)
        .select_related("user")
        .order_by("user__username")
    )
    for membership in rows:
        members[membership.queue_id].append(membership.user)
    return {queue_id: [*people, *operators] for queue_id, people in members.items()}
