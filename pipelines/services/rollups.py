"""Per pipeline and minute counters: added to by the engine in one statement per batch, read by
budgets, dashboards and reports instead of counting the item table."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal

from django.db import connection

from pipelines.histogram import bucket_counts
from pipelines.models import LatencyRollup, Rollup

COUNTERS = tuple(
    field.column
    for field in Rollup._meta.concrete_fields
    if field.name not in ("id", "pipeline", "minute")
)


def minute_of(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def rollups_add(counts: Mapping[int, Mapping[str, int | Decimal]], *, at: datetime) -> None:
    """Add `counts` ({pipeline id: {counter: amount}}) to each pipeline's row for the minute of
    `at`, creating it when missing: one INSERT … ON CONFLICT DO UPDATE for all pipelines, so
    concurrent workers add up instead of overwriting each other."""
    rows = [(pid, values) for pid, values in counts.items() if any(values.values())]
    if not rows:
        return
    for _, values in rows:
        unknown = set(values) - set(COUNTERS)
        if unknown:
            raise ValueError(f"unknown rollup counters: {sorted(unknown)}")
    quote = connection.ops.quote_name
    table = quote(Rollup._meta.db_table)
    columns = ", ".join(quote(c) for c in ("pipeline_id", "minute", *COUNTERS))
    placeholders = ", ".join(["%s"] * (2 + len(COUNTERS)))
    updates = ", ".join(f"{quote(c)} = {table}.{quote(c)} + excluded.{quote(c)}" for c in COUNTERS)
    minute_field = Rollup._meta.get_field("minute")
    cost_field = Rollup._meta.get_field("cost")
    minute = minute_field.get_db_prep_save(minute_of(at), connection)
    params = []
    for pid, values in rows:
        row = [pid, minute]
        for column in COUNTERS:
            value = values.get(column, 0)
            if column in ("cost", "cost_saved"):
                value = cost_field.get_db_prep_save(Decimal(value), connection)
            row.append(value)
        params.append(row)
    # Identifiers come from the model's own columns, values go as parameters.
    sql = (
        f"INSERT INTO {table} ({columns}) VALUES ({placeholders}) "  # noqa: S608
        f"ON CONFLICT (pipeline_id, minute) DO UPDATE SET {updates}"
    )
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)


def latencies_add(samples: Mapping[tuple[int, str], list[float]], *, at: datetime) -> None:
    """Count latency samples ({(pipeline id, measure): [seconds, …]}) into their buckets of the
    minute of `at`: one INSERT … ON CONFLICT DO UPDATE for the whole batch."""
    rows = []
    for (pipeline_id, measure), values in samples.items():
        if measure not in LatencyRollup.Measure.values:
            raise ValueError(f"unknown latency measure: {measure!r}")
        for bucket, count in bucket_counts(values).items():
            rows.append((pipeline_id, measure, bucket, count))
    if not rows:
        return
    quote = connection.ops.quote_name
    table = quote(LatencyRollup._meta.db_table)
    minute = LatencyRollup._meta.get_field("minute").get_db_prep_save(minute_of(at), connection)
    sql = (
        f"INSERT INTO {table} (pipeline_id, minute, measure, bucket, count) "  # noqa: S608
        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (pipeline_id, minute, measure, bucket) "
        f"DO UPDATE SET count = {table}.count + excluded.count"
    )
    with connection.cursor() as cursor:
        cursor.executemany(sql, [(pid, minute, m, b, n) for pid, m, b, n in rows])
