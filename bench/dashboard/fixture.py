"""The benchmark's database and fixture: a database of its own, and items, rollups, latency
buckets and gauge samples written inside PostgreSQL."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

DAYS = 7
# Per 10,000 finished items, how they ended.
FINISHED_MIX = (
    ("delivered", 9_700),
    ("rejected", 120),
    ("dead_lettered", 40),
    ("quarantined", 60),
    ("deduplicated", 80),
)
# The newest items are still at work: this share of all items, and per 1,000 of them, where,
# newest first (the oldest of them wait for a person).
LIVE_SHARE = 0.018
LIVE_MIX = (
    ("queued", 450),
    ("running", 10),
    ("waiting_retry", 60),
    ("delivering", 30),
    ("in_review", 450),
)
LABELS = ("billing", "bug", "account")
# Latency buckets (pipelines.histogram.BOUNDS indexes) per measure, with the share of the
# rollup counter each holds: queue wait of the items started, processing of the calls, end to
# end of the items accepted, review wait of the items reviewed.
LATENCY_SHAPE = (
    ("queue_wait", "started", ((3, 0.55), (4, 0.35), (5, 0.10))),
    ("processing", "calls", ((6, 0.45), (7, 0.45), (8, 0.10))),
    ("end_to_end", "accepted", ((7, 0.40), (8, 0.35), (9, 0.15), (10, 0.07), (13, 0.03))),
    ("review_wait", "reviewed", ((14, 0.5), (15, 0.4), (16, 0.1))),
)


# --- The fixture ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fixture:
    operator_id: int
    pipeline_ids: list[int]
    # "<client>/<pipeline>" of each pipeline, as the dashboards' URLs and websocket name them.
    names: list[str]
    items: int
    rollups: int
    latency_rows: int
    samples: int
    seconds: dict[str, float]


def _say(progress: Callable[[str], None] | None, text: str) -> None:
    if progress is not None:
        progress(text)


def _defaults(model, given: dict, connection) -> tuple[list[str], list[str], list]:
    """Columns, SQL expressions and their parameters, in order, for an INSERT … SELECT into
    `model`: the expressions in `given` (by column; an expression with placeholders comes as
    `(sql, [parameters])`), and for every other column its field's default (or NULL). A new
    required column without a default stops the load with its name."""
    columns, expressions, params = [], [], []
    for field in model._meta.concrete_fields:
        if field.primary_key and field.column not in given:
            continue  # the database numbers the rows
        columns.append(field.column)
        if field.column in given:
            value = given[field.column]
            expression, values = value if isinstance(value, tuple) else (value, [])
            expressions.append(expression)
            params.extend(values)
        elif field.null and not field.has_default():
            expressions.append("NULL")
        elif (default := field.get_default()) is not None:
            # A field's default, or the empty string Django saves for a blank text field.
            expressions.append("%s")
            params.append(field.get_db_prep_save(default, connection))
        else:
            raise RuntimeError(f"bench.dashboard: no value for {model.__name__}.{field.name}")
    unknown = set(given) - set(columns)
    if unknown:
        raise RuntimeError(f"bench.dashboard: {model.__name__} has no column {sorted(unknown)}")
    return columns, expressions, params


class _IndexesDropped:
    """Drop a table's secondary indexes and foreign keys for a bulk load; build them again on
    exit (whatever happened). Indexes behind a constraint (primary key, unique) are kept."""

    def __init__(self, cursor, table: str) -> None:
        self.cursor, self.table = cursor, table
        self.indexes: list[tuple[str, str]] = []
        self.foreign_keys: list[tuple[str, str]] = []

    def __enter__(self) -> _IndexesDropped:
        cursor = self.cursor
        cursor.execute(
            "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = %s::regclass "
            "AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)",
            [self.table],
        )
        self.indexes = list(cursor.fetchall())
        cursor.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = %s::regclass AND contype = 'f'",
            [self.table],
        )
        self.foreign_keys = list(cursor.fetchall())
        for name, _ in self.foreign_keys:
            cursor.execute(f'ALTER TABLE "{self.table}" DROP CONSTRAINT "{name}"')
        for name, _ in self.indexes:
            cursor.execute(f'DROP INDEX "{name}"')
        return self

    def __exit__(self, *exc) -> None:
        for _, definition in self.indexes:
            self.cursor.execute(definition)
        for name, definition in self.foreign_keys:
            self.cursor.execute(f'ALTER TABLE "{self.table}" ADD CONSTRAINT "{name}" {definition}')


def _case(expression: str, mix: Sequence[tuple[str, int]], *, of: int) -> str:
    """SQL choosing a status by where `expression` (0 <= it < `of`) falls in the mix."""
    whens, edge = [], 0
    for status, share in mix[:-1]:
        edge += share
        whens.append(f"WHEN {expression} < {edge * of // sum(s for _, s in mix)} THEN '{status}'")
    return f"CASE {' '.join(whens)} ELSE '{mix[-1][0]}' END"


def _items_load(cursor, *, pipeline_ids, items, since, until, chunk, progress) -> None:
    from django.db import connection

    from pipelines.models import Item

    cursor.execute("SELECT COALESCE(MAX(id), 0) FROM pipelines_item")
    offset = cursor.fetchone()[0]
    live = max(1, round(items * LIVE_SHARE))
    finished_up_to = items - live
    step = (until - since).total_seconds() / max(1, items)
    status = (
        f"CASE WHEN g.i > {finished_up_to} "
        f"THEN {_case(f'({items} - g.i) * 1000 / {live}', LIVE_MIX, of=1000)} "
        f"ELSE {_case('(g.i * 7919) %% 10000', FINISHED_MIX, of=10000)} END"
    )
    outputs = " ".join(
        f"WHEN {n} THEN '{json.dumps({'topic': {'output': {'label': label}}})}'::jsonb"
        for n, label in enumerate(LABELS)
    )
    finished = "s.status IN ({})".format(", ".join(f"'{status}'" for status, _ in FINISHED_MIX))
    finished_at = "s.created + (5 + s.i %% 120) * interval '1 s'"
    given = {
        "id": ("s.i + %s::bigint", [offset]),
        "pipeline_id": (f"(%s::bigint[])[1 + s.i %% {len(pipeline_ids)}]", [list(pipeline_ids)]),
        "status": "s.status",
        "data": "jsonb_build_object('text', 'Ticket ' || s.i || ': cannot sign in')",
        "priority": "s.i %% 10",
        "content_hash": "encode(sha256(s.i::text::bytea), 'hex')",
        "error_class": (
            "CASE s.status WHEN 'dead_lettered' THEN 'transient' WHEN 'quarantined' THEN 'input' "
            "ELSE '' END"
        ),
        "error_message": (
            "CASE s.status WHEN 'dead_lettered' THEN 'timeout after 30 s (attempt 5 of 5)' "
            "WHEN 'quarantined' THEN 'data: ''text'' is a required property' ELSE '' END"
        ),
        "attempts": "CASE s.status WHEN 'queued' THEN 0 WHEN 'dead_lettered' THEN 5 ELSE 1 END",
        "lease_owner": "CASE s.status WHEN 'running' THEN 'bench-worker' ELSE '' END",
        "lease_expires_at": (
            "CASE s.status WHEN 'running' THEN s.created + interval '5 minutes' END"
        ),
        "next_attempt_at": (
            "CASE s.status WHEN 'waiting_retry' THEN s.created + interval '1 minute' END"
        ),
        "outputs": (
            f"CASE WHEN s.status IN ('delivered', 'in_review', 'rejected', 'delivering') "
            f"THEN CASE s.i %% {len(LABELS)} {outputs} END ELSE '{{}}'::jsonb END"
        ),
        "result": (
            f"CASE WHEN s.status IN ('delivered', 'delivering') "
            f"THEN CASE s.i %% {len(LABELS)} {outputs} END END"
        ),
        "confidence": (
            "CASE WHEN s.status IN ('delivered', 'in_review', 'rejected', 'delivering') "
            "THEN 0.5 + (s.i %% 50) / 100.0 END"
        ),
        "hold_reason": (
            "CASE s.status WHEN 'in_review' THEN 'low confidence 0.62 < 0.80' ELSE '' END"
        ),
        "input_tokens": "CASE WHEN s.status = 'queued' THEN 0 ELSE 120 + s.i %% 80 END",
        "output_tokens": "CASE WHEN s.status = 'queued' THEN 0 ELSE 6 END",
        "cost": "CASE WHEN s.status = 'queued' THEN 0 ELSE 0.000045 END",
        "finished_at": f"CASE WHEN {finished} THEN {finished_at} END",
        "created_at": "s.created",
        "updated_at": (
            f"CASE WHEN {finished} THEN s.created + (5 + s.i %% 120) * interval '1 s' "
            "ELSE s.created END"
        ),
    }
    columns, expressions, params = _defaults(Item, given, connection)
    sql = (
        f"INSERT INTO pipelines_item ({', '.join(columns)}) "  # noqa: S608 -- constants and columns
        f"SELECT {', '.join(expressions)} FROM ("
        f"SELECT g.i, {status} AS status, to_timestamp(%s + (g.i - 1) * %s) AS created "
        "FROM generate_series(%s::bigint, %s::bigint) AS g(i)) AS s"
    )
    began = time.perf_counter()
    with _IndexesDropped(cursor, "pipelines_item"):
        for first in range(1, items + 1, chunk):
            last = min(items, first + chunk - 1)
            cursor.execute(sql, [*params, since.timestamp(), step, first, last])
            _say(
                progress,
                f"bench: items {last:,} / {items:,} ({time.perf_counter() - began:.0f} s)",
            )
        _say(progress, "bench: items: building the indexes again…")
    cursor.execute(
        "SELECT setval(pg_get_serial_sequence('pipelines_item', 'id'), "
        "(SELECT MAX(id) FROM pipelines_item))"
    )


def _rollups_load(cursor, *, pipeline_ids, items, since, until) -> None:
    """A rollup row per pipeline and minute, a daily wave around the mean rate of the items."""
    from django.db import connection

    from pipelines.models import Rollup

    minutes = max(1, int((until - since).total_seconds() // 60))
    per_minute = items / (len(pipeline_ids) * minutes)
    given = {
        "pipeline_id": "p.id",
        "minute": "m.minute",
        "ingested": "x.n",
        "started": "round(x.n * 1.03)::int",
        "calls": "round(x.n * 1.03)::int",
        "accepted": "round(x.n * 0.80)::int",
        "held_for_review": "round(x.n * 0.18)::int",
        "reviewed": "round(x.n * 0.18)::int",
        "rejected": "round(x.n * 0.012)::int",
        "quarantined": "round(x.n * 0.006)::int",
        "dead_lettered": "round(x.n * 0.004)::int",
        "failed_transient": "round(x.n * 0.03)::int",
        "failed_processing": "round(x.n * 0.005)::int",
        "cache_hits": "round(x.n * 0.05)::int",
        "input_tokens": "x.n * 160",
        "output_tokens": "x.n * 6",
        "cost": "x.n * 0.000045",
        "cost_saved": "x.n * 0.000002",
    }
    columns, expressions, params = _defaults(Rollup, given, connection)
    cursor.execute(
        f"INSERT INTO pipelines_rollup ({', '.join(columns)}) "  # noqa: S608 -- constants
        f"SELECT {', '.join(expressions)} FROM unnest(%s::bigint[]) AS p(id) "
        "CROSS JOIN generate_series(%s::timestamptz, %s::timestamptz, interval '1 minute') "
        "AS m(minute) CROSS JOIN LATERAL (SELECT greatest(1, round(%s * (1 + 0.5 * sin(2 * pi() "
        "* extract(epoch FROM m.minute) / 86400)) * (0.8 + 0.4 * random())))::int AS n) AS x",
        [*params, list(pipeline_ids), since, until - timedelta(minutes=1), per_minute],
    )


def _latencies_load(cursor, *, pipeline_ids, since) -> None:
    shape = ", ".join(
        f"('{measure}', '{base}', {bucket}, {share})"
        for measure, base, buckets in LATENCY_SHAPE
        for bucket, share in buckets
    )
    base = "CASE b.base " + " ".join(
        f"WHEN '{name}' THEN r.{name}" for name in {base for _, base, _ in LATENCY_SHAPE}
    )
    cursor.execute(
        "INSERT INTO pipelines_latencyrollup (pipeline_id, minute, measure, bucket, count) "  # noqa: S608
        "SELECT r.pipeline_id, r.minute, b.measure, b.bucket, "
        f"greatest(1, round(({base} END) * b.share))::int FROM pipelines_rollup r "
        f"CROSS JOIN (VALUES {shape}) AS b(measure, base, bucket, share) "
        "WHERE r.pipeline_id = ANY(%s) AND r.minute >= %s",
        [list(pipeline_ids), since],
    )


def _samples_load(cursor, *, pipeline_ids, items, since, until) -> None:
    """A gauge sample per pipeline and minute around the live items' numbers, with a daily
    wave, as the schedule would have taken them."""
    live = items * LIVE_SHARE / len(pipeline_ids) / 1000
    wave = "(1 + 0.4 * sin(2 * pi() * extract(epoch FROM m.minute) / 86400))"
    shares = dict(LIVE_MIX)
    gauges = ", ".join(
        f"round({live * shares[name]:.4f} * {wave} * (0.9 + 0.2 * random()))::int"
        for name in ("queued", "running", "waiting_retry", "in_review", "delivering")
    )
    cursor.execute(
        "INSERT INTO monitoring_gaugesample (pipeline_id, at, queued, running, waiting_retry, "  # noqa: S608
        "in_review, delivering, oldest_queued_seconds) "
        f"SELECT p.id, m.minute, {gauges}, (60 + random() * 600)::int "
        "FROM unnest(%s::bigint[]) AS p(id) CROSS JOIN generate_series(%s::timestamptz, "
        "%s::timestamptz, interval '1 minute') AS m(minute)",
        [list(pipeline_ids), since, until - timedelta(minutes=1)],
    )


def fixture_create(
    *,
    items: int,
    clients: int = 5,
    pipelines_per_client: int = 4,
    days: int = DAYS,
    chunk: int = 500_000,
    now: datetime | None = None,
    progress: Callable[[str], None] | None = None,
) -> Fixture:
    """Clients, pipelines and an operator through the services, then `items` items, `days` days
    of rollups, latency buckets and gauge samples per pipeline written by SQL inside PostgreSQL
    (INSERT … SELECT over generate_series, `chunk` items per statement), then ANALYZE."""
    from decimal import Decimal

    from django.db import connection
    from django.utils import timezone

    from controlplane.roles import Role
    from controlplane.services import client_create, user_create
    from pipelines.models import Pipeline
    from pipelines.services.configuration import aimodel_create, pipeline_create, provider_create

    if connection.vendor != "postgresql":
        raise RuntimeError("bench.dashboard loads its fixture with PostgreSQL's generate_series")
    seconds: dict[str, float] = {}
    began = time.perf_counter()
    now = now or timezone.now()
    until = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    since = until - timedelta(days=days)
    operator = user_create(
        username="bench-operator", password=f"bench-{time.time()}", role=Role.OPERATOR
    )
    provider = provider_create(name="Local", kind="local", actor=None, actor_label="bench")
    aimodel_create(provider=provider, name="tfidf-logreg", actor=None, actor_label="bench")
    pipelines = []
    for c in range(clients):
        client = client_create(name=f"Bench client {c}", slug=f"client-{c}", actor_label="bench")
        for n in range(pipelines_per_client):
            pipelines.append(
                pipeline_create(
                    client=client,
                    name=f"Pipeline {c}.{n}",
                    slug=f"pipeline-{n}",
                    status=Pipeline.Status.ACTIVE,
                    daily_budget=Decimal("50") if n % 2 == 0 else None,
                    concurrency_limit=64,
                    actor_label="bench",
                )
            )
    ids = [p.pk for p in pipelines]
    with connection.cursor() as cursor:
        # Building the items' indexes again sorts millions of rows: give it memory.
        cursor.execute("SET maintenance_work_mem = '512MB'")
        step_began = time.perf_counter()
        _items_load(
            cursor,
            pipeline_ids=ids,
            items=items,
            since=since,
            until=now,
            chunk=chunk,
            progress=progress,
        )
        seconds["items"] = round(time.perf_counter() - step_began, 1)
        _say(progress, f"bench: items written in {seconds['items']} s; rollups…")
        step_began = time.perf_counter()
        _rollups_load(cursor, pipeline_ids=ids, items=items, since=since, until=until)
        _latencies_load(cursor, pipeline_ids=ids, since=since)
        _samples_load(cursor, pipeline_ids=ids, items=items, since=since, until=until)
        seconds["rollups_and_samples"] = round(time.perf_counter() - step_began, 1)
        _say(progress, f"bench: rollups and samples in {seconds['rollups_and_samples']} s")
        counts = {}
        for table in (
            "pipelines_item",
            "pipelines_rollup",
            "pipelines_latencyrollup",
            "monitoring_gaugesample",
        ):
            cursor.execute(f"SELECT count(*) FROM {table}")  # noqa: S608 -- the names above
            counts[table] = cursor.fetchone()[0]
    seconds["fixture"] = round(time.perf_counter() - began, 1)
    return Fixture(
        operator_id=operator.pk,
        pipeline_ids=ids,
        names=[f"{p.client.slug}/{p.slug}" for p in pipelines],
        items=counts["pipelines_item"],
        rollups=counts["pipelines_rollup"],
        latency_rows=counts["pipelines_latencyrollup"],
        samples=counts["monitoring_gaugesample"],
        seconds=seconds,
    )


def tables_vacuum() -> float:
    """VACUUM ANALYZE the loaded tables (outside any transaction), as autovacuum would have left
    them: visibility maps set, statistics fresh. Returns the seconds it took."""
    from django.db import connection

    began = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            "VACUUM (ANALYZE) pipelines_item, pipelines_rollup, pipelines_latencyrollup, "
            "monitoring_gaugesample"
        )
    return round(time.perf_counter() - began, 1)


def tables_analyze() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "ANALYZE pipelines_item, pipelines_rollup, pipelines_latencyrollup, "
            "monitoring_gaugesample"
        )


def database_size() -> dict[str, str]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_size_pretty(pg_database_size(current_database())), "
            "pg_size_pretty(pg_total_relation_size('pipelines_item'))"
        )
        whole, items = cursor.fetchone()
    return {"database": whole, "items_with_indexes": items}
