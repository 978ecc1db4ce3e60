"""When to try a transient failure again: exponential backoff with full jitter, never sooner
than the provider's Retry-After. Pure, so it is tested without a clock."""

from __future__ import annotations

import random

BASE_SECONDS = 2.0
CAP_SECONDS = 300.0


def retry_delay(
    *,
    attempt: int,
    retry_after: float | None = None,
    base: float = BASE_SECONDS,
    cap: float = CAP_SECONDS,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before attempt `attempt + 1`, given that `attempt` (1-based) failed.

    Full jitter (a uniform draw up to the exponential bound) spreads a burst of failures over
    the whole window, so items that failed together do not retry together."""
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    bound = min(cap, base * 2 ** (attempt - 1))
    delay = (rng or random).uniform(0, bound)
    if retry_after is not None and retry_after > 0:
        delay = max(delay, min(retry_after, cap))
    return delay
