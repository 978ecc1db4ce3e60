"""Latency histograms with fixed buckets: per minute the rollups keep how many items fell in each
bucket, and a percentile over any range comes from the summed buckets. No ORM here.

The buckets grow roughly geometrically from 10 ms to a day, so the error of a percentile read
from them is bounded by the width of one bucket around it (linear interpolation inside it)."""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping

# Upper bounds in seconds; the last bucket holds everything slower than a day.
BOUNDS: tuple[float, ...] = (
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
    1800,
    3600,
    7200,
    21600,
    86400,
    math.inf,
)


def bucket_of(seconds: float) -> int:
    """The index of the bucket `seconds` falls in (negative clock skew counts as 0)."""
    return bisect.bisect_left(BOUNDS, max(0.0, seconds))


def bucket_counts(values: Iterable[float]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for value in values:
        index = bucket_of(value)
        counts[index] = counts.get(index, 0) + 1
    return counts


def percentile(counts: Mapping[int, int], q: float) -> float | None:
    """The q-th percentile (0 to 100) of the values counted in `counts` ({bucket: count}), by linear
    interpolation inside the bucket it falls in; None when nothing was counted. The open last
    bucket answers its lower bound."""
    total = sum(counts.values())
    if total <= 0:
        return None
    rank = q / 100 * total
    seen = 0
    for index in sorted(counts):
        n = counts[index]
        if n <= 0:
            continue
        if seen + n >= rank:
            lower = BOUNDS[index - 1] if index > 0 else 0.0
            upper = BOUNDS[index]
            if math.isinf(upper):
                return lower
            return lower + (upper - lower) * max(0.0, rank - seen) / n
        seen += n
    return BOUNDS[-2]
