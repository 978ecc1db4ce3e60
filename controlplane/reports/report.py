"""One client's report over a period: capacity, cost, SLA and quality, each compared with the
period before, as tables (exported as CSV), charts (plotly on the page, vector in the PDF) and
headline numbers. Built from `selectors` reads; the arithmetic is in `calc`, the tables in
`report_tables`."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from controlplane.models import Client
from controlplane.reports import calc, selectors
from controlplane.reports.calc import Limit, Period
from controlplane.reports.data import (
    ZERO,
    Capacity,
    Numbers,
    Report,
    answered_count,
    finished_count,
    review_cost_of,
)
from controlplane.reports.report_tables import report_kpis, report_tables
from pipelines import metrics
from pipelines.metrics import Point
from pipelines.models import Pipeline
from pipelines.services.budgets import month_bounds

__all__ = ["Report", "report_build"]


def report_build(
    *, client: Client, period: Period, now: datetime, operator_view: bool = False
) -> Report:
    """Everything one client's report shows for `period`. `operator_view` adds what only
    operators see (provider names in the capacity limits and model names)."""
    pipelines = selectors.report_pipeline_list(client=client)
    ids = [p.pk for p in pipelines]
    rate = selectors.review_rate_get(client=client)
    end = min(period.until, now)
    # Per pipeline, the period by the hour (two queries each): the days, the totals and the
    # latency histograms all come from these.
    hourly = {
        p.pk: metrics.series(
            pipeline_ids=[p.pk], since=period.since, until=period.until, resolution="hour"
        )
        for p in pipelines
    }
    totals = {pid: metrics.totals(points) for pid, points in hourly.items()}
    previous_totals = metrics.totals_by_pipeline(
        pipeline_ids=ids, since=period.previous.since, until=period.previous.until
    )
    reviews = selectors.review_numbers_by_pipeline(
        pipeline_ids=ids, since=period.since, until=period.until
    )
    previous_reviews = selectors.review_numbers_by_pipeline(
        pipeline_ids=ids, since=period.previous.since, until=period.previous.until
    )
    minutes = max(1.0, (end - period.since).total_seconds() / 60)
    current = _numbers(pipelines, totals, reviews, rate=rate, minutes=minutes)
    current.peak_per_minute = selectors.peak_minute(
        pipeline_ids=ids, since=period.since, until=period.until
    )
    previous = _numbers(
        pipelines, previous_totals, previous_reviews, rate=rate, minutes=period.days * 1440
    )
    previous.peak_per_minute = selectors.peak_minute(
        pipeline_ids=ids, since=period.previous.since, until=period.previous.until
    )

    workers = selectors.worker_count(now=now)
    installation_peak = selectors.peak_minute(
        pipeline_ids=list(Pipeline.objects.values_list("pk", flat=True)),
        since=period.since,
        until=period.until,
    )
    worker_limit = _worker_limit(workers, installation_peak)
    capacities = _capacities(
        pipelines,
        totals,
        reviews,
        minutes=minutes,
        period=period,
        before=end,
        operator_view=operator_view,
    )
    total = _total_capacity(capacities, worker_limit, current)

    days = _days(pipelines, hourly, period=period, rate=rate)
    # Whole days only: today, still running, would bend the line down.
    trend = calc.trend_fit(
        [float(day["ingested"]) for day in days if day["day"] < now.date()],
        capacity_per_day=total.capacity * 1440 if total.capacity else None,
    )
    month_start, _ = month_bounds(now)
    spent = metrics.cost_since(pipeline_ids=ids, since=month_start)
    month_to_date = sum((cost for cost, _ in spent.values()), ZERO)
    report = Report(
        client=client,
        period=period,
        generated_at=now,
        operator_view=operator_view,
        current=current,
        previous=previous,
        total=total,
        capacities=capacities,
        trend=trend,
        workers=workers,
        month_to_date=month_to_date,
        month_forecast=calc.month_forecast(spent=month_to_date, now=now),
        review_rate_per_hour=rate,
        days=days,
        tables={},
        kpis=[],
    )
    report.tables = report_tables(report, pipelines, totals, reviews, now=now)
    report.kpis = report_kpis(report)
    return report


# --- numbers ---------------------------------------------------------------------------------


def _numbers(
    pipelines: list[Pipeline],
    totals: dict[int, Point],
    reviews: dict[int, selectors.ReviewNumbers],
    *,
    rate: Decimal,
    minutes: float,
) -> Numbers:
    numbers = Numbers()
    timed = within = 0.0
    points = [totals[p.pk] for p in pipelines]
    for pipeline, point in zip(pipelines, points, strict=True):
        numbers.ingested += int(point.count("ingested"))
        numbers.finished += finished_count(point)
        numbers.held += int(point.count("held_for_review"))
        numbers.answered += answered_count(point)
        numbers.rejected += int(point.count("rejected"))
        numbers.cost += Decimal(point.count("cost"))
        numbers.cache_saved += Decimal(point.count("cost_saved"))
        numbers.routing_saved += Decimal(point.count("cascade_saved"))
        numbers.escalations += int(point.count("escalations"))
        latency = point.latency.get("end_to_end", {})
        share = calc.share_within(latency, pipeline.latency_target_seconds)
        if share is not None:
            n = sum(latency.values())
            timed += n
            within += share * n
        review = reviews[pipeline.pk]
        numbers.review_seconds += review.handling_seconds
        numbers.audits_judged += review.audits_judged
        numbers.audits_disagreed += review.audits_disagreed
    numbers.within_sla = within / timed if timed else None
    merged = metrics.totals(points)
    numbers.p95 = merged.percentile("end_to_end", 95)
    numbers.review_p50 = merged.percentile("review_wait", 50)
    numbers.review_p95 = merged.percentile("review_wait", 95)
    numbers.review_cost = review_cost_of(numbers.review_seconds, rate)
    numbers.minutes = minutes
    numbers.per_minute = numbers.finished / minutes
    return numbers


# --- capacity --------------------------------------------------------------------------------


def _worker_limit(workers: int, installation_peak: int) -> Limit | None:
    if not workers or not installation_peak:
        return None
    each = installation_peak / workers
    return Limit(
        name="worker count",
        per_minute=float(installation_peak),
        basis=f"{workers} worker processes x {each:,.1f} items/min each, the busiest minute "
        "measured across all pipelines (shared by every client)",
        remedy=f"Add worker processes: each adds about {each:,.1f} items/min.",
    )


def _capacities(
    pipelines: list[Pipeline],
    totals: dict[int, Point],
    reviews: dict[int, selectors.ReviewNumbers],
    *,
    minutes: float,
    period: Period,
    before: datetime,
    operator_view: bool,
) -> list[Capacity]:
    ids = [p.pk for p in pipelines]
    routes = selectors.route_limit_list(pipeline_ids=ids)
    gauges = selectors.gauge_latest(pipeline_ids=ids, before=before)
    found = []
    for pipeline in pipelines:
        point = totals[pipeline.pk]
        finished = finished_count(point)
        processing = point.percentile("processing", 50)
        calls_per_item = max(1.0, calc.ratio(int(point.count("calls")), finished) or 1.0)
        held_share = calc.ratio(int(point.count("held_for_review")), answered_count(point))
        limits = _limits(
            pipeline,
            processing=processing,
            calls_per_item=calls_per_item,
            held_per_item=held_share * calls_per_item if held_share else None,
            review=reviews[pipeline.pk],
            routes=[r for r in routes if r.pipeline_id == pipeline.pk],
            operator_view=operator_view,
        )
        bottleneck = calc.bottleneck_of(limits)
        sample = gauges.get(pipeline.pk)
        backlog = (sample.queued + sample.waiting_retry) if sample else 0
        per_minute = finished / minutes
        ingested_per_minute = int(point.count("ingested")) / minutes
        capacity = bottleneck.per_minute if bottleneck else None
        found.append(
            Capacity(
                name=pipeline.name,
                per_minute=per_minute,
                peak_per_minute=selectors.peak_minute(
                    pipeline_ids=[pipeline.pk], since=period.since, until=period.until
                ),
                capacity=capacity,
                backlog=backlog,
                in_review=sample.in_review if sample else 0,
                drain_minutes=calc.drain_minutes(
                    backlog=backlog, capacity=capacity, inflow=ingested_per_minute
                ),
                bottleneck=bottleneck,
                limits=limits,
            )
        )
    return found


def _limits(
    pipeline: Pipeline,
    *,
    processing: float | None,
    calls_per_item: float,
    held_per_item: float | None,
    review: selectors.ReviewNumbers,
    routes: list[selectors.RouteLimit],
    operator_view: bool,
) -> list[Limit]:
    limits = []
    seconds = processing * calls_per_item if processing else None
    concurrency = calc.items_per_minute_of(slots=pipeline.concurrency_limit, seconds_each=seconds)
    if concurrency is not None:
        limits.append(
            Limit(
                "concurrency limit",
                concurrency,
                f"{pipeline.concurrency_limit} items at once x {seconds:.2f} s of model calls "
                "each (median)",
                "Raise the pipeline's concurrency limit.",
            )
        )
    for route in routes:
        where = f"{route.provider} ({route.step_name})" if operator_view else route.step_name
        if route.rate_limit_per_minute:
            limits.append(
                Limit(
                    "provider rate limit",
                    route.rate_limit_per_minute / calls_per_item,
                    f"{route.rate_limit_per_minute:,} calls/min at {where}, shared by every "
                    "pipeline on that provider",
                    "Raise the provider's rate limit (a higher tier) or route part of the "
                    "traffic to another model.",
                )
            )
        slots = calc.items_per_minute_of(slots=route.max_concurrency, seconds_each=seconds)
        if slots is not None:
            limits.append(
                Limit(
                    "provider concurrency",
                    slots,
                    f"{route.max_concurrency} calls at once at {where}",
                    "Raise the provider's concurrency.",
                )
            )
    if held_per_item:
        handling = review.mean_handling_seconds
        if review.reviewers == 0:
            limits.append(
                Limit(
                    "review staffing",
                    0.0,
                    f"{held_per_item:.0%} of items need a person and no reviewer works the queues",
                    "Add reviewers to the pipeline's review queues.",
                )
            )
        elif handling:
            decisions = review.reviewers * 60 / handling
            limits.append(
                Limit(
                    "review staffing",
                    decisions / held_per_item,
                    f"{review.reviewers} reviewers x {60 / handling:,.1f} decisions/min each; "
                    f"{held_per_item:.0%} of items need a person",
                    "Add reviewers, or raise the step's confidence threshold accuracy so "
                    "fewer items need a person.",
                )
            )
    return limits


def _total_capacity(capacities: list[Capacity], worker_limit: Limit | None, current) -> Capacity:
    known = [c for c in capacities if c.capacity is not None]
    limits = [c.bottleneck for c in known if c.bottleneck]
    capacity = sum(c.capacity for c in known) if known else None
    bottleneck = min(limits, key=lambda limit: limit.per_minute) if limits else None
    if worker_limit is not None:
        limits = [*limits, worker_limit]
        if capacity is None or worker_limit.per_minute < capacity:
            capacity, bottleneck = worker_limit.per_minute, worker_limit
    backlog = sum(c.backlog for c in capacities)
    inflow = current.ingested / current.minutes
    return Capacity(
        name="All pipelines",
        per_minute=current.per_minute,
        peak_per_minute=current.peak_per_minute,
        capacity=capacity,
        backlog=backlog,
        in_review=sum(c.in_review for c in capacities),
        drain_minutes=calc.drain_minutes(backlog=backlog, capacity=capacity, inflow=inflow),
        bottleneck=bottleneck,
        limits=limits,
    )


# --- days ------------------------------------------------------------------------------------


def _days(
    pipelines: list[Pipeline],
    hourly: dict[int, list[Point]],
    *,
    period: Period,
    rate: Decimal,
) -> list[dict[str, Any]]:
    """Per UTC day: items, cost, savings, reviewer time and the share within each pipeline's
    SLA, from the hourly points and one aggregate query over review tasks."""
    review_seconds = selectors.review_seconds_by_day(
        pipeline_ids=[p.pk for p in pipelines], since=period.since, until=period.until
    )
    days: dict[date, dict[str, Any]] = {}
    for offset in range(period.days):
        day = period.first + timedelta(days=offset)
        days[day] = {
            "day": day,
            "ingested": 0,
            "finished": 0,
            "held": 0,
            "answered": 0,
            "cost": ZERO,
            "cache_saved": ZERO,
            "routing_saved": ZERO,
            "timed": 0,
            "within": 0.0,
        }
    for pipeline in pipelines:
        for point in hourly[pipeline.pk]:
            row = days.get(point.at.date())
            if row is None:
                continue
            row["ingested"] += int(point.count("ingested"))
            row["finished"] += finished_count(point)
            row["held"] += int(point.count("held_for_review"))
            row["answered"] += answered_count(point)
            row["cost"] += Decimal(point.count("cost"))
            row["cache_saved"] += Decimal(point.count("cost_saved"))
            row["routing_saved"] += Decimal(point.count("cascade_saved"))
            latency = point.latency.get("end_to_end", {})
            share = calc.share_within(latency, pipeline.latency_target_seconds)
            if share is not None:
                n = sum(latency.values())
                row["timed"] += n
                row["within"] += share * n
    for day, row in days.items():
        seconds = review_seconds.get(day, 0.0)
        row["review_minutes"] = seconds / 60
        row["review_cost"] = review_cost_of(seconds, rate)
        row["within_sla"] = row["within"] / row["timed"] if row["timed"] else None
        row["review_rate"] = calc.ratio(row["held"], row["answered"])
    return list(days.values())
