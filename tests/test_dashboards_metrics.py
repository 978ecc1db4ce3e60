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


def test_step_totals_sum_each_steps_versions_and_buckets_in_one_query(acme_step, globex_pipeline):
    from pipelines.services.rollups import step_latencies_add, step_rollups_add

    now = timezone.now()
    pid = acme_step.pipeline_id
    step_rollups_add(
        {
            (pid, acme_step.pk, 1): {
                "started": 4,
                "accepted": 3,
                "failed": 1,
                "cost": Decimal("0.3"),
            },
            (pid, acme_step.pk, 2): {"started": 2, "held": 2, "cost": Decimal("0.1")},
        },
        at=now,
    )
    step_rollups_add(
        {(pid, acme_step.pk, 2): {"approved": 1, "rejected": 1}}, at=now - timedelta(minutes=2)
    )
    step_rollups_add({(pid, acme_step.pk, 1): {"started": 50}}, at=now - timedelta(hours=2))
    step_latencies_add({(acme_step.pk, 1): [0.2, 0.2], (acme_step.pk, 2): [4.0]}, at=now)
    with CaptureQueriesContext(connection) as queries:
        found = metrics.step_totals(
            pipeline_ids=[pid, globex_pipeline.pk], since=now - timedelta(hours=1)
        )
    assert len(queries) == 1
    assert '"pipelines_item"' not in queries[0]["sql"]  # never counts the item table
    [point] = found[pid].values()
    assert point.counts["started"] == 6 and point.counts["held"] == 2
    assert point.counts["approved"] == 1 and point.counts["rejected"] == 1
    assert point.count("cost") == Decimal("0.4")
    assert point.latency[metrics.STEP_MEASURE] == {bucket_of(0.2): 2, bucket_of(4.0): 1}
    assert globex_pipeline.pk not in found


def test_step_minutes_keep_each_pipeline_and_minute_apart_in_one_query(acme_step):
    from pipelines.services.rollups import step_latencies_add, step_rollups_add

    now = timezone.now()
    pid = acme_step.pipeline_id
    step_rollups_add({(pid, acme_step.pk, 1): {"started": 2, "accepted": 2}}, at=now)
    step_rollups_add({(pid, acme_step.pk, 2): {"started": 1, "failed": 1}}, at=now)
    step_rollups_add({(pid, acme_step.pk, 1): {"edited": 1}}, at=now - timedelta(minutes=1))
    step_latencies_add({(acme_step.pk, 1): [1.5]}, at=now - timedelta(minutes=1))
    with CaptureQueriesContext(connection) as queries:
        found = metrics.step_minutes(
            pipeline_ids=[pid],
            since=minute_of(now) - timedelta(minutes=5),
            until=minute_of(now) + timedelta(minutes=1),
        )
    assert len(queries) == 1
    minutes = found[pid]
    assert sorted(minutes) == [minute_of(now) - timedelta(minutes=1), minute_of(now)]
    latest = minutes[minute_of(now)][acme_step.pk]
    assert (latest.count("started"), latest.count("failed"), latest.latency) == (3, 1, {})
    earlier = minutes[minute_of(now) - timedelta(minutes=1)][acme_step.pk]
    assert earlier.count("edited") == 1
    assert earlier.latency == {metrics.STEP_MEASURE: {bucket_of(1.5): 1}}
    assert metrics.step_minutes(pipeline_ids=[], since=now, until=now) == {}
