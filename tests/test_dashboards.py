"""Dashboard pages and the charts and tiles they are built from."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.urls import reverse
from django.utils import timezone

from controlplane.monitoring.figures import (
    BudgetBar,
    Sample,
    budget_figure,
    charts_build,
    error_rate_figure,
    latency_figure,
    step_rows,
    step_throughput_figure,
    throughput_figure,
    tiles_build,
    traces_of,
    x_of,
)
from pipelines.histogram import bucket_counts
from pipelines.metrics import GAUGE_CAP, Point
from pipelines.models import Provider
from pipelines.services.rollups import (
    latencies_add,
    rollups_add,
    step_latencies_add,
    step_rollups_add,
)
from tests.conftest import login

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _point(minute: int, **counts) -> Point:
    return Point(at=T0 + timedelta(minutes=minute), counts=counts)


# --- figures (pure) ---------------------------------------------------------------------------


def test_throughput_has_one_trace_per_outcome_and_counts_quarantined_as_failed():
    points = [
        _point(0, ingested=5, accepted=3, held_for_review=1),
        _point(1, failed_transient=2, quarantined=1),
    ]
    figure = throughput_figure(points, resolution="minute")
    by_name = {t["name"]: t["y"] for t in figure["data"]}
    assert by_name == {
        "ingested": [5, 0],
        "accepted": [3, 0],
        "to review": [1, 0],
        "failed": [0, 3],
    }
    assert figure["data"][0]["x"] == ["2026-03-02 09:00:00", "2026-03-02 09:01:00"]
    assert figure["layout"]["yaxis"]["title"]["text"] == "items per minute"


def test_latency_shows_percentiles_from_buckets_with_gaps_and_the_sla_line():
    busy = _point(0)
    busy.latency["end_to_end"] = bucket_counts([0.2] * 90 + [40.0] * 10)
    figure = latency_figure([busy, _point(1)], sla_seconds=30)
    p50, p95, p99 = (t["y"] for t in figure["data"])
    assert p50[0] < 1 and p95[0] > 30 and p99[0] >= p95[0]
    assert p50[1] is None  # nothing finished: a gap, not a zero
    [sla] = figure["layout"]["shapes"]
    assert sla["y0"] == sla["y1"] == 30
    assert "shapes" not in latency_figure([busy], sla_seconds=None)["layout"]


def test_latency_is_drawn_on_a_log_axis_labelled_in_durations():
    fast, slow = _point(0), _point(1)
    fast.latency["end_to_end"] = bucket_counts([0.0001] * 10)
    slow.latency["end_to_end"] = bucket_counts([400.0] * 10)
    figure = latency_figure([fast, slow], sla_seconds=120)
    yaxis = figure["layout"]["yaxis"]
    assert yaxis["type"] == "log" and "rangemode" not in yaxis
    ticks = dict(zip(yaxis["tickvals"], yaxis["ticktext"], strict=True))
    assert ticks[0.01] == "10 ms" and ticks[1] == "1 s" and ticks[60] == "1 min"
    p50 = figure["data"][0]["y"]
    # Milliseconds and minutes on one axis; never a 0, which a log axis cannot draw.
    assert 0.001 <= p50[0] <= 0.01 and 300 <= p50[1] <= 600
    # The SLA line is in seconds on the same axis.
    [sla] = figure["layout"]["shapes"]
    assert (sla["yref"], sla["y0"]) == ("y", 120)


def test_error_rate_is_the_share_of_attempts_by_class():
    figure = error_rate_figure([_point(0, started=10, failed_transient=2, failed_system=1)])
    rates = {t["name"]: t["y"][0] for t in figure["data"]}
    assert rates["transient"] == 0.2 and rates["system"] == 0.1 and rates["input"] == 0
    assert error_rate_figure([_point(0)])["data"][0]["y"] == [0.0]


def test_budget_bars_show_spend_as_a_share_and_warn_by_colour():
    figure = budget_figure(
        [
            BudgetBar("Triage · today", Decimal("2"), Decimal("10")),
            BudgetBar("Acme · this month", Decimal("9"), Decimal("10")),
            BudgetBar("Other · today", Decimal("12"), Decimal("10")),
        ]
    )
    [bars] = figure["data"]
    assert bars["x"] == [20.0, 90.0, 120.0]
    assert bars["text"][0] == "$2.00 of $10.00"
    assert bars["marker"]["color"] == ["#16a34a", "#d97706", "#dc2626"]
    assert budget_figure([])["layout"]["annotations"][0]["text"] == "No budget set"


def test_every_chart_is_built_and_serialises_to_json():
    charts = charts_build(
        points=[_point(0, accepted=1, cost=Decimal("0.002"))],
        samples=[Sample(T0, {"queued": 4, "in_review": 2})],
        budgets=[],
        resolution="minute",
        sla_seconds=60,
    )
    assert set(charts) == {"throughput", "latency", "queue", "errors", "cost", "budget", "backlog"}
    json.dumps(charts)
    assert charts["queue"]["data"][0]["y"] == [4]
    assert charts["backlog"]["data"][0]["y"] == [2]
    assert charts["cost"]["data"][0]["y"] == [0.002]
    assert traces_of(charts["throughput"])[1] == {"x": ["2026-03-02 09:00:00"], "y": [1]}


def test_tiles_read_the_recent_minutes_and_mark_a_capped_queue():
    recent = _point(0, accepted=8, held_for_review=2, started=20, failed_transient=1)
    recent.latency["end_to_end"] = bucket_counts([0.3] * 100)
    tiles = tiles_build(
        recent=recent,
        minutes=5,
        gauges={"queued": GAUGE_CAP, "waiting_retry": 3},
        cost_today=Decimal("0.0123"),
        saved_today=Decimal("12.5"),
    )
    assert tiles == {
        "items_per_minute": "2.0",
        "p95": tiles["p95"],
        "queue_depth": f"{GAUGE_CAP + 3:,}+",
        "error_rate": "5.0%",
        "cost_today": "$0.0123",
        "cache_savings": "$12.50",
    }
    assert tiles["p95"].endswith("ms")
    assert tiles_build(
        recent=_point(0), minutes=5, gauges={}, cost_today=Decimal(0), saved_today=Decimal(0)
    )["p95"] == ("—")


def test_step_rows_show_outcomes_cost_per_item_and_call_latency():
    busy = Point(
        at=T0,
        counts={
            "started": 1200,
            "accepted": 900,
            "held": 200,
            "failed": 100,
            "approved": 150,
            "edited": 30,
            "rejected": 20,
            "cost": Decimal("0.6"),
        },
        latency={"processing": bucket_counts([0.2] * 90 + [4.0] * 10)},
    )
    rows = step_rows([(1, "Topic"), (2, "Reply")], {1: busy})
    topic, reply = rows
    assert {k: topic[k] for k in ("step", "started", "accepted", "held", "failed")} == {
        "step": "Topic",
        "started": "1,200",
        "accepted": "900",
        "held": "200",
        "failed": "100",
    }
    assert (topic["approved"], topic["edited"], topic["rejected"]) == ("150", "30", "20")
    # $0.60 over the 1,200 attempts that finished: half a tenth of a cent each.
    assert (topic["cost"], topic["cost_per_item"]) == ("$0.6000", "$0.000500")
    assert topic["p50"].endswith(" ms") and topic["p95"].endswith(" s")
    # A step without work in the range: zeros and dashes, never a division by zero.
    assert reply["started"] == "0" and reply["cost_per_item"] == "—" and reply["p95"] == "—"


def test_throughput_per_step_stacks_each_steps_outcomes():
    figure = step_throughput_figure(
        [(1, "Topic"), (2, "Reply")],
        {2: Point(at=T0, counts={"accepted": 4, "held": 2, "failed": 1})},
    )
    assert [t["name"] for t in figure["data"]] == ["accepted", "to review", "failed"]
    assert [t["x"] for t in figure["data"]] == [[0, 4], [0, 2], [0, 1]]
    assert figure["data"][0]["y"] == ["Topic", "Reply"]
    assert figure["layout"]["barmode"] == "stack"
    json.dumps(figure)


def test_x_values_are_utc_text():
    assert x_of(datetime(2026, 3, 2, 10, 30, 5, tzinfo=UTC)) == "2026-03-02 10:30:05"


# --- pages ------------------------------------------------------------------------------------


def _figure(response, name: str) -> dict:
    return response.context["charts"][[c["name"] for c in response.context["charts"]].index(name)][
        "figure"
    ]


def test_the_pipeline_dashboard_draws_the_rollups_of_the_range(world, operator):
    pipeline = world["acme_item"].pipeline
    now = timezone.now()
    rollups_add({pipeline.pk: {"ingested": 7, "accepted": 5, "cost": Decimal("0.5")}}, at=now)
    latencies_add({(pipeline.pk, "end_to_end"): [0.4, 0.5]}, at=now)
    response = login(operator).get(reverse("dashboard-pipeline", args=["acme", "triage"]))
    assert response.status_code == 200
    throughput = _figure(response, "throughput")
    assert len(throughput["data"][0]["x"]) == 60  # 1 hour by minute, no gaps
    assert throughput["data"][0]["y"][-1] == 7
    assert _figure(response, "latency")["layout"]["shapes"][0]["y0"] == (
        pipeline.latency_target_seconds
    )
    content = response.content.decode()
    assert 'id="chart-throughput" type="application/json"' in content
    assert 'data-pipeline="acme/triage"' in content
    assert 'data-tile="items_per_minute"' in content
    assert "<script>" not in content  # CSP: figures are data, drawn by static JS


def test_the_range_selector_reads_hours_for_long_ranges(world, operator):
    response = login(operator).get(reverse("dashboard-overview") + "?range=7d")
    assert response.context["range_name"] == "7d"
    assert 168 <= len(_figure(response, "throughput")["data"][0]["x"]) <= 169
    assert "items per hour" in json.dumps(_figure(response, "throughput")["layout"])
    fallback = login(operator).get(reverse("dashboard-overview") + "?range=forever")
    assert fallback.context["range_name"] == "1h"


def test_the_overview_sums_only_the_pipelines_a_client_may_see(world):
    acme, globex = world["acme_item"].pipeline, world["globex_item"].pipeline
    now = timezone.now()
    rollups_add({acme.pk: {"ingested": 2}, globex.pk: {"ingested": 40}}, at=now)
    response = login(world["client_a"]).get(reverse("dashboard-overview"))
    assert response.status_code == 200
    assert _figure(response, "throughput")["data"][0]["y"][-1] == 2
    assert [p.slug for p in response.context["pipelines"]] == ["triage"]
    assert b"Contract review" not in response.content
    operator_view = login(world["operator"]).get(reverse("dashboard-overview"))
    assert _figure(operator_view, "throughput")["data"][0]["y"][-1] == 42


def test_operators_see_breakers_and_workers_and_clients_do_not(world):
    Provider.objects.filter(pk=world["provider"].pk).update(name="Secret Vendor")
    from controlplane.models import WorkerHeartbeat

    WorkerHeartbeat.objects.create(
        host="worker-host-7", cluster="c1", pid=42, last_seen=timezone.now()
    )
    url = reverse("dashboard-pipeline", args=["acme", "triage"])
    operator_page = login(world["operator"]).get(url).content.decode()
    assert "Secret Vendor" in operator_page and "worker-host-7" in operator_page
    client_page = login(world["client_a"]).get(url).content.decode()
    assert "Secret Vendor" not in client_page and "worker-host-7" not in client_page
    assert 'data-testid="breakers"' not in client_page


def test_a_client_cannot_open_another_clients_pipeline_dashboard(world):
    url = reverse("dashboard-pipeline", args=["acme", "triage"])
    assert login(world["client_b"]).get(url).status_code == 404
    assert login(world["reviewer"]).get(url).status_code == 403
    assert login(world["no_role"]).get(reverse("dashboard-overview")).status_code == 403


def test_spend_against_budget_is_drawn_from_the_budgets(world, operator):
    pipeline = world["acme_item"].pipeline
    pipeline.daily_budget = Decimal("4")
    pipeline.save(update_fields=["daily_budget"])
    rollups_add({pipeline.pk: {"cost": Decimal("3")}}, at=timezone.now())
    response = login(operator).get(reverse("dashboard-pipeline", args=["acme", "triage"]))
    [bars] = _figure(response, "budget")["data"]
    assert bars["x"] == [75.0] and bars["y"] == ["Ticket triage · today"]
    tiles = {t["name"]: t["value"] for t in response.context["tiles"]}
    assert tiles["cost_today"] == "$3.00"


def test_the_navigation_links_operators_and_clients_to_the_dashboards(world):
    for persona in ("operator", "client_a"):
        response = login(world[persona]).get(reverse("pipeline-list"))
        assert f'href="{reverse("dashboard-overview")}"' in response.content.decode()
    response = login(world["reviewer"]).get(reverse("review-queue"))
    assert f'href="{reverse("dashboard-overview")}"' not in response.content.decode()


def test_the_seven_day_overview_reads_only_the_latency_it_draws(world, operator):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from pipelines.models import LatencyRollup

    pipeline = world["acme_item"].pipeline
    now = timezone.now()
    latencies_add(
        {(pipeline.pk, measure): [0.5] for measure in LatencyRollup.Measure.values},
        at=now - timedelta(hours=30),
    )
    http = login(operator)
    with CaptureQueriesContext(connection) as queries:
        response = http.get(reverse("dashboard-overview") + "?range=7d")
    table = LatencyRollup._meta.db_table
    latency_queries = [q["sql"] for q in queries if table in q["sql"]]
    assert latency_queries
    assert all("end_to_end" in sql and "queue_wait" not in sql for sql in latency_queries)
    p50 = [y for y in _figure(response, "latency")["data"][0]["y"] if y is not None]
    assert p50 and 0.25 <= p50[0] <= 0.5


def _step_table(response) -> dict[str, dict[str, str]]:
    keys = [key for key, _ in response.context["step_columns"]]
    return {row[0]: dict(zip(keys, row, strict=True)) for row in response.context["step_rows"]}


def test_the_pipeline_dashboard_shows_each_step_over_the_range(world, operator):
    step = world["acme_step"]
    pid = step.pipeline_id
    now = timezone.now()
    step_rollups_add(
        {(pid, step.pk, 1): {"started": 5, "accepted": 3, "held": 2, "cost": Decimal("0.05")}},
        at=now,
    )
    step_rollups_add({(pid, step.pk, 2): {"approved": 1, "edited": 1}}, at=now)
    step_rollups_add({(pid, step.pk, 1): {"started": 7, "failed": 7}}, at=now - timedelta(hours=3))
    step_latencies_add({(step.pk, 1): [0.4] * 5}, at=now)
    url = reverse("dashboard-pipeline", args=["acme", "triage"])

    hour = login(operator).get(url + "?range=1h")
    topic = _step_table(hour)["Topic"]
    assert (topic["started"], topic["accepted"], topic["held"], topic["failed"]) == (
        "5",
        "3",
        "2",
        "0",
    )
    assert (topic["approved"], topic["edited"], topic["rejected"]) == ("1", "1", "0")
    assert topic["cost"] == "$0.0500" and topic["cost_per_item"] == "$0.0100"
    assert topic["p50"].endswith("ms") and topic["p95"] != "—"
    content = hour.content.decode()
    assert 'data-rows="steps"' in content and 'id="chart-steps"' in content
    [accepted, *_] = _figure_by_id(content, "chart-steps")["data"]
    assert accepted["y"] == ["Topic"] and accepted["x"] == [3]

    day = _step_table(login(operator).get(url + "?range=24h"))["Topic"]
    assert (day["started"], day["failed"]) == ("12", "7")


def _figure_by_id(content: str, element_id: str) -> dict:
    start = content.index(f'id="{element_id}" type="application/json">') + len(
        f'id="{element_id}" type="application/json">'
    )
    return json.loads(content[start : content.index("</script>", start)])


def test_the_overview_has_no_step_table(world, operator):
    response = login(operator).get(reverse("dashboard-overview"))
    assert "step_rows" not in response.context
    assert 'data-rows="steps"' not in response.content.decode()


def globex_step(world):
    """A step of client B's pipeline, beside client A's `acme_step`."""
    from pipelines.services.configuration import step_create

    return step_create(
        pipeline=world["globex_item"].pipeline,
        name="Clause check",
        slug="clause",
        kind="classify",
        labels=["ok", "risky"],
        template="{{ text }}",
        actor=world["operator"],
    )


def test_a_client_sees_the_steps_of_its_own_pipelines_only(world):
    acme_step, clause = world["acme_step"], globex_step(world)
    globex = clause.pipeline
    now = timezone.now()
    step_rollups_add(
        {
            (acme_step.pipeline_id, acme_step.pk, 1): {"started": 31, "accepted": 31},
            (globex.pk, clause.pk, 1): {"started": 4, "accepted": 4},
        },
        at=now,
    )
    own = login(world["client_b"]).get(reverse("dashboard-pipeline", args=["globex", "contracts"]))
    assert list(_step_table(own)) == ["Clause check"]
    assert _step_table(own)["Clause check"]["started"] == "4"
    assert "Topic" not in own.content.decode()
    other = reverse("dashboard-pipeline", args=["acme", "triage"])
    assert login(world["client_b"]).get(other).status_code == 404
    mine = login(world["client_a"]).get(other)
    assert list(_step_table(mine)) == ["Topic"] and _step_table(mine)["Topic"]["started"] == "31"
