"""Reading the rollups: series over a range with no gaps, totals, percentiles, capped gauges."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.utils import timezone

from pipelines import metrics
from pipelines.histogram import bucket_of
from pipelines.models import Item
from pipelines.services.rollups import latencies_add, minute_of, rollups_add
from tests.factories import ItemFactory, PipelineFactory


def test_a_series_has_every_minute_of_the_range_and_sums_pipelines(acme_pipeline, globex_pipeline):
    now = timezone.now()
    since, until, resolution = metrics.range_bounds("15m", now=now)
    assert resolution == "minute" and until - since == timedelta(minutes=15)
    rollups_add({acme_pipeline.pk: {"accepted": 2, "cost": Decimal("0.5")}}, at=now)
    rollups_add({globex_pipeline.pk: {"accepted": 3, "cost": Decimal("0.25")}}, at=now)
    rollups_add({acme_pipeline.pk: {"accepted": 7}}, at=now - timedelta(minutes=5))
    latencies_add({(acme_pipeline.pk, "end_to_end"): [0.2, 0.3, 4.0]}, at=now)
    points = metrics.series(
        pipeline_ids=[acme_pipeline.pk, globex_pipeline.pk], since=since, until=until
    )
    assert len(points) == 15
    last = points[-1]
    assert last.at == minute_of(now)
    assert last.count("accepted") == 5 and last.count("cost") == Decimal("0.75")
    assert points[-6].count("accepted") == 7
    assert sum(p.count("accepted") for p in points) == 12
    assert last.latency["end_to_end"] == {bucket_of(0.2): 1, bucket_of(0.3): 1, bucket_of(4): 1}
    total = metrics.totals(points)
    assert total.count("accepted") == 12
    assert 2.5 <= total.percentile("end_to_end", 99) <= 5


def test_a_series_only_holds_the_pipelines_asked_for(acme_pipeline, globex_pipeline):
    now = timezone.now()
    rollups_add({globex_pipeline.pk: {"accepted": 3}}, at=now)
    since, until, _ = metrics.range_bounds("1h", now=now)
    points = metrics.series(pipeline_ids=[acme_pipeline.pk], since=since, until=until)
    assert sum(p.count("accepted") for p in points) == 0


def test_long_ranges_are_read_by_the_hour(acme_pipeline):
    now = timezone.now()
    since, until, resolution = metrics.range_bounds("24h", now=now)
    assert resolution == "hour"
    rollups_add({acme_pipeline.pk: {"ingested": 4}}, at=now - timedelta(hours=3))
    rollups_add({acme_pipeline.pk: {"ingested": 6}}, at=now - timedelta(hours=3, minutes=1))
    points = metrics.series(
        pipeline_ids=[acme_pipeline.pk], since=since, until=until, resolution=resolution
    )
    assert 24 <= len(points) <= 25
    assert sum(p.count("ingested") for p in points) == 10
    assert all(p.at.minute == 0 for p in points)


def test_gauges_count_live_items_per_pipeline_and_status(acme_pipeline, monkeypatch):
    other = PipelineFactory(client=acme_pipeline.client)
    for status, n in (
        (Item.Status.QUEUED, 3),
        (Item.Status.RUNNING, 1),
        (Item.Status.IN_REVIEW, 2),
    ):
        for _ in range(n):
            ItemFactory(pipeline=acme_pipeline, status=status)
    ItemFactory(pipeline=other, status=Item.Status.QUEUED)
    ItemFactory(pipeline=acme_pipeline, status=Item.Status.ACCEPTED)
    found = metrics.gauges(pipeline_ids=[acme_pipeline.pk, other.pk])
    assert found[acme_pipeline.pk]["queued"] == 3
    assert found[acme_pipeline.pk]["running"] == 1 and found[acme_pipeline.pk]["in_review"] == 2
    assert metrics.gauges_total(found)["queued"] == 4
    monkeypatch.setattr(metrics, "GAUGE_CAP", 2)
    assert metrics.gauges(pipeline_ids=[acme_pipeline.pk])[acme_pipeline.pk]["queued"] == 2
    age = metrics.oldest_queued_age(pipeline_ids=[acme_pipeline.pk], now=timezone.now())
    assert age is not None and age >= 0
    assert metrics.oldest_queued_age(pipeline_ids=[], now=timezone.now()) is None


def test_a_series_reads_only_the_latency_measures_asked_for(acme_pipeline):
    now = timezone.now()
    latencies_add(
        {(acme_pipeline.pk, "end_to_end"): [1.0], (acme_pipeline.pk, "queue_wait"): [0.2]},
        at=now,
    )
    for resolution in ("minute", "hour"):
        since, until, _ = metrics.range_bounds("24h" if resolution == "hour" else "15m", now=now)
        points = metrics.series(
            pipeline_ids=[acme_pipeline.pk],
            since=since,
            until=until,
            resolution=resolution,
            measures=("end_to_end",),
        )
        assert {m for p in points for m in p.latency} == {"end_to_end"}
    everything = metrics.series(pipeline_ids=[acme_pipeline.pk], since=since, until=until)
    assert {m for p in everything for m in p.latency} == {"end_to_end", "queue_wait"}


def test_the_oldest_queued_item_of_every_pipeline_is_one_query(acme_pipeline, globex_pipeline):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    now = timezone.now()
    old = ItemFactory(pipeline=acme_pipeline)
    type(old).objects.filter(pk=old.pk).update(created_at=now - timedelta(minutes=7))
    ItemFactory(pipeline=acme_pipeline)
    ItemFactory(pipeline=globex_pipeline, status=Item.Status.RUNNING)
    with CaptureQueriesContext(connection) as queries:
        ages = metrics.oldest_queued_ages(
            pipeline_ids=[acme_pipeline.pk, globex_pipeline.pk], now=now
        )
    assert len(queries) == 1
    assert 419 <= ages[acme_pipeline.pk] <= 421
    assert ages[globex_pipeline.pk] is None
