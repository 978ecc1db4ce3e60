"""A worker process killed with `kill -9` in the middle of a batch loses nothing and repeats
nothing: every item completes exactly once, and its webhook is sent once."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from controlplane.services import client_webhook_set
from pipelines.models import Delivery, Item, LedgerEvent, Rollup
from pipelines.services import configuration as config
from pipelines.services.engine import items_sweep
from tests.processes import WorkerCluster, wait_until
from tests.test_engine import simulated_route, submit

ITEMS = 120


class _Receiver(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.received.append(body["id"])
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        return None


@pytest.fixture
def receiver():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.daemon_threads = True
    server.lock, server.received = threading.Lock(), []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def _pid(lease_owner: str) -> int:
    return int(lease_owner.rsplit(":", 1)[1])


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_batch_loses_no_item_and_repeats_none(
    operator, acme, acme_step, receiver
):
    port = receiver.server_address[1]
    client_webhook_set(client=acme, url=f"http://127.0.0.1:{port}/hook", actor=operator)
    # Calls take about a second, so a batch is surely in flight when its worker is killed.
    simulated_route(acme_step, operator, latency_ms={"p50": 1000, "p95": 1200})
    config.step_update(step=acme_step, actor=operator, confidence_threshold="0")
    config.pipeline_update(pipeline=acme_step.pipeline, actor=operator, concurrency_limit=1000)

    with WorkerCluster(SLUICE_LEASE_SECONDS="4") as cluster:
        items = submit(acme_step.pipeline, *[f"ticket {n}" for n in range(ITEMS)])
        running = Item.objects.filter(status=Item.Status.RUNNING).exclude(lease_owner="")
        assert wait_until(running.exists, timeout=60, interval=0.05), cluster.output
        victim_owner = running.values_list("lease_owner", flat=True).first()
        victim = _pid(victim_owner)
        assert victim != cluster.pid and victim != os.getpid()
        os.kill(victim, signal.SIGKILL)
        orphans = set(Item.objects.filter(lease_owner=victim_owner).values_list("id", flat=True))
        assert orphans, "the killed worker held items"

        # Its items stay leased until the lease runs out; the sweeper then queues them again
        # (here called directly rather than waiting for its one-minute schedule).
        def swept() -> bool:
            items_sweep()
            return not Item.objects.filter(lease_owner=victim_owner).exists()

        assert wait_until(swept, timeout=60, interval=0.5), cluster.output
        delivered = Item.objects.filter(status=Item.Status.DELIVERED)
        assert wait_until(lambda: delivered.count() == ITEMS, timeout=120), (
            Counter(Item.objects.values_list("status", flat=True)),
            cluster.output,
        )
        assert wait_until(lambda: len(receiver.received) >= ITEMS, timeout=30)

    ids = {item.pk for item in items}
    # Exactly once: one outcome per item, one delivery, one webhook POST each.
    outcomes = Counter(
        LedgerEvent.objects.filter(item_id__in=ids, from_status=Item.Status.RUNNING)
        .exclude(to_status=Item.Status.QUEUED)
        .values_list("item_id", flat=True)
    )
    assert outcomes == dict.fromkeys(ids, 1)
    assert Delivery.objects.filter(item_id__in=ids).count() == ITEMS
    assert Counter(receiver.received) == dict.fromkeys(ids, 1)
    # The orphans ran twice (killed once), and the ledger says the sweeper returned them.
    for pk in orphans:
        statuses = list(
            LedgerEvent.objects.filter(item_id=pk).order_by("id").values_list("actor", "to_status")
        )
        assert ("sweeper", "queued") in statuses
        assert Item.objects.get(pk=pk).attempts == 2
    assert sum(Rollup.objects.values_list("accepted", flat=True)) == ITEMS
