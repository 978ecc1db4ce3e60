"""Per-provider rate limit: how many calls may start now, counted across every worker process on
every host.

Counts live in Django's cache (the database cache embedded, Redis when scaled out), never in
process memory. The limit is a sliding window of one minute, estimated from two fixed windows:
the calls counted in this minute plus the previous minute's count weighted by the part of it
that still lies within the last 60 seconds. A fixed window alone would let a provider take twice
its limit across a minute boundary (a full minute's worth at 12:00:59 and again at 12:01:00).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable

from django.core.cache import DEFAULT_CACHE_ALIAS, cache, caches
from django.core.cache.backends.base import BaseCache
from django.db import DEFAULT_DB_ALIAS, connections, router, transaction

from pipelines.models import Provider

# Seconds since the epoch. Tests replace it to move time without sleeping.
clock: Callable[[], float] = time.time

WINDOW_SECONDS = 60
# A window's count is read during the next window too, so it lives for two of them (plus slack
# because cache expiry runs on the cache's clock, not ours).
WINDOW_KEEP_SECONDS = 3 * WINDOW_SECONDS


def _window_key(provider_id: int, window: int) -> str:
    return f"ratelimit:{provider_id}:{window}"


def cache_counter_add(key: str, delta: int, *, timeout: float | None) -> int:
    """Add `delta` to the integer at `key` in the shared cache (a missing key counts as 0) and
    return the new value; `timeout` applies when the key is created.

    Redis increments atomically. The database cache has no increment of its own (Django's
    fallback reads, then writes), so there the read and the write run in one transaction that
    holds a lock other processes wait for: SQLite's IMMEDIATE transaction takes the database's
    write lock at BEGIN, and on PostgreSQL a transaction-level advisory lock on the key."""
    backend = caches[DEFAULT_CACHE_ALIAS]
    if type(backend).incr is BaseCache.incr:
        return _counter_add_locked(backend, key, delta, timeout=timeout)
    for _ in range(3):
        if cache.add(key, delta, timeout=timeout):
            return delta
        try:
            value = cache.incr(key, delta)
        except ValueError:  # it expired between add() and incr(): start it again
            continue
        if value == delta:
            # Redis checks that the key exists, then INCRBY: a key that expired in between is
            # recreated without an expiry. Give it one back.
            cache.touch(key, timeout)
        return value
    # Only reached if the key keeps expiring under us; the count restarts, which errs low.
    cache.set(key, delta, timeout=timeout)
    return delta


def _counter_add_locked(backend: BaseCache, key: str, delta: int, *, timeout: float | None) -> int:
    model = getattr(backend, "cache_model_class", None)
    alias = router.db_for_write(model) if model is not None else DEFAULT_DB_ALIAS
    connection = connections[alias]
    with transaction.atomic(using=alias):
        if connection.vendor == "postgresql":
            lock_id = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [lock_id - 2**63])
        value = (cache.get(key) or 0) + delta
        cache.set(key, value, timeout=timeout)
    return value


def _carried(provider_id: int, now: float) -> tuple[int, int]:
    """(this window's number, calls of the previous window still inside the last minute)."""
    window = int(now // WINDOW_SECONDS)
    previous = cache.get(_window_key(provider_id, window - 1)) or 0
    left = 1 - (now % WINDOW_SECONDS) / WINDOW_SECONDS
    # Rounded up so that the estimate never lets through more than the limit.
    return window, math.ceil(previous * left)


def rate_grant(*, provider: Provider, wanted: int) -> int:
    """How many of `wanted` calls may start now under provider.rate_limit_per_minute, counted
    across all worker processes (0 limit = all of them). Calls not granted wait."""
    limit = provider.rate_limit_per_minute
    if wanted <= 0:
        return 0
    if not limit:
        return wanted
    window, carried = _carried(provider.pk, clock())
    room = limit - carried
    if room <= 0:
        return 0
    key = _window_key(provider.pk, window)
    # Take all we want first, then give back what did not fit. Each caller's grant is computed
    # from the count before its own increment, so with an atomic increment the grants of racing
    # workers never add up to more than the room; a racer that sees another's not-yet-returned
    # overshoot is granted less than it could have been, never more.
    after = cache_counter_add(key, wanted, timeout=WINDOW_KEEP_SECONDS)
    granted = max(0, min(wanted, room - (after - wanted)))
    if granted < wanted:
        cache_counter_add(key, granted - wanted, timeout=WINDOW_KEEP_SECONDS)
    return granted


def rate_used(*, provider: Provider) -> int:
    """Calls started in the last minute as the limit counts them (an estimate, see above)."""
    window, carried = _carried(provider.pk, clock())
    return carried + (cache.get(_window_key(provider.pk, window)) or 0)
