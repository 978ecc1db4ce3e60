"""The arithmetic of the client reports: periods, shares, forecasts, capacity limits and the
growth projection. No ORM, no request: unit-tested without a database."""

from __future__ import annotations

import calendar
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from pipelines.histogram import BOUNDS

# The longest period one report covers: a quarter, read by the hour from the rollups.
MAX_DAYS = 92
DEFAULT_DAYS = 30
# Nothing ran before this; it also keeps the previous period's dates within range.
EARLIEST = date(2000, 1, 1)


class PeriodError(ValueError):
    """A date range a report cannot cover; the message says why, for a 400."""


@dataclass(frozen=True)
class Period:
    """Whole UTC days from `first` to `last`, both included."""

    first: date
    last: date

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    @property
    def since(self) -> datetime:
        return datetime.combine(self.first, time.min, tzinfo=UTC)

    @property
    def until(self) -> datetime:
        return datetime.combine(self.last + timedelta(days=1), time.min, tzinfo=UTC)

    @property
    def previous(self) -> Period:
        """The period of the same length just before this one, for the comparison."""
        return Period(self.first - timedelta(days=self.days), self.first - timedelta(days=1))

    @property
    def label(self) -> str:
        return f"{self.first:%d %b %Y} to {self.last:%d %b %Y}"

    def query(self) -> str:
        return f"since={self.first.isoformat()}&until={self.last.isoformat()}"


def period_parse(since: str | None, until: str | None, *, today: date) -> Period:
    """The period asked for by `since` and `until` (YYYY-MM-DD, both included); the last
    DEFAULT_DAYS days up to today when neither is given. Raises PeriodError with the reason."""
    last = _date(until, "until") if until else today
    first = _date(since, "since") if since else last - timedelta(days=DEFAULT_DAYS - 1)
    if first > last:
        raise PeriodError("`since` must be on or before `until`.")
    if (last - first).days + 1 > MAX_DAYS:
        raise PeriodError(f"A report covers at most {MAX_DAYS} days; choose a shorter range.")
    if first > today:
        raise PeriodError("The range starts in the future; nothing has happened yet.")
    if first < EARLIEST:
        raise PeriodError(f"The range must start on or after {EARLIEST.isoformat()}.")
    return Period(first, last)


def _date(raw: str, name: str) -> date:
    try:
        return date.fromisoformat(raw.strip())
    except ValueError:
        raise PeriodError(
            f"`{name}` must be a date written YYYY-MM-DD, not “{raw[:40]}”."
        ) from None


def ratio(part: float | Decimal, whole: float | Decimal) -> float | None:
    """part / whole, or None when there is no whole to divide by."""
    return float(part) / float(whole) if whole else None


def change(current: float | Decimal | None, previous: float | Decimal | None) -> float | None:
    """The relative change from the previous period (0.25: 25% more); None without a base."""
    if current is None or previous is None or not previous:
        return None
    return (float(current) - float(previous)) / float(previous)


def share_within(counts: Mapping[int, int], seconds: float) -> float | None:
    """The share of the values counted in a latency histogram ({bucket: count}) at or under
    `seconds`, interpolating linearly inside the bucket the target falls in (the same reading
    as pipelines.histogram.percentile); None when nothing was counted."""
    total = sum(counts.values())
    if total <= 0:
        return None
    within = 0.0
    for index, n in counts.items():
        lower = BOUNDS[index - 1] if index > 0 else 0.0
        upper = BOUNDS[index]
        if upper <= seconds:
            within += n
        elif lower < seconds and not math.isinf(upper):
            within += n * (seconds - lower) / (upper - lower)
    return within / total


def month_forecast(*, spent: Decimal, now: datetime) -> Decimal:
    """The month's spend at the pace of the month so far (spent per elapsed second, times the
    month's seconds), to the micro-dollar like the costs it comes from, and never under what is
    already spent."""
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    days = calendar.monthrange(now.year, now.month)[1]
    elapsed = (now - start).total_seconds()
    if elapsed <= 0:
        return spent
    pace = (spent * Decimal(days * 86400) / Decimal(elapsed)).quantize(Decimal("0.000001"))
    return max(spent, pace)


@dataclass(frozen=True)
class Trend:
    """A straight line through daily volumes: items per day now (at the last day) and the
    growth per day, and the projections it gives."""

    per_day: float
    slope_per_day: float
    in_30_days: float
    in_90_days: float
    # Days until the daily volume at the fitted pace needs the capacity; None when it never
    # does (flat or shrinking) or capacity is unknown.
    days_to_capacity: float | None


def trend_fit(daily: Sequence[float], *, capacity_per_day: float | None) -> Trend | None:
    """Least squares through the daily volumes; None with fewer than two days."""
    n = len(daily)
    if n < 2:
        return None
    mean_x = (n - 1) / 2
    mean_y = sum(daily) / n
    sxx = sum((x - mean_x) ** 2 for x in range(n))
    slope = sum((x - mean_x) * (y - mean_y) for x, y in enumerate(daily)) / sxx
    now = max(0.0, mean_y + slope * (n - 1 - mean_x))
    days_to = None
    if capacity_per_day and slope > 0:
        days_to = max(0.0, (capacity_per_day - now) / slope)
    return Trend(
        per_day=now,
        slope_per_day=slope,
        in_30_days=max(0.0, now + 30 * slope),
        in_90_days=max(0.0, now + 90 * slope),
        days_to_capacity=days_to,
    )


@dataclass(frozen=True)
class Limit:
    """One thing that bounds throughput, as items per minute it allows, and what raises it."""

    name: str
    per_minute: float
    basis: str
    remedy: str


def items_per_minute_of(*, slots: float, seconds_each: float | None) -> float | None:
    """Little's law: `slots` running at once, each taking `seconds_each`, finish this many a
    minute; None when the time is unknown."""
    if not seconds_each or seconds_each <= 0:
        return None
    return slots * 60 / seconds_each


def bottleneck_of(limits: Sequence[Limit]) -> Limit | None:
    """The limit that allows the fewest items a minute."""
    return min(limits, key=lambda limit: limit.per_minute, default=None)


def drain_minutes(*, backlog: int, capacity: float | None, inflow: float) -> float | None:
    """Minutes to clear `backlog` at `capacity` while `inflow` keeps arriving (both per minute);
    None when capacity is unknown or does not exceed the inflow."""
    if backlog <= 0:
        return 0.0
    if not capacity or capacity <= inflow:
        return None
    return backlog / (capacity - inflow)
