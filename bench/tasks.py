"""The bare django-q2 task the engine's throughput is compared with."""

from __future__ import annotations


def noop() -> None:
    return None
