"""Offline evaluation of prompt versions: a background job with progress over labeled examples
or reviewed items, kept, reopened and compared item by item."""

from __future__ import annotations

import pytest
from django.urls import reverse

from pipelines.models import Evaluation, Example, Item
from pipelines.services import configuration as config
from pipelines.services.evaluation_runs import (
    evaluation_create,
    evaluation_summary,
    evaluations_compare,
)
from pipelines.services.resume import item_resume
from pipelines.tasks import evaluation_run_task
from tests.conftest import login
from tests.test_engine import simulated_route, submit
from tests.test_rollouts import _run_all


@pytest.fixture
def sim_step(acme_step, operator):
    simulated_route(acme_step, operator)
    Example.objects.bulk_create(
        Example(step=acme_step, data={"text": f"ticket {i}"}, expected={"label": label})
        for i, label in enumerate(["billing", "bug", "account"] * 10)
    )
    return acme_step


def v2(step, operator):
    return config.prompt_version_create(
        step=step, template="Which team handles: {{ text }}", actor=operator
    )


def test_an_evaluation_runs_in_the_background_and_is_kept(sim_step, operator):
    http = login(operator)
    version = sim_step.prompt_versions.get(number=1)
    response = http.post(
        reverse("step-evaluations", args=[sim_step.pk]),
        {"version": version.pk, "source": "examples", "sample_size": "20"},
    )
    evaluation = Evaluation.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("evaluation-detail", args=[evaluation.pk])
    assert evaluation.status == "pending" and evaluation.total == 20
    page = http.get(reverse("evaluation-detail", args=[evaluation.pk])).content.decode()
    assert 'hx-trigger="every 1s"' in page  # polls its progress while it waits
    assert evaluation_run_task(evaluation.pk) == "done: 20 of 20"
    assert evaluation_run_task(evaluation.pk) == "already taken"
    evaluation.refresh_from_db()
    assert len(evaluation.results) == 20 and evaluation.percent == 100
    right = sum(1 for r in evaluation.results if r["output"] == r["expected"])
    assert evaluation.correct == right
    summary = evaluation_summary(evaluation)
    assert summary["accuracy"] == right / 20
    assert summary["pass_rate"] == evaluation.passed / 20
    assert evaluation.cost > 0 and summary["p95"] is not None
    page = http.get(reverse("evaluation-detail", args=[evaluation.pk])).content.decode()
    assert "every 1s" not in page and f"{round(100 * right / 20)}% ({right})" in page
    listing = http.get(reverse("step-evaluations", args=[sim_step.pk])).content.decode()
    assert reverse("evaluation-detail", args=[evaluation.pk]) in listing


def test_two_versions_are_compared_item_by_item(sim_step, operator):
    first = evaluation_create(
        step=sim_step,
        version=sim_step.prompt_versions.get(number=1),
        sample_size=30,
        actor=operator,
    )
    second = evaluation_create(
        step=sim_step, version=v2(sim_step, operator), sample_size=30, actor=operator
    )
    evaluation_run_task(first.pk)
    evaluation_run_task(second.pk)
    first.refresh_from_db()
    second.refresh_from_db()
    differences = evaluations_compare(left=first, right=second)
    changed = [
        a["key"]
        for a, b in zip(first.results, second.results, strict=True)
        if (a["output"], a["correct"], a["passed"]) != (b["output"], b["correct"], b["passed"])
    ]
    assert changed and [d.key for d in differences] == changed
    assert {d.change for d in differences} <= {
        "fixed",
        "broken",
        "different answer",
        "now passes the gate",
        "now held by the gate",
    }
    page = (
        login(operator)
        .get(reverse("evaluation-detail", args=[first.pk]), {"compare": second.pk})
        .content.decode()
    )
    assert f"{len(changed)} item{'s' if len(changed) != 1 else ''} differ" in page
    assert 'data-testid="differences"' in page


def test_reviewed_items_are_an_evaluation_set_with_the_reviewed_answer(sim_step, operator):
    config.step_update(step=sim_step, actor=operator, confidence_threshold="0.999")
    items = submit(sim_step.pipeline, "charged twice", "app crashes", "password reset")
    _run_all()
    for item, label in zip(items, ["billing", "bug", "account"], strict=True):
        item_resume(
            item_id=item.pk,
            output={"label": label},
            actor_label="user:rita",
            detail={"decision": "edit"},
        )
    evaluation = evaluation_create(
        step=sim_step,
        version=sim_step.prompt_versions.get(number=1),
        source="reviewed",
        sample_size=10,
        actor=operator,
    )
    evaluation_run_task(evaluation.pk)
    evaluation.refresh_from_db()
    assert {r["key"] for r in evaluation.results} == {f"item:{i.pk}" for i in items}
    assert {r["expected"]["label"] for r in evaluation.results} == {"billing", "bug", "account"}
    assert Item.objects.filter(status="accepted").count() == 3


def test_another_model_can_be_evaluated_in_place_of_the_route(sim_step, operator):
    failing = config.provider_create(
        name="Failing",
        kind="simulated",
        actor=operator,
        simulation={"latency_ms": {"p50": 0, "p95": 0}, "failure_rates": {"transient": 1}},
    )
    other = config.aimodel_create(provider=failing, name="broken", actor=operator)
    evaluation = evaluation_create(
        step=sim_step,
        version=sim_step.prompt_versions.get(number=1),
        sample_size=5,
        model=other,
        actor=operator,
    )
    evaluation_run_task(evaluation.pk)
    evaluation.refresh_from_db()
    assert evaluation.errors == 5 and evaluation.correct == 0


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"sample_size": "0"}, "sample_size", "greater than or equal to 1"),
        ({"sample_size": "many"}, "sample_size", "Enter a whole number"),
        ({"source": "rumours"}, "source", "Select a valid choice"),
        ({"source": "reviewed"}, "source", "no reviewed items"),
    ],
)
def test_bad_input_is_a_422_on_its_field(sim_step, operator, data, field, message):
    version = sim_step.prompt_versions.get(number=1)
    response = login(operator).post(
        reverse("step-evaluations", args=[sim_step.pk]),
        {"version": version.pk, "source": "examples", "sample_size": "5", **data},
    )
    assert response.status_code == 422
    body = response.content.decode()
    assert f'id="id_{field}-error"' in body and message in body
    assert not Evaluation.objects.exists()


def test_a_bad_comparison_is_a_400(sim_step, operator):
    evaluation = evaluation_create(
        step=sim_step, version=sim_step.prompt_versions.get(), sample_size=2, actor=operator
    )
    http = login(operator)
    url = reverse("evaluation-detail", args=[evaluation.pk])
    assert http.get(url, {"compare": "abc"}).status_code == 400
    assert http.get(url, {"compare": "9" * 30}).status_code == 400
    assert http.get(url, {"compare": "²"}).status_code == 400
    assert http.get(url, {"compare": "99999"}).status_code == 404


@pytest.mark.parametrize("persona", ["reviewer", "client_a", "no_role"])
def test_only_operators_may_run_evaluations(sim_step, operator, persona, request):
    version = sim_step.prompt_versions.get(number=1)
    response = login(request.getfixturevalue(persona)).post(
        reverse("step-evaluations", args=[sim_step.pk]),
        {"version": version.pk, "source": "examples", "sample_size": "5"},
    )
    assert response.status_code == 403
    assert not Evaluation.objects.exists()


def test_an_evaluation_out_of_time_stops_and_says_where(sim_step, operator, settings):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "timeout": 0}
    evaluation = evaluation_create(
        step=sim_step, version=sim_step.prompt_versions.get(), sample_size=30, actor=operator
    )
    assert evaluation_run_task(evaluation.pk) == "failed: 0 of 30"
    evaluation.refresh_from_db()
    assert "out of time after 0 of 30 items" in evaluation.error
    assert evaluation.finished_at is not None
