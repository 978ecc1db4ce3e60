"""Reading ids and numbers from query strings and forms without ever raising."""

from __future__ import annotations

import math

MAX_ID = 2**63 - 1


def parse_id(raw: object) -> int | None:
    """A database id from user input, or None: ASCII digits only (str.isdigit also accepts
    '²'), within the range of a 64-bit key."""
    text = str(raw or "").strip()
    if not text or not text.isascii() or not text.isdigit() or len(text) > 19:
        return None
    value = int(text)
    return value if 0 < value <= MAX_ID else None


def parse_float(raw: object, default: float) -> float:
    """A finite float from user input, or `default`."""
    try:
        value = float(str(raw))
    except ValueError:
        return default
    return value if math.isfinite(value) else default
