"""The engine: every transition of an item, with its ledger, through real providers."""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest
from django.utils import timezone

from controlplane.models import AuditEntry
from pipelines.models import Item, LedgerEvent, Pipeline
from pipelines.retry import retry_delay
from pipelines.services import configuration as config
from pipelines.services.engine import (
    MAX_ATTEMPTS,
    engine_drain,
    engine_run_batch,
    items_claim,
    items_sweep,
)
from pipelines.services.ingest import items_submit
from pipelines.signals import items_held
from tests.test_threshold_tool import add_examples

WORKER = "worker:test"


def simulated_route(step, operator, **simulation):
    provider = config.provider_create(
        name=f"Sim {step.pk} {len(simulation)}",
        kind="simulated",
        actor=operator,
        simulation={"latency_ms": {"p50": 1, "p95": 2}, "seed": 3, **simulation},
    )
    model = config.aimodel_create(
        provider=provider,
        name="sim",
        actor=operator,
        input_price_per_mtok="1.00",
        output_price_per_mtok="4.00",
    )
    config.route_set(step=step, entries=[{"model": model}], actor=operator)
    return model


def submit(pipeline, *texts):
    outcomes = items_submit(
        pipeline=pipeline, entries=[{"data": {"text": t}} for t in texts], actor="test"
    )
    return [Item.objects.get(pk=o.id) for o in outcomes]


def ledger(item) -> list[tuple[str, str]]:
    return list(item.ledger.order_by("id").values_list("from_status", "to_status"))


def test_a_confident_item_is_accepted_with_cost_tokens_and_ledger(operator, acme_step, provider):
    add_examples(acme_step)
    config.route_set(step=acme_step, entries=[{"model": provider.models.get()}], actor=operator)
    config.step_update(step=acme_step, actor=operator, confidence_threshold="0.3")
    [item] = submit(acme_step.pipeline, "I was charged twice, refund the invoice payment")
    counts = engine_run_batch(worker=WORKER)
    item.refresh_from_db()
    assert counts == {"accepted": 1}
    assert item.status == Item.Status.ACCEPTED
    assert item.result == {"label": "billing"}
    assert item.outputs["topic"]["prompt_version"] == 1
    assert item.finished_at is not None and item.lease_owner == ""
    assert ledger(item) == [("", "queued"), ("queued", "running"), ("running", "accepted")]
    last = item.ledger.order_by("id").last().detail
    assert last["model"] == "Local/tfidf-logreg" and last["verdict"] == "accepted"


def test_a_low_confidence_item_is_held_for_review_with_the_reason(operator, acme_step):
    simulated_route(acme_step, operator, confidence={"alpha": 1, "beta": 50})
    received = []

    def on_held(sender, held, **kwargs):
        received.extend((h.item.pk, h.step.slug, h.reason) for h in held)

    items_held.connect(on_held)
    try:
        [item] = submit(acme_step.pipeline, "hello")
        engine_run_batch(worker=WORKER)
    finally:
        items_held.disconnect(on_held)
    item.refresh_from_db()
    assert item.status == Item.Status.IN_REVIEW
    assert item.hold_reason.startswith("low confidence 0.")
    assert item.hold_reason.endswith("< 0.80")
    assert received == [(item.pk, "topic", item.hold_reason)]
    assert item.cost > Decimal("0")


def test_a_step_that_rejects_on_a_failed_gate_rejects(operator, acme_step):
    simulated_route(acme_step, operator, confidence={"alpha": 1, "beta": 50})
    config.step_update(step=acme_step, actor=operator, on_gate_failure="reject")
    [item] = submit(acme_step.pipeline, "hello")
    engine_run_batch(worker=WORKER)
    item.refresh_from_db()
    assert item.status == Item.Status.REJECTED and item.finished_at is not None


def test_transient_failures_retry_with_backoff_then_dead_letter(operator, acme_step):
    simulated_route(acme_step, operator, failure_rates={"transient": 1.0})
    [item] = submit(acme_step.pipeline, "hello")
    for attempt in range(1, MAX_ATTEMPTS + 1):
        engine_run_batch(worker=WORKER)
        item.refresh_from_db()
        if attempt < MAX_ATTEMPTS:
            assert item.status == Item.Status.WAITING_RETRY
            assert item.attempts == attempt
            assert item.next_attempt_at > timezone.now() - timezone.timedelta(seconds=1)
            assert item.error_class == "transient"
            # Not runnable before its time; then due.
            Item.objects.filter(pk=item.pk).update(next_attempt_at=timezone.now())
    assert item.status == Item.Status.DEAD_LETTERED
    assert item.attempts == MAX_ATTEMPTS
    statuses = [to for _, to in ledger(item)]
    assert statuses.count("waiting_retry") == MAX_ATTEMPTS - 1
    assert statuses[-1] == "dead_lettered"


def test_an_item_waiting_for_retry_is_not_claimed_early(operator, acme_step):
    simulated_route(acme_step, operator, failure_rates={"transient": 1.0})
    submit(acme_step.pipeline, "hello")
    engine_run_batch(worker=WORKER)
    Item.objects.update(next_attempt_at=timezone.now() + timezone.timedelta(minutes=5))
    assert engine_run_batch(worker=WORKER) == {}


def test_a_template_that_cannot_render_quarantines_the_item(operator, acme_step):
    simulated_route(acme_step, operator)
    v2 = config.prompt_version_create(
        step=acme_step, template="{{ text }} {{ extra }}", actor=operator
    )
    config.prompt_label_move(step=acme_step, label="production", version=v2, actor=operator)
    [item] = submit(acme_step.pipeline, "hello")
    engine_run_batch(worker=WORKER)
    item.refresh_from_db()
    assert item.status == Item.Status.QUARANTINED
    assert item.error_class == "input" and '"extra" is undefined' in item.error_message


def test_a_system_error_pauses_the_pipeline_and_keeps_the_item(operator, acme_step):
    # No route: a configuration problem, not the item's fault.
    [item] = submit(acme_step.pipeline, "hello")
    engine_run_batch(worker=WORKER)
    item.refresh_from_db()
    acme_step.pipeline.refresh_from_db()
    assert item.status == Item.Status.QUEUED and item.attempts == 0
    assert acme_step.pipeline.status == Pipeline.Status.PAUSED
    entry = AuditEntry.objects.get(action="pipeline.pause", actor_label="engine")
    assert "no model" in entry.after["reason"]
    # Paused pipelines are not claimed; the item waits.
    assert engine_run_batch(worker=WORKER) == {}


def test_a_provider_limit_falls_back_to_the_next_model(operator, acme_step):
    exhausted = config.provider_create(
        name="Exhausted",
        kind="simulated",
        actor=operator,
        simulation={"latency_ms": {"p50": 1, "p95": 2}, "failure_rates": {"provider_limit": 1.0}},
    )
    first = config.aimodel_create(provider=exhausted, name="big", actor=operator)
    backup = simulated_route(acme_step, operator)
    config.route_set(step=acme_step, entries=[{"model": first}, {"model": backup}], actor=operator)
    config.step_update(step=acme_step, actor=operator, confidence_threshold="0")
    [item] = submit(acme_step.pipeline, "hello")
    engine_run_batch(worker=WORKER)
    item.refresh_from_db()
    assert item.status == Item.Status.ACCEPTED
    detail = item.ledger.order_by("id").last().detail
    assert detail["fallbacks_tried"] == ["Exhausted/big"]
    assert detail["model"] == str(backup)


def test_items_of_a_multi_step_pipeline_move_step_by_step(operator, acme_step):
    simulated_route(acme_step, operator)
    config.step_update(step=acme_step, actor=operator, confidence_threshold="0")
    second = config.step_create(
        pipeline=acme_step.pipeline,
        name="Urgency",
        slug="urgency",
        kind="classify",
        labels=["low", "high"],
        template="{{ text }}",
        actor=operator,
        confidence_threshold="0",
    )
    simulated_route(second, operator)
    [item] = submit(acme_step.pipeline, "hello")
    engine_drain(worker=WORKER, seconds=10)
    item.refresh_from_db()
    assert item.status == Item.Status.ACCEPTED
    assert set(item.outputs) == {"topic", "urgency"}
    assert item.result["label"] in {"low", "high"}
    assert [to for _, to in ledger(item)] == [
        "queued",
        "running",
        "queued",
        "running",
        "accepted",
    ]


def test_claims_take_priority_first_and_never_the_same_item_twice(operator, acme_step):
    simulated_route(acme_step, operator)
    low = items_submit(
        pipeline=acme_step.pipeline, entries=[{"data": {"text": "low"}, "priority": 1}], actor="t"
    )
    high = items_submit(
        pipeline=acme_step.pipeline, entries=[{"data": {"text": "high"}, "priority": 9}], actor="t"
    )
    first = items_claim(worker="a", limit=1)
    second = items_claim(worker="b", limit=5)
    assert [i.pk for i in first] == [high[0].id]
    assert [i.pk for i in second] == [low[0].id]
    assert items_claim(worker="c", limit=5) == []


def test_the_sweeper_returns_items_whose_worker_died(operator, acme_step):
    simulated_route(acme_step, operator)
    [item] = submit(acme_step.pipeline, "hello")
    items_claim(worker="doomed", limit=10)
    assert items_sweep() == 0  # lease still valid
    Item.objects.update(lease_expires_at=timezone.now() - timezone.timedelta(seconds=1))
    assert items_sweep() == 1
    item.refresh_from_db()
    assert item.status == Item.Status.QUEUED
    assert item.ledger.order_by("id").last().actor == "sweeper"
    engine_run_batch(worker=WORKER)
    item.refresh_from_db()
    assert item.status in (Item.Status.ACCEPTED, Item.Status.IN_REVIEW)


def test_every_state_change_has_a_ledger_event(operator, acme_step):
    simulated_route(acme_step, operator, failure_rates={"transient": 0.3})
    submit(acme_step.pipeline, *[f"text {n}" for n in range(40)])
    for _ in range(3):
        engine_run_batch(worker=WORKER)
        Item.objects.filter(status="waiting_retry").update(next_attempt_at=timezone.now())
    for item in Item.objects.all():
        events = list(item.ledger.order_by("id"))
        assert events[-1].to_status == item.status
        for before, after in itertools.pairwise(events):
            assert after.from_status == before.to_status
    assert LedgerEvent.objects.count() >= 40 * 3


@pytest.mark.parametrize("attempt", [1, 2, 5, 12])
def test_backoff_grows_is_capped_and_honours_retry_after(attempt):
    import random

    rng = random.Random(1)
    delays = [retry_delay(attempt=attempt, rng=rng) for _ in range(200)]
    assert max(delays) <= min(300, 2 * 2 ** (attempt - 1))
    assert retry_delay(attempt=1, retry_after=30, rng=rng) >= 30
    assert retry_delay(attempt=1, retry_after=10_000, rng=rng) <= 300


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_runs_items_submitted_over_the_api(operator, acme, acme_step):
    import json

    from django.test import Client as HttpClient

    from controlplane.services import api_key_create
    from tests.processes import WorkerCluster, wait_until

    simulated_route(acme_step, operator)
    config.step_update(step=acme_step, actor=operator, confidence_threshold="0")
    key = api_key_create(client=acme, name="t", actor=operator)[1]
    with WorkerCluster() as cluster:
        response = HttpClient(headers={"Authorization": f"Bearer {key}"}).post(
            "/api/v1/pipelines/triage/items",
            data=json.dumps({"items": [{"data": {"text": f"t{n}"}} for n in range(20)]}),
            content_type="application/json",
        )
        assert response.status_code == 202
        done = wait_until(
            lambda: Item.objects.filter(status=Item.Status.ACCEPTED).count() == 20, timeout=60
        )
    assert done, cluster.output
    item = Item.objects.first()
    read = HttpClient(headers={"Authorization": f"Bearer {key}"}).get(f"/api/v1/items/{item.pk}")
    body = read.json()
    assert body["status"] == "accepted" and body["result"]["label"] in acme_step.labels
    assert Decimal(body["cost"]) > 0


def test_a_worker_that_lost_its_lease_cannot_overwrite_the_new_owners_outcome(operator, acme_step):
    from pipelines.services import engine

    simulated_route(acme_step, operator)
    config.step_update(step=acme_step, actor=operator, confidence_threshold="0")
    [item] = submit(acme_step.pipeline, "hello")
    late = engine.items_claim(worker="slow", limit=1)
    plans = engine._plan(late)
    engine._run_calls(plans)
    # Its lease expires; the sweeper requeues and another worker finishes the item.
    Item.objects.update(lease_expires_at=timezone.now() - timezone.timedelta(seconds=1))
    items_sweep()
    engine_run_batch(worker="fast")
    item.refresh_from_db()
    finished = (item.status, item.attempts, item.ledger.count())
    assert engine._apply(plans, worker="slow") == {"accepted": 1}
    item.refresh_from_db()
    assert (item.status, item.attempts, item.ledger.count()) == finished
    assert item.ledger.order_by("id").last().actor == "fast"


def test_the_sweeper_dead_letters_an_item_that_keeps_killing_its_worker(operator, acme_step):
    simulated_route(acme_step, operator)
    [item] = submit(acme_step.pipeline, "hello")
    for _ in range(MAX_ATTEMPTS):
        items_claim(worker="dies", limit=1)
        Item.objects.update(lease_expires_at=timezone.now() - timezone.timedelta(seconds=1))
        items_sweep()
    item.refresh_from_db()
    assert item.status == Item.Status.DEAD_LETTERED
    assert "worker stopped on every attempt" in item.error_message
