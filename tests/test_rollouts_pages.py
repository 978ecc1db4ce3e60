"""The rollout pages through HTTP: start, watch, pause, promote and roll back; who may."""

from __future__ import annotations

import pytest
from django.urls import reverse

from controlplane.models import AuditEntry
from pipelines.models import PromptLabel, Rollout
from tests.conftest import login
from tests.test_engine import submit
from tests.test_rollouts import _run_all, candidate, texts


@pytest.fixture
def sim_step(acme_step, operator):
    from pipelines.services import configuration as config
    from tests.test_engine import simulated_route

    simulated_route(acme_step, operator)
    config.step_update(step=acme_step, actor=operator, confidence_threshold="0.3")
    return acme_step


def start(http, step, version, **fields):
    data = {
        "candidate": version.pk,
        "stages": "10, 50, 100",
        "min_items": "20",
        "rate_margin": "0.05",
        "relative_margin": "0.2",
        **fields,
    }
    return http.post(reverse("step-rollouts", args=[step.pk]), data)


def test_an_operator_starts_a_rollout_and_sees_the_live_comparison(sim_step, operator):
    v2 = candidate(sim_step, operator)
    http = login(operator)
    response = start(http, sim_step, v2)
    rollout = Rollout.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("rollout-detail", args=[rollout.pk])
    assert rollout.stages == [10, 50, 100] and rollout.min_items == 20
    assert PromptLabel.objects.get(step=sim_step, name="candidate").version == v2
    submit(sim_step.pipeline, *texts(50))
    _run_all()
    page = http.get(reverse("rollout-detail", args=[rollout.pk])).content.decode()
    assert "the candidate takes <strong" in page and "10%" in page
    assert 'data-testid="rollout-chart-error_rate"' in page
    assert 'id="rollout-figure-p95_latency"' in page
    # The live region alone, for the page's poll.
    live = http.get(reverse("rollout-detail", args=[rollout.pk]), headers={"HX-Request": "true"})
    assert live.status_code == 200
    body = live.content.decode()
    assert body.lstrip().startswith('<section id="live"') and "<html" not in body
    assert 'hx-trigger="every 2s"' in body


def test_the_versions_list_offers_every_version_but_production(sim_step, operator):
    candidate(sim_step, operator)
    page = login(operator).get(reverse("step-rollouts", args=[sim_step.pk])).content.decode()
    assert ">v2</option>" in page and ">v1</option>" not in page


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"stages": "50, 10"}, "stages", "rising"),
        ({"stages": "10, 50"}, "stages", "must be 100"),
        ({"min_items": "-3"}, "min_items", "greater than or equal to 1"),
        ({"rate_margin": "lots"}, "rate_margin", "Enter a number"),
        ({"candidate": "99999"}, "candidate", "Select a valid choice"),
    ],
)
def test_bad_settings_answer_422_naming_the_field(sim_step, operator, fields, field, message):
    v2 = candidate(sim_step, operator)
    response = start(login(operator), sim_step, v2, **fields)
    assert response.status_code == 422
    assert f'id="id_{field}-error"' in response.content.decode()
    assert message in response.content.decode()
    assert not Rollout.objects.exists()


def test_the_operator_pauses_promotes_and_the_audit_says_who(sim_step, operator):
    v2 = candidate(sim_step, operator)
    http = login(operator)
    start(http, sim_step, v2)
    rollout = Rollout.objects.get()
    assert http.post(reverse("rollout-action", args=[rollout.pk, "pause"])).status_code == 302
    rollout.refresh_from_db()
    assert rollout.status == "paused"
    page = http.get(reverse("rollout-detail", args=[rollout.pk])).content.decode()
    assert "Resume" in page
    http.post(reverse("rollout-action", args=[rollout.pk, "promote"]))
    rollout.refresh_from_db()
    assert rollout.status == "promoted"
    assert PromptLabel.objects.get(step=sim_step, name="production").version == v2
    assert AuditEntry.objects.filter(action="rollout.promote", actor_label="olivia").exists()
    # Finished: no more buttons, no more polling, and a second promote is refused politely.
    page = http.get(reverse("rollout-detail", args=[rollout.pk])).content.decode()
    assert "Roll back</button>" not in page and "every 2s" not in page
    response = http.post(reverse("rollout-action", args=[rollout.pk, "rollback"]), follow=True)
    assert "cannot do that now" in response.content.decode()


def test_an_unknown_action_is_a_400_not_a_500(sim_step, operator):
    v2 = candidate(sim_step, operator)
    http = login(operator)
    start(http, sim_step, v2)
    rollout = Rollout.objects.get()
    response = http.post(reverse("rollout-action", args=[rollout.pk, "explode"]))
    assert response.status_code == 400
    assert http.post(reverse("rollout-action", args=[999, "pause"])).status_code == 404


@pytest.mark.parametrize("persona", ["reviewer", "client_a", "client_b", "no_role"])
def test_only_operators_may_start_or_steer_a_rollout(sim_step, operator, persona, request):
    v2 = candidate(sim_step, operator)
    user = request.getfixturevalue(persona)
    assert start(login(user), sim_step, v2).status_code == 403
    assert not Rollout.objects.exists()
    start(login(operator), sim_step, v2)
    rollout = Rollout.objects.get()
    response = login(user).post(reverse("rollout-action", args=[rollout.pk, "rollback"]))
    assert response.status_code == 403
    rollout.refresh_from_db()
    assert rollout.status == "running"


def test_anonymous_is_sent_to_login(sim_step, operator, client):
    v2 = candidate(sim_step, operator)
    response = start(client, sim_step, v2)
    assert response.status_code == 302 and "login" in response["Location"]
