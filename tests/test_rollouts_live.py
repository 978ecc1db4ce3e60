"""The rollout page's websocket: who may watch which rollout, what a viewer receives when the
step rollups move, and what a tick costs with one viewer and with twenty."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.testing import WebsocketCommunicator
from django.db import connection
from django.test import AsyncClient
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from controlplane.asgi import application
from controlplane.rollouts_live import RolloutTicker, ticker
from pipelines.models import Item
from pipelines.services.rollouts import rollout_rollback, rollout_start
from pipelines.services.rollups import step_rollups_add
from tests.aio import in_db_thread, run_async
from tests.test_dashboards_live import _headers
from tests.test_rollouts import candidate

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def rollout(acme_step, operator):
    v2 = candidate(acme_step, operator)
    return rollout_start(step=acme_step, candidate=v2, stages="50, 100", actor=operator)


def _communicator(headers, pk: int) -> WebsocketCommunicator:
    return WebsocketCommunicator(application, f"/ws/rollouts/{pk}/", headers=headers)


def _work(rollout, *, version: int, started: int, failed: int = 0) -> None:
    """What the engine adds to the step rollups when it runs items of one arm."""
    step = rollout.step
    counts = {"started": started, "failed": failed, "accepted": started - failed}
    step_rollups_add({(step.pipeline_id, step.pk, version): counts}, at=timezone.now())


def _error_rate_row(html: str) -> str:
    start = html.index('data-guard="error_rate"')
    return html[start : html.index("</tr>", start)]


def test_an_operator_receives_the_region_then_an_update_when_the_rollups_move(world, rollout):
    headers = _headers(world["operator"])

    async def scenario():
        communicator = _communicator(headers, rollout.pk)
        connected, code = await communicator.connect()
        assert connected, code
        first = await communicator.receive_json_from(timeout=5)
        assert first["type"] == "rollout" and first["status"] == "running"
        assert first["html"].lstrip().startswith('<section id="live"')
        assert f'data-rollout-live="/ws/rollouts/{rollout.pk}/"' in first["html"]
        assert "hx-trigger" not in first["html"]
        assert "—" in _error_rate_row(first["html"])  # nothing measured yet
        await in_db_thread(_work, rollout, version=2, started=20, failed=5)
        await in_db_thread(_work, rollout, version=1, started=20)
        written = asyncio.get_running_loop().time()
        # A tick that was reading while the rows were written may send a region with half of
        # them; the next one has both, within two ticks.
        while True:
            update = await communicator.receive_json_from(timeout=4)
            row = _error_rate_row(update["html"])
            if "25.0%" in row and "0.0%" in row:
                break
        assert asyncio.get_running_loop().time() - written < 4.5
        figures = update["html"].split('id="rollout-figure-error_rate"', 1)[1]
        assert '"candidate"' in figures and "0.25" in figures
        await communicator.disconnect()

    run_async(scenario)
    assert ticker.viewers == {}


def test_a_viewer_is_told_when_the_rollout_ends_and_nothing_more(world, rollout):
    headers = _headers(world["operator"])

    async def scenario():
        communicator = _communicator(headers, rollout.pk)
        await communicator.connect()
        await communicator.receive_json_from(timeout=5)
        await in_db_thread(rollout_rollback, rollout=rollout, actor=world["operator"])
        ended = await communicator.receive_json_from(timeout=4)
        assert ended["status"] == "rolled_back"
        assert "data-rollout-live" not in ended["html"] and "rolled back by olivia" in ended["html"]
        # Unchanged since: nothing is sent again.
        assert await communicator.receive_nothing(timeout=2.5)
        await communicator.disconnect()

    run_async(scenario)


def test_only_operators_may_watch_and_only_a_rollout_that_exists(world, rollout):
    cases = [
        (_headers(None), rollout.pk, 4401),
        (_headers(world["reviewer"]), rollout.pk, 4403),
        (_headers(world["client_a"]), rollout.pk, 4403),
        (_headers(world["client_b"]), rollout.pk, 4403),
        (_headers(world["no_role"]), rollout.pk, 4403),
        (_headers(world["operator"]), rollout.pk + 1000, 4404),
    ]

    async def scenario():
        for headers, pk, code in cases:
            communicator = _communicator(headers, pk)
            assert (await communicator.connect()) == (False, code)
        assert ticker.viewers == {}

    run_async(scenario)


def test_the_page_under_asgi_is_fed_by_the_socket_and_under_wsgi_polls(world, rollout):
    from tests.conftest import login

    url = reverse("rollout-detail", args=[rollout.pk])
    wsgi = login(world["operator"]).get(url).content.decode()
    assert 'hx-trigger="every 2s"' in wsgi and "data-rollout-live" not in wsgi

    async def scenario():
        http = AsyncClient()
        await http.aforce_login(world["operator"])
        return (await http.get(url)).content.decode()

    asgi = run_async(scenario)
    assert f'data-rollout-live="/ws/rollouts/{rollout.pk}/"' in asgi
    assert f'data-poll="{url}"' in asgi and 'hx-trigger="every 2s"' not in asgi


class _Viewer:
    def __init__(self) -> None:
        self.received: list[str] = []

    async def send(self, text_data=None, bytes_data=None) -> None:
        self.received.append(text_data)


class _CountingTicker(RolloutTicker):
    """Counts the queries of each tick's read, in the thread the read runs in."""

    def __init__(self) -> None:
        super().__init__()
        self.queries: list[int] = []
        self.sqls: list[str] = []

    def read(self, ids):
        with CaptureQueriesContext(connection) as queries:
            texts = super().read(ids)
        self.queries.append(len(queries))
        self.sqls = [q["sql"] for q in queries]
        return texts


def _queries_per_tick(viewers: int, rollout) -> tuple[int, list[str], list[_Viewer]]:
    local = _CountingTicker()
    crowd = [_Viewer() for _ in range(viewers)]

    async def scenario():
        for viewer in crowd:
            await local.subscribe(viewer, rollout.pk)
        local.task.cancel()  # ticked by hand below
        await in_db_thread(_work, rollout, version=2, started=viewers)
        await local.tick()
        for viewer in crowd:
            local.unsubscribe(viewer)

    run_async(scenario)
    assert all(json.loads(v.received[0])["type"] == "rollout" for v in crowd)
    return local.queries[-1], local.sqls, crowd


def test_a_tick_costs_the_same_queries_for_one_viewer_and_for_twenty(world, rollout):
    one, _, _ = _queries_per_tick(1, rollout)
    twenty, sqls, crowd = _queries_per_tick(20, rollout)

    print(f"queries per tick: {one} with 1 viewer, {twenty} with 20 viewers")
    assert one == twenty <= 8
    assert not [sql for sql in sqls if f'"{Item._meta.db_table}"' in sql]
    # Every viewer got the same update, rendered once, showing the new work.
    last = {v.received[-1] for v in crowd}
    assert len(last) == 1
    assert "21 items this stage" in json.loads(last.pop())["html"]
