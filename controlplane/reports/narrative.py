"""What each section of a report says in words, on the page and in the PDF alike. No ORM."""

from __future__ import annotations

from controlplane.reports.tables import money

# Beyond this many days a projection that reaches capacity is not worth saying.
HORIZON_DAYS = 3 * 365


def capacity_text(report) -> str:
    total = report.total
    if total.capacity is None:
        return (
            "Capacity is not measured yet: no model call finished in this period, so the time "
            "an item takes is unknown."
        )
    text = (
        f"Over the period the pipelines finished {total.per_minute:,.1f} items a minute on "
        f"average and {total.peak_per_minute:,} in the busiest minute, against a capacity of "
        f"about {total.capacity:,.0f} a minute"
    )
    if report.workers:
        text += f" ({total.per_minute / report.workers:,.2f} a minute per worker process)"
    text += "."
    if total.bottleneck:
        text += f" The bottleneck is the {total.bottleneck.name}. {total.bottleneck.remedy}"
    if report.trend:
        trend = report.trend
        text += (
            f" At the trend of the period, daily volume goes from {trend.per_day:,.0f} to "
            f"{trend.in_30_days:,.0f} items in 30 days and {trend.in_90_days:,.0f} in 90"
        )
        if trend.days_to_capacity is not None and trend.days_to_capacity <= HORIZON_DAYS:
            text += f"; it reaches capacity in about {trend.days_to_capacity:,.0f} days"
        text += "."
    return text


def cost_text(report) -> str:
    cur = report.current
    return (
        f"Model cost {money(cur.cost)} and human review {money(cur.review_cost)} "
        f"({cur.review_seconds / 60:,.0f} reviewer minutes at "
        f"{money(report.review_rate_per_hour)} an hour). The cache saved "
        f"{money(cur.cache_saved)} and routing to cheaper models {money(cur.routing_saved)} "
        f"({cur.escalations:,} answer{'s' if cur.escalations != 1 else ''} escalated to the "
        "stronger model). "
        f"Month to date {money(report.month_to_date)}; at this pace the month ends near "
        f"{money(report.month_forecast)}."
    )


def quality_text(report) -> str:
    cur = report.current
    parts = []
    if cur.within_sla is not None:
        parts.append(f"{cur.within_sla:.1%} of items finished within their latency target")
    if cur.review_rate is not None:
        parts.append(f"{cur.review_rate:.1%} were held for a person")
    if cur.audit_error_rate is not None:
        parts.append(
            f"blind audits found errors in {cur.audit_error_rate:.1%} of auto-accepted answers "
            f"({cur.audits_disagreed} of {cur.audits_judged})"
        )
    parts.append(f"{cur.rejected:,} items were rejected")
    return "; ".join(parts).capitalize() + "."
