"""The dashboard benchmark, in small: its loader, its page timings and its ticker measurement run
on the test database, so the code behind docs/benchmarks.md keeps working."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from bench import dashboard
from controlplane.monitoring.models import GaugeSample
from pipelines.models import Item, LatencyRollup, Rollup


@pytest.mark.django_db(transaction=True)
def test_the_loader_the_pages_and_the_ticker_run_at_a_tiny_size():
    if connection.vendor != "postgresql":
        pytest.skip("the loader writes inside PostgreSQL (generate_series), which SQLite lacks")
    fixture = dashboard.fixture_create(
        items=2000, clients=2, pipelines_per_client=2, days=1, chunk=700
    )
    dashboard.tables_analyze()
    assert fixture.items == Item.objects.count() == 2000
    statuses = set(Item.objects.values_list("status", flat=True).distinct())
    assert {"delivered", "queued", "in_review"} <= statuses
    # The live items are the newest ones.
    newest_queued = Item.objects.filter(status="queued").order_by("id").first()
    assert not Item.objects.filter(pk__gt=newest_queued.pk, status="delivered").exists()
    assert fixture.rollups == Rollup.objects.count() == 4 * 1440
    assert fixture.latency_rows == LatencyRollup.objects.count() > fixture.rollups
    assert fixture.samples == GaugeSample.objects.count() == 4 * 1440
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'pipelines_item'")
        indexes = {row[0] for row in cursor.fetchall()}
    assert {"item_claim_order", "item_pipeline_status_id", "item_external_id_unique"} <= indexes

    pages = dashboard.pages_measure(fixture, requests=1)
    assert [(row["page"].split()[0], row["range"]) for row in pages] == [
        (page, r) for page in ("overview", "one") for r in ("15m", "1h", "24h", "7d")
    ]
    assert all(row["queries"] > 0 and row["ms"]["p50"] > 0 for row in pages)

    # On a thread of its own: a browser test earlier in the session leaves an event loop in
    # this one, and the measure drives websockets from sync code.
    with ThreadPoolExecutor(max_workers=1) as pool:
        one_pipeline, one, many, mixed = pool.submit(
            dashboard.ticker_measure, fixture, seconds=2.5, viewers=6
        ).result()
    assert (one["viewers"], many["viewers"], mixed["viewers"]) == (1, 6, 6)
    assert mixed["subscriptions"] == 6
    assert all(row["ticks"] >= 1 for row in (one_pipeline, one, many, mixed))
    # The point of the ticker: viewers do not multiply queries (a tick once all are watching).
    steady = [row["read_queries"][-1] for row in (one_pipeline, one, many, mixed)]
    # An overview reads more pipelines than one dashboard, in no more statements per tick; six
    # viewers cost what one does; watching single pipelines too adds only their step table's
    # two reads.
    assert steady[0] <= steady[1] == steady[2]
    assert steady[2] <= steady[3] <= steady[2] + 2

    markdown = dashboard.render(
        {
            "fixture": {
                "items": fixture.items,
                "pipelines": 4,
                "clients": 2,
                "rollups": fixture.rollups,
                "latency_rows": fixture.latency_rows,
                "samples": fixture.samples,
                "seconds": fixture.seconds,
                "vacuum_seconds": 0.0,
                "size": dashboard.database_size(),
            },
            "pages": pages,
            "ticker": [one_pipeline, one, many, mixed],
            "when": "2026-01-05 10:00",
        },
        "python -m bench.dashboard --items 2000",
    )
    assert "`python -m bench.dashboard --items 2000`" in markdown
    assert "| overview | 7d |" in markdown
    assert "(the same)" in markdown


def test_it_refuses_to_run_without_postgresql(monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setattr("sys.argv", ["dashboard"])
    with pytest.raises(SystemExit, match="needs PostgreSQL"):
        dashboard.main()
