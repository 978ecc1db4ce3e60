"""One benchmark mode (PostgreSQL + Redis, or embedded SQLite) in a process of its own, since
Django's settings are per process. Run by `bench/throughput.py`, which sets the environment;
prints one JSON document with the figures.

Scenarios, each against a real `manage.py qcluster` with the deliberate settings Sluice ships:
- `noop`: N bare django-q2 no-op tasks, enqueued one by one while the cluster is stopped; the
  cluster is then started and timed from its first task taken until the broker holds none.
- `engine`: N items submitted through the ingest service in requests of 1,000 (what the API does
  after parsing), run through a one-step pipeline on the simulated provider, gated, and delivered
  to a signed-webhook receiver on 127.0.0.1; timed from the first submission until the last item
  is `delivered`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import django

ROOT = Path(__file__).resolve().parent.parent


def _setup() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
    django.setup()


def wait_until(predicate, *, timeout: float, interval: float = 0.2) -> bool:
    from tests.processes import wait_until as wait

    return wait(predicate, timeout=timeout, interval=interval)


# --- Processes and memory ---------------------------------------------------------------------


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _tree(pid: int) -> list[int]:
    """The process and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


class Cluster:
    """`manage.py qcluster` as a child process, with its memory sampled while it runs."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.peak_total_kib = 0
        self.peak_process_kib = 0
        self._stop = threading.Event()

    def __enter__(self) -> Cluster:
        env = {**os.environ, "SLUICE_Q_WORKERS": str(self.workers)}
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "qcluster"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            sizes = [_rss_kib(pid) for pid in _tree(self.process.pid)]
            self.peak_total_kib = max(self.peak_total_kib, sum(sizes))
            self.peak_process_kib = max(self.peak_process_kib, max(sizes, default=0))

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def memory(self) -> dict[str, float]:
        return {
            "cluster_peak_mib": round(self.peak_total_kib / 1024, 1),
            "largest_process_peak_mib": round(self.peak_process_kib / 1024, 1),
        }


# --- The bare django-q2 baseline ------------------------------------------------------------


def _queued_tasks() -> int:
    from django.conf import settings

    if settings.Q_CLUSTER.get("redis"):
        from django_q.brokers import get_broker

        return get_broker().queue_size()
    from django_q.models import OrmQ

    # Dequeued but unacknowledged rows still count: a task is done when its row is gone.
    return OrmQ.objects.count()


def bench_noop(*, tasks: int, workers: int, timeout: float) -> dict:
    """Enqueue `tasks` no-ops with the cluster stopped, then time how fast the cluster drains
    them: from its first task taken until the broker holds none. Enqueueing is timed apart."""
    from django_q.tasks import async_task

    started = time.monotonic()
    for _ in range(tasks):
        async_task("bench.tasks.noop")
    enqueued = time.monotonic() - started
    with Cluster(workers) as cluster:
        if not wait_until(lambda: _queued_tasks() < tasks, timeout=60, interval=0.01):
            raise RuntimeError("the worker cluster did not start")
        first = time.monotonic()
        if not wait_until(lambda: _queued_tasks() == 0, timeout=timeout, interval=0.02):
            raise RuntimeError(f"{_queued_tasks()} no-op tasks still queued after {timeout} s")
        elapsed = time.monotonic() - first
    return {
        "tasks": tasks,
        "seconds": round(elapsed, 2),
        "per_second": round(tasks / elapsed, 1),
        "enqueue_per_second": round(tasks / enqueued, 1),
        **cluster.memory(),
    }


# --- Sluice end to end -------------------------------------------------------------------------


class Receiver:
    """bench/receiver.py as a child process: a webhook endpoint on 127.0.0.1."""

    def __enter__(self) -> Receiver:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.receiver"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.url = f"http://127.0.0.1:{int(self.process.stdout.readline())}/hook"
        self.received = 0
        return self

    def __exit__(self, *exc_info) -> None:
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=30)
        self.received = int(out.strip() or 0)


def _pipeline(*, name: str, latency_ms: float, webhook_url: str):
    from django.db import transaction

    from controlplane.services import client_create, client_webhook_set
    from pipelines.models import Pipeline
    from pipelines.services.configuration import (
        aimodel_create,
        pipeline_create,
        provider_create,
        route_set,
        step_create,
    )

    with transaction.atomic():
        client = client_create(name=f"Bench {name}", slug=f"bench-{name}", actor_label="bench")
        client_webhook_set(client=client, url=webhook_url, actor=None)
        provider = provider_create(
            name=f"Bench {name}",
            kind="simulated",
            actor=None,
            actor_label="bench",
            max_concurrency=1000,
            simulation={
                "latency_ms": {"p50": latency_ms, "p95": latency_ms},
                "confidence": {"alpha": 50, "beta": 1},
                "seed": 7,
            },
        )
        model = aimodel_create(
            provider=provider,
            name="sim",
            actor=None,
            actor_label="bench",
            input_price_per_mtok="0.15",
            output_price_per_mtok="0.60",
            context_window=128_000,
        )
        pipeline = pipeline_create(
            client=client,
            name=f"Bench {name}",
            slug=f"bench-{name}",
            status=Pipeline.Status.ACTIVE,
            actor_label="bench",
            concurrency_limit=100_000,
        )
        step = step_create(
            pipeline=pipeline,
            name="Topic",
            slug="topic",
            kind="classify",
            labels=["billing", "bug", "other"],
            confidence_threshold=0.5,
            template="Classify this ticket: {{ text }}",
            actor=None,
            actor_label="bench",
        )
        route_set(step=step, entries=[{"model": model}], actor=None, actor_label="bench")
    return pipeline


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def bench_engine(*, name: str, items: int, latency_ms: float, workers: int, timeout: float):
    from django.db.models import Count

    from pipelines.models import Item, LedgerEvent
    from pipelines.services.ingest import items_submit

    with Receiver() as receiver:
        pipeline = _pipeline(name=name, latency_ms=latency_ms, webhook_url=receiver.url)
        delivered = Item.objects.filter(pipeline=pipeline, status=Item.Status.DELIVERED)
        with Cluster(workers) as cluster:
            time.sleep(3)  # the cluster's processes start
            started = time.monotonic()
            for first in range(0, items, 1000):
                entries = [
                    {"data": {"text": f"ticket {n}: my invoice is wrong"}, "external_id": f"b{n}"}
                    for n in range(first, min(items, first + 1000))
                ]
                items_submit(pipeline=pipeline, entries=entries, actor="bench")
            ingested = time.monotonic() - started
            if not wait_until(lambda: delivered.count() >= items, timeout=timeout, interval=0.25):
                counts = dict(
                    Item.objects.filter(pipeline=pipeline)
                    .values_list("status")
                    .annotate(n=Count("id"))
                )
                raise RuntimeError(f"not all items delivered after {timeout} s: {counts}")
            elapsed = time.monotonic() - started
    created = dict(Item.objects.filter(pipeline=pipeline).values_list("id", "created_at"))
    waits = []
    seen = set()
    for item_id, at in (
        LedgerEvent.objects.filter(item__pipeline=pipeline, to_status=Item.Status.RUNNING)
        .order_by("at")
        .values_list("item_id", "at")
    ):
        if item_id not in seen:
            seen.add(item_id)
            waits.append((at - created[item_id]).total_seconds())
    return {
        "items": items,
        "latency_ms": latency_ms,
        "seconds": round(elapsed, 2),
        "per_second": round(items / elapsed, 1),
        "ingest_seconds": round(ingested, 2),
        "queue_to_start_p50_ms": round(_percentile(waits, 50) * 1000, 1),
        "queue_to_start_p95_ms": round(_percentile(waits, 95) * 1000, 1),
        "webhook_posts": receiver.received,
        **cluster.memory(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--noop-tasks", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--slow-items", type=int, default=5_000)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    _setup()
    results = {
        "noop": bench_noop(tasks=args.noop_tasks, workers=args.workers, timeout=args.timeout),
        "engine_0ms": bench_engine(
            name="fast",
            items=args.items,
            latency_ms=0,
            workers=args.workers,
            timeout=args.timeout,
        ),
        "engine_1s": bench_engine(
            name="slow",
            items=args.slow_items,
            latency_ms=1000,
            workers=args.workers,
            timeout=args.timeout,
        ),
    }
    print(json.dumps(results))


if __name__ == "__main__":
    main()
