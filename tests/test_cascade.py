"""Cascade routing: a step tries the cheap model first and escalates to the stronger one when the
cheap answer is under the confidence threshold; what answering cheaply saved is recorded."""

from __future__ import annotations

from decimal import Decimal

import pytest

from pipelines.models import Item, Rollup, StepRollup
from pipelines.providers import cost_of
from pipelines.services import configuration as config
from tests.test_engine import submit
from tests.test_rollouts import _run_all


def model(operator, name, *, price, confidence, **simulation):
    provider = config.provider_create(
        name=name,
        kind="simulated",
        actor=operator,
        simulation={
            "latency_ms": {"p50": 1, "p95": 2},
            "seed": 5,
            "tokens": {"input": 1000, "output": 100},
            "confidence": confidence,
            **simulation,
        },
    )
    return config.aimodel_create(
        provider=provider,
        name=name.lower(),
        actor=operator,
        input_price_per_mtok=str(price),
        output_price_per_mtok=str(price * 4),
    )


UNSURE = {"alpha": 1, "beta": 60}  # confidence near 0
SURE = {"alpha": 60, "beta": 1}  # confidence near 1


def price(m) -> Decimal:
    return cost_of(
        input_tokens=1000,
        output_tokens=100,
        input_price_per_mtok=m.input_price_per_mtok,
        output_price_per_mtok=m.output_price_per_mtok,
    )


@pytest.fixture
def cascade_step(acme_step, operator):
    config.step_update(step=acme_step, actor=operator, cascade=True, confidence_threshold="0.8")
    return acme_step


def cheap_then_strong(step, operator, *, cheap_confidence, **strong_simulation):
    """A route of a cheap model, then a strong one (sure of itself) ten times the price."""
    cheap = model(operator, "Cheap", price=1, confidence=cheap_confidence)
    strong = model(operator, "Strong", price=10, confidence=SURE, **strong_simulation)
    config.route_set(step=step, entries=[{"model": cheap}, {"model": strong}], actor=operator)
    return cheap, strong


def test_an_unsure_cheap_answer_escalates_to_the_strong_model(cascade_step, operator):
    cheap, strong = cheap_then_strong(cascade_step, operator, cheap_confidence=UNSURE)
    [item] = submit(cascade_step.pipeline, "I was charged twice")
    _run_all()
    item.refresh_from_db()
    assert item.status == Item.Status.ACCEPTED
    assert item.outputs["topic"]["model"] == str(strong)
    assert item.cost == price(cheap) + price(strong)  # both calls were paid for
    assert item.input_tokens == 2000
    event = item.ledger.get(from_status="running")
    assert event.detail["escalated_from"] == [str(cheap)]
    assert "cascade_saved" not in event.detail
    rollup = Rollup.objects.get()
    assert rollup.escalations == 1 and rollup.cascade_saved == 0
    assert StepRollup.objects.get().escalations == 1


def test_a_sure_cheap_answer_stands_and_the_saving_is_recorded(cascade_step, operator):
    cheap, strong = cheap_then_strong(cascade_step, operator, cheap_confidence=SURE)
    items = submit(cascade_step.pipeline, "charged twice", "refund please")
    _run_all()
    saved = price(strong) - price(cheap)
    for item in items:
        item.refresh_from_db()
        assert item.outputs["topic"]["model"] == str(cheap)
        assert item.cost == price(cheap)
        assert Decimal(item.ledger.get(from_status="running").detail["cascade_saved"]) == saved
    rollup = Rollup.objects.get()
    assert rollup.cascade_saved == 2 * saved and rollup.escalations == 0
    assert StepRollup.objects.get().cascade_saved == 2 * saved


def test_without_cascade_an_unsure_answer_goes_to_review(cascade_step, operator):
    config.step_update(step=cascade_step, actor=operator, cascade=False)
    cheap, _ = cheap_then_strong(cascade_step, operator, cheap_confidence=UNSURE)
    [item] = submit(cascade_step.pipeline, "I was charged twice")
    _run_all()
    item.refresh_from_db()
    assert item.status == Item.Status.IN_REVIEW
    assert item.outputs["topic"]["model"] == str(cheap)
    assert Rollup.objects.get().escalations == 0


def test_when_the_strong_model_fails_the_cheap_answer_goes_to_review(cascade_step, operator):
    cheap, _ = cheap_then_strong(
        cascade_step, operator, cheap_confidence=UNSURE, failure_rates={"transient": 1}
    )
    [item] = submit(cascade_step.pipeline, "I was charged twice")
    _run_all()
    item.refresh_from_db()
    assert item.status == Item.Status.IN_REVIEW
    assert item.outputs["topic"]["model"] == str(cheap)
    assert item.cost == price(cheap)
    assert "escalated_from" not in item.ledger.get(from_status="running").detail


def test_the_step_form_turns_cascade_on(acme_step, operator):
    from django.urls import reverse

    from tests.conftest import login

    page = login(operator).get(reverse("step-detail", args=[acme_step.pk])).content.decode()
    assert 'name="cascade"' in page


def test_the_pipeline_page_shows_what_the_cascade_saved_today(cascade_step, operator):
    from django.urls import reverse

    from tests.conftest import login

    cheap, strong = cheap_then_strong(cascade_step, operator, cheap_confidence=SURE)
    submit(cascade_step.pipeline, "charged twice")
    _run_all()
    page = login(operator).get(reverse("pipeline-detail", args=["acme", "triage"]))
    saved = price(strong) - price(cheap)
    assert f"cascade routing saved {saved:.4f} (0 escalations)" in page.content.decode()
