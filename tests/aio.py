"""Running async test scenarios from sync tests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import async_to_sync


def run_async(scenario: Callable[[], Awaitable[Any]]) -> Any:
    """Run an async scenario to its end on a thread of its own: a browser test earlier in the
    session leaves Playwright's event loop running in the main thread, where async_to_sync
    refuses to start another."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(async_to_sync(scenario)).result()


async def in_db_thread(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`func` on a thread from an async scenario, with its database connection given back when
    it returns (Channels' database_sync_to_async): on PostgreSQL the connections come from a
    pool, and a thread that keeps one drains it for the tests after."""
    from channels.db import database_sync_to_async

    return await database_sync_to_async(func)(*args, **kwargs)
