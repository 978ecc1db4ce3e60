"""The claim-next benchmark, in small: its fixture and its reviewers run on the test database,
so the code behind docs/benchmarks.md keeps working."""

from __future__ import annotations

import pytest

from bench import review_claims
from review.models import ReviewTask


@pytest.mark.django_db(transaction=True)
def test_the_fixture_and_two_reviewers_claim_and_decide_distinct_tasks():
    fixture = review_claims.fixture_create(tasks=200, reviewers=2, queues=2, chunk=64)
    assert ReviewTask.objects.filter(status="open").count() == 200
    assert ReviewTask.objects.values("queue").distinct().count() == 2
    figures = review_claims.reviewers_run(
        fixture.reviewer_ids, seconds=60, max_claims=5, pause=0.001, processes=False
    )
    assert (figures["reviewers"], figures["claims"], figures["ran_dry"]) == (2, 10, 0)
    assert figures["claims_per_second"] > 0 and figures["load_before"] >= 0
    assert (
        0 < figures["claim_ms"]["p50"] <= figures["claim_ms"]["p95"] <= figures["claim_ms"]["max"]
    )
    decided = ReviewTask.objects.filter(status="decided")
    assert decided.count() == 10
    assert sorted(decided.values_list("decided_by", flat=True)) == sorted(fixture.reviewer_ids * 5)
    # Claimed in priority order: nothing still open outranks a decided task.
    lowest_decided = min(decided.values_list("priority", flat=True))
    assert not ReviewTask.objects.filter(status="open", priority__gt=lowest_decided).exists()


def test_the_report_names_the_command_and_the_target():
    run = {
        "reviewers": 8,
        "claims": 800,
        "seconds": 20.0,
        "claims_per_second": 40.0,
        "claim_ms": {"p50": 5.0, "p95": 12.5, "p99": 20.0, "max": 31.0},
        "decide_ms": {"p50": 9.0, "p95": 18.0, "p99": 25.0, "max": 40.0},
        "ran_dry": 0,
    }
    result = {
        "tasks": 100_000,
        "queues": 4,
        "seconds": 20.0,
        "max_claims": 5000,
        "setup_seconds": 30.0,
        "overdue": 50_000,
        "pause": 0.25,
        "single": {**run, "reviewers": 1},
        "many": run,
        "paced": {**run, "claim_ms": {**run["claim_ms"], "p95": 60.0}},
        "open_after": 99_000,
    }
    markdown = review_claims.render(result, "python -m bench.review_claims")
    assert "`python -m bench.review_claims`" in markdown
    assert (
        "| 1, back to back (baseline) | 800 in 20.0 s | 40.0 | 5.0 / 12.5 / 20.0 / 31.0 ms |"
        in markdown
    )
    assert "8, back to back: **met** (12.5 ms)" in markdown
    assert "8, 0.25 s between tasks: **missed** (60.0 ms)" in markdown


def test_it_refuses_to_run_without_postgresql(monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setattr("sys.argv", ["review_claims"])
    with pytest.raises(SystemExit, match="needs PostgreSQL"):
        review_claims.main()
