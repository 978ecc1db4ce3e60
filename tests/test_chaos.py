"""The quick versions of the chaos scenarios in bench/chaos/ (docs/resilience.md has the long
ones and their last results)."""

from __future__ import annotations

import time

import pytest

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
