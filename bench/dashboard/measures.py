"""What the benchmark measures: dashboard page times through Django's test client, and the live
ticker's queries with crowds of websocket viewers."""

from __future__ import annotations

import asyncio
import statistics
import time

from bench.dashboard.fixture import Fixture


def _ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {"p50": 0.0, "p95": 0.0, "max": 0.0}
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "p50": round(statistics.median(ordered) * 1000, 1),
        "p95": round(p95 * 1000, 1),
        "max": round(ordered[-1] * 1000, 1),
    }


def _operator_client(fixture: Fixture):
    from django.contrib.auth import get_user_model
    from django.test import Client

    http = Client()
    http.force_login(get_user_model().objects.get(pk=fixture.operator_id))
    return http


def pages_measure(fixture: Fixture, *, requests: int) -> list[dict]:
    """Per page (the overview of every pipeline, one pipeline) and range: one request counted
    for its queries, then `requests` timed ones through Django's test client, signed in as an
    operator (who also sees breakers and workers)."""
    from django.urls import reverse

    from pipelines.metrics import RANGES

    http = _operator_client(fixture)
    client_slug, slug = fixture.names[0].split("/")
    pages = (
        ("overview", reverse("dashboard-overview")),
        (
            f"one pipeline ({fixture.names[0]})",
            reverse("dashboard-pipeline", args=[client_slug, slug]),
        ),
    )
    rows = []
    for page, url in pages:
        for range_name in RANGES:
            address = f"{url}?range={range_name}"
            with _QueryCounter() as queries:
                response = http.get(address)
            if response.status_code != 200:
                raise RuntimeError(f"bench.dashboard: {address} answered {response.status_code}")
            times = []
            for _ in range(requests):
                began = time.perf_counter()
                response = http.get(address)
                times.append(time.perf_counter() - began)
                if response.status_code != 200:
                    raise RuntimeError(
                        f"bench.dashboard: {address} answered {response.status_code}"
                    )
            rows.append(
                {
                    "page": page,
                    "range": range_name,
                    "requests": requests,
                    "ms": _ms(times),
                    "queries": queries.count,
                    "kib": round(len(response.content) / 1024, 1),
                }
            )
    return rows


class _QueryCounter:
    """Counts the queries of every connection of this process while installed (each thread has
    its own connection, and a pooled one reconnects: connection_created installs it anew)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        return execute(sql, params, many, context)

    def install(self, connection, **kwargs) -> None:
        if self not in connection.execute_wrappers:
            connection.execute_wrappers.append(self)

    def __enter__(self) -> _QueryCounter:
        from django.db import connection
        from django.db.backends.signals import connection_created

        connection_created.connect(self.install, weak=False, dispatch_uid="bench-dashboard")
        self.install(connection)
        return self

    def __exit__(self, *exc) -> None:
        from django.db import connections
        from django.db.backends.signals import connection_created

        connection_created.disconnect(dispatch_uid="bench-dashboard")
        for connection in connections.all(initialized_only=True):
            if self in connection.execute_wrappers:
                connection.execute_wrappers.remove(self)


def _crowds(fixture: Fixture, viewers: int) -> list[tuple[str, list[tuple[str, str]]]]:
    from pipelines.metrics import RANGES

    # Every (dashboard, range) once, the overview first in each range, then again from the start.
    every = [(name, r) for r in RANGES for name in ("", *fixture.names)]
    mixed = [every[k % len(every)] for k in range(viewers)]
    return [
        ("1 viewer: one pipeline, 1 h", [(fixture.names[0], "1h")]),
        (f"1 viewer: overview of {len(fixture.names)} pipelines, 1 h", [("", "1h")]),
        (f"{viewers} viewers: the same overview, 1 h", [("", "1h")] * viewers),
        (
            f"{viewers} viewers: every pipeline's dashboard and the overview, every range",
            mixed,
        ),
    ]


async def _watch(application, headers, wanted: list[tuple[str, str]], seconds: float) -> dict:
    """Connect a websocket per wanted (pipeline, range), wait for every snapshot, then count
    what the process's ticker does for `seconds`."""
    from channels.testing import WebsocketCommunicator

    from controlplane.monitoring.live import ticker

    sockets = []
    for pipeline, range_name in wanted:
        socket = WebsocketCommunicator(application, "/ws/dashboard/", headers=headers)
        connected, code = await socket.connect(timeout=30)
        if not connected:
            raise RuntimeError(f"bench.dashboard: the websocket was refused ({code})")
        await socket.send_json_to(
            {"action": "subscribe", "pipeline": pipeline, "range": range_name}
        )
        sockets.append(socket)
    for socket in sockets:
        snapshot = await socket.receive_json_from(timeout=300)
        if snapshot.get("type") != "snapshot":
            raise RuntimeError(f"bench.dashboard: expected a snapshot, got {snapshot.get('type')}")

    counter = _QueryCounter()
    reads: list[float] = []
    read_queries: list[int] = []
    ticks: list[float] = []
    read, tick = ticker.read, ticker.tick

    def timed_read(subscriptions, now):
        began, before = time.perf_counter(), counter.count
        try:
            return read(subscriptions, now)
        finally:
            reads.append(time.perf_counter() - began)
            read_queries.append(counter.count - before)

    async def timed_tick():
        began = time.perf_counter()
        try:
            await tick()
        finally:
            ticks.append(time.perf_counter() - began)

    ticker.read, ticker.tick = timed_read, timed_tick
    try:
        with counter:
            began = time.perf_counter()
            await asyncio.sleep(seconds)
            elapsed = time.perf_counter() - began
            queries = counter.count
            done = len(ticks)
    finally:
        del ticker.read, ticker.tick
    for socket in sockets:
        await socket.disconnect()
    if ticker.task is not None and not ticker.task.done():
        await asyncio.wait_for(ticker.task, timeout=60)
    return {
        "viewers": len(wanted),
        "subscriptions": len(set(wanted)),
        "seconds": round(elapsed, 1),
        "ticks": done,
        "queries": queries,
        "queries_per_second": round(queries / elapsed, 1),
        "queries_per_tick": statistics.median(read_queries) if read_queries else None,
        "read_ms": _ms(reads),
        "read_queries": read_queries,
        "tick_ms": _ms(ticks),
    }


def ticker_measure(fixture: Fixture, *, seconds: float, viewers: int = 100) -> list[dict]:
    """For each crowd of operators' websockets (through the ASGI application, in process): the
    queries the live ticker made per second and per tick while they watched, and how long a
    tick's read and the whole tick (read and sends) took."""
    from asgiref.sync import async_to_sync
    from django.conf import settings

    from controlplane.asgi import application

    session = _operator_client(fixture).cookies[settings.SESSION_COOKIE_NAME].value
    headers = [
        (b"origin", b"http://localhost"),
        (b"cookie", f"{settings.SESSION_COOKIE_NAME}={session}".encode()),
    ]
    rows = []
    for label, wanted in _crowds(fixture, viewers):
        row = async_to_sync(_watch)(application, headers, wanted, seconds)
        rows.append({"crowd": label, **row})
    return rows
