"""The command: set up the database, load, measure, print, write the `dashboard` section of
docs/benchmarks.md, drop the database."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime

from bench.dashboard.fixture import LIVE_SHARE, database_size, fixture_create, tables_vacuum
from bench.dashboard.measures import pages_measure, ticker_measure
from bench.databases import database_create, database_drop, django_setup
from bench.report import DOC, ROOT, raw_figures, section_write


def render(result: dict, command: str) -> str:
    pages = [
        f"| {row['page']} | {row['range']} | {row['ms']['p50']} / {row['ms']['p95']} / "
        f"{row['ms']['max']} ms | {row['queries']} | {row['kib']} KiB |"
        for row in result["pages"]
    ]
    crowds = [
        f"| {row['crowd']} | {row['subscriptions']} | {row['ticks']} in {row['seconds']} s "
        f"| **{row['queries_per_second']}** | {row['queries_per_tick']} "
        f"| {row['read_ms']['p50']} / {row['read_ms']['p95']} ms "
        f"| {row['tick_ms']['p50']} / {row['tick_ms']['p95']} ms |"
        for row in result["ticker"]
    ]
    fixture = result["fixture"]
    one, many = result["ticker"][1], result["ticker"][2]
    flat = one["queries_per_tick"] == many["queries_per_tick"]
    return "\n".join(
        [
            "## Dashboards with 10 million items",
            "",
            "Measured by `bench/dashboard/` in one run; every figure below comes from that run.",
            "",
            f"- Command: `{command}`",
            f"- When: {result['when']} UTC; machine: {os.cpu_count()} cores, "
            f"{platform.python_implementation()} {platform.python_version()}, "
            f"{platform.system()}; PostgreSQL on the same machine, no Redis (the breaker states "
            "come from the database cache, and their queries are counted).",
            f"- Fixture: {fixture['items']:,} items over {fixture['pipelines']} pipelines of "
            f"{fixture['clients']} clients, spread over 7 days ({100 - LIVE_SHARE * 100:.1f}% "
            "finished; the newest queued, running, waiting to retry, in review or being "
            f"delivered), {fixture['rollups']:,} rollup rows and {fixture['latency_rows']:,} "
            f"latency bucket rows (a minute per pipeline for 7 days), {fixture['samples']:,} "
            "gauge samples; written inside PostgreSQL with INSERT … SELECT over "
            "generate_series (the items' secondary indexes built after the load), then VACUUM "
            f"ANALYZE. Load {fixture['seconds']['items']} s for the items, "
            f"{fixture['seconds']['rollups_and_samples']} s for rollups and samples, "
            f"{fixture['vacuum_seconds']} s VACUUM ANALYZE; database "
            f"{fixture['size']['database']} (items with their indexes "
            f"{fixture['size']['items_with_indexes']}).",
            "",
            "### Page time",
            "",
            f"Django's test client signed in as an operator (breakers and workers shown too), "
            f"{result['pages'][0]['requests']} requests per row after one counted for its "
            "queries; the whole request through the middleware, template rendering included.",
            "",
            "| page | range | p50 / p95 / max | queries | size |",
            "|---|---|---|---|---|",
            *pages,
            "",
            "### Live ticker: database queries with 1 and with 100 viewers",
            "",
            "Operators' websockets through the ASGI application in one process (Channels' "
            "`WebsocketCommunicator`), subscribed and past their snapshot; every query the "
            f"process made counted for {result['ticker'][0]['seconds']} s while they watched. A "
            "tick reads once for the union of the pipelines watched (about one per second); "
            "'tick' includes sending the updates to every socket.",
            "",
            "| viewers | distinct subscriptions | ticks | queries/s | queries/tick "
            "| read p50 / p95 | tick p50 / p95 |",
            "|---|---|---|---|---|---|---|",
            *crowds,
            "",
            f"Viewers do not multiply queries: {one['queries_per_tick']} per tick for one viewer "
            f"of the overview, {many['queries_per_tick']} for {many['viewers']} "
            f"({'the same' if flat else 'not the same'}), and a fixed number however many "
            "pipelines are watched: each kind of number is one query for all of them.",
            "",
            *raw_figures(result),
        ]
    )


def main() -> None:
    from bench import dashboard

    parser = argparse.ArgumentParser(
        prog="python -m bench.dashboard", description=dashboard.__doc__
    )
    parser.add_argument("--items", type=int, default=10_000_000)
    parser.add_argument("--chunk", type=int, default=500_000, help="items per INSERT")
    parser.add_argument("--requests", type=int, default=20, help="per page and range")
    parser.add_argument("--seconds", type=float, default=10.0, help="per crowd of viewers")
    parser.add_argument("--viewers", type=int, default=100)
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("bench.dashboard needs PostgreSQL: set DATABASE_URL (make services)")
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sluice-bench-dashboard-") as data_dir:
        print("bench: database…", flush=True)
        bench_url = database_create(url, suffix="_bench_dashboard")
        try:
            django_setup(
                bench_url,
                data_dir,
                ALLOWED_HOSTS="testserver,localhost,127.0.0.1",
                LOG_LEVEL="WARNING",
            )
            print(f"bench: {args.items:,} items…", flush=True)
            fixture = fixture_create(
                items=args.items, chunk=args.chunk, progress=lambda text: print(text, flush=True)
            )
            print("bench: VACUUM ANALYZE…", flush=True)
            vacuum_seconds = tables_vacuum()
            result: dict = {
                "fixture": {
                    "items": fixture.items,
                    "pipelines": len(fixture.pipeline_ids),
                    "clients": len({name.split("/")[0] for name in fixture.names}),
                    "rollups": fixture.rollups,
                    "latency_rows": fixture.latency_rows,
                    "samples": fixture.samples,
                    "seconds": fixture.seconds,
                    "vacuum_seconds": vacuum_seconds,
                    "size": database_size(),
                }
            }
            print(json.dumps(result["fixture"]), flush=True)
            print("bench: pages…", flush=True)
            result["pages"] = pages_measure(fixture, requests=args.requests)
            for row in result["pages"]:
                print(json.dumps(row), flush=True)
            print("bench: live ticker…", flush=True)
            result["ticker"] = ticker_measure(fixture, seconds=args.seconds, viewers=args.viewers)
            for row in result["ticker"]:
                print(json.dumps(row), flush=True)
        finally:
            if not args.keep:
                print("bench: dropping the benchmark database…", flush=True)
                database_drop(url, bench_url)
    result["total_seconds"] = round(time.perf_counter() - began, 1)
    result["when"] = f"{datetime.now(UTC):%Y-%m-%d %H:%M}"
    command = "python -m bench.dashboard " + " ".join(sys.argv[1:])
    print(f"bench: done in {result['total_seconds']} s", flush=True)
    if not args.no_write:
        section_write("dashboard", render(result, command.strip()))
        print(f"bench: wrote {DOC.relative_to(ROOT)}")
