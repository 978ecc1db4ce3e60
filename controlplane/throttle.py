"""Login throttling: after N failed logins for a username or from an address, refuse for a while.

Counts live in the cache (the database cache embedded, Redis when scaled out), so every web process
shares them.
"""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.core.cache import cache


def _keys(*, username: str, ip: str) -> list[str]:
    user_digest = hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]
    return [f"login-fail:user:{user_digest}", f"login-fail:ip:{ip}"]


def login_throttled(*, username: str, ip: str) -> bool:
    """True when this username or this address has used up its failed attempts."""
    counts = cache.get_many(_keys(username=username, ip=ip))
    return any(n >= settings.LOGIN_THROTTLE_ATTEMPTS for n in counts.values())


def login_failed(*, username: str, ip: str) -> None:
    for key in _keys(username=username, ip=ip):
        # add() starts the window on the first failure; incr() keeps its expiry.
        if not cache.add(key, 1, timeout=settings.LOGIN_THROTTLE_WINDOW):
            try:
                cache.incr(key)
            except ValueError:  # expired between add and incr
                cache.add(key, 1, timeout=settings.LOGIN_THROTTLE_WINDOW)


def login_succeeded(*, username: str) -> None:
    cache.delete(_keys(username=username, ip="-")[0])
