"""Gauge samples: the schedule keeps queue depth, in flight and review backlog per pipeline and
minute for a week, and the dashboards draw their history from them."""

from __future__ import annotations

import json
from datetime import timedelta

from django.urls import reverse
from django.utils import timezone

from controlplane.monitoring.live import Subscription, Ticker
from controlplane.monitoring.models import GaugeSample
from controlplane.monitoring.sample_tasks import gauge_samples_take_task
from controlplane.monitoring.samples import KEEP, gauge_samples_take
from controlplane.schedules import SCHEDULES, schedules_ensure
from pipelines.models import Item
from tests.conftest import login
from tests.factories import ItemFactory


def _items(pipeline, status, n: int) -> None:
    for _ in range(n):
        ItemFactory(pipeline=pipeline, status=status)


def _sample(pipeline, at, **values) -> GaugeSample:
    return GaugeSample.objects.create(
        pipeline=pipeline, at=at.replace(second=0, microsecond=0), **values
    )


def _figure(response, name: str) -> dict:
    [chart] = [c for c in response.context["charts"] if c["name"] == name]
    return chart["figure"]


def _trace(figure: dict, name: str) -> list:
    [trace] = [t for t in figure["data"] if t["name"] == name]
    return list(zip(trace["x"], trace["y"], strict=True))


# --- Taking samples ---------------------------------------------------------------------------


def test_a_sample_is_one_row_per_pipeline_and_minute_and_the_later_one_wins(world):
    acme, globex = world["acme_item"].pipeline, world["globex_item"].pipeline
    _items(acme, Item.Status.IN_REVIEW, 2)
    _items(globex, Item.Status.RUNNING, 3)
    now = timezone.now().replace(second=10)
    assert gauge_samples_take(now=now) == {"sampled": 2, "pruned": 0}
    _items(acme, Item.Status.QUEUED, 4)
    gauge_samples_take(now=now + timedelta(seconds=30))

    rows = {s.pipeline_id: s for s in GaugeSample.objects.all()}
    assert set(rows) == {acme.pk, globex.pk}
    assert all(s.at == now.replace(second=0, microsecond=0) for s in rows.values())
    # The factories' first item of each pipeline is queued.
    assert (rows[acme.pk].queued, rows[acme.pk].in_review) == (5, 2)
    assert (rows[globex.pk].queued, rows[globex.pk].running) == (1, 3)

    gauge_samples_take(now=now + timedelta(minutes=1))
    assert GaugeSample.objects.filter(pipeline=acme).count() == 2


def test_a_sample_keeps_how_long_the_oldest_queued_item_has_waited(world):
    acme, globex = world["acme_item"].pipeline, world["globex_item"].pipeline
    Item.objects.filter(pipeline=globex).update(status=Item.Status.DELIVERED)
    Item.objects.filter(pipeline=acme).update(created_at=timezone.now() - timedelta(minutes=5))
    gauge_samples_take()
    assert 295 <= GaugeSample.objects.get(pipeline=acme).oldest_queued_seconds <= 310
    assert GaugeSample.objects.get(pipeline=globex).oldest_queued_seconds is None


def test_samples_older_than_eight_days_are_dropped_when_the_next_is_taken(world):
    acme = world["acme_item"].pipeline
    now = timezone.now()
    _sample(acme, now - KEEP - timedelta(minutes=1), queued=9)
    kept = _sample(acme, now - KEEP + timedelta(minutes=5), queued=8)
    assert timedelta(days=8) == KEEP
    assert gauge_samples_take(now=now)["pruned"] == 1
    assert kept.pk in set(GaugeSample.objects.values_list("pk", flat=True))
    assert GaugeSample.objects.filter(pipeline=acme).count() == 2


def test_the_schedule_samples_every_minute(world):
    [recurring] = [r for r in SCHEDULES if r.name == "sluice.gauge_samples"]
    assert recurring.minutes == 1
    assert recurring.func == "controlplane.monitoring.sample_tasks.gauge_samples_take_task"
    schedules_ensure()
    from django_q.models import Schedule

    assert Schedule.objects.get(name="sluice.gauge_samples").func == recurring.func
    assert gauge_samples_take_task()["sampled"] == 2
    assert gauge_samples_take_task()["sampled"] == 2
    assert GaugeSample.objects.count() == 2


# --- The charts' history ----------------------------------------------------------------------


def test_the_queue_and_backlog_charts_draw_the_samples_of_the_range_then_the_live_gauges(world):
    acme = world["acme_item"].pipeline
    _items(acme, Item.Status.IN_REVIEW, 2)
    now = timezone.now()
    long_ago, lately = now - timedelta(minutes=40), now - timedelta(minutes=5)
    _sample(acme, long_ago, queued=30, waiting_retry=2, in_review=7)
    _sample(acme, lately, queued=12, running=4, in_review=5)
    url = reverse("dashboard-pipeline", args=["acme", "triage"])

    response = login(world["operator"]).get(url + "?range=1h")
    queued = _trace(_figure(response, "queue"), "queued")
    assert [y for _, y in queued] == [30, 12, 1]  # two samples, then the live count
    assert queued[0][0] == long_ago.strftime("%Y-%m-%d %H:%M:00")
    assert [y for _, y in _trace(_figure(response, "queue"), "running")] == [0, 4, 0]
    assert [y for _, y in _trace(_figure(response, "backlog"), "in review")] == [7, 5, 2]

    short = login(world["operator"]).get(url + "?range=15m")
    assert [y for _, y in _trace(_figure(short, "queue"), "queued")] == [12, 1]


def test_the_long_ranges_draw_each_hours_peak(world):
    acme = world["acme_item"].pipeline
    hour = timezone.now().replace(minute=0, second=0, microsecond=0) - timedelta(days=2)
    for minute, queued in ((1, 10), (20, 50), (59, 5)):
        _sample(acme, hour + timedelta(minutes=minute), queued=queued, in_review=minute)
    _sample(acme, hour - timedelta(days=6), queued=99)  # before the 7 days

    response = login(world["operator"]).get(reverse("dashboard-overview") + "?range=7d")
    assert _trace(_figure(response, "queue"), "queued")[:-1] == [
        (hour.strftime("%Y-%m-%d %H:00:00"), 50)
    ]
    assert _trace(_figure(response, "backlog"), "in review")[0][1] == 59


def test_the_overview_sums_the_samples_of_the_pipelines_the_user_may_see(world):
    acme, globex = world["acme_item"].pipeline, world["globex_item"].pipeline
    at = timezone.now() - timedelta(minutes=10)
    _sample(acme, at, queued=3)
    _sample(globex, at, queued=40)
    url = reverse("dashboard-overview")
    assert _trace(_figure(login(world["operator"]).get(url), "queue"), "queued")[0][1] == 43
    assert _trace(_figure(login(world["client_a"]).get(url), "queue"), "queued")[0][1] == 3


def test_a_websocket_snapshot_carries_the_same_history(world):
    acme = world["acme_item"].pipeline
    _sample(acme, timezone.now() - timedelta(minutes=3), queued=21, in_review=6)
    snapshot = json.loads(
        Ticker().snapshot(
            Subscription((acme.pk,), "15m", single=True, operations=False), timezone.now()
        )
    )
    [queued, *_] = snapshot["charts"]["queue"]["data"]
    assert queued["y"] == [21, 1]
    assert snapshot["charts"]["backlog"]["data"][0]["y"] == [6, 0]
