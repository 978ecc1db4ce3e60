"""Structured logs: JSON lines carrying the item, pipeline, step and attempt ids of the work a
record is about, chosen by SLUICE_LOG_FORMAT; text logs carry the same ids."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from controlplane.logs import (
    JsonFormatter,
    LogContextFilter,
    TextFormatter,
    log_context,
    log_context_get,
    log_fields,
)
from pipelines.services.calls import run_sync

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def capture():
    """A logger writing through the Sluice filter and a formatter into a buffer."""

    def make(formatter: logging.Formatter):
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        handler.setFormatter(formatter)
        handler.addFilter(LogContextFilter())
        logger = logging.getLogger(f"sluice.test.{id(stream)}")
        logger.handlers[:] = [handler]
        logger.propagate = False
        logger.setLevel(logging.DEBUG)
        return logger, stream

    return make


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_json_line_has_the_time_level_logger_message_and_context(capture):
    logger, stream = capture(JsonFormatter())
    with log_context(item_id=42, pipeline_id=7, step_id=3, attempt=2):
        logger.warning("retrying %s", "soon")
    [entry] = lines(stream)
    assert entry["message"] == "retrying soon"
    assert entry["level"] == "WARNING" and entry["logger"].startswith("sluice.test")
    assert entry["time"].endswith("+00:00")
    assert (entry["item_id"], entry["pipeline_id"], entry["step_id"], entry["attempt"]) == (
        42,
        7,
        3,
        2,
    )
    assert entry["process"] == os.getpid()


def test_outside_a_context_records_carry_no_ids(capture):
    logger, stream = capture(JsonFormatter())
    with log_context(item_id=1):
        pass
    logger.info("plain")
    [entry] = lines(stream)
    assert "item_id" not in entry and log_context_get() == {}


def test_contexts_nest_and_extra_fields_win(capture):
    logger, stream = capture(JsonFormatter())
    with log_context(pipeline_id=7, worker="w1"), log_context(item_id=9, step_id=None):
        logger.info("inner", extra=log_fields(item_id=10, attempt=1, note={"a": {1, 2}}))
        logger.info("again")
    first, second = lines(stream)
    assert first["pipeline_id"] == 7 and first["worker"] == "w1"
    assert first["item_id"] == 10 and first["attempt"] == 1
    assert sorted(first["note"]["a"]) == [1, 2]
    assert "step_id" not in first
    assert second["item_id"] == 9


def test_each_concurrent_model_call_logs_its_own_item(capture):
    logger, stream = capture(JsonFormatter())

    async def call(item_id: int) -> None:
        with log_context(item_id=item_id):
            await asyncio.sleep(0.01 * (3 - item_id))
            logger.info("called")

    async def batch() -> None:
        with log_context(pipeline_id=5):
            await asyncio.gather(*(call(n) for n in (1, 2, 3)))

    run_sync(batch())  # in a thread of its own when a loop already runs here
    entries = lines(stream)
    assert [e["item_id"] for e in entries] == [3, 2, 1]
    assert {e["pipeline_id"] for e in entries} == {5}


def test_a_traceback_is_one_field_of_one_line(capture):
    logger, stream = capture(JsonFormatter())
    try:
        raise ValueError("bad output")
    except ValueError:
        with log_context(item_id=4):
            logger.exception("call failed")
    [entry] = lines(stream)
    assert "ValueError: bad output" in entry["exception"] and entry["item_id"] == 4


def test_text_logs_append_the_ids(capture):
    logger, stream = capture(TextFormatter())
    with log_context(item_id=42, pipeline_id=7, attempt=1):
        logger.info("accepted")
    text = stream.getvalue().strip()
    assert text.endswith("INFO " + logger.name + " accepted [item_id=42 pipeline_id=7 attempt=1]")


def run_with_env(**env: str) -> str:
    """Log one record from a fresh process configured by settings, return what it wrote."""
    code = (
        "import logging, django; django.setup();"
        "from controlplane.logs import log_context;"
        "\nwith log_context(item_id=42, pipeline_id=7, step_id=3, attempt=1):"
        "\n    logging.getLogger('pipelines.services.engine').warning('item retried')"
    )
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith(("SLUICE_LOG", "SLUICE_ENV"))
    }
    environ.update(DJANGO_SETTINGS_MODULE="controlplane.settings", **env)
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stderr.strip().splitlines()[-1]


def test_settings_write_json_lines_when_asked():
    entry = json.loads(run_with_env(SLUICE_LOG_FORMAT="json"))
    assert entry["message"] == "item retried"
    assert entry["logger"] == "pipelines.services.engine"
    assert (entry["item_id"], entry["pipeline_id"], entry["step_id"], entry["attempt"]) == (
        42,
        7,
        3,
        1,
    )


def test_development_writes_text_by_default():
    line = run_with_env()
    assert line.endswith("item retried [item_id=42 pipeline_id=7 step_id=3 attempt=1]")


def test_production_writes_json_by_default():
    line = run_with_env(
        SLUICE_ENV="production",
        SECRET_KEY="abcdefghij" * 6,
        ALLOWED_HOSTS="sluice.example.com",
    )
    assert json.loads(line)["item_id"] == 42
