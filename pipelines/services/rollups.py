"""Per minute counters: added to by the engine in one statement per batch (and by review
decisions), read by budgets, dashboards, reports and rollout guards instead of counting the item
table. Per pipeline (`Rollup`, `LatencyRollup`) and per step and prompt version (`StepRollup`,
`StepLatencyRollup`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import connection, models

from pipelines.histogram import bucket_counts
from pipelines.models import LatencyRollup, Rollup, StepLatencyRollup, StepRollup


def _counters(model: type[models.Model], keys: Sequence[str]) -> tuple[str, ...]:
    return tuple(
        field.column
        for field in model._meta.concrete_fields
        if field.name not in ("id", *keys) and field.column not in keys
    )


COUNTERS = _counters(Rollup, ("pipeline", "minute"))
STEP_COUNTERS = _counters(StepRollup, ("pipeline", "step", "version", "minute"))


def minute_of(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def _upsert(
    model: type[models.Model],
    *,
    keys: Sequence[str],
    counters: Sequence[str],
    rows: Sequence[tuple[Sequence[Any], Mapping[str, Any]]],
    at: datetime,
    unique: Sequence[str] | None = None,
) -> None:
    """Add each row's counters to the row with its keys (and the minute of `at`), creating it
        when missing: one INSERT … ON CONFLICT DO UPDATE for all rows, so concurrent workers add up
        instead of overwriting each other. `keys` are columns; the minute goes last; `unique` names
    the keys of the unique constraint when it has fewer (the minute is added)."""
    rows = [(key, values) for key, values in rows if any(values.values())]
    if not rows:
        return
    for _, values in rows:
        unknown = set(values) - set(counters)
        if unknown:
            raise ValueError(f"unknown rollup counters: {sorted(unknown)}")
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    conflict = (*(unique or keys), "minute")
    columns = ", ".join(quote(c) for c in (*keys, "minute", *counters))
    placeholders = ", ".join(["%s"] * (len(keys) + 1 + len(counters)))
    updates = ", ".join(f"{quote(c)} = {table}.{quote(c)} + excluded.{quote(c)}" for c in counters)
    minute = model._meta.get_field("minute").get_db_prep_save(minute_of(at), connection)
    decimals = {
        f.column: f for f in model._meta.concrete_fields if isinstance(f, models.DecimalField)
    }
    params = []
    for key, values in rows:
        row = [*key, minute]
        for column in counters:
            value = values.get(column, 0)
            if column in decimals:
                value = decimals[column].get_db_prep_save(Decimal(value), connection)
            row.append(value)
        params.append(row)
    # Identifiers come from the model's own columns, values go as parameters.
    sql = (
        f"INSERT INTO {table} ({columns}) VALUES ({placeholders}) "  # noqa: S608
        f"ON CONFLICT ({', '.join(quote(c) for c in conflict)}) DO UPDATE SET {updates}"
    )
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)


def rollups_add(counts: Mapping[int, Mapping[str, int | Decimal]], *, at: datetime) -> None:
    """Add `counts` ({pipeline id: {counter: amount}}) to each pipeline's row for the minute of
    `at`, creating it when missing, in one statement."""
    _upsert(
        Rollup,
        keys=("pipeline_id",),
        counters=COUNTERS,
        rows=[((pid,), values) for pid, values in counts.items()],
        at=at,
    )


def step_rollups_add(
    counts: Mapping[tuple[int, int, int], Mapping[str, int | Decimal]], *, at: datetime
) -> None:
    """Add `counts` ({(pipeline id, step id, version number): {counter: amount}}) to each step
    and prompt version's row for the minute of `at`, in one statement."""
    _upsert(
        StepRollup,
        keys=("pipeline_id", "step_id", "version"),
        unique=("step_id", "version"),
        counters=STEP_COUNTERS,
        rows=list(counts.items()),
        at=at,
    )


def _buckets_add(
    model: type[models.Model],
    *,
    keys: Sequence[str],
    samples: Mapping[tuple, list[float]],
    at: datetime,
) -> None:
    rows = [
        ((*key, bucket), {"count": count})
        for key, values in samples.items()
        for bucket, count in bucket_counts(values).items()
    ]
    if not rows:
        return
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    minute = model._meta.get_field("minute").get_db_prep_save(minute_of(at), connection)
    columns = (*keys, "minute", "bucket")
    sql = (
        f"INSERT INTO {table} ({', '.join(quote(c) for c in columns)}, count) "  # noqa: S608
        f"VALUES ({', '.join(['%s'] * (len(columns) + 1))}) "
        f"ON CONFLICT ({', '.join(quote(c) for c in columns)}) "
        f"DO UPDATE SET count = {table}.count + excluded.count"
    )
    with connection.cursor() as cursor:
        cursor.executemany(
            sql, [(*key[:-1], minute, key[-1], values["count"]) for key, values in rows]
        )


def latencies_add(samples: Mapping[tuple[int, str], list[float]], *, at: datetime) -> None:
    """Count latency samples ({(pipeline id, measure): [seconds, …]}) into their buckets of the
    minute of `at`: one INSERT … ON CONFLICT DO UPDATE for the whole batch."""
    for _, measure in samples:
        if measure not in LatencyRollup.Measure.values:
            raise ValueError(f"unknown latency measure: {measure!r}")
    _buckets_add(LatencyRollup, keys=("pipeline_id", "measure"), samples=samples, at=at)


def step_latencies_add(samples: Mapping[tuple[int, int], list[float]], *, at: datetime) -> None:
    """Count model-call latencies ({(step id, version number): [seconds, …]}) into their
    buckets of the minute of `at`, in one statement."""
    _buckets_add(StepLatencyRollup, keys=("step_id", "version"), samples=samples, at=at)
