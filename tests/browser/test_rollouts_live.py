"""With a rollout page open on the ASGI server, work on the step moves its guard table and
charts in place over the websocket, and the end of the rollout shows without a reload; where
the browser cannot open a websocket the page polls instead."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.utils import timezone

from pipelines.services.rollouts import rollout_rollback, rollout_start
from pipelines.services.rollups import step_rollups_add
from tests.browser.test_dashboard_live import asgi_server  # noqa: F401 -- a fixture
from tests.conftest import login
from tests.test_rollouts import candidate

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CANDIDATE_POINTS = """() => {
  const chart = document.querySelector("[data-testid=rollout-chart-error_rate]");
  const trace = (chart.data || []).find((t) => t.name === "candidate");
  return trace ? trace.y.filter((y) => y !== null).length : 0;
}"""


def _open(page, server, operator, rollout):
    session = login(operator).cookies[settings.SESSION_COOKIE_NAME].value
    page.context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": server}]
    )
    page.goto(f"{server}/rollouts/{rollout.pk}/")
    page.locator("[data-testid=rollout-chart-error_rate] .main-svg").first.wait_for()
    page.evaluate(
        "() => { window.sluiceNotReloaded = true; window.__chartElement = "
        "document.querySelector('[data-testid=rollout-chart-error_rate]'); }"
    )


def _work(rollout) -> None:
    step = rollout.step
    step_rollups_add(
        {(step.pipeline_id, step.pk, 2): {"started": 20, "failed": 5, "accepted": 15}},
        at=timezone.now(),
    )


def _error_rate_cell(page):
    return page.locator("[data-testid=rollout-guards] tr[data-guard=error_rate] td").nth(1)


@pytest.mark.parametrize("websocket", [True, False], ids=["socket", "polling"])
def test_the_rollout_page_updates_in_place_over_the_socket_or_by_polling(
    page,
    asgi_server,  # noqa: F811 -- the fixture imported above
    operator,
    acme_step,
    websocket,
):
    v2 = candidate(acme_step, operator)
    rollout = rollout_start(step=acme_step, candidate=v2, stages="50, 100", actor=operator)
    if not websocket:
        page.add_init_script("delete window.WebSocket;")
    _open(page, asgi_server, operator, rollout)
    mode = "socket" if websocket else "polling"
    page.wait_for_function(
        f"() => document.getElementById('rollout-charts').dataset.live === '{mode}'"
    )
    assert page.locator("#live[data-rollout-live]").count() == 1
    assert _error_rate_cell(page).inner_text() == "—"

    _work(rollout)
    _error_rate_cell(page).get_by_text("25.0%").wait_for()
    page.wait_for_function(f"() => ({CANDIDATE_POINTS})() > 0")
    # Redrawn in place, never reloaded.
    assert page.evaluate("() => window.sluiceNotReloaded") is True
    assert page.evaluate(
        "() => window.__chartElement === "
        "document.querySelector('[data-testid=rollout-chart-error_rate]')"
    )

    # The buttons of a region that arrived live still post (with the page's CSRF field).
    page.get_by_role("button", name="Pause").click()
    page.get_by_test_id("rollout-status").get_by_text("paused").wait_for()
    page.wait_for_function(
        f"() => document.getElementById('rollout-charts').dataset.live === '{mode}'"
    )
    rollout_rollback(rollout=rollout, actor=operator)
    page.get_by_test_id("rollout-status").get_by_text("rolled back").wait_for()
    page.wait_for_function(
        "() => document.getElementById('rollout-charts').dataset.live === 'ended'"
    )
    assert "rolled back by olivia" in page.get_by_test_id("rollout-reason").inner_text()
    assert page.get_by_role("button", name="Roll back").count() == 0
    assert page.problems == []
