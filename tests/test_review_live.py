"""The review queue's websocket: who may connect, that a reviewer only receives their own
queues, that a task arriving or claimed by someone else moves the counts, and that viewers are
grouped by user."""

from __future__ import annotations

import asyncio

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext

from controlplane.asgi import application
from review.live import QueueTicker, ticker
from review.models import ReviewTask
from review.services import task_assign, task_claim_next
from tests.aio import in_db_thread, run_async
from tests.conftest import login
from tests.factories import ItemFactory
from tests.reviewing import hold, join
from tests.test_review_pages import globex_task  # noqa: F401 (a fixture)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _no_viewers_left():
    """A failed scenario must not leave its sockets subscribed for the next test."""
    yield
    ticker.watches.clear()


def _headers(user=None) -> list[tuple[bytes, bytes]]:
    headers = [(b"origin", b"http://localhost")]
    if user is not None:
        session = login(user).cookies[settings.SESSION_COOKIE_NAME].value
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={session}".encode()))
    return headers


def _run(scenario) -> None:
    run_async(scenario)


def _communicator(headers) -> WebsocketCommunicator:
    return WebsocketCommunicator(application, "/ws/review/", headers=headers)


@pytest.fixture
def queues(acme_step, globex_task, reviewer):  # noqa: F811
    """An acme queue rita works, with one waiting task, and a globex queue with one."""
    acme_queue = join(acme_step, reviewer)
    hold(ItemFactory(pipeline=acme_step.pipeline), acme_step)
    return acme_queue, join(globex_task.step)


async def _until(communicator, predicate, timeout: float = 6.0) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            message = await communicator.receive_json_from(timeout=timeout)
            if predicate(message):
                return message


def test_a_reviewer_receives_only_their_queues_and_sees_arrivals_and_claims(
    queues, acme_step, reviewer, operator
):
    acme_queue, _ = queues
    headers = _headers(reviewer)

    async def scenario():
        communicator = _communicator(headers)
        connected, code = await communicator.connect()
        assert connected, code
        first = await communicator.receive_json_from(timeout=5)
        assert first["type"] == "queue"
        assert [(c["queue"], c["open"], c["claimed"]) for c in first["counts"]] == [
            (acme_queue.pk, 1, 0)
        ]
        assert "Globex" not in first["html"] and 'data-testid="review-table"' in first["html"]
        await in_db_thread(lambda: hold(ItemFactory(pipeline=acme_step.pipeline), acme_step))
        arrived = await _until(communicator, lambda m: m["counts"][0]["open"] == 2)
        assert arrived["html"].count("data-task=") == 2
        # Someone else (an operator) claims one: it moves from waiting to being reviewed.
        await in_db_thread(task_claim_next, user=operator, queue=acme_queue)
        claimed = await _until(communicator, lambda m: m["counts"][0]["claimed"] == 1)
        assert claimed["counts"][0]["open"] == 1 and "olivia" in claimed["html"]
        await communicator.disconnect()

    _run(scenario)
    assert ticker.watches == {}


def test_an_assignment_reaches_the_assignee_live_though_no_count_changed(
    queues, acme_step, reviewer, operator
):
    headers = _headers(reviewer)

    async def scenario():
        communicator = _communicator(headers)
        await communicator.connect()
        first = await communicator.receive_json_from(timeout=5)
        assert 'data-testid="assigned"' not in first["html"]
        task = await in_db_thread(lambda: ReviewTask.objects.get(step=acme_step, status="open"))
        await in_db_thread(task_assign, task=task, assignee=reviewer, actor=operator)
        assigned = await _until(communicator, lambda m: 'data-testid="assigned"' in m["html"])
        assert "for you" in assigned["html"]
        assert [c["open"] for c in assigned["counts"]] == [c["open"] for c in first["counts"]]
        await communicator.disconnect()

    _run(scenario)


def test_an_operator_receives_every_queue(queues, operator):
    headers = _headers(operator)

    async def scenario():
        communicator = _communicator(headers)
        await communicator.connect()
        first = await communicator.receive_json_from(timeout=5)
        assert len(first["counts"]) == 2 and "Globex" in first["html"]
        assert 'name="assignee"' in first["html"]
        await communicator.disconnect()

    _run(scenario)


def test_client_users_people_without_a_role_and_anonymous_are_refused(world):
    cases = [
        (_headers(None), 4401),
        (_headers(world["client_a"]), 4403),
        (_headers(world["client_b"]), 4403),
        (_headers(world["no_role"]), 4403),
    ]

    async def scenario():
        for headers, code in cases:
            communicator = _communicator(headers)
            connected, close_code = await communicator.connect()
            assert (connected, close_code) == (False, code)
        assert ticker.watches == {}

    _run(scenario)


def test_viewers_are_grouped_by_user_and_an_unchanged_tick_renders_nothing(queues, reviewer):
    headers = _headers(reviewer)

    async def scenario():
        sockets = [_communicator(headers) for _ in range(3)]
        for communicator in sockets:
            await communicator.connect()
            await communicator.receive_json_from(timeout=5)
        assert len(ticker.watches) == 1
        assert len(ticker.watches[reviewer.pk].viewers) == 3
        for communicator in sockets:
            await communicator.disconnect()

    _run(scenario)
    assert ticker.watches == {}


def test_a_tick_costs_the_same_queries_for_one_tab_or_many(queues, reviewer, operator):
    from review.live import _Watch

    def cost(viewers: int, signature=None) -> int:
        quiet = QueueTicker()
        watch = _Watch(user=reviewer, viewers=set(range(viewers)), signature=signature)
        with CaptureQueriesContext(connection) as queries:
            quiet.read([watch])
        return len(queries)

    changed = cost(1)
    assert cost(50) == changed
    # Nothing changed since the last tick: the counts are read, nothing is rendered.
    unchanged = QueueTicker()
    watch = _Watch(user=reviewer, viewers={1})
    unchanged.read([watch])
    with CaptureQueriesContext(connection) as queries:
        assert unchanged.read([watch]) == [None]
    assert len(queries) < changed
