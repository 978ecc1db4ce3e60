"""The quick versions of the chaos scenarios in bench/chaos/ (docs/resilience.md has the long
ones and their last results)."""

from __future__ import annotations

import time

import pytest

from bench.chaos.bad_config import CORRUPTIONS, bad_config_pipeline
from bench.chaos.bad_config import scenario as bad_config_scenario
from bench.chaos.provider_outage import chaos_pipeline, scenario
from bench.chaos.webhook_outage import Endpoint, outage_pipeline
from bench.chaos.webhook_outage import scenario as webhook_scenario
from bench.scenario import Receiver
from pipelines.services.delivery import deliveries_send
from pipelines.services.engine import engine_run_batch
from tests.processes import free_port


def run_engine_inline() -> None:
    engine_run_batch(worker="worker:chaos")
    deliveries_send()
    time.sleep(0.05)


@pytest.mark.django_db(transaction=True)
def test_a_provider_outage_opens_the_breaker_loses_nothing_and_everything_completes():
    with Receiver() as hook:
        pipeline = chaos_pipeline(webhook_url=hook.url, breaker_reset_seconds=1)
        result = scenario(
            pipeline=pipeline,
            items=30,
            outage_seconds=3,
            recover_timeout=30,
            work=run_engine_inline,
        )
    assert result["verdict"] == "PASS", result
    assert hook.received >= 30


@pytest.mark.django_db(transaction=True)
def test_a_webhook_endpoint_down_holds_deliveries_and_each_arrives_once_afterwards():
    endpoint = Endpoint(free_port())
    try:
        result = webhook_scenario(
            pipeline=outage_pipeline(webhook_url=endpoint.url),
            endpoint=endpoint,
            items=20,
            outage_seconds=2,
            recover_timeout=30,
            work=run_engine_inline,
        )
    finally:
        endpoint.stop()
    assert result["verdict"] == "PASS", result
    assert result["delivery_attempts_while_down"] >= 20


@pytest.mark.parametrize("corruption", CORRUPTIONS)
@pytest.mark.django_db(transaction=True)
def test_configuration_corrupted_in_the_database_pauses_alerts_and_loses_nothing(corruption):
    with Receiver() as hook:
        result = bad_config_scenario(
            pipeline=bad_config_pipeline(webhook_url=hook.url),
            items=20,
            corruption=corruption,
            outage_seconds=1,
            recover_timeout=30,
            work=run_engine_inline,
        )
    assert result["verdict"] == "PASS", result
    assert result["delivered_while_broken"] == 0, result
    assert hook.received >= 20


@pytest.mark.django_db(transaction=True)
def test_an_outage_costs_a_batch_the_first_wave_of_calls_not_one_attempt_per_item():
    from bench.chaos.provider_outage import failed_calls, outage_set
    from pipelines.models import Item
    from pipelines.services.breaker import breaker_state
    from pipelines.services.ingest import items_submit

    with Receiver() as hook:
        pipeline = chaos_pipeline(webhook_url=hook.url, breaker_reset_seconds=60)
        provider = pipeline.steps.get().route.get().model.provider
        outage_set(provider, failing=True)
        items_submit(
            pipeline=pipeline, entries=[{"data": {"text": f"t{n}"}} for n in range(40)], actor="t"
        )
        engine_run_batch(worker="worker:chaos")
    # The breaker's threshold (5) of calls failed; the other 35 waited without an attempt.
    assert failed_calls(pipeline) == provider.breaker_failure_threshold == 5
    assert breaker_state(provider).state == "open"
    attempts = sorted(Item.objects.filter(pipeline=pipeline).values_list("attempts", flat=True))
    assert attempts == [0] * 35 + [1] * 5
    assert set(Item.objects.values_list("status", flat=True)) == {Item.Status.WAITING_RETRY}


@pytest.mark.django_db(transaction=True)
def test_a_provider_that_answered_lately_gets_the_whole_batch_at_once():
    from bench.chaos.provider_outage import failed_calls, outage_set
    from pipelines.services.ingest import items_submit

    with Receiver() as hook:
        pipeline = chaos_pipeline(webhook_url=hook.url, breaker_reset_seconds=60)
        provider = pipeline.steps.get().route.get().model.provider
        items_submit(pipeline=pipeline, entries=[{"data": {"text": "warm"}}], actor="t")
        engine_run_batch(worker="worker:chaos")
        # It answered a moment ago: no first wave held back, so an outage that starts now
        # meets the whole next batch (the cost of not delaying a healthy provider's calls).
        outage_set(provider, failing=True)
        items_submit(
            pipeline=pipeline, entries=[{"data": {"text": f"t{n}"}} for n in range(40)], actor="t"
        )
        engine_run_batch(worker="worker:chaos")
    assert failed_calls(pipeline) == 40
