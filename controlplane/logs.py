"""Structured logs: every record carries the ids of the work it is about (item, pipeline, step,
attempt), so one item can be followed through web and worker processes by grepping one field.

    from controlplane.logs import log_context

    with log_context(item_id=item.pk, pipeline_id=item.pipeline_id, step_id=step.pk):
        logger.info("calling the model")   # the record carries the three ids

The ids live in a context variable: each asyncio task (one model call of a batch) and each
thread has its own, and nested contexts add to the outer one. `LogContextFilter`, installed on
the handlers in settings.LOGGING, copies them onto every record; `JsonFormatter` writes one JSON
object per line (SLUICE_LOG_FORMAT=json), `TextFormatter` appends them as `key=value`.

Ground layer: imports no app, so the engine and the web views can both use it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

# The fields every Sluice record may carry, in the order text logs show them.
CONTEXT_FIELDS = ("item_id", "pipeline_id", "step_id", "attempt", "worker", "request_id")

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_context: ContextVar[Mapping[str, Any]] = ContextVar("sluice_log_context", default=_EMPTY)

# Attributes every LogRecord has; anything else on a record came from `extra=` or the filter.
_RECORD_ATTRS = frozenset(logging.LogRecord("", logging.INFO, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


@contextmanager
def log_context(**fields: Any) -> Iterator[Mapping[str, Any]]:
    """Add `fields` to every record logged inside the block (None values are left out)."""
    merged = {**_context.get(), **{k: v for k, v in fields.items() if v is not None}}
    token = _context.set(merged)
    try:
        yield merged
    finally:
        _context.reset(token)


def log_context_get() -> Mapping[str, Any]:
    """The fields the current context adds to records."""
    return _context.get()


def log_fields(**fields: Any) -> dict[str, Any]:
    """`extra=` for one record, without opening a context: `logger.info(..., extra=
    log_fields(item_id=7))`. None values are left out."""
    return {k: v for k, v in fields.items() if v is not None}


class LogContextFilter(logging.Filter):
    """Copies the current context onto each record; a field given with `extra=` wins."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _context.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        name: value
        for name, value in record.__dict__.items()
        if name not in _RECORD_ATTRS and not name.startswith("_")
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, process, the
    context fields and any `extra=` fields, and the traceback as one string when there is
    one. Values that are not JSON become their str()."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        for name, value in _extras(record).items():
            entry.setdefault(name, _jsonable(value))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The usual one-line text, followed by the context fields as `key=value`."""

    def __init__(self, fmt: str | None = None, **kwargs: Any) -> None:
        super().__init__(fmt or "%(asctime)s %(levelname)s %(name)s %(message)s", **kwargs)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = _extras(record)
        fields = [f"{name}={extras[name]}" for name in CONTEXT_FIELDS if name in extras]
        if not fields:
            return text
        first, newline, rest = text.partition("\n")
        return f"{first} [{' '.join(fields)}]{newline}{rest}"
