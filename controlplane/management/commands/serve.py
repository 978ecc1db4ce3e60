"""Run the web server (ASGI: HTTP and websockets) and the worker cluster together.

Ctrl-C (SIGINT) or SIGTERM stops both cleanly: the web server first, so no new work arrives, then
the worker cluster, which finishes the tasks in hand. If either process dies, the other is stopped
and the command exits non-zero, so a supervisor notices.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

STOP_GRACE_SECONDS = 20


class Command(BaseCommand):
    help = "Run the ASGI web server and the django-q2 worker cluster together."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=None, help="Default: $PORT or 8000.")
        parser.add_argument("--no-workers", action="store_true", help="Web server only.")
        parser.add_argument(
            "--demo-traffic", action="store_true", help="Also submit demo items continuously."
        )

    def handle(
        self, *args, host: str, port: int | None, no_workers: bool, demo_traffic: bool, **options
    ):
        if port is None:
            raw = os.environ.get("PORT", "8000")
            if not raw.isdigit() or not 0 < int(raw) < 65536:
                raise CommandError(f"PORT must be a port number (1-65535); got {raw!r}")
            port = int(raw)
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        commands = {
            "web": [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                host,
                "-p",
                str(port),
                # No --proxy-headers: X-Forwarded-For is whatever a client sends, and login
                # throttling keys on the address. Behind a proxy, run daphne with its own flags.
                "controlplane.asgi:application",
            ],
        }
        if not no_workers:
            commands["workers"] = [*manage, "qcluster"]
        if demo_traffic:
            commands["demo-traffic"] = [*manage, "demo_traffic"]

        stopping = False

        def request_stop(signum, frame):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)

        # Each child gets its own session, so a terminal's Ctrl-C reaches only this process,
        # which then stops the children in order.
        children = {
            name: subprocess.Popen(cmd, cwd=settings.BASE_DIR, start_new_session=True)  # noqa: S603
            for name, cmd in commands.items()
        }
        self.stdout.write(
            f"Sluice is up at http://{host}:{port}/ "
            f"({'web only' if no_workers else 'web + worker cluster'}); Ctrl-C stops it."
        )
        failed = None
        while not stopping:
            for name, child in children.items():
                if child.poll() is not None:
                    failed = name
                    stopping = True
            time.sleep(0.2)

        for name in ("demo-traffic", "web", "workers"):
            child = children.get(name)
            if child is None or child.poll() is not None:
                continue
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                self.stderr.write(f"{name} did not stop in {STOP_GRACE_SECONDS} s; killing it")
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        if failed:
            raise CommandError(
                f"the {failed} process exited with code {children[failed].returncode}; "
                "stopped the rest"
            )
        self.stdout.write("Sluice stopped.")
