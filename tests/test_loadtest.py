"""`manage.py loadtest` (bench/loadtest.py): a short run through the real API, a real worker
cluster and a real webhook receiver reports every stage; the limits keep any run bounded and on
loopback unless asked otherwise."""

from __future__ import annotations

import pytest
from django.core.cache import cache

from bench.loadtest import check_limits, drive, parser, percentile
from bench.scenario import Receiver
from bench.scenario import _pipeline as bench_pipeline
from controlplane.services import api_key_create
from pipelines.models import Item
from tests.aio import run_async
from tests.processes import WorkerCluster, embedded_env, manage


@pytest.mark.django_db(transaction=True)
def test_a_short_run_reports_every_stage_and_names_the_bottleneck(live_server):
    with Receiver() as hook:
        pipeline = bench_pipeline(name="load", latency_ms=0, webhook_url=hook.url)
        key = api_key_create(client=pipeline.client, name="loadtest", actor=None)[1]
        # One request of 120 items: one wake-up runs them all, so the run takes seconds.
        args = parser().parse_args(
            [
                *("--url", live_server.url, "--key", key, "--pipeline", pipeline.slug),
                *("--rate", "120", "--duration", "1", "--batch", "120", "--drain-timeout", "60"),
            ]
        )
        check_limits(args)
        # The database cache outlives transactional tests: an earlier test's wake-up less than a
        # second ago would silence this one's (ingest wakes the workers at most once a second).
        cache.delete_many(["engine-wake", "delivery-wake"])
        with WorkerCluster():
            report = run_async(lambda: drive(args))
    items = report["items"]
    assert items["created"] == items["settled"] == 120 and items["all_settled"], report
    assert items["by_status"] == {"delivered": 120}
    assert hook.received == 120
    stages = report["stages"]
    assert stages["ingest"]["http_statuses"] == {"202": 1}
    assert stages["ingest"]["server_errors"] == 0 and report["error_rate"] == 0
    for stage in ("queue_wait", "processing", "delivery", "end_to_end"):
        assert stages[stage]["n"] > 0 and stages[stage]["p50_ms"] is not None, stage
        assert stages[stage]["p50_ms"] <= stages[stage]["p95_ms"] <= stages[stage]["p99_ms"]
    assert float(report["cost"]["total"]) > 0
    assert report["throughput_items_per_s"] > 0
    assert report["bottleneck"].split(":")[0] in (
        "ingest",
        "workers",
        "model calls",
        "webhook delivery",
    )
    assert Item.objects.filter(status=Item.Status.DELIVERED).count() == 120


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--url", "http://10.1.2.3:8000", "--key", "k", "--pipeline", "p"], "not a loopback"),
        (["--url", "http://example.com", "--key", "k", "--pipeline", "p"], "not a loopback"),
        (["--url", "http://127.0.0.1:8000"], "needs --key and --pipeline"),
        (["--max-items", "100001"], "--max-items"),
        (["--duration", "601"], "--duration"),
        (["--batch", "1001"], "--batch"),
        (["--rate", "0"], "--rate"),
    ],
)
def test_a_run_stays_bounded_and_on_loopback_unless_asked(argv, message):
    with pytest.raises(SystemExit, match=message):
        check_limits(parser().parse_args(argv))


def test_a_remote_url_needs_to_be_asked_for():
    argv = ["--url", "http://10.1.2.3:8000", "--key", "k", "--pipeline", "p", "--allow-remote"]
    check_limits(parser().parse_args(argv))
    check_limits(
        parser().parse_args(["--url", "http://[::1]:8000", "--key", "k", "--pipeline", "p"])
    )


def test_percentiles_interpolate_between_ranks():
    assert percentile([], 50) is None
    assert percentile([3.0], 99) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile(list(range(101)), 95) == 95


def test_the_management_command_takes_the_same_options(tmp_path):
    env = embedded_env(tmp_path)
    helped = manage("loadtest", "--help", env=env)
    assert helped.returncode == 0 and "--drain-timeout" in helped.stdout
    refused = manage(
        "loadtest", "--url", "http://192.0.2.1:8000", "--key", "k", "--pipeline", "p", env=env
    )
    assert refused.returncode != 0
    assert "not a loopback address" in refused.stderr
