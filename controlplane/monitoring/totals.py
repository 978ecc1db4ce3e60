"""Counters that only go up: per pipeline, everything its rollups ever counted, for /metrics.

Summing every rollup on each scrape would read ever more rows. Instead `CounterTotal` keeps, per
pipeline, the sum of its rollups (counters and latency buckets) before `through`, an hour
boundary; a scrape adds the rollups from `through` on: at most a couple of hours of minutes per
pipeline, in three queries for all pipelines. The per-minute sample task moves `through` to the
start of the previous hour (`counter_totals_advance`), adding that hour's rollups to the totals in
the same row write, so a reader always sees a row and the rollups after it, never an hour twice or
not at all.

The totals never decrease: rollups are only ever added to. Work the engine would write to a
minute already more than an hour old when the totals move past it would not be counted (the
engine writes to the current minute).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import DecimalField, Q
from django.utils import timezone

from controlplane.monitoring.models import CounterTotal
from pipelines import metrics
from pipelines.metrics import Point
from pipelines.models import Pipeline, Rollup

logger = logging.getLogger(__name__)

# How long a minute's rollups are left to settle before the totals take them in.
SETTLE = timedelta(hours=1)
LOCK_KEY = "counter_totals:advancing"
LOCK_SECONDS = 55
DECIMALS = frozenset(
    name for name in metrics.COUNTERS if isinstance(Rollup._meta.get_field(name), DecimalField)
)


def _target(now: datetime) -> datetime:
    return now.replace(minute=0, second=0, microsecond=0) - SETTLE


def _range_filter(groups: Mapping[datetime | None, list[int]], until: datetime | None) -> Q:
    """Rollups of each group of pipelines from its `through` (None: from the first) on, and
    before `until` when given."""
    condition = Q(pk__in=[])
    for through, ids in groups.items():
        part = Q(pipeline_id__in=ids)
        if through is not None:
            part &= Q(minute__gte=through)
        condition |= part
    if until is not None:
        condition &= Q(minute__lt=until)
    return condition


def _sums(groups: Mapping[datetime | None, list[int]], until: datetime | None) -> dict[int, Point]:
    """Per pipeline, its rollups summed over its group's range: two queries."""
    ids = [pid for group in groups.values() for pid in group]
    return metrics.totals_where(
        pipeline_ids=ids, where=_range_filter(groups, until), at=timezone.now()
    )


def _point_of(total: CounterTotal | None) -> Point:
    point = Point(at=timezone.now())
    if total is None:
        return point
    point.counts = {
        name: Decimal(value) if name in DECIMALS else int(value)
        for name, value in total.counts.items()
        if name in metrics.COUNTERS
    }
    point.latency = {
        measure: {int(bucket): int(n) for bucket, n in buckets.items()}
        for measure, buckets in total.latency.items()
    }
    return point


def _stored(point: Point) -> dict[str, Any]:
    return {
        "counts": {
            name: str(value) if name in DECIMALS else int(value)
            for name, value in point.counts.items()
        },
        "latency": {
            measure: {str(bucket): n for bucket, n in buckets.items()}
            for measure, buckets in point.latency.items()
        },
    }


def _grouped(
    pipeline_ids: Iterable[int], totals: Mapping[int, CounterTotal]
) -> dict[datetime | None, list[int]]:
    groups: dict[datetime | None, list[int]] = {}
    for pid in pipeline_ids:
        total = totals.get(pid)
        groups.setdefault(total.through if total else None, []).append(pid)
    return groups


def counter_totals_read(*, pipeline_ids: Iterable[int]) -> dict[int, Point]:
    """Per pipeline, every counter and latency bucket its rollups ever counted (up to the
    current minute). Three queries whatever the number of pipelines."""
    ids = list(pipeline_ids)
    totals = {t.pipeline_id: t for t in CounterTotal.objects.filter(pipeline_id__in=ids)}
    recent = _sums(_grouped(ids, totals), until=None)
    return {
        pid: metrics.totals([_point_of(totals.get(pid)), recent.get(pid, Point(at=timezone.now()))])
        for pid in ids
    }


def counter_totals_advance(*, now: datetime | None = None) -> dict[str, int]:
    """Add the rollups of every pipeline up to the start of the previous hour to its totals
    (idempotent: does nothing until another hour has settled, or while another worker does it).
    Returns how many pipelines' totals moved."""
    target = _target(now or timezone.now())
    if not cache.add(LOCK_KEY, 1, timeout=LOCK_SECONDS):
        return {"totals_moved": 0}
    try:
        return {"totals_moved": _advance(target)}
    finally:
        cache.delete(LOCK_KEY)


def _advance(target: datetime) -> int:
    ids = list(Pipeline.objects.values_list("pk", flat=True))
    totals = {t.pipeline_id: t for t in CounterTotal.objects.all()}
    behind = [pid for pid in ids if pid not in totals or totals[pid].through < target]
    if not behind:
        return 0
    added = _sums(_grouped(behind, totals), until=target)
    moved = 0
    for pid in behind:
        total = totals.get(pid)
        point = metrics.totals([_point_of(total), added[pid]])
        fields = _stored(point)
        if total is not None:
            # Only from the `through` this pass read: a concurrent pass cannot add twice.
            moved += CounterTotal.objects.filter(pk=total.pk, through=total.through).update(
                through=target, updated_at=timezone.now(), **fields
            )
            continue
        try:
            with transaction.atomic():
                CounterTotal.objects.create(pipeline_id=pid, through=target, **fields)
        except IntegrityError:
            continue  # another pass created it a moment ago
        moved += 1
    return moved
