"""What the engine and the "try it" panel share to call a provider from sync code."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine
from typing import Any

from pipelines.models import Provider
from pipelines.providers import ProviderSettings


def provider_settings(provider: Provider) -> ProviderSettings:
    """The fields of a Provider row that a call needs, as plain values."""
    return ProviderSettings(
        kind=provider.kind,
        base_url=provider.base_url,
        api_key_env=provider.api_key_env,
        timeout_seconds=float(provider.timeout_seconds),
        max_concurrency=provider.max_concurrency,
        simulation=provider.simulation,
    )


def run_sync[T](coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, also when this thread already runs an
    event loop (then in a thread of its own, since a loop cannot be re-entered)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
