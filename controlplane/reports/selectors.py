"""Access-checked reads of the client reports. Every number comes from the rollups
(`pipelines.metrics`, `StepRollup`), the gauge samples, the budgets and aggregate queries over
review tasks; none counts the item table.

Scoping: a report belongs to one client; `report_client_get_for_user` is the only way a view
gets one (404 outside the user's clients, through `controlplane.selectors`), and every read
below takes that client's pipelines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

from django.conf import settings
from django.db.models import (
    Avg,
    Count,
    DecimalField,
    F,
    Q,
    QuerySet,
    Sum,
)
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, TruncDate

from controlplane.models import Client
from controlplane.monitoring.models import GaugeSample
from controlplane.reports.models import (
    DEFAULT_REVIEW_RATE_PER_HOUR,
    ReportDelivery,
    ReportSchedule,
    ReportSettings,
)
from controlplane.selectors import client_get_for_user, client_list_for_user, heartbeat_list
from pipelines.models import LedgerEvent, Pipeline, Rollup, RouteEntry, StepRollup
from review.models import QueueMembership, ReviewTask

# Heartbeats older than this do not count as a live worker cluster (as on the dashboards).
HEARTBEAT_ALIVE_SECONDS = 120
# Rollup counters of items that are done, whatever the outcome.
FINISHED = ("accepted", "rejected", "quarantined", "dead_lettered")


def report_client_list_for_user(*, user) -> QuerySet[Client]:
    """The clients whose reports the user may open: all for operators, their own for clients."""
    return client_list_for_user(user=user).order_by("name")


def report_client_get_for_user(*, user, slug: str) -> Client:
    """One client's reports; 404 when the user may not see that client."""
    return client_get_for_user(user=user, slug=slug)


def report_pipeline_list(*, client: Client) -> list[Pipeline]:
    return list(Pipeline.objects.filter(client=client).select_related("client").order_by("name"))


def review_rate_get(*, client: Client) -> Decimal:
    """What an hour of reviewer time costs for this client (the default when none is set)."""
    found = ReportSettings.objects.filter(client=client).values_list(
        "review_rate_per_hour", flat=True
    )
    return next(iter(found), DEFAULT_REVIEW_RATE_PER_HOUR)


def peak_minute(*, pipeline_ids: Sequence[int], since: datetime, until: datetime) -> int:
    """The most items finished in one minute over the pipelines (summed), from the rollups: one
    aggregate query ordered by its total, first row only."""
    if not pipeline_ids:
        return 0
    finished = sum((F(name) for name in FINISHED[1:]), F(FINISHED[0]))
    row = (
        Rollup.objects.filter(pipeline_id__in=pipeline_ids, minute__gte=since, minute__lt=until)
        .values("minute")
        .annotate(n=Sum(finished))
        .order_by("-n")
        .values_list("n", flat=True)[:1]
    )
    return int(next(iter(row), 0) or 0)


def step_cost_list(*, pipeline_ids: Sequence[int], since: datetime, until: datetime) -> list[dict]:
    """Per step: its pipeline and name, attempts, cost, what cascade routing saved and its
    escalations over the period (StepRollup)."""
    return list(
        StepRollup.objects.filter(pipeline_id__in=pipeline_ids, minute__gte=since, minute__lt=until)
        .values("step_id", "step__name", "step__position", "pipeline__name")
        .annotate(
            started=Sum("started"),
            cost=Sum("cost"),
            cascade_saved=Sum("cascade_saved"),
            escalations=Sum("escalations"),
        )
        .order_by("pipeline__name", "step__position")
    )


def model_cost_list(*, pipeline_ids: Sequence[int], since: datetime, until: datetime) -> list[dict]:
    """Per model: calls and cost over the period.

    The rollups have no model dimension, so this is the one read of the ledger: a single
    aggregate over the period's ledger events of the client's pipelines that name a model
    (each model call writes one), grouped by the model named in the event. The period is at
    most `calc.MAX_DAYS` long, which bounds it."""
    money = DecimalField(max_digits=16, decimal_places=6)
    rows = (
        LedgerEvent.objects.filter(
            item__pipeline_id__in=pipeline_ids,
            at__gte=since,
            at__lt=until,
            detail__has_key="model",
        )
        .annotate(model=KeyTextTransform("model", "detail"))
        .values("model")
        .annotate(
            calls=Count("id"),
            cache_hits=Count("id", filter=Q(detail__cache_hit=True)),
            cost=Sum(Cast(KeyTextTransform("cost", "detail"), money)),
        )
        .order_by("model")
    )
    return [
        {**row, "cost": Decimal(str(row["cost"] or 0)).quantize(Decimal("0.000001"))}
        for row in rows
    ]


@dataclass
class ReviewNumbers:
    """Decisions on one pipeline's review tasks in a period."""

    decisions: int = 0
    reviews: int = 0
    rejected: int = 0
    handling_seconds: float = 0.0
    mean_handling_seconds: float | None = None
    audits_judged: int = 0
    audits_disagreed: int = 0
    reviewers: int = 0


def review_numbers_by_pipeline(
    *, pipeline_ids: Sequence[int], since: datetime, until: datetime
) -> dict[int, ReviewNumbers]:
    """Per pipeline, the decisions of the period (decided review tasks and blind audits) and
    the reviewers who are members of its queues: two aggregate queries over review tasks and
    memberships. (review.selectors scopes by the reviewer who asks; a report is scoped by
    client, so it aggregates here by pipeline.)"""
    found = {pid: ReviewNumbers() for pid in pipeline_ids}
    audit = Q(kind=ReviewTask.Kind.AUDIT)
    rows = (
        _decided(pipeline_ids, since, until)
        .values("queue__pipeline_id")
        .annotate(
            decisions=Count("id"),
            reviews=Count("id", filter=~audit),
            rejected=Count("id", filter=~audit & Q(decision=ReviewTask.Decision.REJECT)),
            handling=Sum("handling_seconds"),
            mean_handling=Avg("handling_seconds"),
            judged=Count("id", filter=audit & Q(agreed__isnull=False)),
            disagreed=Count("id", filter=audit & Q(agreed=False)),
        )
        .order_by()
    )
    for row in rows:
        numbers = found[row["queue__pipeline_id"]]
        numbers.decisions = row["decisions"]
        numbers.reviews = row["reviews"]
        numbers.rejected = row["rejected"]
        numbers.handling_seconds = float(row["handling"] or 0)
        numbers.mean_handling_seconds = row["mean_handling"]
        numbers.audits_judged = row["judged"]
        numbers.audits_disagreed = row["disagreed"]
    members = (
        QueueMembership.objects.filter(queue__pipeline_id__in=pipeline_ids, user__is_active=True)
        .values("queue__pipeline_id")
        .annotate(n=Count("user_id", distinct=True))
        .order_by()
    )
    for row in members:
        found[row["queue__pipeline_id"]].reviewers = row["n"]
    return found


def _decided(pipeline_ids: Sequence[int], since: datetime, until: datetime):
    """The pipelines' review tasks (reviews and blind audits) decided in the period."""
    return ReviewTask.objects.filter(
        queue__pipeline_id__in=pipeline_ids,
        status=ReviewTask.Status.DECIDED,
        decided_at__gte=since,
        decided_at__lt=until,
    )


def review_seconds_by_day(
    *, pipeline_ids: Sequence[int], since: datetime, until: datetime
) -> dict[date, float]:
    """Reviewer seconds spent per UTC day on the pipelines' tasks: one aggregate query."""
    rows = (
        _decided(pipeline_ids, since, until)
        .annotate(day=TruncDate("decided_at", tzinfo=UTC))
        .values("day")
        .annotate(seconds=Sum("handling_seconds"))
        .order_by()
    )
    return {row["day"]: float(row["seconds"] or 0) for row in rows}


def gauge_latest(*, pipeline_ids: Sequence[int], before: datetime) -> dict[int, GaugeSample]:
    """Per pipeline, its last gauge sample taken before `before` (one index lookup each)."""
    found = {}
    for pid in pipeline_ids:
        sample = GaugeSample.objects.filter(pipeline_id=pid, at__lt=before).order_by("-at").first()
        if sample is not None:
            found[pid] = sample
    return found


@dataclass(frozen=True)
class RouteLimit:
    """The first model of a step's route and the limits of its provider."""

    pipeline_id: int
    step_name: str
    provider: str
    rate_limit_per_minute: int
    max_concurrency: int


def route_limit_list(*, pipeline_ids: Sequence[int]) -> list[RouteLimit]:
    """The first model of every step's route, with its provider's rate and concurrency limits."""
    entries = (
        RouteEntry.objects.filter(step__pipeline_id__in=pipeline_ids, position=1)
        .select_related("step", "model__provider")
        .order_by("step__pipeline_id", "step__position")
    )
    return [
        RouteLimit(
            pipeline_id=e.step.pipeline_id,
            step_name=e.step.name,
            provider=e.model.provider.name,
            rate_limit_per_minute=e.model.provider.rate_limit_per_minute,
            max_concurrency=e.model.provider.max_concurrency,
        )
        for e in entries
    ]


def worker_count(*, now: datetime) -> int:
    """Worker processes alive now: live clusters times the processes each runs."""
    clusters = sum(
        1
        for beat in heartbeat_list()
        if (now - beat.last_seen).total_seconds() < HEARTBEAT_ALIVE_SECONDS
    )
    return clusters * int(settings.Q_CLUSTER["workers"])


def report_schedule_list(*, client: Client) -> QuerySet[ReportSchedule]:
    return ReportSchedule.objects.filter(client=client).order_by("cadence", "id")


def report_schedule_get(*, client: Client, pk: int | None) -> ReportSchedule | None:
    """One of the client's schedules, or None (a schedule of another client is not found)."""
    if pk is None:
        return None
    return ReportSchedule.objects.filter(client=client, pk=pk).first()


def report_delivery_list(*, client: Client, limit: int = 50) -> QuerySet[ReportDelivery]:
    """What was sent for the client's schedules, newest first."""
    return ReportDelivery.objects.filter(schedule__client=client).select_related("schedule")[:limit]
