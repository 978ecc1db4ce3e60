"""The numbers of a client report: what one period adds up to, what a pipeline can handle, and
the report itself. No ORM."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from controlplane.models import Client
from controlplane.reports import calc, selectors
from controlplane.reports.calc import Limit, Period
from controlplane.reports.tables import Table
from pipelines.metrics import Point

FINISHED = selectors.FINISHED
ZERO = Decimal(0)


@dataclass
class Numbers:
    """The headline numbers of one period, over all the client's pipelines."""

    ingested: int = 0
    finished: int = 0
    held: int = 0
    answered: int = 0
    rejected: int = 0
    cost: Decimal = ZERO
    cache_saved: Decimal = ZERO
    # Cascade routing: what answers of a cheaper model saved against the route's strongest
    # model, and the answers it was unsure of and asked the stronger model again.
    routing_saved: Decimal = ZERO
    escalations: int = 0
    review_seconds: float = 0.0
    review_cost: Decimal = ZERO
    within_sla: float | None = None
    p95: float | None = None
    review_p50: float | None = None
    review_p95: float | None = None
    audits_judged: int = 0
    audits_disagreed: int = 0
    # Minutes the period has run (up to now), and items finished per minute over them.
    minutes: float = 1.0
    per_minute: float = 0.0
    peak_per_minute: int = 0

    @property
    def cost_per_item(self) -> Decimal | None:
        return (self.cost / self.finished).quantize(Decimal("0.000001")) if self.finished else None

    @property
    def unit_cost(self) -> Decimal | None:
        if not self.finished:
            return None
        return ((self.cost + self.review_cost) / self.finished).quantize(Decimal("0.000001"))

    @property
    def review_rate(self) -> float | None:
        """The share of the model's answers held for a person."""
        return calc.ratio(self.held, self.answered)

    @property
    def reject_rate(self) -> float | None:
        return calc.ratio(self.rejected, self.finished)

    @property
    def audit_error_rate(self) -> float | None:
        return calc.ratio(self.audits_disagreed, self.audits_judged)


@dataclass
class Capacity:
    """What one pipeline (or the whole client) can handle, and what bounds it."""

    name: str
    per_minute: float
    peak_per_minute: int
    capacity: float | None
    backlog: int
    in_review: int
    drain_minutes: float | None
    bottleneck: Limit | None
    limits: list[Limit] = field(default_factory=list)

    @property
    def headroom(self) -> float | None:
        if not self.capacity:
            return None
        return 1 - self.peak_per_minute / self.capacity


@dataclass
class Report:
    client: Client
    period: Period
    generated_at: datetime
    operator_view: bool
    current: Numbers
    previous: Numbers
    total: Capacity
    capacities: list[Capacity]
    trend: calc.Trend | None
    workers: int
    month_to_date: Decimal
    month_forecast: Decimal
    review_rate_per_hour: Decimal
    days: list[dict[str, Any]]
    tables: dict[str, Table]
    kpis: list[dict[str, str]]


def finished_count(point: Point) -> int:
    return sum(int(point.count(name)) for name in FINISHED)


def answered_count(point: Point) -> int:
    """Answers that reached the gate: model calls and cache hits, less the calls that failed
    before answering (a processing error is held for review, so it counts)."""
    failed = sum(
        int(point.count(name))
        for name in ("failed_transient", "failed_system", "failed_provider_limit")
    )
    return max(0, int(point.count("calls")) + int(point.count("cache_hits")) - failed)


def review_cost_of(seconds: float, rate_per_hour: Decimal) -> Decimal:
    """Reviewer time priced at the hourly rate, to the cent."""
    return (Decimal(str(seconds)) / 3600 * rate_per_hour).quantize(Decimal("0.01"))
