"""The reads the live dashboards add to pipelines.metrics: minutes per pipeline, cost since."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from pipelines import metrics
from pipelines.histogram import bucket_of
from pipelines.services.rollups import latencies_add, minute_of, rollups_add


def test_minutes_by_pipeline_keep_each_pipeline_apart_in_two_queries(
    acme_pipeline, globex_pipeline
):
    now = timezone.now()
    rollups_add({acme_pipeline.pk: {"accepted": 2}, globex_pipeline.pk: {"accepted": 5}}, at=now)
    rollups_add({acme_pipeline.pk: {"accepted": 1}}, at=now - timedelta(minutes=3))
    latencies_add({(globex_pipeline.pk, "end_to_end"): [1.5]}, at=now)
    with CaptureQueriesContext(connection) as queries:
        found = metrics.series_by_pipeline(
            pipeline_ids=[acme_pipeline.pk, globex_pipeline.pk],
            since=minute_of(now) - timedelta(minutes=10),
            until=minute_of(now) + timedelta(minutes=1),
        )
    assert len(queries) == 2
    assert sorted(p.count("accepted") for p in found[acme_pipeline.pk].values()) == [1, 2]
    [globex_minute] = found[globex_pipeline.pk].values()
    assert globex_minute.at == minute_of(now) and globex_minute.count("accepted") == 5
    assert globex_minute.latency == {"end_to_end": {bucket_of(1.5): 1}}


def test_minutes_outside_the_window_and_unasked_pipelines_are_left_out(
    acme_pipeline, globex_pipeline
):
    now = timezone.now()
    rollups_add({acme_pipeline.pk: {"ingested": 4}}, at=now - timedelta(hours=2))
    rollups_add({globex_pipeline.pk: {"ingested": 4}}, at=now)
    found = metrics.series_by_pipeline(
        pipeline_ids=[acme_pipeline.pk], since=now - timedelta(hours=1), until=now
    )
    assert found == {acme_pipeline.pk: {}}
    assert metrics.series_by_pipeline(pipeline_ids=[], since=now, until=now) == {}


def test_cost_since_sums_cost_and_savings_per_pipeline(acme_pipeline, globex_pipeline):
    now = timezone.now()
    rollups_add({acme_pipeline.pk: {"cost": Decimal("0.25"), "cost_saved": Decimal("0.1")}}, at=now)
    rollups_add({acme_pipeline.pk: {"cost": Decimal("0.5")}}, at=now - timedelta(minutes=5))
    rollups_add({acme_pipeline.pk: {"cost": Decimal("9")}}, at=now - timedelta(days=2))
    found = metrics.cost_since(
        pipeline_ids=[acme_pipeline.pk, globex_pipeline.pk], since=now - timedelta(hours=1)
    )
    assert found == {acme_pipeline.pk: (Decimal("0.75"), Decimal("0.1"))}
