"""Chaos: the client's webhook endpoint is down for a while, then comes back.

    python -m bench.chaos.webhook_outage                   # 300 items, endpoint down 90 s
    python -m bench.chaos.webhook_outage --items 1000 --outage-seconds 300

In a private Sluice (a temporary embedded database and a real `manage.py qcluster`), items run
through a one-step pipeline on the simulated provider while nothing listens at the client's
webhook URL; after --outage-seconds a receiver starts on that address. Verdict PASS when every
delivery was held while the endpoint was down (no item marked delivered, none dropped), and
afterwards every item arrived, each exactly once by its `X-Sluice-Delivery` id, within
--recover-timeout. Prints the figures as JSON and the verdict; exits 1 on FAIL.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bench.chaos import scenario_main

ROOT = Path(__file__).resolve().parent.parent.parent


class _Hook(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            self.server.received[self.headers.get("X-Sluice-Delivery", "")] += 1
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        return None


class Endpoint:
    """A webhook receiver on a fixed loopback port that can be started late; counts each
    delivery id it receives."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/hook"
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), _Hook)
        self.server.daemon_threads = True
        self.server.lock, self.server.received = threading.Lock(), Counter()
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def received(self) -> Counter:
        return self.server.received if self.server else Counter()

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()


def scenario(
    *,
    pipeline,
    endpoint: Endpoint,
    items: int,
    outage_seconds: float,
    recover_timeout: float,
    work: Callable[[], None],
) -> dict:
    """Submit `items` while `endpoint` is down, keep `work()` running through the outage, start
    the endpoint, and wait until every item is delivered."""
    from bench.chaos.provider_outage import statuses
    from pipelines.models import Delivery, Item
    from pipelines.services.ingest import items_submit

    started_at = time.monotonic()
    items_submit(
        pipeline=pipeline,
        entries=[
            {"data": {"text": f"ticket {n}: refund"}, "external_id": f"w{n}"} for n in range(items)
        ],
        actor="chaos",
    )
    while time.monotonic() - started_at < outage_seconds:
        work()
    during = statuses(pipeline)
    deliveries_during = Delivery.objects.filter(item__pipeline=pipeline).count()
    attempts_during = sum(
        Delivery.objects.filter(item__pipeline=pipeline).values_list("attempts", flat=True)
    )
    endpoint.start()
    recovered_at = time.monotonic()
    delivered = Item.objects.filter(pipeline=pipeline, status=Item.Status.DELIVERED)
    while time.monotonic() - recovered_at < recover_timeout and delivered.count() < items:
        work()
    recovery_seconds = time.monotonic() - recovered_at
    time.sleep(1)  # a late duplicate would show here
    after = statuses(pipeline)
    received = endpoint.received
    checks = {
        "held_while_down": during.get(Item.Status.DELIVERED, 0) == 0
        and deliveries_during == during.get(Item.Status.DELIVERING, 0) == items,
        "all_delivered_after": after == {Item.Status.DELIVERED: items},
        "each_arrived_exactly_once": len(received) == items and set(received.values()) == {1},
    }
    return {
        "items": items,
        "outage_seconds": outage_seconds,
        "statuses_at_end_of_outage": during,
        "delivery_attempts_while_down": attempts_during,
        "statuses_at_end": after,
        "posts_received": sum(received.values()),
        "distinct_deliveries_received": len(received),
        "seconds_from_endpoint_up_to_all_delivered": round(recovery_seconds, 1),
        "checks": checks,
        "verdict": "PASS" if all(checks.values()) else "FAIL",
    }


def outage_pipeline(*, webhook_url: str):
    from bench.scenario import _pipeline as bench_pipeline

    return bench_pipeline(name="hook-outage", latency_ms=5, webhook_url=webhook_url)


def inner(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from bench.scenario import Cluster
    from tests.processes import free_port

    endpoint = Endpoint(free_port())
    pipeline = outage_pipeline(webhook_url=endpoint.url)
    try:
        with Cluster(args.workers):
            time.sleep(3)  # the cluster's processes start
            result = scenario(
                pipeline=pipeline,
                endpoint=endpoint,
                items=args.items,
                outage_seconds=args.outage_seconds,
                recover_timeout=args.recover_timeout,
                work=lambda: time.sleep(0.5),
            )
    finally:
        endpoint.stop()
    print(json.dumps(result, default=str))


def main() -> None:
    scenario_main(
        module="bench.chaos.webhook_outage",
        doc=__doc__,
        inner=inner,
        items=300,
        outage_seconds=90,
        recover_timeout=900,
    )


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
    main()
