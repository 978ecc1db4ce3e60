"""Sluice as a user runs it: real processes, a real HTTP server, a real worker cluster."""

from __future__ import annotations

import signal
import subprocess
import urllib.request

import pytest
from django_q.tasks import async_task

from controlplane.models import WorkerHeartbeat
from tests.processes import (
    MANAGE,
    ROOT,
    WorkerCluster,
    embedded_env,
    free_port,
    manage,
    wait_for_http,
    wait_until,
)


def test_serve_runs_web_and_workers_and_stops_cleanly_on_ctrl_c(tmp_path):
    env = embedded_env(tmp_path)
    migrated = manage("migrate", "--no-input", "-v", "0", env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert manage("createcachetable", env=env).returncode == 0
    port = free_port()
    server = subprocess.Popen(
        [*MANAGE, "serve", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert wait_for_http(f"http://127.0.0.1:{port}/healthz") == 200
        assert wait_for_http(f"http://127.0.0.1:{port}/readyz") == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/accounts/login/") as page:
            assert b"Sign in to Sluice" in page.read()
        server.send_signal(signal.SIGINT)
        output, _ = server.communicate(timeout=40)
    finally:
        if server.poll() is None:
            server.kill()
    assert server.returncode == 0, output
    assert "Sluice stopped." in output
    # Nothing is left listening.
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_serve_refuses_a_bad_port_with_a_clear_message(tmp_path):
    result = manage("serve", env=embedded_env(tmp_path, PORT="eighty"))
    assert result.returncode != 0
    assert "PORT must be a port number (1-65535); got 'eighty'" in result.stderr


@pytest.mark.django_db(transaction=True)
def test_the_worker_cluster_runs_queued_tasks_on_the_configured_broker():
    async_task("controlplane.tasks.heartbeat_task")
    with WorkerCluster() as cluster:
        ran = wait_until(lambda: WorkerHeartbeat.objects.exists(), timeout=60)
    assert ran, cluster.output
    beat = WorkerHeartbeat.objects.get()
    assert beat.cluster == "sluice"
    assert cluster.returncode == 0, cluster.output
