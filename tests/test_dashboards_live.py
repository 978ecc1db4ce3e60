"""The dashboards' websocket: who may subscribe to what, what a viewer receives, and what a tick
costs with one viewer and with fifty."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from decimal import Decimal

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from controlplane.asgi import application
from controlplane.monitoring.live import Subscription, Ticker, ticker
from pipelines.services.rollups import rollups_add, step_rollups_add
from tests.aio import in_db_thread, run_async
from tests.conftest import login
from tests.test_dashboards import globex_step

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
        await in_db_thread(
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


def _queries_per_tick(viewers: int, *subscriptions: Subscription) -> tuple[int, list[_Viewer]]:
    """Queries of a steady tick with `viewers` viewers of each subscription."""
    local = _CountingTicker()
    crowd = [(_Viewer(), s) for s in subscriptions for _ in range(viewers)]

    async def scenario():
        for viewer, subscription in crowd:
            await local.subscribe(viewer, subscription)
        local.task.cancel()  # ticked by hand below
        await local.tick()  # the first tick reads the two hours of minutes once
        await local.tick()
        for viewer, _ in crowd:
            local.unsubscribe(viewer)

    run_async(scenario)
    crowd = [viewer for viewer, _ in crowd]
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


def test_each_client_receives_the_live_step_rows_of_its_own_pipeline_only(world):
    acme_step, clause = world["acme_step"], globex_step(world)
    acme, globex = acme_step.pipeline_id, clause.pipeline_id
    headers_a, headers_b = _headers(world["client_a"]), _headers(world["client_b"])

    async def scenario():
        a, b = _communicator(headers_a), _communicator(headers_b)
        await _subscribe(a, "acme/triage")
        await _subscribe(b, "globex/contracts")
        snapshot_a = await a.receive_json_from(timeout=5)
        snapshot_b = await b.receive_json_from(timeout=5)
        assert [r["step"] for r in snapshot_a["steps"]] == ["Topic"]
        assert [r["step"] for r in snapshot_b["steps"]] == ["Clause check"]
        assert snapshot_a["steps"][0]["started"] == "0"
        await in_db_thread(
            step_rollups_add,
            {
                (acme, acme_step.pk, 1): {"started": 6, "accepted": 5, "held": 1},
                (globex, clause.pk, 1): {"started": 2, "failed": 2},
            },
            at=timezone.now(),
        )
        # Both are watched by the same ticker: one read, each its own rows.
        while True:
            update_a = await a.receive_json_from(timeout=2)
            if update_a["steps"][0]["started"] == "6":
                break
        assert update_a["steps"][0]["held"] == "1"
        assert update_a["charts"]["steps"]["figure"]["data"][0]["x"] == [5]
        received_b = [snapshot_b]
        while received_b[-1].get("steps", [{}])[0].get("started") != "2":
            received_b.append(await b.receive_json_from(timeout=2))
        assert received_b[-1]["steps"][0]["failed"] == "2"
        assert all("Topic" not in json.dumps(message) for message in received_b)
        assert all([r["step"] for r in m["steps"]] == ["Clause check"] for m in received_b)
        await a.disconnect()
        await b.disconnect()

    _run(scenario)
    assert ticker.viewers == {}


def test_step_rows_cost_a_tick_two_queries_whatever_the_viewers_and_pipelines(world):
    acme_step, clause = world["acme_step"], globex_step(world)
    acme, globex = acme_step.pipeline_id, clause.pipeline_id
    now = timezone.now()
    step_rollups_add({(acme, acme_step.pk, 1): {"started": 4, "accepted": 4}}, at=now)
    # Before the minutes the ticker keeps: on the 24 h range only, from the totals it reads
    # once an hour.
    step_rollups_add(
        {(acme, acme_step.pk, 1): {"started": 9, "failed": 9}}, at=now - timedelta(hours=5)
    )
    overview = Subscription((acme,), "1h", single=False, operations=False)
    one_hour = Subscription((acme,), "1h", single=True, operations=False)
    one_day = Subscription((acme,), "24h", single=True, operations=False)
    other = Subscription((globex,), "1h", single=True, operations=False)

    without_steps, _ = _queries_per_tick(1, overview)
    one, crowd = _queries_per_tick(1, one_hour)
    fifty, _ = _queries_per_tick(50, one_hour)
    two_pipelines, _ = _queries_per_tick(1, one_hour, other)
    long_range, day_crowd = _queries_per_tick(5, one_day, one_hour)

    print(f"queries per tick: {without_steps} without steps, {one} with, {fifty} for 50 viewers")
    assert one == without_steps + 2
    assert fifty == two_pipelines == long_range == one
    rows = json.loads(crowd[-1].received[-1])["steps"]
    assert (rows[0]["started"], rows[0]["failed"]) == ("4", "0")
    rows = json.loads(day_crowd[0].received[-1])["steps"]
    assert (rows[0]["started"], rows[0]["accepted"], rows[0]["failed"]) == ("13", "4", "9")
