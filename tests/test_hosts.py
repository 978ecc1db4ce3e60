"""Several hosts on one machine (network namespaces): the work spreads over two worker hosts, and
losing one whole worker host loses no item. The scenario is bench/hosts.py; this runs its quick
version and reads its verdict.

It needs root, iproute2 and PostgreSQL and Redis installed. CI sets SLUICE_REQUIRE_HOSTS=1 so it
fails there instead of skipping; it runs in the PostgreSQL pass only (the scenario brings its own
servers, so running it twice would prove nothing more)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _missing() -> str:
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2 (ip)"
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        return "needs PostgreSQL installed"
    if shutil.which("redis-server") is None:
        return "needs Redis installed"
    return ""


def test_losing_a_worker_host_loses_no_item():
    if not os.environ.get("DATABASE_URL"):
        pytest.skip("runs in the PostgreSQL pass")
    if reason := _missing():
        if os.environ.get("SLUICE_REQUIRE_HOSTS"):
            pytest.fail(reason)
        pytest.skip(reason)
    done = subprocess.run(
        [sys.executable, "-m", "bench.hosts", "--items", "1200", "--no-write"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert done.stdout.count("{") >= 1, done.stderr[-4000:]
    result = json.loads(done.stdout[done.stdout.index("\n{") + 1 :])
    assert result["verdict"] == "passed", (result, done.stderr[-4000:])
    assert done.returncode == 0
    assert result["lost"] == 0 and result["delivered"] == 1200
    before = result["starts_by_host_before_loss"]
    assert before["w1"] > 0 and before["w2"] > 0
    assert result["orphans"] > 0 and result["orphans_delivered"] == result["orphans"]
    assert result["orphans_run_on"] == ["w2"]
    assert result["webhook_items"] == 1200
