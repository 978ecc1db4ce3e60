"""Helpers for tests that run Sluice as real processes (manage.py, the server, the workers)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
MANAGE = [sys.executable, str(ROOT / "manage.py")]


# Set by the browser tests for their own process only; a child process must not inherit it.
_NOT_INHERITED = ("DJANGO_ALLOW_ASYNC_UNSAFE",)


def embedded_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a fresh embedded install: SQLite in `data_dir`, no Redis."""
    dropped = ("DATABASE_URL", "REDIS_URL", *_NOT_INHERITED)
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update({"SLUICE_DATA_DIR": str(data_dir), "SLUICE_ENV": "development"}, **extra)
    env.pop("SQLITE_PATH", None)
    return env


def env_for_test_database(**extra: str) -> dict[str, str]:
    """The environment that points a child process at the database the current test uses."""
    env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        env["SQLITE_PATH"] = str(db["NAME"])
    else:
        env["DATABASE_URL"] = (
            f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
        )
    env.update(extra)
    return env


def manage(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*MANAGE, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, *, timeout: float = 30) -> int:
    """Poll until the URL answers; return its status code."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError as exc:
            last_error = exc
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer in {timeout} s: {last_error}")


def wait_until(predicate, *, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


class WorkerCluster:
    """A real `manage.py qcluster` on the test's database, for a `with` block. After the block
    it has stopped (SIGTERM, as a supervisor would) and `output`/`returncode` tell how. Its
    output goes to a file, so a chatty cluster never blocks on a full pipe."""

    def __init__(self, **env: str) -> None:
        self.env = env
        self.output = ""
        self.returncode: int | None = None

    def __enter__(self) -> WorkerCluster:
        self._log = tempfile.TemporaryFile(mode="w+")
        self._process = subprocess.Popen(
            [*MANAGE, "qcluster"],
            env=env_for_test_database(**self.env),
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        return self

    @property
    def pid(self) -> int:
        return self._process.pid

    def __exit__(self, *exc_info) -> None:
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self.returncode = self._process.returncode
        self._log.seek(0)
        self.output = self._log.read()[-20_000:]
        self._log.close()
