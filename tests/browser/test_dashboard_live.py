"""With a pipeline's dashboard open, items processed by a real worker move its throughput chart
and its tiles in place: over the websocket of a real ASGI server, without reloading the page."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile

import pytest
from django.conf import settings

from tests.conftest import login
from tests.processes import ROOT, WorkerCluster, env_for_test_database, free_port, wait_for_http
from tests.test_engine import simulated_route, submit

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

DAPHNE = [sys.executable, "-m", "daphne"]
ITEMS = 30
THROUGHPUT_DONE = """() => {
  const chart = document.querySelector("[data-chart=throughput]");
  const sum = (trace) => (trace.y || []).reduce((a, b) => a + (b || 0), 0);
  return chart.data ? sum(chart.data[1]) + sum(chart.data[2]) : -1;
}"""


@pytest.fixture
def asgi_server():
    """daphne serving Sluice (HTTP and websockets) on the test's database, as `serve` runs it."""
    port = free_port()
    command = [*DAPHNE, "-b", "127.0.0.1", "-p", str(port), "controlplane.asgi:application"]
    with tempfile.TemporaryFile(mode="w+") as log:
        process = subprocess.Popen(
            command, env=env_for_test_database(), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            assert wait_for_http(f"http://127.0.0.1:{port}/healthz") == 200
            yield f"http://127.0.0.1:{port}"
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.seek(0)
            # Shown with the test's output when it fails.
            print(log.read()[-5_000:])


def test_a_worker_processing_items_moves_the_dashboard_without_a_reload(
    page, asgi_server, operator, acme_step
):
    simulated_route(acme_step, operator)
    # Signed in by session cookie: the server process hashes passwords with the production
    # hasher, not the fast one the test process uses.
    session = login(operator).cookies[settings.SESSION_COOKIE_NAME].value
    page.context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": asgi_server}]
    )
    page.goto(f"{asgi_server}/dashboards/acme/triage/?range=15m")
    page.locator("[data-live-status]", has_text="live").wait_for()
    dashboard = page.locator("[data-dashboard]")
    # The first update proves the socket is subscribed before any work is submitted.
    page.wait_for_function(
        "() => Number(document.querySelector('[data-dashboard]').dataset.updates || 0) > 0"
    )
    page.evaluate("() => { window.sluiceNotReloaded = true; }")
    tile = page.get_by_test_id("tile-items_per_minute")
    assert tile.inner_text() == "0.0"
    assert page.evaluate(THROUGHPUT_DONE) == 0

    with WorkerCluster() as worker:
        submit(acme_step.pipeline, *(f"Ticket {n}: please refund my invoice" for n in range(ITEMS)))
        page.wait_for_function(f"() => ({THROUGHPUT_DONE})() >= {ITEMS}", timeout=60_000)
    assert worker.returncode is not None
    # The step's row counts them too (column 2: started), pushed over the same socket.
    page.wait_for_function(
        "() => Number(document.querySelector('[data-rows=steps] tr td:nth-child(2)')"
        f"?.textContent.replace(/,/g, '')) >= {ITEMS}",
        timeout=30_000,
    )

    assert tile.inner_text() != "0.0"
    assert page.get_by_test_id("tile-p95").inner_text() != "—"
    assert page.evaluate("() => window.sluiceNotReloaded") is True
    assert int(dashboard.get_attribute("data-updates")) > 1
    assert page.problems == []
