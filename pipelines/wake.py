"""Wake-ups for the workers: best effort, since a queue message is only a wake-up and the row is
the truth. A wake-up that cannot be sent (the broker or the cache is down) is logged and
dropped: the request that accepted the work still succeeds, and the minute schedules
(`sluice.engine`, `sluice.deliveries`, `sluice.sweep`) find the work once the broker is back."""

from __future__ import annotations

import logging
import time

logger = logging.getLogger(__name__)

# One wake-up per key in this window however many callers ask: work that arrives meanwhile is
# taken by the drains of the wake-up already sent, which look once more at its end (see
# `wake_window_wait`).
WINDOW_SECONDS = 1.0


def wake_send(*, key: str, func: str, task_name: str, count: int = 1) -> bool:
    """Enqueue `count` runs of the task `func`, at most once a second per `key` however many
    callers ask. Returns whether they were sent; never raises."""
    from django.core.cache import cache
    from django_q.tasks import async_task

    try:
        if not cache.add(key, time.time(), timeout=WINDOW_SECONDS):
            return False
        for _ in range(count):
            async_task(func, task_name=task_name)
    except Exception:
        logger.warning(
            "wake-up %s not sent; the minute schedule will find the work", key, exc_info=True
        )
        return False
    return True


def wake_window_wait(key: str) -> bool:
    """Wait until the last wake-up's window for `key` closes; False at once when none is open.
    A drain that runs out of work calls this and, when it waited, looks once more: a caller
    whose wake-up was folded into the drain's own may have committed its work since the drain
    last looked."""
    from django.core.cache import cache

    try:
        sent = cache.get(key)
    except Exception:
        return False
    if not isinstance(sent, int | float):
        return False
    left = min(WINDOW_SECONDS, sent + WINDOW_SECONDS - time.time())
    if left <= 0:
        return False
    time.sleep(left + 0.05)
    return True
