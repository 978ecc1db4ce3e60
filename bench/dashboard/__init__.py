"""Dashboard cost with 10 million items in the database: the page time of the overview and of one
pipeline's dashboard for each range, and the database queries per second of the live ticker with
1 and with 100 websocket viewers. Prints the figures and writes the `dashboard` section of
docs/benchmarks.md.

    make bench-dashboard
    DATABASE_URL=postgres://… python -m bench.dashboard --items 1000000 --no-write

Needs PostgreSQL (DATABASE_URL): it uses a database of its own (`<name>_bench_dashboard`, dropped,
created and migrated, and dropped again at the end unless --keep), so it never touches the data
of a running Sluice. Redis is not used: the cache (breaker states) is the database cache.

The fixture is written inside the database with INSERT … SELECT over generate_series (items with
their secondary indexes and foreign keys dropped during the load and built again after), then
vacuumed and analysed: 20 pipelines of 5 clients, items spread over 7 days, most finished and the
newest still queued, running, waiting to retry, in review or being delivered; a rollup row and its
latency buckets per pipeline and minute for the 7 days, and a gauge sample per pipeline and minute.
"""

from __future__ import annotations

from bench.dashboard.cli import main, render
from bench.dashboard.fixture import (
    Fixture,
    database_size,
    fixture_create,
    tables_analyze,
    tables_vacuum,
)
from bench.dashboard.measures import pages_measure, ticker_measure

__all__ = [
    "Fixture",
    "database_size",
    "fixture_create",
    "main",
    "pages_measure",
    "render",
    "tables_analyze",
    "tables_vacuum",
    "ticker_measure",
]
