"""An operator writes a candidate prompt version with a raised error rate, starts a gradual
rollout of it, watches the live comparison roll it back, and reads why."""

from __future__ import annotations

import pytest

from pipelines.models import Provider
from pipelines.services import configuration as config
from pipelines.services.engine import engine_run_batch
from pipelines.services.rollouts import rollouts_evaluate
from tests.browser.test_personas import sign_in
from tests.test_engine import simulated_route, submit

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

RAISED = '{"simulation": {"failure_rates": {"transient": 0.7}}}'


def test_an_operator_watches_a_rollout_roll_back_and_reads_why(
    page, live_server, operator, acme_step
):
    model = simulated_route(acme_step, operator)
    # The candidate's failures must not open the shared provider's breaker before the guard
    # has its sample (production would wait too).
    Provider.objects.filter(pk=model.provider_id).update(breaker_failure_threshold=100_000)
    config.step_update(step=acme_step, actor=operator, confidence_threshold="0.3")
    base = live_server.url
    sign_in(page, base, "olivia")

    # A candidate version whose calls fail far more often (the simulated provider honours a
    # version's own failure rates).
    page.goto(f"{base}/steps/{acme_step.pk}/")
    page.get_by_role("link", name="Prompt versions").click()
    page.get_by_label("Template").fill("Which topic is this support ticket about? {{ text }}")
    page.get_by_label("Parameters").fill(RAISED)
    page.get_by_label("Change note").fill("riskier wording")
    page.get_by_role("button", name="Save version").click()
    page.get_by_text("Version 2 saved").wait_for()

    # The rollout: half the items to v2, then all, judged after 15 items a side.
    page.goto(f"{base}/steps/{acme_step.pk}/")
    page.get_by_role("link", name="Rollouts").click()
    page.locator("#id_candidate").select_option(label="v2 — riskier wording")
    page.locator("#id_stages").fill("50, 100")
    page.locator("#id_min_items").fill("15")
    page.get_by_role("button", name="Start rollout").click()
    status = page.locator("[data-testid=rollout-status]")
    status.get_by_text("running").wait_for()
    assert page.locator("[data-testid=rollout-share]").inner_text() == "50%"
    page.locator("[data-testid=rollout-chart-error_rate] .main-svg").first.wait_for()
    page.evaluate(
        "() => { window.__chartElement = "
        "document.querySelector('[data-testid=rollout-chart-error_rate]'); }"
    )

    # Items arrive and a worker runs them; the guard schedule judges the rollout.
    submit(acme_step.pipeline, *(f"ticket {n} about my invoice" for n in range(80)))
    while engine_run_batch(worker="worker:browser-test"):
        pass
    assert rollouts_evaluate()["rolled_back"] == 1

    # The open page updates by itself: the candidate's errors on the chart, then rolled back
    # and why, with the numbers.
    status.get_by_text("rolled back").wait_for(timeout=15_000)
    page.wait_for_function(
        """() => {
          const chart = document.querySelector("[data-testid=rollout-chart-error_rate]");
          const points = (name) => (chart.data || []).filter((t) => t.name === name)
            .map((t) => t.y.filter((y) => y !== null).length)[0] || 0;
          return points("candidate") > 0 && points("production") > 0;
        }"""
    )
    # Redrawn in place: the chart element the page was opened with is the one that moved.
    assert page.evaluate(
        "() => window.__chartElement === "
        "document.querySelector('[data-testid=rollout-chart-error_rate]')"
    )
    reason = page.locator("[data-testid=rollout-reason]")
    text = reason.inner_text()
    assert "Why it was rolled back" in text
    assert "error rate: candidate" in text and "vs production 0.0%" in text
    assert "Guard tripped: error rate." in text
    row = page.locator("[data-testid=rollout-guards] tr[data-guard=error_rate]")
    assert "worse" in row.inner_text()
    assert page.get_by_role("button", name="Roll back").count() == 0

    # And the audit log says the guard did it.
    reason.get_by_role("link", name="audit log").click()
    entry = page.locator("[data-testid=audit-table] tr", has_text="rollout.rollback")
    assert "rollout guard" in entry.inner_text()
    assert page.problems == []
