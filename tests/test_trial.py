"""'Try it': one sample through the step's model, judged by the gate, nothing written."""

from __future__ import annotations

import json

from django.urls import reverse

from pipelines.models import Item, LedgerEvent
from pipelines.services import configuration as config
from tests.conftest import login
from tests.test_threshold_tool import add_examples


def try_it(http, step, template, sample, parameters="{}"):
    return http.post(
        reverse("prompt-try", args=[step.pk]),
        {"template": template, "sample": json.dumps(sample), "parameters": parameters},
        headers={"HX-Request": "true"},
    )


def route_to(step, provider, operator):
    config.route_set(step=step, entries=[{"model": provider.models.first()}], actor=operator)


def test_the_local_model_answers_with_a_label_confidence_and_verdict(operator, acme_step, provider):
    add_examples(acme_step)
    route_to(acme_step, provider, operator)
    items_before, events_before = Item.objects.count(), LedgerEvent.objects.count()
    response = try_it(
        login(operator),
        acme_step,
        "Ticket: {{ text }}",
        {"text": "I was charged twice on my invoice, refund please"},
    )
    assert response.status_code == 200
    trial = response.context["trial"]
    assert trial.error == ""
    assert trial.output == {"label": "billing"}
    assert 0 < trial.confidence <= 1
    assert trial.verdict.accepted == (trial.confidence >= 0.8)
    assert "Ticket: I was charged twice" in trial.rendered_prompt
    # Nothing is created by trying.
    assert (Item.objects.count(), LedgerEvent.objects.count()) == (items_before, events_before)


def test_a_simulated_model_is_labeled_simulated_and_has_a_cost(operator, acme_step):
    sim = config.provider_create(
        name="Sim",
        kind="simulated",
        actor=operator,
        simulation={"latency_ms": {"p50": 1, "p95": 2}},
    )
    model = config.aimodel_create(
        provider=sim,
        name="sim-1",
        actor=operator,
        input_price_per_mtok="1.00",
        output_price_per_mtok="2.00",
    )
    config.route_set(step=acme_step, entries=[{"model": model}], actor=operator)
    response = try_it(login(operator), acme_step, "{{ text }}", {"text": "hello"})
    trial = response.context["trial"]
    assert trial.simulated
    assert trial.output["label"] in {"billing", "bug", "account"}
    assert trial.cost is not None and trial.cost > 0
    assert "simulated" in response.content.decode()


def test_a_template_error_is_shown_without_calling_a_model(operator, acme_step, provider):
    route_to(acme_step, provider, operator)
    response = try_it(login(operator), acme_step, "{{ text }} {{ missing }}", {"text": "x"})
    trial = response.context["trial"]
    assert trial.error_class == "input"
    assert '"missing" is undefined' in trial.error


def test_a_local_model_without_examples_says_what_to_do(operator, acme_step, provider):
    route_to(acme_step, provider, operator)
    trial = try_it(login(operator), acme_step, "{{ text }}", {"text": "x"}).context["trial"]
    assert trial.error_class == "system"
    assert "add at least 10" in trial.error


def test_a_sample_that_is_not_json_is_a_clear_422(operator, acme_step):
    response = login(operator).post(
        reverse("prompt-try", args=[acme_step.pk]),
        {"template": "{{ text }}", "sample": "{not json", "parameters": "{}"},
    )
    assert response.status_code == 422
    assert "must be JSON" in response.content.decode()


def test_a_sample_failing_the_input_schema_is_refused_with_the_path(operator, acme_step):
    config.pipeline_update(
        pipeline=acme_step.pipeline,
        actor=operator,
        input_schema={
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
        },
    )
    trial = try_it(login(operator), acme_step, "{{ text }}", {"text": 5}).context["trial"]
    assert trial.error_class == "input"
    assert "$.text" in trial.error
