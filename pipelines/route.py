"""Choosing a model for an item from a step's route. Pure: entries in, entries out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class RouteRule(Protocol):
    min_input_chars: int | None
    min_priority: int | None


def route_candidates[T: RouteRule](
    entries: Sequence[T], *, input_chars: int, priority: int
) -> list[T]:
    """The entries whose conditions the item meets, in route order: the first is the model to
    call, the rest its fallback chain."""
    return [
        entry
        for entry in entries
        if (entry.min_input_chars is None or input_chars > entry.min_input_chars)
        and (entry.min_priority is None or priority >= entry.min_priority)
    ]
