"""The tables and headline numbers of a client report, built from its numbers (`data`) and, for
cost per step and per model, one read each (`selectors`)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from controlplane.reports import calc, selectors
from controlplane.reports.calc import Period
from controlplane.reports.data import (
    Numbers,
    Report,
    answered_count,
    finished_count,
    review_cost_of,
)
from controlplane.reports.tables import (
    CHANGE,
    INT,
    MONEY,
    PERCENT,
    RATE,
    ROW,
    SECONDS,
    Column,
    Table,
    show,
)
from pipelines.metrics import Point
from pipelines.models import Pipeline
from pipelines.services.budgets import budgets_for

# --- tables ----------------------------------------------------------------------------------


def report_tables(
    report: Report,
    pipelines: list[Pipeline],
    totals: dict[int, Point],
    reviews: dict[int, selectors.ReviewNumbers],
    *,
    now: datetime,
) -> dict[str, Table]:
    cur, prev, period = report.current, report.previous, report.period
    rate = report.review_rate_per_hour
    summary = Table(
        "summary",
        "Summary",
        [
            Column("Measure"),
            Column("This period", ROW),
            Column("Previous period", ROW),
            Column("Change", CHANGE),
        ],
    )
    for label, kind, value, before in _summary_rows(cur, prev, workers=report.workers):
        summary.rows.append([label, value, before, calc.change(value, before)])
        summary.row_kinds.append(kind)
    tables = [
        summary,
        _capacity_table(report),
        _limits_table(report),
        _growth_table(report),
        _cost_pipeline_table(pipelines, totals, reviews, rate),
        _cost_step_table(pipelines, period),
        _cost_model_table(pipelines, period, operator_view=report.operator_view),
        _cost_day_table(report.days),
        _budget_table(pipelines, now=now, report=report),
        _sla_table(pipelines, totals, reviews),
    ]
    return {table.name: table for table in tables}


def _summary_rows(cur: Numbers, prev: Numbers, *, workers: int) -> list[tuple[str, str, Any, Any]]:
    # Worker processes are counted now, not kept per period: the previous period has no figure.
    per_worker = cur.per_minute / workers if workers else None
    return [
        ("Items received", INT, cur.ingested, prev.ingested),
        ("Items finished", INT, cur.finished, prev.finished),
        ("Items finished per minute (average)", RATE, cur.per_minute, prev.per_minute),
        ("Per worker process (workers running now)", RATE, per_worker, None),
        ("Busiest minute (items)", INT, cur.peak_per_minute, prev.peak_per_minute),
        ("Model cost", MONEY, cur.cost, prev.cost),
        ("Human review cost", MONEY, cur.review_cost, prev.review_cost),
        ("Model cost per item", MONEY, cur.cost_per_item, prev.cost_per_item),
        ("Unit cost with review", MONEY, cur.unit_cost, prev.unit_cost),
        ("Saved by the cache", MONEY, cur.cache_saved, prev.cache_saved),
        ("Saved by routing to cheaper models", MONEY, cur.routing_saved, prev.routing_saved),
        ("Answers escalated to the stronger model", INT, cur.escalations, prev.escalations),
        ("Within the latency target", PERCENT, cur.within_sla, prev.within_sla),
        ("p95 end to end", SECONDS, cur.p95, prev.p95),
        ("Review turnaround, median", SECONDS, cur.review_p50, prev.review_p50),
        ("Review rate (answers held for a person)", PERCENT, cur.review_rate, prev.review_rate),
        (
            "Auto-accept error rate (blind audits)",
            PERCENT,
            cur.audit_error_rate,
            prev.audit_error_rate,
        ),
        ("Rejected items", INT, cur.rejected, prev.rejected),
    ]


def _capacity_table(report: Report) -> Table:
    table = Table(
        "capacity",
        "Capacity",
        [
            Column("Pipeline"),
            Column("Finished per min (avg)", RATE),
            Column("Busiest minute", INT),
            Column("Capacity per min", RATE),
            Column("Headroom at the peak", PERCENT),
            Column("Backlog (queued)", INT),
            Column("Waiting for review", INT),
            Column("Time to drain", SECONDS),
            Column("Bottleneck"),
            Column("What would raise capacity"),
        ],
    )
    for c in [*report.capacities, report.total]:
        table.rows.append(
            [
                c.name,
                c.per_minute,
                c.peak_per_minute,
                c.capacity,
                c.headroom,
                c.backlog,
                c.in_review,
                None if c.drain_minutes is None else c.drain_minutes * 60,
                c.bottleneck.name if c.bottleneck else "not measured yet",
                c.bottleneck.remedy if c.bottleneck else "",
            ]
        )
    return table


def _growth_table(report: Report) -> Table:
    """The straight line through the period's daily volume, carried forward."""
    table = Table(
        "growth",
        "Growth projection",
        [Column("Measure"), Column("Items per day", RATE)],
        note="A straight line fitted through the items received each day of the period.",
    )
    trend = report.trend
    capacity = report.total.capacity * 1440 if report.total.capacity is not None else None
    if trend is None:
        return table
    table.rows = [
        ["Now (the line at the last day)", trend.per_day],
        ["Change per day", trend.slope_per_day],
        ["In 30 days", trend.in_30_days],
        ["In 90 days", trend.in_90_days],
        ["Capacity", capacity],
    ]
    if trend.days_to_capacity is not None:
        table.rows.append(
            ["Days until the volume needs the whole capacity", trend.days_to_capacity]
        )
    return table


def _limits_table(report: Report) -> Table:
    table = Table(
        "limits",
        "What bounds throughput",
        [Column("Pipeline"), Column("Limit"), Column("Items per min", RATE), Column("Basis")],
    )
    for c in report.capacities:
        for limit in c.limits:
            table.rows.append([c.name, limit.name, limit.per_minute, limit.basis])
    worker = next((x for x in report.total.limits if x.name == "worker count"), None)
    if worker is not None:
        table.rows.append(["All pipelines", worker.name, worker.per_minute, worker.basis])
    return table


def _cost_pipeline_table(pipelines, totals, reviews, rate) -> Table:
    table = Table(
        "cost_pipeline",
        "Cost per pipeline",
        [
            Column("Pipeline"),
            Column("Items finished", INT),
            Column("Model cost", MONEY),
            Column("Review cost", MONEY),
            Column("Cost per item", MONEY),
            Column("Saved by the cache", MONEY),
            Column("Saved by routing", MONEY),
            Column("Escalations", INT),
        ],
    )
    for pipeline in pipelines:
        point = totals[pipeline.pk]
        finished = finished_count(point)
        cost = Decimal(point.count("cost"))
        review = review_cost_of(reviews[pipeline.pk].handling_seconds, rate)
        table.rows.append(
            [
                pipeline.name,
                finished,
                cost,
                review,
                ((cost + review) / finished).quantize(Decimal("0.000001")) if finished else None,
                Decimal(point.count("cost_saved")),
                Decimal(point.count("cascade_saved")),
                int(point.count("escalations")),
            ]
        )
    return table


def _cost_step_table(pipelines, period: Period) -> Table:
    table = Table(
        "cost_step",
        "Cost per step",
        [
            Column("Pipeline"),
            Column("Step"),
            Column("Attempts", INT),
            Column("Cost", MONEY),
            Column("Saved by routing", MONEY),
            Column("Escalations", INT),
        ],
    )
    for row in selectors.step_cost_list(
        pipeline_ids=[p.pk for p in pipelines], since=period.since, until=period.until
    ):
        table.rows.append(
            [
                row["pipeline__name"],
                row["step__name"],
                row["started"] or 0,
                Decimal(row["cost"] or 0),
                Decimal(row["cascade_saved"] or 0),
                row["escalations"] or 0,
            ]
        )
    return table


def _cost_model_table(pipelines, period: Period, *, operator_view: bool) -> Table:
    table = Table(
        "cost_model",
        "Cost per model",
        [Column("Model"), Column("Calls", INT), Column("Cache hits", INT), Column("Cost", MONEY)],
        note="Read from the ledger: one event per model call.",
    )
    for row in selectors.model_cost_list(
        pipeline_ids=[p.pk for p in pipelines], since=period.since, until=period.until
    ):
        name = row["model"] or "—"
        if not operator_view:
            # Clients see the model, never the provider (the part before the slash).
            name = name.split("/", 1)[-1]
        table.rows.append([name, row["calls"], row["cache_hits"], row["cost"]])
    return table


def _cost_day_table(days: list[dict[str, Any]]) -> Table:
    table = Table(
        "cost_day",
        "Per day",
        [
            Column("Day"),
            Column("Items finished", INT),
            Column("Model cost", MONEY),
            Column("Review minutes", RATE),
            Column("Review cost", MONEY),
            Column("Saved by the cache", MONEY),
            Column("Saved by routing", MONEY),
            Column("Within the latency target", PERCENT),
        ],
    )
    for day in days:
        table.rows.append(
            [
                day["day"].isoformat(),
                day["finished"],
                day["cost"],
                day["review_minutes"],
                day["review_cost"],
                day["cache_saved"],
                day["routing_saved"],
                day["within_sla"],
            ]
        )
    return table


def _budget_table(pipelines, *, now: datetime, report: Report) -> Table:
    table = Table(
        "budget",
        "Budgets (now)",
        [
            Column("Budget"),
            Column("Limit", MONEY),
            Column("Spent", MONEY),
            Column("Used", PERCENT),
            Column("State"),
        ],
    )
    seen = set()
    for pid, budgets in budgets_for(pipelines, now=now).items():
        pipeline = next(p for p in pipelines if p.pk == pid)
        for budget in budgets:
            key = (budget.scope, pid if budget.scope == "pipeline" else 0)
            if key in seen:
                continue
            seen.add(key)
            owner = pipeline.name if budget.scope == "pipeline" else report.client.name
            table.rows.append(
                [
                    f"{owner}, {budget.label}",
                    budget.limit,
                    budget.spent,
                    budget.fraction,
                    budget.state,
                ]
            )
    return table


def _sla_table(pipelines, totals, reviews) -> Table:
    table = Table(
        "sla",
        "SLA and quality",
        [
            Column("Pipeline"),
            Column("Latency target", SECONDS),
            Column("Items timed", INT),
            Column("Within the target", PERCENT),
            Column("p50", SECONDS),
            Column("p95", SECONDS),
            Column("Review turnaround p50", SECONDS),
            Column("Review turnaround p95", SECONDS),
            Column("Review rate", PERCENT),
            Column("Auto-accept error rate", PERCENT),
            Column("Audits", INT),
            Column("Rejected", INT),
        ],
    )
    for pipeline in pipelines:
        point = totals[pipeline.pk]
        latency = point.latency.get("end_to_end", {})
        review = reviews[pipeline.pk]
        table.rows.append(
            [
                pipeline.name,
                float(pipeline.latency_target_seconds),
                sum(latency.values()),
                calc.share_within(latency, pipeline.latency_target_seconds),
                point.percentile("end_to_end", 50),
                point.percentile("end_to_end", 95),
                point.percentile("review_wait", 50),
                point.percentile("review_wait", 95),
                calc.ratio(int(point.count("held_for_review")), answered_count(point)),
                calc.ratio(review.audits_disagreed, review.audits_judged),
                review.audits_judged,
                int(point.count("rejected")),
            ]
        )
    return table


def report_kpis(report: Report) -> list[dict[str, str]]:
    cur, prev = report.current, report.previous
    items = [
        ("Items finished", INT, cur.finished, prev.finished),
        ("Total cost", MONEY, cur.cost + cur.review_cost, prev.cost + prev.review_cost),
        ("Unit cost", MONEY, cur.unit_cost, prev.unit_cost),
        ("Within SLA", PERCENT, cur.within_sla, prev.within_sla),
        ("Capacity headroom", PERCENT, report.total.headroom, None),
        ("Month to date", MONEY, report.month_to_date, None),
        ("Month-end forecast", MONEY, report.month_forecast, None),
    ]
    return [
        {
            "label": label,
            "value": show(value, kind),
            "previous": show(before, kind) if before is not None else "",
            "change": show(calc.change(value, before), CHANGE)
            if calc.change(value, before) is not None
            else "",
        }
        for label, kind, value, before in items
    ]
