"""The dashboards' websocket: who may subscribe to what, what a viewer receives, and what a tick
costs with one viewer and with fifty."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from controlplane.asgi import application
from controlplane.monitoring.live import Subscription, Ticker, ticker
from pipelines.services.rollups import rollups_add
from tests.aio import run_async
from tests.conftest import login

pytestmark = pytest.mark.django_db(transaction=True)


def _headers(user=None) -> list[tuple[bytes, bytes]]:
    """A browser's handshake headers: its origin and, when signed in, its session cookie."""
    headers = [(b"origin", b"http://localhost")]
    if user is not None:
        session = login(user).cookies[settings.SESSION_COOKIE_NAME].value
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={session}".encode()))
    return headers


def _communicator(headers) -> WebsocketCommunicator:
    return WebsocketCommunicator(application, "/ws/dashboard/", headers=headers)


def _run(coroutine_function):
    return run_async(coroutine_function)


async def _subscribe(communicator, pipeline: str, range_name: str = "15m"):
    connected, code = await communicator.connect()
    assert connected, code
    await communicator.send_json_to(
        {"action": "subscribe", "pipeline": pipeline, "range": range_name}
    )


def test_a_client_receives_the_snapshot_then_live_updates_of_its_pipeline(world):
    pipeline = world["acme_item"].pipeline
    headers = _headers(world["client_a"])

    async def scenario():
        communicator = _communicator(headers)
        await _subscribe(communicator, "acme/triage")
        snapshot = await communicator.receive_json_from(timeout=5)
        assert snapshot["type"] == "snapshot" and snapshot["range"] == "15m"
        assert len(snapshot["charts"]["throughput"]["data"][0]["x"]) == 15
        assert "breakers" not in snapshot and "workers" not in snapshot
        await asyncio.to_thread(
            rollups_add, {pipeline.pk: {"accepted": 9, "started": 9}}, at=timezone.now()
        )
        written = asyncio.get_running_loop().time()
        # An update carrying the new work arrives within two seconds.
        while True:
            update = await communicator.receive_json_from(timeout=2)
            assert update["type"] == "update"
            if sum(update["charts"]["throughput"]["traces"][1]["y"]) == 9:
                break
        assert asyncio.get_running_loop().time() - written < 2
        assert update["tiles"]["items_per_minute"] == "1.8"
        assert "breakers" not in update
        await communicator.disconnect()

    _run(scenario)
    assert ticker.viewers == {}


def test_an_operator_receives_breakers_and_workers(world):
    headers = _headers(world["operator"])

    async def scenario():
        communicator = _communicator(headers)
        await _subscribe(communicator, "")
        snapshot = await communicator.receive_json_from(timeout=5)
        assert [b["provider"] for b in snapshot["breakers"]] == ["Local"]
        assert snapshot["breakers"][0]["state"] == "closed"
        update = await communicator.receive_json_from(timeout=3)
        assert update["breakers"][0]["provider"] == "Local" and update["workers"] == []
        await communicator.disconnect()

    _run(scenario)


def test_a_client_is_refused_another_clients_pipeline(world):
    headers = _headers(world["client_b"])

    async def scenario():
        communicator = _communicator(headers)
        await _subscribe(communicator, "acme/triage")
        assert (await communicator.receive_output(timeout=5)) == {
            "type": "websocket.close",
            "code": 4404,
        }
        assert ticker.viewers == {}

    _run(scenario)


def test_anonymous_users_and_roles_without_dashboards_are_refused(world):
    cases = [
        (_headers(None), 4401),
        (_headers(world["reviewer"]), 4403),
        (_headers(world["no_role"]), 4403),
    ]

    async def scenario():
        for headers, code in cases:
            communicator = _communicator(headers)
            connected, answer = await communicator.connect()
            assert (connected, answer) == (False, code)

    _run(scenario)


def test_a_malformed_message_is_answered_with_an_error(world):
    headers = _headers(world["client_a"])

    async def scenario():
        communicator = _communicator(headers)
        await communicator.connect()
        await communicator.send_to(text_data="not json")
        assert (await communicator.receive_json_from(timeout=5))["type"] == "error"
        await communicator.disconnect()

    _run(scenario)


class _Viewer:
    def __init__(self) -> None:
        self.received: list[str] = []

    async def send(self, text_data=None, bytes_data=None) -> None:
        self.received.append(text_data)


class _CountingTicker(Ticker):
    """Counts the queries of each tick's read, in the thread the read runs in."""

    def __init__(self) -> None:
        super().__init__()
        self.queries: list[int] = []

    def read(self, subscriptions, now):
        with CaptureQueriesContext(connection) as queries:
            texts = super().read(subscriptions, now)
        self.queries.append(len(queries))
        return texts


def _queries_per_tick(viewers: int, subscription: Subscription) -> tuple[int, list[_Viewer]]:
    local = _CountingTicker()
    crowd = [_Viewer() for _ in range(viewers)]

    async def scenario():
        for viewer in crowd:
            await local.subscribe(viewer, subscription)
        local.task.cancel()  # ticked by hand below
        await local.tick()  # the first tick reads the two hours of minutes once
        await local.tick()
        for viewer in crowd:
            local.unsubscribe(viewer)

    run_async(scenario)
    # Each got its snapshot, then the updates of the ticks (the ticker may have ticked on its own
    # while the crowd was still subscribing).
    assert all(json.loads(v.received[0])["type"] == "snapshot" for v in crowd)
    assert all(len(v.received) >= 3 for v in crowd)
    return local.queries[-1], crowd


def test_a_tick_costs_the_same_queries_for_one_viewer_and_for_fifty(world):
    acme, globex = world["acme_item"].pipeline, world["globex_item"].pipeline
    acme.daily_budget = Decimal("5")
    acme.save(update_fields=["daily_budget"])
    rollups_add({acme.pk: {"accepted": 3}}, at=timezone.now())
    overview = Subscription((acme.pk, globex.pk), "1h", single=False, operations=True)

    one, _ = _queries_per_tick(1, overview)
    fifty, crowd = _queries_per_tick(50, overview)

    print(f"queries per tick: {one} with 1 viewer, {fifty} with 50 viewers")
    assert one == fifty
    assert one <= 25
    # Every viewer got the same update, built once.
    last = {v.received[-1] for v in crowd}
    assert len(last) == 1
    update = json.loads(last.pop())
    assert update["type"] == "update"
    # The live minutes (the last three) hold the work, whichever minute the clock is in now.
    assert sum(update["charts"]["throughput"]["traces"][1]["y"]) == 3


def test_a_client_flooding_the_socket_with_messages_is_closed(world):
    from controlplane.monitoring.consumers import MESSAGE_BURST, TOO_MANY

    headers = _headers(world["client_a"])

    async def scenario():
        communicator = _communicator(headers)
        await _subscribe(communicator, "acme/triage")
        for _ in range(MESSAGE_BURST * 4):
            await communicator.send_json_to(
                {"action": "subscribe", "pipeline": "acme/triage", "range": "1h"}
            )
        snapshots = 0
        while True:
            output = await communicator.receive_output(timeout=5)
            if output["type"] == "websocket.close":
                break
            if json.loads(output["text"])["type"] == "snapshot":
                snapshots += 1
        assert output["code"] == TOO_MANY
        # The burst was answered; the rest cost no snapshot reads.
        assert snapshots == MESSAGE_BURST
        await communicator.wait()

    _run(scenario)
    assert ticker.viewers == {}


def test_the_message_bucket_refills_with_time():
    from controlplane.monitoring.consumers import TokenBucket

    now = [100.0]
    bucket = TokenBucket(burst=2, rate=0.5, clock=lambda: now[0])
    assert [bucket.take() for _ in range(3)] == [True, True, False]
    now[0] += 1.0  # half a token
    assert bucket.take() is False
    now[0] += 1.0
    assert bucket.take() is True and bucket.take() is False
    now[0] += 60  # never more than the burst
    assert [bucket.take() for _ in range(3)] == [True, True, False]
