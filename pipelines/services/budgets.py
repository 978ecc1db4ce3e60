"""Budgets: what a pipeline may spend per day and a client per calendar month (UTC), read from
the rollups. At 80% a warning goes to the audit log, once per period; at 100% the pipeline's
work is held: its items stay queued (nothing is dropped) and run when the period turns or the
budget is raised.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.core.cache import cache
from django.db.models import Sum

from controlplane.models import Client
from controlplane.services import audit_record
from pipelines.models import Pipeline, Rollup

WARN_AT = Decimal("0.8")
ENGINE = "engine"


@dataclass(frozen=True)
class Budget:
    """One budget and what has been spent against it in its current period."""

    scope: str  # "pipeline" (per day) or "client" (per month)
    limit: Decimal
    spent: Decimal
    period_start: datetime
    period_end: datetime

    @property
    def fraction(self) -> float:
        return float(self.spent / self.limit) if self.limit > 0 else 1.0

    @property
    def state(self) -> str:
        if self.spent >= self.limit:
            return "held"
        if self.spent >= self.limit * WARN_AT:
            return "warning"
        return "ok"

    @property
    def percent(self) -> int:
        return min(100, round(self.fraction * 100))

    @property
    def label(self) -> str:
        return "today" if self.scope == "pipeline" else "this month"


def day_bounds(now: datetime) -> tuple[datetime, datetime]:
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start + timedelta(days=1)


def month_bounds(now: datetime) -> tuple[datetime, datetime]:
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


def _spent(*, pipeline_ids: Iterable[int], since: datetime, by: str) -> dict[int, Decimal]:
    rows = (
        Rollup.objects.filter(pipeline_id__in=list(pipeline_ids), minute__gte=since)
        .values(by)
        .annotate(total=Sum("cost"))
    )
    return {row[by]: Decimal(row["total"] or 0) for row in rows}


def budgets_for(pipelines: Iterable[Pipeline], *, now: datetime) -> dict[int, list[Budget]]:
    """Per pipeline id, the budgets that apply to it (its own per day, its client's per month),
    with their spend so far; pipelines without budgets are left out. Two queries at most."""
    pipelines = list(pipelines)
    day_start, day_end = day_bounds(now)
    month_start, month_end = month_bounds(now)
    daily = [p for p in pipelines if p.daily_budget is not None]
    monthly_clients = {p.client_id for p in pipelines if p.client.monthly_budget is not None}
    found: dict[int, list[Budget]] = {}
    if daily:
        spent = _spent(pipeline_ids=[p.pk for p in daily], since=day_start, by="pipeline_id")
        for p in daily:
            found.setdefault(p.pk, []).append(
                Budget("pipeline", p.daily_budget, spent.get(p.pk, Decimal(0)), day_start, day_end)
            )
    if monthly_clients:
        client_pipelines = Pipeline.objects.filter(client_id__in=monthly_clients).values_list(
            "pk", flat=True
        )
        spent = _spent(pipeline_ids=client_pipelines, since=month_start, by="pipeline__client_id")
        for p in pipelines:
            if p.client_id in monthly_clients:
                found.setdefault(p.pk, []).append(
                    Budget(
                        "client",
                        p.client.monthly_budget,
                        spent.get(p.client_id, Decimal(0)),
                        month_start,
                        month_end,
                    )
                )
    return found


def budget_holds(pipelines: Iterable[Pipeline], *, now: datetime) -> dict[int, str]:
    """Per pipeline id whose budget is spent, why its work is held. Records the warning at 80%
    and the hold at 100% in the audit log, once per budget and period."""
    pipelines = list(pipelines)
    by_id = {p.pk: p for p in pipelines}
    held: dict[int, str] = {}
    for pid, budgets in budgets_for(pipelines, now=now).items():
        pipeline = by_id[pid]
        for budget in budgets:
            if budget.state == "ok":
                continue
            _notice_once(pipeline, budget)
            if budget.state == "held":
                whose = (
                    "its daily budget"
                    if budget.scope == "pipeline"
                    else ("its client's monthly budget")
                )
                held[pid] = f"{whose} of {budget.limit} is spent ({budget.spent:.2f})"
    return held


def _notice_once(pipeline: Pipeline, budget: Budget) -> None:
    owner = pipeline.pk if budget.scope == "pipeline" else pipeline.client_id
    key = f"budget:{budget.scope}:{owner}:{budget.period_start:%Y%m%d}:{budget.state}"
    seconds = max(60, int((budget.period_end - budget.period_start).total_seconds()))
    if not cache.add(key, 1, timeout=seconds):
        return
    client: Client = pipeline.client
    audit_record(
        actor=None,
        actor_label=ENGINE,
        action="budget.held" if budget.state == "held" else "budget.warning",
        obj=pipeline if budget.scope == "pipeline" else client,
        client=client,
        after={
            "budget": budget.scope,
            "limit": str(budget.limit),
            "spent": str(budget.spent.quantize(Decimal("0.000001"))),
            "percent": budget.percent,
            "period_start": budget.period_start.isoformat(),
        },
    )
