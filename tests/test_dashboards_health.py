"""Breaker and worker history: the per-minute schedule samples each provider's breaker and the
worker side (heartbeats, django-q2's cluster Stat, the broker's queue), keeps a week of it, and
an operator's overview draws it; /metrics exposes the newest sample."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.signing import SignedPackage
from django_q.status import Stat, Status

from controlplane.models import WorkerHeartbeat
from controlplane.monitoring.health import (
    health_latest,
    health_sample_series,
    health_samples_take,
)
from controlplane.monitoring.live import Subscription, Ticker
from controlplane.monitoring.models import BreakerSample, HealthSample
from controlplane.monitoring.sample_tasks import gauge_samples_take_task
from controlplane.monitoring.samples import KEEP
from pipelines.services.breaker import breaker_record
from tests.conftest import login
from tests.test_gauge_samples import _figure, _trace
from tests.test_prometheus import TOKEN, labels, samples, scrape


def _open_breaker(provider) -> None:
    provider.breaker_failure_threshold = 1
    provider.save(update_fields=["breaker_failure_threshold"])
    breaker_record({provider.pk: [False]})


@pytest.fixture
def running_cluster(db):
    """A django-q2 cluster's Stat as its sentinel saves it in the shared cache, with 3 workers."""
    broker = get_broker()
    status = Status(pid=4242, cluster_id="cluster-under-test")
    status.workers = [101, 102, 103]
    key = Stat.get_key(status.cluster_id)
    broker.set_stat(key, SignedPackage.dumps(status, True), 30)
    yield status
    broker.cache.delete(key)


# --- Taking samples ---------------------------------------------------------------------------


def test_a_sample_keeps_each_breaker_and_the_workers_of_the_minute(world, running_cluster):
    provider = world["provider"]
    now = timezone.now().replace(second=5)
    WorkerHeartbeat.objects.create(host="w1", cluster="sluice", pid=1, last_seen=now)
    WorkerHeartbeat.objects.create(
        host="w2", cluster="sluice", pid=2, last_seen=now - timedelta(minutes=10)
    )
    broker = get_broker()
    broker.purge_queue()  # wake-ups earlier tests left in a shared broker (Redis)
    broker.enqueue("a task waiting")
    broker.enqueue("another")
    try:
        health_samples_take(now=now)
        _open_breaker(provider)
        # Taken again in the same minute: the later sample wins.
        health_samples_take(now=now + timedelta(seconds=40))
    finally:
        broker.purge_queue()

    [row] = HealthSample.objects.all()
    assert row.at == now.replace(second=0, microsecond=0)
    assert row.clusters_alive == 1  # w2 has been silent for ten minutes
    assert (row.clusters_running, row.workers) == (1, 3)
    assert row.queued_tasks == 2
    assert row.breakers_open == 1
    [breaker] = BreakerSample.objects.all()
    assert (breaker.provider_id, breaker.state, breaker.failures) == (provider.pk, "open", 1)


def test_the_schedule_takes_them_with_the_gauge_samples_and_drops_old_ones(world):
    now = timezone.now()
    HealthSample.objects.create(at=now - KEEP - timedelta(minutes=1), workers=9)
    BreakerSample.objects.create(
        provider=world["provider"], at=now - KEEP - timedelta(minutes=1), state="open"
    )
    kept = HealthSample.objects.create(at=now - KEEP + timedelta(minutes=5), workers=8)
    result = gauge_samples_take_task()
    assert result["breakers_sampled"] == 1 and result["health_pruned"] == 2
    assert set(HealthSample.objects.values_list("pk", flat=True)) >= {kept.pk}
    assert HealthSample.objects.count() == 2 and BreakerSample.objects.count() == 1


def test_an_hour_keeps_its_worst_breaker_state_and_its_fewest_workers(world):
    provider = world["provider"]
    hour = timezone.now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    for minute, state, workers, queued in (
        (5, "closed", 4, 10),
        (20, "open", 2, 900),
        (40, "half_open", 4, 5),
    ):
        at = hour + timedelta(minutes=minute)
        HealthSample.objects.create(at=at, workers=workers, queued_tasks=queued, clusters_alive=1)
        BreakerSample.objects.create(provider=provider, at=at, state=state)
    [point] = health_sample_series(since=hour, until=hour + timedelta(hours=1), resolution="hour")
    assert point.at == hour
    assert point.breakers == {provider.pk: 2}  # open at some minute of the hour
    assert point.values["workers"] == 2 and point.values["queued_tasks"] == 900
    minutes = health_sample_series(since=hour, until=hour + timedelta(hours=1))
    assert [p.breakers[provider.pk] for p in minutes] == [0, 2, 1]


# --- The chart --------------------------------------------------------------------------------


def test_an_operators_overview_draws_the_breaker_and_worker_history(world):
    provider = world["provider"]
    now = timezone.now()
    for minutes_ago, state, workers in ((30, "closed", 2), (20, "open", 2), (10, "closed", 1)):
        at = (now - timedelta(minutes=minutes_ago)).replace(second=0, microsecond=0)
        HealthSample.objects.create(at=at, clusters_alive=1, workers=workers, queued_tasks=3)
        BreakerSample.objects.create(provider=provider, at=at, state=state)

    response = login(world["operator"]).get(reverse("dashboard-overview") + "?range=1h")
    figure = _figure(response, "health")
    assert [y for _, y in _trace(figure, "Local")] == [0, 2, 0]
    assert [y for _, y in _trace(figure, "worker processes")] == [2, 2, 1]
    assert [y for _, y in _trace(figure, "queued tasks")] == [3, 3, 3]
    assert figure["layout"]["yaxis2"]["ticktext"] == ["closed", "half-open", "open"]
    assert b'data-testid="chart-health"' in response.content

    # Clients never see providers or workers; a pipeline's own dashboard has no health chart.
    client_page = login(world["client_a"]).get(reverse("dashboard-overview"))
    assert "health" not in [c["name"] for c in client_page.context["charts"]]
    pipeline_page = login(world["operator"]).get(
        reverse("dashboard-pipeline", args=["acme", "triage"])
    )
    assert "health" not in [c["name"] for c in pipeline_page.context["charts"]]


def test_the_live_update_carries_the_newest_health_sample(world):
    provider = world["provider"]
    acme, globex = world["acme_item"].pipeline, world["globex_item"].pipeline
    overview = Subscription((acme.pk, globex.pk), "15m", single=False, operations=True)
    client_view = Subscription((acme.pk,), "15m", single=False, operations=False)
    now = timezone.now()
    HealthSample.objects.create(at=now.replace(second=0, microsecond=0), workers=5)
    BreakerSample.objects.create(
        provider=provider, at=now.replace(second=0, microsecond=0), state="half_open"
    )
    texts = Ticker().read([overview, client_view], now)
    update = json.loads(texts[overview])
    local, _clusters, workers, _queued = update["charts"]["health"]["traces"]
    assert local["y"] == [1] and workers["y"] == [5]
    assert "health" not in json.loads(texts[client_view])["charts"]


# --- /metrics ---------------------------------------------------------------------------------


def test_metrics_expose_the_newest_health_sample(client, world, settings):
    settings.SLUICE_METRICS_TOKEN = TOKEN
    assert "sluice_worker_processes" not in scrape(client).content.decode()  # none taken yet
    _open_breaker(world["provider"])
    WorkerHeartbeat.objects.create(host="w1", cluster="sluice", pid=1, last_seen=timezone.now())
    health_samples_take()
    assert health_latest().breakers == {world["provider"].pk: 2}
    found = samples(scrape(client))
    assert found[("sluice_worker_clusters_alive", labels())] == 1
    assert found[("sluice_breakers_open", labels())] == 1
    assert found[("sluice_task_queue_depth", labels())] == 0
    assert 0 <= found[("sluice_health_sample_age_seconds", labels())] < 120
