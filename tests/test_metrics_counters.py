"""/metrics counters only go up: everything the rollups ever counted, from the counter totals
(moved forward once an hour has settled) plus the rollups after them; and a scrape costs the same
queries for twenty pipelines as for two."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from controlplane.monitoring.metrics_view import metrics_text
from controlplane.monitoring.models import CounterTotal
from controlplane.monitoring.totals import counter_totals_advance, counter_totals_read
from pipelines.histogram import bucket_of
from pipelines.services.rollups import latencies_add, rollups_add
from tests.factories import ItemFactory, PipelineFactory
from tests.test_prometheus import TOKEN, labels, samples, scrape

ACME = {"client": "acme", "pipeline": "triage"}


@pytest.fixture
def token(settings):
    settings.SLUICE_METRICS_TOKEN = TOKEN
    return TOKEN


def _accepted(client) -> float:
    return samples(scrape(client))[("sluice_items_accepted_total", labels(**ACME))]


def test_counters_keep_growing_across_days_and_as_the_totals_move(client, token, acme_pipeline):
    now = timezone.now()
    # Yesterday's work stays counted: nothing starts again from zero at midnight.
    yesterday = now - timedelta(hours=26)
    rollups_add({acme_pipeline.pk: {"accepted": 5, "cost": Decimal("0.5")}}, at=yesterday)
    rollups_add({acme_pipeline.pk: {"accepted": 7}}, at=now - timedelta(hours=5))
    rollups_add({acme_pipeline.pk: {"accepted": 2}}, at=now)
    seen = [_accepted(client)]
    assert seen == [14]

    # The totals take in everything up to the start of the previous hour; the scrape then reads
    # only the rollups after that, and answers the same.
    assert counter_totals_advance(now=now) == {"totals_moved": 1}
    total = CounterTotal.objects.get(pipeline=acme_pipeline)
    assert total.through == now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    assert total.counts["accepted"] == 12 and Decimal(total.counts["cost"]) == Decimal("0.5")
    seen.append(_accepted(client))
    # Moving again before another hour has settled changes nothing; nor does a second pass.
    assert counter_totals_advance(now=now) == {"totals_moved": 0}
    seen.append(_accepted(client))

    rollups_add({acme_pipeline.pk: {"accepted": 1}}, at=now)
    seen.append(_accepted(client))
    # Three hours later the current hour is in the totals too: nothing is counted twice.
    assert counter_totals_advance(now=now + timedelta(hours=3)) == {"totals_moved": 1}
    seen.append(_accepted(client))
    assert seen == [14, 14, 14, 15, 15]
    cost = samples(scrape(client))[("sluice_cost_total", labels(**ACME))]
    assert cost == pytest.approx(0.5)


def test_the_latency_histogram_adds_the_totals_and_the_recent_buckets(acme_pipeline):
    now = timezone.now()
    latencies_add({(acme_pipeline.pk, "end_to_end"): [0.3, 4.0]}, at=now - timedelta(hours=4))
    latencies_add({(acme_pipeline.pk, "end_to_end"): [0.3]}, at=now)
    before = counter_totals_read(pipeline_ids=[acme_pipeline.pk])[acme_pipeline.pk]
    counter_totals_advance(now=now)
    after = counter_totals_read(pipeline_ids=[acme_pipeline.pk])[acme_pipeline.pk]
    assert before.latency == after.latency == {"end_to_end": {bucket_of(0.3): 2, bucket_of(4.0): 1}}


def test_a_pipeline_created_after_the_totals_moved_counts_from_its_first_rollup(
    acme_pipeline, globex_pipeline
):
    now = timezone.now()
    rollups_add({acme_pipeline.pk: {"ingested": 3}}, at=now - timedelta(hours=6))
    counter_totals_advance(now=now)
    late = PipelineFactory(client=acme_pipeline.client)
    rollups_add({late.pk: {"ingested": 4}, acme_pipeline.pk: {"ingested": 1}}, at=now)
    found = counter_totals_read(pipeline_ids=[acme_pipeline.pk, globex_pipeline.pk, late.pk])
    assert [
        int(found[pk].count("ingested")) for pk in (acme_pipeline.pk, globex_pipeline.pk, late.pk)
    ] == [4, 0, 4]


def _scrape_queries(pipelines: int) -> int:
    with CaptureQueriesContext(connection) as queries:
        text = metrics_text().decode()
    assert text.count("sluice_items_accepted_total{") == pipelines
    return len(queries)


def test_a_scrape_costs_a_fixed_number_of_queries_whatever_the_number_of_pipelines(
    acme_pipeline, globex_pipeline, provider
):
    now = timezone.now()
    acme_pipeline.daily_budget = Decimal("10")
    acme_pipeline.save(update_fields=["daily_budget"])
    rollups_add({acme_pipeline.pk: {"accepted": 3}}, at=now - timedelta(hours=4))
    ItemFactory(pipeline=acme_pipeline)
    counter_totals_advance(now=now)
    two = _scrape_queries(2)

    more = [
        PipelineFactory(client=acme_pipeline.client, daily_budget=Decimal("5")) for _ in range(18)
    ]
    for pipeline in more[:9]:
        ItemFactory(pipeline=pipeline)
        rollups_add({pipeline.pk: {"accepted": 1}}, at=now - timedelta(hours=3))
        latencies_add({(pipeline.pk, "end_to_end"): [1.0]}, at=now)
    # Half of them have totals, the other half none yet: both are read in the same queries.
    counter_totals_advance(now=now)
    for pipeline in more[9:]:
        rollups_add({pipeline.pk: {"accepted": 1}}, at=now)
    twenty = _scrape_queries(20)

    print(f"/metrics queries: {two} with 2 pipelines, {twenty} with 20")
    assert twenty == two
    assert twenty <= 16
