"""Reading the numbers the engine keeps: per-minute rollups and latency histograms over a range,
and the live gauges (queue depth, in flight, review backlog). Dashboards, alerts, reports and
/metrics all read here; none of them counts the item table beyond the capped gauges.

Callers scope `pipeline_ids` to what the viewer may see (pipelines.selectors) before asking.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import connection
from django.db.models import F, OuterRef, Q, QuerySet, Subquery, Sum, Value
from django.db.models.functions import TruncHour

from pipelines.histogram import percentile
from pipelines.models import Item, LatencyRollup, Pipeline, Rollup, StepLatencyRollup, StepRollup

# Range name -> (minutes, resolution of the series).
RANGES: dict[str, tuple[int, str]] = {
    "15m": (15, "minute"),
    "1h": (60, "minute"),
    "24h": (1440, "hour"),
    "7d": (10080, "hour"),
}
DEFAULT_RANGE = "1h"

COUNTERS = tuple(
    f.name for f in Rollup._meta.concrete_fields if f.name not in ("id", "pipeline", "minute")
)
MEASURES = tuple(LatencyRollup.Measure.values)
STEP_COUNTERS = tuple(
    f.name
    for f in StepRollup._meta.concrete_fields
    if f.name not in ("id", "pipeline", "step", "version", "minute")
)
# A step's latency buckets time its model calls: on a step's Point they are this measure.
STEP_MEASURE = LatencyRollup.Measure.PROCESSING.value
QUANTILES = (50, 95, 99)
# Gauges count at most this many rows per pipeline and status: a backlog of a million shows as
# "100,000+" and costs the same as one of a hundred thousand.
GAUGE_CAP = 100_000
# Pipeline and status pairs counted per statement (SQLite allows some 32,000 parameters).
GAUGE_STATEMENT_PAIRS = 500
GAUGE_STATUSES = (
    Item.Status.QUEUED,
    Item.Status.RUNNING,
    Item.Status.WAITING_RETRY,
    Item.Status.IN_REVIEW,
    Item.Status.DELIVERING,
)


def range_bounds(name: str, *, now: datetime) -> tuple[datetime, datetime, str]:
    """(since, until, resolution) of a named range ending now; unknown names get the default."""
    minutes, resolution = RANGES.get(name, RANGES[DEFAULT_RANGE])
    until = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    return until - timedelta(minutes=minutes), until, resolution


@dataclass
class Point:
    """One minute (or hour) of the series, summed over the pipelines asked for."""

    at: datetime
    counts: dict[str, int | Decimal] = field(default_factory=dict)
    latency: dict[str, dict[int, int]] = field(default_factory=dict)

    def count(self, name: str) -> int | Decimal:
        return self.counts.get(name, 0)

    def percentile(self, measure: str, q: float) -> float | None:
        return percentile(self.latency.get(measure, {}), q)

    @property
    def failed(self) -> int:
        return sum(int(self.count(n)) for n in COUNTERS if n.startswith("failed_"))


def series(
    *,
    pipeline_ids: Iterable[int],
    since: datetime,
    until: datetime,
    resolution: str = "minute",
    measures: Sequence[str] = MEASURES,
) -> list[Point]:
    """Every minute (or hour) from `since` to `until` with its counters and the latency buckets
    of `measures` (all by default: ask only for what is drawn), summed over the pipelines;
    minutes without work are present with zeros, so a chart's x axis has no gaps. Two
    queries."""
    ids = list(pipeline_ids)
    step = timedelta(hours=1) if resolution == "hour" else timedelta(minutes=1)
    start = since.replace(second=0, microsecond=0)
    if resolution == "hour":
        start = start.replace(minute=0)
    points: dict[datetime, Point] = {}
    at = start
    while at < until:
        points[at] = Point(at=at)
        at += step
    if not ids:
        return list(points.values())

    rollups = Rollup.objects.filter(pipeline_id__in=ids, minute__gte=start, minute__lt=until)
    latencies = _measures_only(
        LatencyRollup.objects.filter(pipeline_id__in=ids, minute__gte=start, minute__lt=until),
        measures,
    )
    if resolution == "hour":
        rows = (
            rollups.annotate(at=TruncHour("minute"))
            .values("at")
            .annotate(**{name: Sum(name) for name in COUNTERS})
            .order_by()
        )
        buckets = (
            latencies.annotate(at=TruncHour("minute"))
            .values("at", "measure", "bucket")
            .annotate(n=Sum("count"))
            .order_by()
        )
    else:
        rows = (
            rollups.values("minute").annotate(**{name: Sum(name) for name in COUNTERS}).order_by()
        )
        buckets = (
            latencies.values("minute", "measure", "bucket").annotate(n=Sum("count")).order_by()
        )
    for row in rows:
        at = row.pop("at", None) or row.pop("minute")
        point = points.get(at) or points.setdefault(at, Point(at=at))
        point.counts = {name: value or 0 for name, value in row.items() if name in COUNTERS}
    for row in buckets:
        at = row.get("at") or row.get("minute")
        point = points.get(at) or points.setdefault(at, Point(at=at))
        point.latency.setdefault(row["measure"], {})[row["bucket"]] = row["n"]
    return [points[at] for at in sorted(points)]


def _measures_only(latencies: QuerySet[LatencyRollup], measures: Sequence[str]):
    """The latency rows of `measures` only (no filter when all are asked for)."""
    if set(measures) >= set(MEASURES):
        return latencies
    return latencies.filter(measure__in=list(measures))


def totals(points: Sequence[Point]) -> Point:
    """The whole range as one point: counters summed, histograms merged."""
    total = Point(at=points[0].at if points else datetime.min)
    for point in points:
        for name, value in point.counts.items():
            total.counts[name] = total.counts.get(name, 0) + value
        for measure, buckets in point.latency.items():
            merged = total.latency.setdefault(measure, {})
            for bucket, n in buckets.items():
                merged[bucket] = merged.get(bucket, 0) + n
    return total


def gauges(*, pipeline_ids: Iterable[int]) -> dict[int, dict[str, int]]:
    """Per pipeline, how many items are queued, running, waiting to retry, in review and being
    delivered right now, each capped at GAUGE_CAP. One capped count per pipeline and status,
    each an index range scan, all sent as one statement: a dashboard tick over many pipelines
    is one round trip, not five per pipeline."""
    ids = list(pipeline_ids)
    statuses = [status.value for status in GAUGE_STATUSES]  # plain strings for the driver
    found: dict[int, dict[str, int]] = {pid: dict.fromkeys(statuses, 0) for pid in ids}
    pairs = [(pid, status) for pid in ids for status in statuses]
    if not pairs:
        return found
    quote = connection.ops.quote_name
    table = quote(Item._meta.db_table)
    one = (
        "SELECT %s, %s, (SELECT COUNT(*) FROM (SELECT 1 FROM "  # noqa: S608 (our own table)
        f"{table} WHERE pipeline_id = %s AND status = %s LIMIT %s) AS capped)"
    )
    with connection.cursor() as cursor:
        for start in range(0, len(pairs), GAUGE_STATEMENT_PAIRS):
            chunk = pairs[start : start + GAUGE_STATEMENT_PAIRS]
            params = [v for pid, status in chunk for v in (pid, status, pid, status, GAUGE_CAP)]
            cursor.execute(" UNION ALL ".join([one] * len(chunk)), params)
            for pid, status, n in cursor.fetchall():
                found[int(pid)][status] = n
    return found


def gauges_total(per_pipeline: dict[int, dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for values in per_pipeline.values():
        for name, n in values.items():
            total[name] = total.get(name, 0) + n
    return total


def oldest_queued_age(*, pipeline_ids: Iterable[int], now: datetime) -> float | None:
    """Seconds the oldest queued item has waited, over the pipelines; None when none waits.
    One index lookup per pipeline (the oldest id of its queue)."""
    oldest = [
        at
        for pid in pipeline_ids
        for at in Item.objects.filter(pipeline_id=pid, status=Item.Status.QUEUED)
        .order_by("id")
        .values_list("created_at", flat=True)[:1]
    ]
    return (now - min(oldest)).total_seconds() if oldest else None


def oldest_queued_ages(*, pipeline_ids: Iterable[int], now: datetime) -> dict[int, float | None]:
    """Per pipeline, seconds its oldest queued item has waited (None when none waits). One
    query for all of them: an index lookup per pipeline (the oldest id of its queue)."""
    oldest = Subquery(
        Item.objects.filter(pipeline_id=OuterRef("pk"), status=Item.Status.QUEUED)
        .order_by("id")
        .values("created_at")[:1]
    )
    rows = (
        Pipeline.objects.filter(pk__in=list(pipeline_ids))
        .annotate(oldest=oldest)
        .values_list("pk", "oldest")
    )
    return {pk: None if at is None else (now - at).total_seconds() for pk, at in rows}


def totals_by_pipeline(
    *, pipeline_ids: Iterable[int], since: datetime, until: datetime
) -> dict[int, Point]:
    """Per pipeline, its counters summed and its latency buckets merged from `since` to `until`
    (whole minutes); every pipeline asked for is present, with zeros when it did nothing. Two
    queries whatever the number of pipelines: what alerts and /metrics read on every pass."""
    start = since.replace(second=0, microsecond=0)
    return totals_where(
        pipeline_ids=pipeline_ids, where=Q(minute__gte=start, minute__lt=until), at=start
    )


def totals_where(*, pipeline_ids: Iterable[int], where: Q, at: datetime) -> dict[int, Point]:
    """Per pipeline, its counters summed and its latency buckets merged over the rollup minutes
    `where` selects (a condition on `pipeline_id` and `minute`, so that each pipeline may have a
    range of its own); every pipeline asked for is present. Two queries."""
    ids = list(pipeline_ids)
    found = {pid: Point(at=at) for pid in ids}
    if not ids:
        return found
    rows = (
        Rollup.objects.filter(where, pipeline_id__in=ids)
        .values("pipeline_id")
        .annotate(**{name: Sum(name) for name in COUNTERS})
        .order_by()
    )
    for row in rows:
        pid = row.pop("pipeline_id")
        found[pid].counts = {name: value or 0 for name, value in row.items()}
    buckets = (
        LatencyRollup.objects.filter(where, pipeline_id__in=ids)
        .values("pipeline_id", "measure", "bucket")
        .annotate(n=Sum("count"))
        .order_by()
    )
    for row in buckets:
        latency = found[row["pipeline_id"]].latency
        latency.setdefault(row["measure"], {})[row["bucket"]] = row["n"]
    return found


def series_by_pipeline(
    *,
    pipeline_ids: Iterable[int],
    since: datetime,
    until: datetime,
    measures: Sequence[str] = MEASURES,
) -> dict[int, dict[datetime, Point]]:
    """Per pipeline, the minutes from `since` to `until` that have rollups, each with its
    counters and the latency buckets of `measures` (minutes without work are left out). Two
    queries for all the pipelines, so a reader watching many pipelines pays the same as one
    watching a single one."""
    ids = list(pipeline_ids)
    found: dict[int, dict[datetime, Point]] = {pid: {} for pid in ids}
    if not ids:
        return found
    rows = Rollup.objects.filter(pipeline_id__in=ids, minute__gte=since, minute__lt=until).values(
        "pipeline_id", "minute", *COUNTERS
    )
    for row in rows:
        at = row["minute"]
        found[row["pipeline_id"]][at] = Point(
            at=at, counts={name: row[name] or 0 for name in COUNTERS}
        )
    buckets = _measures_only(
        LatencyRollup.objects.filter(pipeline_id__in=ids, minute__gte=since, minute__lt=until),
        measures,
    ).values_list("pipeline_id", "minute", "measure", "bucket", "count")
    for pid, at, measure, bucket, n in buckets:
        point = found[pid].get(at) or found[pid].setdefault(at, Point(at=at))
        point.latency.setdefault(measure, {})[bucket] = n
    return found


def cost_since(
    *, pipeline_ids: Iterable[int], since: datetime
) -> dict[int, tuple[Decimal, Decimal]]:
    """Per pipeline, (cost, cost saved by the result cache) from `since` on; one query."""
    rows = (
        Rollup.objects.filter(pipeline_id__in=list(pipeline_ids), minute__gte=since)
        .values("pipeline_id")
        .annotate(cost=Sum("cost"), saved=Sum("cost_saved"))
        .order_by()
    )
    return {
        row["pipeline_id"]: (Decimal(row["cost"] or 0), Decimal(row["saved"] or 0)) for row in rows
    }


@dataclass(frozen=True)
class CostReport:
    """What a pipeline spent over a period and what saved money: the result cache, and
    cascade routing (answers a cheaper model gave, against the route's strongest model)."""

    cost: Decimal = Decimal("0")
    cache_saved: Decimal = Decimal("0")
    cascade_saved: Decimal = Decimal("0")
    escalations: int = 0


def cost_report(*, pipeline_id: int, since: datetime) -> CostReport:
    """A pipeline's cost and savings from `since` on, from the rollups; one query."""
    row = Rollup.objects.filter(pipeline_id=pipeline_id, minute__gte=since).aggregate(
        cost=Sum("cost"),
        cache=Sum("cost_saved"),
        cascade=Sum("cascade_saved"),
        escalations=Sum("escalations"),
    )
    return CostReport(
        cost=Decimal(row["cost"] or 0),
        cache_saved=Decimal(row["cache"] or 0),
        cascade_saved=Decimal(row["cascade"] or 0),
        escalations=row["escalations"] or 0,
    )


def step_totals(
    *, pipeline_ids: Iterable[int], since: datetime, until: datetime | None = None
) -> dict[int, dict[int, Point]]:
    """Per pipeline and step (every prompt version together), its counters summed and its
    model-call latency buckets merged (as STEP_MEASURE) from `since` to `until` (whole minutes;
    open-ended without one). Steps without rollups in the range are left out. One query."""
    found: dict[int, dict[int, Point]] = {}
    start = since.replace(second=0, microsecond=0)
    for pid, step_id, _, row in _step_rows(pipeline_ids, start, until, by_minute=False):
        point = found.setdefault(pid, {}).setdefault(step_id, Point(at=start))
        _step_row_add(point, row)
    return found


def step_minutes(
    *, pipeline_ids: Iterable[int], since: datetime, until: datetime
) -> dict[int, dict[datetime, dict[int, Point]]]:
    """Per pipeline, the minutes from `since` to `until` that have step rollups, each with its
    steps' counters and model-call latency buckets (every prompt version together). One query,
    whatever the number of pipelines and steps."""
    found: dict[int, dict[datetime, dict[int, Point]]] = {}
    for pid, step_id, at, row in _step_rows(pipeline_ids, since, until, by_minute=True):
        point = found.setdefault(pid, {}).setdefault(at, {}).setdefault(step_id, Point(at=at))
        _step_row_add(point, row)
    return found


def _step_rows(
    pipeline_ids: Iterable[int], since: datetime, until: datetime | None, *, by_minute: bool
):
    """The step rollups and step latency buckets of the pipelines in the range, summed per step
    (and minute), read together as one UNION ALL: a counters row has bucket -1, a bucket row has
    zero counters. Yields (pipeline id, step id, minute or None, row)."""
    ids = list(pipeline_ids)
    if not ids:
        return
    window = Q(minute__gte=since) & (Q(minute__lt=until) if until is not None else Q())
    minute = ("minute",) if by_minute else ()
    # The two halves line up column by column: pipeline, step, [minute], bucket, n, counters.
    counters = (
        StepRollup.objects.filter(window, pipeline_id__in=ids)
        .values("pipeline_id", "step_id", *minute)
        .annotate(
            bucket_of=Value(-1),
            n=Value(0),
            **{name: Sum(name) for name in STEP_COUNTERS},
        )
        .order_by()
    )
    buckets = (
        StepLatencyRollup.objects.filter(window, step__pipeline_id__in=ids)
        .annotate(pipeline_of=F("step__pipeline_id"))
        .values("pipeline_of", "step_id", *minute, "bucket")
        .annotate(n=Sum("count"), **{name: Value(0) for name in STEP_COUNTERS})
        .order_by()
    )
    for row in counters.union(buckets, all=True).order_by():
        yield row["pipeline_id"], row["step_id"], row.get("minute"), row


def _step_row_add(point: Point, row: dict) -> None:
    if row["bucket_of"] < 0:
        for name in STEP_COUNTERS:
            point.counts[name] = point.counts.get(name, 0) + (row[name] or 0)
    else:
        buckets = point.latency.setdefault(STEP_MEASURE, {})
        buckets[row["bucket_of"]] = buckets.get(row["bucket_of"], 0) + (row["n"] or 0)
