"""`/metrics`: behind a bearer token, in the Prometheus text format, with the same numbers the
rollups and gauges hold: queue depth, counters, latency histograms, cost, breakers."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from pipelines import metrics
from pipelines.histogram import BOUNDS
from pipelines.models import Item
from pipelines.services.rollups import latencies_add, minute_of, rollups_add
from tests.conftest import login
from tests.factories import ItemFactory

TOKEN = "metrics-token-0123456789abcdef"


@pytest.fixture
def token(settings):
    settings.SLUICE_METRICS_TOKEN = TOKEN
    return TOKEN


def scrape(client, token=TOKEN):
    return client.get(reverse("metrics"), headers={"Authorization": f"Bearer {token}"})


def samples(response) -> dict[tuple[str, frozenset], float]:
    """Every sample of the exposition, by name and labels."""
    found = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def labels(**kw) -> frozenset:
    return frozenset(kw.items())


def test_without_a_token_configured_there_is_no_endpoint(client, operator, settings):
    settings.SLUICE_METRICS_TOKEN = ""
    assert client.get(reverse("metrics")).status_code == 404
    assert scrape(client, "anything").status_code == 404
    # A session is not a way in either.
    assert login(operator).get(reverse("metrics")).status_code == 404


def test_a_scrape_without_the_token_is_refused(client, token, operator):
    response = client.get(reverse("metrics"))
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert scrape(client, "wrong-token-wrong-token").status_code == 401
    assert client.get(reverse("metrics"), headers={"Authorization": TOKEN}).status_code == 401
    assert login(operator).get(reverse("metrics")).status_code == 401


def test_queue_depth_per_pipeline_and_status(client, token, acme_pipeline, globex_pipeline):
    for _ in range(3):
        ItemFactory(pipeline=acme_pipeline)
    ItemFactory(pipeline=acme_pipeline, status=Item.Status.IN_REVIEW)
    ItemFactory(pipeline=globex_pipeline, status=Item.Status.WAITING_RETRY)
    response = scrape(client)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    found = samples(response)
    acme = {"client": "acme", "pipeline": "triage"}
    assert found[("sluice_queue_depth", labels(**acme, status="queued"))] == 3
    assert found[("sluice_queue_depth", labels(**acme, status="in_review"))] == 1
    assert found[("sluice_review_backlog", labels(**acme))] == 1
    globex = {"client": "globex", "pipeline": "contracts"}
    assert found[("sluice_queue_depth", labels(**globex, status="waiting_retry"))] == 1
    assert found[("sluice_queue_depth", labels(**globex, status="queued"))] == 0
    assert found[("sluice_queue_oldest_age_seconds", labels(**acme))] >= 0


def test_counters_count_everything_since_the_pipeline_began(client, token, acme_pipeline):
    now = timezone.now()
    rollups_add(
        {
            acme_pipeline.pk: {
                "ingested": 7,
                "accepted": 5,
                "failed_transient": 2,
                "input_tokens": 100,
                "cost": Decimal("1.25"),
            }
        },
        at=now,
    )
    # Yesterday's work stays in the counters: they never start again from zero (see
    # tests/test_metrics_counters.py).
    rollups_add({acme_pipeline.pk: {"ingested": 1000}}, at=now - timedelta(days=1, minutes=5))
    found = samples(scrape(client))
    acme = labels(client="acme", pipeline="triage")
    assert found[("sluice_items_ingested_total", acme)] == 1007
    assert found[("sluice_items_accepted_total", acme)] == 5
    created = acme_pipeline.created_at.timestamp()
    assert found[("sluice_items_ingested_created", acme)] == pytest.approx(created)
    assert (
        found[
            (
                "sluice_items_failed_total",
                labels(client="acme", pipeline="triage", error_class="transient"),
            )
        ]
        == 2
    )
    assert (
        found[
            (
                "sluice_tokens_total",
                labels(client="acme", pipeline="triage", direction="input"),
            )
        ]
        == 100
    )
    assert found[("sluice_cost_total", acme)] == pytest.approx(1.25)


def test_latency_is_a_cumulative_histogram_from_the_rollup_buckets(client, token, acme_pipeline):
    values = [0.2, 0.3, 4.0, 40.0, 100000.0]
    latencies_add({(acme_pipeline.pk, "end_to_end"): values}, at=timezone.now())
    found = samples(scrape(client))
    buckets = {
        dict(key)["le"]: value
        for (name, key), value in found.items()
        if name == "sluice_latency_seconds_bucket"
        and dict(key)["pipeline"] == "triage"
        and dict(key)["measure"] == "end_to_end"
    }
    assert len(buckets) == len(BOUNDS)
    assert buckets["+Inf"] == len(values)
    assert buckets["0.25"] == 1 and buckets["0.5"] == 2 and buckets["5"] == 3 and buckets["60"] == 4
    ordered = [buckets[le] for le in sorted(buckets, key=float)]
    assert ordered == sorted(ordered)


def test_breaker_state_per_provider(client, token, provider):
    from pipelines.services.breaker import breaker_record

    provider.breaker_failure_threshold = 1
    provider.save()
    found = samples(scrape(client))
    assert found[("sluice_breaker_state", labels(provider="Local", state="closed"))] == 1
    breaker_record({provider.pk: [False]})
    found = samples(scrape(client))
    assert found[("sluice_breaker_state", labels(provider="Local", state="open"))] == 1
    assert found[("sluice_breaker_state", labels(provider="Local", state="closed"))] == 0
    assert found[("sluice_breaker_failures", labels(provider="Local"))] == 1


def test_budgets_and_open_alerts_are_exposed(client, token, acme_pipeline):
    from controlplane.monitoring.alert_services import alerts_evaluate

    acme_pipeline.daily_budget = Decimal("10")
    acme_pipeline.save()
    rollups_add({acme_pipeline.pk: {"cost": Decimal("9"), "dead_lettered": 1}}, at=timezone.now())
    alerts_evaluate()
    found = samples(scrape(client))
    budget = labels(client="acme", pipeline="triage", budget="daily")
    assert found[("sluice_budget_spent_ratio", budget)] == pytest.approx(0.9)
    assert found[("sluice_alerts_open", labels(state="firing"))] >= 2


def test_a_scrape_costs_the_same_few_queries_per_pipeline(
    client, token, acme_pipeline, globex_pipeline, django_assert_max_num_queries
):
    rollups_add({acme_pipeline.pk: {"ingested": 3}}, at=timezone.now())
    # Rollups and buckets: 2; pipelines, providers, heartbeats, alerts, budgets: a handful;
    # per pipeline: one capped count per live status and the oldest queued item.
    per_pipeline = len(metrics.GAUGE_STATUSES) + 1
    with django_assert_max_num_queries(10 + 2 * per_pipeline):
        assert scrape(client).status_code == 200


def test_totals_by_pipeline_keeps_pipelines_apart(acme_pipeline, globex_pipeline):
    now = timezone.now()
    rollups_add({acme_pipeline.pk: {"calls": 4}, globex_pipeline.pk: {"calls": 9}}, at=now)
    rollups_add({acme_pipeline.pk: {"calls": 100}}, at=now - timedelta(hours=2))
    latencies_add({(acme_pipeline.pk, "end_to_end"): [1.0, 2.0]}, at=now)
    found = metrics.totals_by_pipeline(
        pipeline_ids=[acme_pipeline.pk, globex_pipeline.pk, 999999],
        since=now - timedelta(minutes=30),
        until=minute_of(now) + timedelta(minutes=1),
    )
    assert found[acme_pipeline.pk].count("calls") == 4
    assert found[globex_pipeline.pk].count("calls") == 9
    assert found[999999].count("calls") == 0
    assert sum(found[acme_pipeline.pk].latency["end_to_end"].values()) == 2
    assert found[globex_pipeline.pk].latency == {}
