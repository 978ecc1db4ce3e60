"""Webhook delivery to a real HTTP server on 127.0.0.1: signed, held while down, sent once."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.utils import timezone

from controlplane.models import AuditEntry
from controlplane.services import client_webhook_set
from pipelines.models import Delivery, Item, LatencyRollup
from pipelines.services import configuration as config
from pipelines.services.delivery import deliveries_send
from pipelines.services.engine import engine_run_batch
from tests.processes import free_port
from tests.test_engine import simulated_route, submit


class Receiver:
    """A webhook endpoint: records what it gets; answers `status` (503 while 'down')."""

    def __init__(self) -> None:
        self.received: list[tuple[dict, bytes]] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((dict(self.headers), body))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/sluice"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def accepted_items(operator, acme, acme_step, receiver):
    client_webhook_set(client=acme, url=receiver.url, actor=operator)
    simulated_route(acme_step, operator)
    config.step_update(step=acme_step, actor=operator, confidence_threshold="0")
    items = submit(acme_step.pipeline, "one", "two")
    engine_run_batch(worker="w")
    return items


def test_finished_items_are_delivered_signed_and_marked_delivered(acme, accepted_items, receiver):
    assert set(Item.objects.values_list("status", flat=True)) == {"delivering"}
    assert deliveries_send() == {"delivered": 2, "held": 0}
    assert len(receiver.received) == 2
    acme.refresh_from_db()
    for headers, body in receiver.received:
        expected = (
            "sha256=" + hmac.new(acme.webhook_secret.encode(), body, hashlib.sha256).hexdigest()
        )
        assert headers["X-Sluice-Signature"] == expected
        payload = json.loads(body)
        assert payload["status"] == "accepted" and payload["result"]["label"]
    for item in accepted_items:
        item.refresh_from_db()
        assert item.status == Item.Status.DELIVERED
        assert item.ledger.order_by("id").last().actor == "delivery"
    # With a webhook the SLA clock stops at delivery: end to end is counted then, once each.
    end_to_end = LatencyRollup.objects.filter(measure="end_to_end")
    assert sum(end_to_end.values_list("count", flat=True)) == 2


def test_a_down_endpoint_holds_deliveries_and_they_arrive_once_later(accepted_items, receiver):
    receiver.status = 503
    assert deliveries_send() == {"delivered": 0, "held": 2}
    assert Item.objects.filter(status="delivering").count() == 2
    held = Delivery.objects.first()
    assert held.status == "pending" and "503" in held.last_error
    assert deliveries_send() == {"delivered": 0, "held": 0}  # not due yet: backoff
    receiver.status = 200
    Delivery.objects.update(next_attempt_at=timezone.now())
    assert deliveries_send() == {"delivered": 2, "held": 0}
    assert deliveries_send() == {"delivered": 0, "held": 0}
    delivered_ids = [h["X-Sluice-Delivery"] for h, _ in receiver.received[-2:]]
    assert sorted(delivered_ids) == sorted(str(d.pk) for d in Delivery.objects.all())
    assert set(Item.objects.values_list("status", flat=True)) == {"delivered"}


def test_an_unreachable_endpoint_is_held_not_lost(operator, acme, acme_step):
    client_webhook_set(client=acme, url=f"http://127.0.0.1:{free_port()}/nothing", actor=operator)
    simulated_route(acme_step, operator)
    config.step_update(step=acme_step, actor=operator, confidence_threshold="0")
    submit(acme_step.pipeline, "one")
    engine_run_batch(worker="w")
    assert deliveries_send() == {"delivered": 0, "held": 1}
    assert "Connection refused" in Delivery.objects.get().last_error


def test_items_of_a_client_without_a_webhook_end_accepted(operator, acme_step):
    simulated_route(acme_step, operator)
    config.step_update(step=acme_step, actor=operator, confidence_threshold="0")
    submit(acme_step.pipeline, "one")
    engine_run_batch(worker="w")
    assert Item.objects.get().status == "accepted"
    assert not Delivery.objects.exists()


def test_rejected_items_are_delivered_as_rejected(operator, acme, acme_step, receiver):
    client_webhook_set(client=acme, url=receiver.url, actor=operator)
    simulated_route(acme_step, operator, confidence={"alpha": 1, "beta": 50})
    config.step_update(step=acme_step, actor=operator, on_gate_failure="reject")
    submit(acme_step.pipeline, "one")
    engine_run_batch(worker="w")
    deliveries_send()
    assert json.loads(receiver.received[0][1])["status"] == "rejected"
    assert Item.objects.get().status == "rejected"


def test_setting_a_webhook_is_audited_and_validated(operator, acme):
    from django.core.exceptions import ValidationError

    client_webhook_set(client=acme, url="https://hooks.example.com/x", actor=operator)
    assert len(acme.webhook_secret) == 64
    assert AuditEntry.objects.filter(action="client.webhook").exists()
    with pytest.raises(ValidationError):
        client_webhook_set(client=acme, url="ftp://nope", actor=operator)
