"""Health samples: once a minute, with the gauge samples, the schedule writes each provider's
breaker state (`BreakerSample`) and the worker side of the installation (`HealthSample`: clusters
with a recent heartbeat, clusters and worker processes django-q2's Stat reports, tasks waiting in
the broker, breakers not closed), so the overview dashboard can draw their history. Rows older
than `samples.KEEP` are dropped by the same task.

A sample costs a few queries whatever the installation's size: the providers, their breakers
(two cache reads), the heartbeats, one cache read per running cluster, and one count of the
broker's queue. Reading a range costs two queries.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Case, IntegerField, Max, Min, Value, When
from django.db.models.functions import TruncHour
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.status import Stat

from controlplane.models import WorkerHeartbeat
from controlplane.monitoring.models import BreakerSample, HealthSample
from controlplane.monitoring.samples import KEEP
from pipelines.models import BreakerEvent, Provider
from pipelines.services.breaker import CLOSED, breaker_states

logger = logging.getLogger(__name__)

# A worker cluster that has not reported for this long is silent (the heartbeat runs every
# minute).
HEARTBEAT_SILENT_SECONDS = 120
# A breaker's state as a level on the chart, worst last.
STATE_LEVELS = {
    BreakerEvent.State.CLOSED.value: 0,
    BreakerEvent.State.HALF_OPEN.value: 1,
    BreakerEvent.State.OPEN.value: 2,
}
# The HealthSample numbers, and how an hour of minutes becomes one point: the fewest workers
# and the most waiting tasks and open breakers of the hour, so a dip or a spike stays visible.
HOURLY = {
    "clusters_alive": Min,
    "clusters_running": Min,
    "workers": Min,
    "queued_tasks": Max,
    "breakers_open": Max,
}


@dataclass
class HealthPoint:
    """One minute (or hour) of health: the numbers, and each provider's breaker level."""

    at: datetime
    values: dict[str, int | None] = field(default_factory=dict)
    # Provider id -> 0 closed, 1 half-open, 2 open (the worst of the hour).
    breakers: dict[int, int] = field(default_factory=dict)


def cluster_stats() -> tuple[int, int] | None:
    """(clusters, worker processes) as django-q2's running clusters report them in the shared
    cache (each sentinel saves its Stat every few seconds); None when it cannot be read."""
    try:
        stats = Stat.get_all()
    except Exception:  # the cache or Redis is down: the sample says so by its absence
        logger.warning("django-q2 cluster stats not readable", exc_info=True)
        return None
    return len(stats), sum(len(stat.workers or ()) for stat in stats)


def queued_tasks() -> int | None:
    """Tasks waiting in the django-q2 broker's queue; None when the broker does not answer."""
    try:
        return int(get_broker().queue_size() or 0)
    except Exception:
        logger.warning("django-q2 broker queue size not readable", exc_info=True)
        return None


def health_samples_take(*, now: datetime | None = None) -> dict[str, int]:
    """Write this minute's breaker state of every provider and the installation's health row
    (taken again in the same minute, the later sample wins)."""
    now = now or timezone.now()
    minute = now.replace(second=0, microsecond=0)
    providers = list(Provider.objects.order_by("pk"))
    states = breaker_states(providers)
    BreakerSample.objects.bulk_create(
        [
            BreakerSample(
                provider=p, at=minute, state=states[p.pk].state, failures=states[p.pk].failures
            )
            for p in providers
        ],
        update_conflicts=True,
        unique_fields=["provider", "at"],
        update_fields=["state", "failures"],
    )
    alive = WorkerHeartbeat.objects.filter(
        last_seen__gte=now - timedelta(seconds=HEARTBEAT_SILENT_SECONDS)
    ).count()
    running, workers = cluster_stats() or (0, 0)
    values = {
        "clusters_alive": alive,
        "clusters_running": running,
        "workers": workers,
        "queued_tasks": queued_tasks(),
        "breakers_open": sum(1 for view in states.values() if view.state != CLOSED),
    }
    HealthSample.objects.update_or_create(at=minute, defaults=values)
    return {
        "breakers_sampled": len(providers),
        "health_pruned": health_samples_prune(before=now - KEEP),
    }


def health_samples_prune(*, before: datetime) -> int:
    """Delete every health and breaker sample taken before `before`; returns how many."""
    deleted, _ = HealthSample.objects.filter(at__lt=before).delete()
    breakers, _ = BreakerSample.objects.filter(at__lt=before).delete()
    return deleted + breakers


def health_sample_series(
    *, since: datetime, until: datetime, resolution: str = "minute"
) -> list[HealthPoint]:
    """The health samples from `since` to `until`, oldest first, with every provider's breaker
    level: one point per sampled minute, or per hour (see HOURLY; a breaker's worst level of the
    hour). Minutes nobody sampled are left out. Two queries."""
    start = since.replace(second=0, microsecond=0)
    if resolution == "hour":
        start = start.replace(minute=0)
    rows = HealthSample.objects.filter(at__gte=start, at__lt=until)
    breakers = BreakerSample.objects.filter(at__gte=start, at__lt=until)
    level = Case(
        *(When(state=state, then=Value(n)) for state, n in STATE_LEVELS.items()),
        default=Value(0),
        output_field=IntegerField(),
    )
    if resolution == "hour":
        rows = (
            rows.annotate(hour=TruncHour("at"))
            .values("hour")
            .annotate(**{name: aggregate(name) for name, aggregate in HOURLY.items()})
            .order_by("hour")
        )
        breakers = (
            breakers.annotate(hour=TruncHour("at"))
            .values("hour", "provider_id")
            .annotate(level=Max(level))
            .order_by()
        )
        key = "hour"
    else:
        rows = rows.values("at", *HOURLY).order_by("at")
        breakers = breakers.annotate(level=level).values("at", "provider_id", "level")
        key = "at"
    points = {row[key]: HealthPoint(at=row[key], values=_values(row)) for row in rows}
    for row in breakers:
        point = points.get(row[key])
        if point is not None:
            point.breakers[row["provider_id"]] = row["level"]
    return [points[at] for at in sorted(points)]


def _values(row: dict) -> dict[str, int | None]:
    return {name: row[name] for name in HOURLY}


def health_latest() -> HealthPoint | None:
    """The newest health sample with its breakers (what /metrics exposes); two queries."""
    row = HealthSample.objects.order_by("-at").values("at", *HOURLY).first()
    if row is None:
        return None
    point = HealthPoint(at=row["at"], values=_values(row))
    for provider_id, state in BreakerSample.objects.filter(at=row["at"]).values_list(
        "provider_id", "state"
    ):
        point.breakers[provider_id] = STATE_LEVELS.get(state, 0)
    return point
