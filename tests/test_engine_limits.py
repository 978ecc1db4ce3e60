"""What bounds the engine: fairness between clients, priority within a pipeline, concurrency
limits, budgets, circuit breakers and rate limits, and the rollups that count it all."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from controlplane.models import AuditEntry
from pipelines.models import BreakerEvent, Item, Pipeline, Provider, Rollup
from pipelines.services import breaker
from pipelines.services import configuration as config
from pipelines.services.budgets import budgets_for
from pipelines.services.engine import engine_run_batch, items_claim
from pipelines.services.ingest import items_submit
from pipelines.services.rollups import minute_of, rollups_add
from tests.factories import ClientFactory, PipelineFactory
from tests.test_engine import simulated_route, submit

WORKER = "worker:test"


def pipeline_with_step(operator, client, slug, **fields):
    pipeline = PipelineFactory(client=client, slug=slug, **fields)
    step = config.step_create(
        pipeline=pipeline,
        name="Topic",
        slug="topic",
        kind="classify",
        labels=["billing", "bug"],
        template="{{ text }}",
        actor=operator,
    )
    return pipeline, step


def claimed_by_pipeline(limit):
    items = items_claim(worker=WORKER, limit=limit)
    return Counter(item.pipeline.slug for item in items)


# --- Fairness, priority, concurrency ----------------------------------------------------------


def test_a_batch_is_shared_between_clients_however_long_one_queue_is(operator, acme_pipeline):
    big, _ = pipeline_with_step(operator, acme_pipeline.client, "big", concurrency_limit=1000)
    small, _ = pipeline_with_step(operator, ClientFactory(slug="small"), "small")
    submit(big, *[f"big {n}" for n in range(300)])
    submit(small, *[f"small {n}" for n in range(30)])
    counts = claimed_by_pipeline(40)
    assert counts == {"big": 20, "small": 20}
    # The small client runs out: the rest of the next batch goes to the big one.
    counts = claimed_by_pipeline(40)
    assert counts == {"big": 30, "small": 10}


def test_a_clients_share_is_split_between_its_pipelines(operator, acme):
    first, _ = pipeline_with_step(operator, acme, "first")
    second, _ = pipeline_with_step(operator, acme, "second")
    submit(first, *[f"a {n}" for n in range(50)])
    submit(second, *[f"b {n}" for n in range(50)])
    assert claimed_by_pipeline(20) == {"first": 10, "second": 10}


def test_priority_orders_a_pipeline_and_due_retries_come_first(operator, acme):
    pipeline, _ = pipeline_with_step(operator, acme, "p")
    low = submit(pipeline, "low")[0]
    [outcome] = items_submit(
        pipeline=pipeline, entries=[{"data": {"text": "high"}, "priority": 9}], actor="t"
    )
    retry = submit(pipeline, "retry")[0]
    Item.objects.filter(pk=retry.pk).update(
        status=Item.Status.WAITING_RETRY, next_attempt_at=timezone.now() - timedelta(seconds=1)
    )
    claimed = {item.pk for item in items_claim(worker=WORKER, limit=2)}
    assert claimed == {retry.pk, outcome.id}
    assert [i.pk for i in items_claim(worker=WORKER, limit=2)] == [low.pk]


def test_a_pipeline_never_runs_more_items_than_its_concurrency_limit(operator, acme):
    pipeline, _ = pipeline_with_step(operator, acme, "p", concurrency_limit=7)
    submit(pipeline, *[f"t {n}" for n in range(20)])
    assert len(items_claim(worker="one", limit=100)) == 7
    # Another worker finds no room while those seven run.
    assert items_claim(worker="two", limit=100) == []
    Item.objects.filter(status=Item.Status.RUNNING).update(status=Item.Status.ACCEPTED)
    assert len(items_claim(worker="two", limit=100)) == 7


def test_paused_pipelines_are_not_claimed(operator, acme):
    pipeline, _ = pipeline_with_step(operator, acme, "p", status=Pipeline.Status.PAUSED)
    submit(pipeline, "held")
    assert items_claim(worker=WORKER) == []


# --- Budgets --------------------------------------------------------------------------------


def spend(pipeline, amount, at=None):
    rollups_add({pipeline.pk: {"cost": Decimal(amount)}}, at=at or timezone.now())


def test_a_pipeline_at_80_percent_of_its_daily_budget_warns_once_and_keeps_running(operator, acme):
    pipeline, _ = pipeline_with_step(operator, acme, "p", daily_budget=Decimal("10.00"))
    spend(pipeline, "8.50")
    submit(pipeline, "one", "two")
    assert len(items_claim(worker=WORKER, limit=1)) == 1
    assert len(items_claim(worker=WORKER, limit=1)) == 1
    warnings = AuditEntry.objects.filter(action="budget.warning")
    assert warnings.count() == 1
    assert warnings.get().after["percent"] == 85


def test_a_spent_daily_budget_holds_work_without_dropping_it(operator, acme):
    pipeline, _ = pipeline_with_step(operator, acme, "p", daily_budget=Decimal("10.00"))
    spend(pipeline, "10.00")
    [item] = submit(pipeline, "waits")
    assert items_claim(worker=WORKER) == []
    item.refresh_from_db()
    assert item.status == Item.Status.QUEUED
    assert AuditEntry.objects.filter(action="budget.held").count() == 1
    # Yesterday's spend does not count today; raising the budget lets the work run.
    Rollup.objects.update(minute=timezone.now() - timedelta(days=1, hours=1))
    assert [i.pk for i in items_claim(worker=WORKER)] == [item.pk]


def test_a_clients_monthly_budget_holds_all_its_pipelines(operator, acme, globex_pipeline):
    acme.monthly_budget = Decimal("5.00")
    acme.save()
    first, _ = pipeline_with_step(operator, acme, "first")
    second, _ = pipeline_with_step(operator, acme, "second")
    other, _ = pipeline_with_step(operator, globex_pipeline.client, "other")
    spend(first, "3.00")
    spend(second, "2.50")
    submit(first, "a")
    submit(second, "b")
    submit(other, "c")
    assert claimed_by_pipeline(10) == {"other": 1}
    [budget] = budgets_for([second], now=timezone.now())[second.pk]
    assert budget.scope == "client" and budget.spent == Decimal("5.5") and budget.state == "held"


# --- Circuit breaker and rate limit in the engine --------------------------------------------


@pytest.fixture
def clock(monkeypatch):
    now = [1_000_000.0]
    monkeypatch.setattr(breaker, "clock", lambda: now[0])
    return now


def test_an_open_breaker_keeps_items_waiting_without_using_attempts(operator, acme_step, clock):
    model = simulated_route(acme_step, operator, failure_rates={"transient": 1.0})
    Provider.objects.filter(pk=model.provider_id).update(
        breaker_failure_threshold=3, breaker_reset_seconds=30
    )
    submit(acme_step.pipeline, *[f"t {n}" for n in range(3)])
    engine_run_batch(worker=WORKER)  # three failures: the breaker opens
    assert BreakerEvent.objects.filter(to_state="open").count() == 1
    later = submit(acme_step.pipeline, "after")[0]
    engine_run_batch(worker=WORKER)
    later.refresh_from_db()
    assert later.status == Item.Status.WAITING_RETRY
    assert later.error_class == "provider_limit"
    assert "circuit breaker" in later.error_message
    assert later.attempts == 0  # not the item's fault
    detail = later.ledger.order_by("id").last().detail
    assert 1 <= detail["retry_in_seconds"] <= 30


def test_an_open_breaker_sends_items_to_the_fallback_model(operator, acme_step, clock):
    failing = simulated_route(acme_step, operator, failure_rates={"transient": 1.0})
    Provider.objects.filter(pk=failing.provider_id).update(breaker_failure_threshold=1)
    healthy = simulated_route(
        acme_step, operator, confidence={"alpha": 50, "beta": 1}, tokens={"input": 5, "output": 1}
    )
    config.route_set(
        step=acme_step, entries=[{"model": failing}, {"model": healthy}], actor=operator
    )
    config.step_update(step=acme_step, actor=operator, confidence_threshold="0")
    submit(acme_step.pipeline, "first")
    engine_run_batch(worker=WORKER)  # fails on the first model: the breaker opens
    [item] = submit(acme_step.pipeline, "second")
    engine_run_batch(worker=WORKER)
    item.refresh_from_db()
    assert item.status == Item.Status.ACCEPTED
    detail = item.ledger.order_by("id").last().detail
    assert detail["model"] == str(healthy)
    assert detail["fallbacks_tried"] == [str(failing)]


def test_the_breaker_probes_after_its_reset_time_and_closes_on_success(operator, acme_step, clock):
    model = simulated_route(acme_step, operator, failure_rates={"transient": 1.0})
    provider = Provider.objects.get(pk=model.provider_id)
    Provider.objects.filter(pk=provider.pk).update(
        breaker_failure_threshold=1, breaker_reset_seconds=30
    )
    submit(acme_step.pipeline, "breaks it")
    engine_run_batch(worker=WORKER)
    Provider.objects.filter(pk=provider.pk).update(simulation={"seed": 1})  # healthy again
    config.step_update(step=acme_step, actor=operator, confidence_threshold="0")
    submit(acme_step.pipeline, *[f"t {n}" for n in range(3)])
    Item.objects.update(next_attempt_at=timezone.now())
    clock[0] += 31
    counts = engine_run_batch(worker=WORKER)
    # One probe call went out and succeeded; the others waited for it.
    assert counts.get("accepted") == 1
    states = list(BreakerEvent.objects.order_by("id").values_list("to_state", flat=True))
    assert states == ["open", "half_open", "closed"]
    Item.objects.update(next_attempt_at=timezone.now())
    counts = engine_run_batch(worker=WORKER)
    assert counts.get("accepted") == 3


def test_a_rate_limit_lets_only_its_share_of_calls_start(operator, acme_step):
    model = simulated_route(acme_step, operator)
    Provider.objects.filter(pk=model.provider_id).update(rate_limit_per_minute=4)
    config.step_update(step=acme_step, actor=operator, confidence_threshold="0")
    submit(acme_step.pipeline, *[f"t {n}" for n in range(10)])
    counts = engine_run_batch(worker=WORKER)
    assert counts == {"accepted": 4, "waiting_retry": 6}
    waiting = Item.objects.filter(status=Item.Status.WAITING_RETRY)
    assert {i.error_class for i in waiting} == {"provider_limit"}
    assert {i.attempts for i in waiting} == {0}


# --- Rollups --------------------------------------------------------------------------------


def test_the_engine_and_ingest_add_to_the_minutes_rollup(operator, acme_step):
    simulated_route(acme_step, operator, confidence={"alpha": 50, "beta": 1})
    config.step_update(step=acme_step, actor=operator, confidence_threshold="0")
    items = submit(acme_step.pipeline, "a", "b", "c")
    engine_run_batch(worker=WORKER)
    row = Rollup.objects.get(pipeline=acme_step.pipeline)
    assert row.minute == minute_of(row.minute)
    assert (row.ingested, row.calls, row.accepted) == (3, 3, 3)
    cost = sum((Item.objects.get(pk=i.pk).cost for i in items), Decimal(0))
    assert row.cost == cost > 0
    assert row.input_tokens > 0 and row.output_tokens > 0


def test_rollups_add_up_and_refuse_unknown_counters(acme_pipeline):
    at = timezone.now()
    rollups_add({acme_pipeline.pk: {"accepted": 2, "cost": Decimal("0.5")}}, at=at)
    rollups_add({acme_pipeline.pk: {"accepted": 3, "cost": Decimal("0.25")}}, at=at)
    row = Rollup.objects.get()
    assert row.accepted == 5 and row.cost == Decimal("0.75")
    with pytest.raises(ValueError, match="unknown rollup counters"):
        rollups_add({acme_pipeline.pk: {"nonsense": 1}}, at=at)


# --- Result cache ----------------------------------------------------------------------------


def test_a_steps_result_cache_answers_the_same_input_again_at_no_cost(operator, acme_step):
    simulated_route(acme_step, operator, confidence={"alpha": 50, "beta": 1})
    config.step_update(
        step=acme_step, actor=operator, confidence_threshold="0", result_cache_seconds=3600
    )
    [first] = submit(acme_step.pipeline, "the same words")
    engine_run_batch(worker=WORKER)
    first.refresh_from_db()
    assert first.cost > 0
    config.pipeline_update(pipeline=acme_step.pipeline, actor=operator, dedup_window_seconds=0)
    acme_step.pipeline.refresh_from_db()
    [again] = submit(acme_step.pipeline, "the same words")
    [other] = submit(acme_step.pipeline, "other words")
    engine_run_batch(worker=WORKER)
    again.refresh_from_db()
    other.refresh_from_db()
    assert again.status == Item.Status.ACCEPTED
    assert again.result == first.result and again.confidence == first.confidence
    assert again.cost == 0 and again.input_tokens == 0
    detail = again.ledger.order_by("id").last().detail
    assert detail["cache_hit"] is True
    assert Decimal(detail["cost_saved"]) == first.cost
    assert other.cost > 0 and "cache_hit" not in other.ledger.order_by("id").last().detail
    row = Rollup.objects.get(pipeline=acme_step.pipeline)
    assert row.cache_hits == 1 and row.cost_saved == first.cost
    assert row.calls == 2


def test_a_new_prompt_version_does_not_reuse_the_old_versions_answers(operator, acme_step):
    simulated_route(acme_step, operator, confidence={"alpha": 50, "beta": 1})
    config.step_update(
        step=acme_step, actor=operator, confidence_threshold="0", result_cache_seconds=3600
    )
    config.pipeline_update(pipeline=acme_step.pipeline, actor=operator, dedup_window_seconds=0)
    acme_step.pipeline.refresh_from_db()
    submit(acme_step.pipeline, "same")
    engine_run_batch(worker=WORKER)
    v2 = config.prompt_version_create(step=acme_step, template="New: {{ text }}", actor=operator)
    config.prompt_label_move(step=acme_step, label="production", version=v2, actor=operator)
    [item] = submit(acme_step.pipeline, "same")
    engine_run_batch(worker=WORKER)
    assert "cache_hit" not in item.ledger.order_by("id").last().detail


def test_without_a_cache_time_every_item_is_called(operator, acme_step):
    simulated_route(acme_step, operator)
    config.step_update(step=acme_step, actor=operator, confidence_threshold="0")
    config.pipeline_update(pipeline=acme_step.pipeline, actor=operator, dedup_window_seconds=0)
    acme_step.pipeline.refresh_from_db()
    submit(acme_step.pipeline, "same", "same")
    engine_run_batch(worker=WORKER)
    assert Rollup.objects.get().calls == 2 and Rollup.objects.get().cache_hits == 0


# --- Blind audit sampling --------------------------------------------------------------------


def test_a_share_of_accepted_outputs_is_sampled_for_blind_audit(operator, acme_step):
    from pipelines.signals import items_sampled_for_audit

    simulated_route(acme_step, operator, confidence={"alpha": 50, "beta": 1})
    config.step_update(step=acme_step, actor=operator, confidence_threshold="0", audit_rate="1")
    sampled = []

    def on_sampled(sender, sampled: list, **kwargs):
        received.extend(sampled)

    received = sampled
    items_sampled_for_audit.connect(on_sampled)
    try:
        items = submit(acme_step.pipeline, "a", "b")
        engine_run_batch(worker=WORKER)
    finally:
        items_sampled_for_audit.disconnect(on_sampled)
    assert sorted(s.item.pk for s in sampled) == sorted(i.pk for i in items)
    assert all(s.step == acme_step and s.output["label"] for s in sampled)
    # The audit does not hold them: they were accepted as usual.
    assert set(Item.objects.values_list("status", flat=True)) == {"accepted"}


def test_no_audit_rate_samples_nothing(operator, acme_step):
    from pipelines.signals import items_sampled_for_audit

    simulated_route(acme_step, operator, confidence={"alpha": 50, "beta": 1})
    config.step_update(step=acme_step, actor=operator, confidence_threshold="0")
    calls = []
    receiver = lambda sender, **kwargs: calls.append(kwargs)  # noqa: E731
    items_sampled_for_audit.connect(receiver)
    try:
        submit(acme_step.pipeline, "a", "b")
        engine_run_batch(worker=WORKER)
    finally:
        items_sampled_for_audit.disconnect(receiver)
    assert calls == []


# --- Logs ------------------------------------------------------------------------------------


def test_an_item_that_does_not_pass_is_logged_with_its_ids(operator, acme_step, caplog):
    model = simulated_route(acme_step, operator, failure_rates={"transient": 1.0})
    Provider.objects.filter(pk=model.provider_id).update(breaker_failure_threshold=100)
    [item] = submit(acme_step.pipeline, "fails")
    with caplog.at_level("INFO", logger="pipelines.services.engine"):
        engine_run_batch(worker=WORKER)
    [record] = [r for r in caplog.records if "running -> waiting_retry" in r.getMessage()]
    assert record.item_id == item.pk and record.pipeline_id == acme_step.pipeline_id
    assert record.error_class == "transient" and record.worker == WORKER
