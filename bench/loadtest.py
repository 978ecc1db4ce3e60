"""A load test through the public API: submit generated items to a pipeline at a given rate for a
given time, wait until they are done, and report stage by stage (ingest, queue wait, model call and
gate, webhook delivery, end to end) throughput, latency percentiles, errors and cost, naming the
bottleneck.

    python manage.py loadtest                          # a private Sluice on 127.0.0.1, 100/s, 20 s
    python manage.py loadtest --rate 200 --duration 30 --latency-ms 1000
    python manage.py loadtest --url http://127.0.0.1:8000 --key sk_sluice_... --pipeline triage

Without --url it sets up its own Sluice in a temporary directory (embedded SQLite, `manage.py
serve` on a free loopback port, a one-step pipeline on the simulated provider, a signed-webhook
receiver) and removes it afterwards. With --url it drives that server; only loopback addresses
unless --allow-remote. Every run is bounded: at most --max-items items and --duration seconds of
submitting, then at most --drain-timeout seconds of waiting.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import itertools
import json
import logging
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import httpx

ROOT = Path(__file__).resolve().parent.parent
HARD_MAX_ITEMS = 100_000
HARD_MAX_SECONDS = 600
LEDGER_SAMPLE = 200
# Where an item stops moving without anyone's help.
SETTLED = {"accepted", "delivered", "rejected", "quarantined", "dead_lettered", "in_review"}
MOVING = ("queued", "running", "waiting_retry", "delivering")


# --- Arguments and limits ----------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rate", type=float, default=100.0, help="items per second (default 100)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of submitting (20)")
    p.add_argument("--batch", type=int, default=10, help="items per request (10; 1 to 1000)")
    p.add_argument("--max-items", type=int, default=5000, help="stop submitting after (5000)")
    p.add_argument("--drain-timeout", type=float, default=120.0, help="seconds to wait (120)")
    p.add_argument("--url", help="a running Sluice; default: start a private one on loopback")
    p.add_argument("--key", help="API key for --url")
    p.add_argument("--pipeline", help="pipeline slug for --url")
    p.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --url")
    p.add_argument("--workers", type=int, default=2, help="private Sluice: worker processes (2)")
    p.add_argument("--latency-ms", type=float, default=0.0, help="private Sluice: model p50 (0)")
    p.add_argument(
        "--ingest-limit",
        type=int,
        default=10_000_000,
        help="private Sluice: the client's items per minute before 429 (no limit)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--write", action="store_true", help="also write docs/benchmarks.md")
    return p


def check_limits(args: argparse.Namespace) -> None:
    if not 0 < args.rate <= 10_000:
        raise SystemExit("--rate must be between 0 and 10000 items a second")
    if not 0 < args.duration <= HARD_MAX_SECONDS:
        raise SystemExit(f"--duration must be between 0 and {HARD_MAX_SECONDS} seconds")
    if not 0 < args.drain_timeout <= HARD_MAX_SECONDS:
        raise SystemExit(f"--drain-timeout must be between 0 and {HARD_MAX_SECONDS} seconds")
    if not 1 <= args.batch <= 1000:
        raise SystemExit("--batch must be 1 to 1000 items")
    if not 1 <= args.max_items <= HARD_MAX_ITEMS:
        raise SystemExit(f"--max-items must be 1 to {HARD_MAX_ITEMS}")
    if args.url:
        if not (args.key and args.pipeline):
            raise SystemExit("--url needs --key and --pipeline")
        host = urlsplit(args.url).hostname or ""
        if not (args.allow_remote or is_loopback(host)):
            raise SystemExit(f"{host} is not a loopback address; pass --allow-remote to load it")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- Figures -------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile by linear interpolation between closest ranks; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def spread(seconds: list[float]) -> dict[str, float | int | None]:
    def ms(q):
        value = percentile(seconds, q)
        return None if value is None else round(value * 1000, 1)

    return {"n": len(seconds), "p50_ms": ms(50), "p95_ms": ms(95), "p99_ms": ms(99)}


@dataclass
class Ingest:
    requests: int = 0
    items_sent: int = 0
    accepted: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    transport_errors: int = 0
    retry_after_missing: int = 0
    latencies: list[float] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    first_at: float = 0.0
    last_at: float = 0.0


# --- Driving the API -----------------------------------------------------------------------------


async def submit_all(client: httpx.AsyncClient, args: argparse.Namespace, run: str) -> Ingest:
    """POST batches on a fixed schedule (rate / batch requests a second), never more than 32 at
    once: a server slower than the schedule shows as a lower achieved rate, not a pile-up."""
    ingest = Ingest()
    total = min(args.max_items, max(1, round(args.rate * args.duration)))
    interval = args.batch / args.rate
    in_flight = asyncio.Semaphore(32)
    path = f"/api/v1/pipelines/{args.pipeline}/items"

    async def one(first: int) -> None:
        items = [
            {
                "data": {"text": f"ticket {n}: I was charged twice for my invoice"},
                "external_id": f"{run}-{n}",
            }
            for n in range(first, min(total, first + args.batch))
        ]
        async with in_flight:
            started = time.monotonic()
            try:
                response = await client.post(path, json={"items": items})
            except httpx.HTTPError:
                ingest.transport_errors += 1
                return
            ingest.latencies.append(time.monotonic() - started)
        ingest.requests += 1
        ingest.items_sent += len(items)
        code = str(response.status_code)
        if code == "429" and not response.headers.get("Retry-After", "").isdigit():
            ingest.retry_after_missing += 1
        ingest.statuses[code] = ingest.statuses.get(code, 0) + 1
        if response.status_code == 202:
            for answer in response.json()["items"]:
                ingest.accepted[answer["status"]] = ingest.accepted.get(answer["status"], 0) + 1
                if answer["status"] != "deduplicated":
                    ingest.ids.append(answer["id"])

    ingest.first_at = time.monotonic()
    tasks = []
    for n, first in enumerate(range(0, total, args.batch)):
        delay = ingest.first_at + n * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(first)))
    await asyncio.gather(*tasks)
    ingest.last_at = time.monotonic()
    return ingest


async def moving(client: httpx.AsyncClient, since: str) -> int:
    """How many items received since `since` are still moving (capped per status at a page)."""
    count = 0
    for status in MOVING:
        page = await client.get("/api/v1/items", params={"since": since, "status": status})
        count += len(page.json()["items"])
    return count


async def wait_settled(client: httpx.AsyncClient, since: str, timeout: float) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await moving(client, since) == 0:
            return time.monotonic()
        await asyncio.sleep(0.5)
    return None


async def items_since(client: httpx.AsyncClient, since: str, ids: set[int]) -> list[dict]:
    found, cursor = [], None
    while True:
        params = {"since": since, "limit": 1000, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/api/v1/items", params=params)).json()
        found.extend(item for item in page["items"] if item["id"] in ids)
        cursor = page["next_cursor"]
        if not cursor:
            return found


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def stage_times(client: httpx.AsyncClient, items: list[dict]) -> dict[str, list[float]]:
    """Queue wait, model call and gate, and delivery, from the ledgers of a sample of items."""
    step = max(1, len(items) // LEDGER_SAMPLE)
    sample = items[::step][:LEDGER_SAMPLE]
    times: dict[str, list[float]] = {"queue_wait": [], "processing": [], "delivery": []}
    for item in sample:
        events = (await client.get(f"/api/v1/items/{item['id']}/ledger")).json()["events"]
        created = parse_time(item["created_at"])
        runs = [e for e in events if e["to_status"] == "running"]
        if runs:
            times["queue_wait"].append((parse_time(runs[0]["at"]) - created).total_seconds())
        for before, after in itertools.pairwise(events):
            seconds = (parse_time(after["at"]) - parse_time(before["at"])).total_seconds()
            if before["to_status"] == "running":
                times["processing"].append(seconds)
            elif before["to_status"] == "delivering" and after["to_status"] == "delivered":
                times["delivery"].append(seconds)
    return times


def bottleneck(report: dict, rate: float) -> str:
    ingest = report["stages"]["ingest"]
    if ingest["rate_limited_requests"]:
        return "ingest: the client's ingest rate limit answered 429 (raise ingest_limit_per_minute)"
    if ingest["server_errors"] or ingest["transport_errors"]:
        return "ingest: the API failed requests (see server_errors and transport_errors)"
    if ingest["items_per_second"] < 0.9 * rate:
        return (
            f"ingest: the API took {ingest['items_per_second']} items/s of the {rate:g} asked "
            "(more web processes, or larger batches)"
        )
    medians = {
        name: (report["stages"][name]["p50_ms"] or 0)
        for name in ("queue_wait", "processing", "delivery")
    }
    worst = max(medians, key=medians.get)
    advice = {
        "queue_wait": "workers: items wait for a worker longer than anything else takes "
        "(more worker processes, or a higher pipeline concurrency limit)",
        "processing": "model calls: the model call and gate take longest (a faster model, more "
        "provider concurrency, or the result cache)",
        "delivery": "webhook delivery: the receiving endpoint is the slowest stage",
    }
    return f"{advice[worst]}; p50 {medians[worst]} ms"


async def drive(args: argparse.Namespace) -> dict:
    run = datetime.now(UTC).strftime("lt%Y%m%d%H%M%S%f")
    since = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    headers = {"Authorization": f"Bearer {args.key}"}
    limits = httpx.Limits(max_connections=40, max_keepalive_connections=40)
    async with httpx.AsyncClient(
        base_url=args.url, headers=headers, timeout=30, limits=limits
    ) as client:
        ingest = await submit_all(client, args, run)
        settled_at = await wait_settled(client, since, args.drain_timeout)
        items = await items_since(client, since, set(ingest.ids))
        times = await stage_times(client, items)
    return summarise(args, ingest, items, times, settled_at)


def summarise(args, ingest: Ingest, items: list[dict], times, settled_at) -> dict:
    submit_seconds = max(ingest.last_at - ingest.first_at, 1e-9)
    statuses: dict[str, int] = {}
    for item in items:
        statuses[item["status"]] = statuses.get(item["status"], 0) + 1
    settled = sum(n for status, n in statuses.items() if status in SETTLED)
    end_to_end = [
        (parse_time(i["finished_at"]) - parse_time(i["created_at"])).total_seconds()
        for i in items
        if i["finished_at"]
    ]
    cost = sum((Decimal(i["cost"]) for i in items), Decimal(0))
    failed = statuses.get("dead_lettered", 0) + statuses.get("quarantined", 0)
    server_errors = sum(n for code, n in ingest.statuses.items() if code.startswith("5"))
    elapsed = (settled_at or time.monotonic()) - ingest.first_at
    report = {
        "target": {"rate": args.rate, "duration_s": args.duration, "batch": args.batch},
        "items": {
            "submitted": ingest.items_sent,
            "created": len(ingest.ids),
            "settled": settled,
            "all_settled": settled_at is not None and settled == len(ingest.ids),
            "by_status": dict(sorted(statuses.items())),
        },
        "throughput_items_per_s": round(settled / elapsed, 1) if elapsed > 0 else None,
        "seconds_first_submit_to_last_settled": round(elapsed, 2),
        "error_rate": round(
            (failed + ingest.items_sent - sum(ingest.accepted.values())) / ingest.items_sent, 4
        )
        if ingest.items_sent
        else None,
        "cost": {"total": str(cost), "per_item": str(cost / len(items)) if items else None},
        "stages": {
            "ingest": {
                "requests": ingest.requests,
                "items_per_second": round(ingest.items_sent / submit_seconds, 1),
                "http_statuses": dict(sorted(ingest.statuses.items())),
                "answers": dict(sorted(ingest.accepted.items())),
                "rate_limited_requests": ingest.statuses.get("429", 0),
                "rate_limited_without_retry_after": ingest.retry_after_missing,
                "server_errors": server_errors,
                "transport_errors": ingest.transport_errors,
                **spread(ingest.latencies),
            },
            "queue_wait": spread(times["queue_wait"]),
            "processing": spread(times["processing"]),
            "delivery": spread(times["delivery"]),
            "end_to_end": spread(end_to_end),
        },
    }
    report["bottleneck"] = bottleneck(report, args.rate)
    return report


# --- A private Sluice on loopback ----------------------------------------------------------------


def private_env(data_dir: str, workers: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.pop("SQLITE_PATH", None)
    env.update(
        SLUICE_ENV="production",
        DEBUG="0",
        SLUICE_DATA_DIR=data_dir,
        SECRET_KEY="loadtest-" + os.urandom(32).hex(),
        ALLOWED_HOSTS="127.0.0.1",
        SECURE_SSL_REDIRECT="0",
        SLUICE_BEHIND_PROXY="0",
        SLUICE_Q_WORKERS=str(workers),
        DJANGO_SETTINGS_MODULE="controlplane.settings",
    )
    return env


def setup_private(latency_ms: float, webhook_url: str, ingest_limit: int) -> dict:
    """In a child process pointed at the private data directory: the pipeline and a key."""
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from bench.scenario import _pipeline as bench_pipeline
    from controlplane.services import api_key_create

    pipeline = bench_pipeline(name="load", latency_ms=latency_ms, webhook_url=webhook_url)
    client = pipeline.client
    client.ingest_limit_per_minute = ingest_limit
    client.save(update_fields=["ingest_limit_per_minute"])
    return {
        "key": api_key_create(client=client, name="loadtest", actor=None)[1],
        "slug": "bench-load",
    }


@contextlib.contextmanager
def private_sluice(
    env: dict[str, str], *, latency_ms: float, webhook_url: str, ingest_limit: int
) -> Iterator[dict[str, str]]:
    """A Sluice of its own on a free loopback port for a `with` block: migrated, the load test's
    client and pipeline made (`--setup-private`), `manage.py serve` running (web and workers).
    Yields its url, key and pipeline slug; stops the server afterwards."""
    from tests.processes import free_port, wait_for_http

    manage = [sys.executable, str(ROOT / "manage.py")]
    for command in (["migrate", "--no-input", "-v", "0"], ["createcachetable"]):
        subprocess.run([*manage, *command], env=env, cwd=ROOT, check=True)
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.loadtest",
            "--setup-private",
            str(latency_ms),
            webhook_url,
            str(ingest_limit),
        ],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    created = json.loads(made.stdout.strip().splitlines()[-1])
    port = free_port()
    server = subprocess.Popen(
        [*manage, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", timeout=60)
        time.sleep(2)  # the worker cluster's processes start
        yield {"url": f"http://127.0.0.1:{port}", "key": created["key"], "slug": created["slug"]}
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def run_private(args: argparse.Namespace) -> dict:
    from bench.scenario import Receiver

    with tempfile.TemporaryDirectory(prefix="sluice-loadtest-") as data_dir, Receiver() as hook:
        env = private_env(data_dir, args.workers)
        with private_sluice(
            env, latency_ms=args.latency_ms, webhook_url=hook.url, ingest_limit=args.ingest_limit
        ) as sluice:
            args.url, args.key, args.pipeline = sluice["url"], sluice["key"], sluice["slug"]
            report = asyncio.run(drive(args))
    report["private_sluice"] = {
        "database": "SQLite (embedded)",
        "worker_processes": args.workers,
        "model_latency_p50_ms": args.latency_ms,
        "webhook_posts_received": hook.received,
    }
    return report


# --- Output --------------------------------------------------------------------------------------


def render(report: dict, command: str) -> str:
    stages = report["stages"]
    rows = [
        "| stage | n | p50 ms | p95 ms | p99 ms |",
        "|---|---|---|---|---|",
        *(
            f"| {name} | {s['n']} | {s['p50_ms']} | {s['p95_ms']} | {s['p99_ms']} |"
            for name, s in stages.items()
        ),
    ]
    items, target = report["items"], report["target"]
    return "\n".join(
        [
            "## Load test through the API",
            "",
            f"- Command: `{command}`",
            f"- When: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; machine: {os.cpu_count()} cores",
            f"- Asked: {target['rate']:g} items/s for {target['duration_s']:g} s"
            f" in requests of {target['batch']}; the API took "
            f"{stages['ingest']['items_per_second']} items/s",
            f"- Items: {items['created']} created, {items['settled']} settled "
            f"({'all' if items['all_settled'] else 'NOT all'}): {items['by_status']}",
            f"- Throughput, first submission to last item settled: "
            f"{report['throughput_items_per_s']} items/s in "
            f"{report['seconds_first_submit_to_last_settled']} s",
            f"- Error rate: {report['error_rate']}; HTTP statuses: "
            f"{stages['ingest']['http_statuses']}; cost: {report['cost']['total']}",
            f"- Bottleneck: {report['bottleneck']}",
            "",
            *rows,
            "",
        ]
    )


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--setup-private"]:
        print(json.dumps(setup_private(float(argv[1]), argv[2], int(argv[3]))))
        return {}
    args = parser().parse_args(argv)
    check_limits(args)
    # One INFO line per request would bury the report.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    report = asyncio.run(drive(args)) if args.url else run_private(args)
    command = "python manage.py loadtest " + " ".join(a for a in argv if not a.startswith("sk_"))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render(report, command.strip()))
    if args.write:
        from bench.report import raw_figures, section_write

        section_write(
            "loadtest", render(report, command.strip()) + "\n" + "\n".join(raw_figures(report))
        )
    return report


if __name__ == "__main__":
    main()
