"""Gauge samples: once a minute the schedule writes every pipeline's live gauges (the capped
counts of `pipelines.metrics.gauges`) to `GaugeSample`, so the dashboards' queue depth and review
backlog charts have a history over any range; rows older than KEEP are dropped by the same task.

A sample costs a fixed number of index range scans per pipeline (six, in two statements for all
pipelines), whatever the size of the item table; reading a range costs one query for all the
pipelines on a dashboard.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from django.db.models import Sum
from django.utils import timezone

from controlplane.monitoring.figures import Sample
from controlplane.monitoring.models import GaugeSample
from pipelines import metrics
from pipelines.models import Pipeline

# The gauges a sample keeps, named like the item statuses they count.
GAUGES = tuple(str(status) for status in metrics.GAUGE_STATUSES)
# The longest dashboard range is seven days; one more day covers a range read across midnight.
KEEP = timedelta(days=8)


def gauge_samples_take(*, now: datetime | None = None) -> dict[str, int]:
    """Write this minute's gauges of every pipeline (taken again in the same minute, the later
    sample wins) and drop samples older than KEEP; returns how many rows were written and
    dropped."""
    now = now or timezone.now()
    minute = now.replace(second=0, microsecond=0)
    ids = list(Pipeline.objects.order_by("pk").values_list("pk", flat=True))
    values = metrics.gauges(pipeline_ids=ids)
    ages = metrics.oldest_queued_ages(pipeline_ids=ids, now=now)
    rows = []
    for pid in ids:
        age = ages.get(pid)
        rows.append(
            GaugeSample(
                pipeline_id=pid,
                at=minute,
                oldest_queued_seconds=None if age is None else max(0, round(age)),
                **{name: values[pid].get(name, 0) for name in GAUGES},
            )
        )
    GaugeSample.objects.bulk_create(
        rows,
        update_conflicts=True,
        unique_fields=["pipeline", "at"],
        update_fields=[*GAUGES, "oldest_queued_seconds"],
    )
    return {"sampled": len(rows), "pruned": gauge_samples_prune(before=now - KEEP)}


def gauge_samples_prune(*, before: datetime) -> int:
    """Delete every sample taken before `before`; returns how many."""
    deleted, _ = GaugeSample.objects.filter(at__lt=before).delete()
    return deleted


def gauge_sample_series(
    *, pipeline_ids: Iterable[int], since: datetime, until: datetime, resolution: str = "minute"
) -> list[Sample]:
    """The samples from `since` to `until`, summed over the pipelines, oldest first: one per
    sampled minute, or at "hour" resolution each gauge's highest minute of the hour (a spike
    stays visible on the long ranges). Minutes nobody sampled are left out. One query."""
    ids = list(pipeline_ids)
    if not ids:
        return []
    start = since.replace(second=0, microsecond=0)
    if resolution == "hour":
        start = start.replace(minute=0)
    rows = (
        GaugeSample.objects.filter(pipeline_id__in=ids, at__gte=start, at__lt=until)
        .values("at")
        .annotate(**{name: Sum(name) for name in GAUGES})
        .order_by("at")
    )
    minutes = [(row["at"], {name: int(row[name] or 0) for name in GAUGES}) for row in rows]
    if resolution != "hour":
        return [Sample(at, values) for at, values in minutes]
    hours: dict[datetime, dict[str, int]] = {}
    for at, values in minutes:
        peak = hours.setdefault(at.replace(minute=0), dict.fromkeys(GAUGES, 0))
        for name, n in values.items():
            peak[name] = max(peak[name], n)
    return [Sample(at, values) for at, values in hours.items()]
