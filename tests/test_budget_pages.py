"""Budgets on the pages: operators set a client's monthly budget; the pipeline page shows what
was spent against each budget, to the operator and to the client, never to another client."""

from __future__ import annotations

from decimal import Decimal

from django.urls import reverse
from django.utils import timezone

from controlplane.models import AuditEntry, Client
from pipelines.services.rollups import rollups_add
from tests.conftest import login


def test_an_operator_sets_a_clients_monthly_budget_and_ingest_limit(operator, acme):
    url = reverse("client-keys", args=["acme"])
    response = login(operator).post(
        url, {"monthly_budget": "250.00", "ingest_limit_per_minute": "1200"}
    )
    assert response.status_code == 302
    acme.refresh_from_db()
    assert acme.monthly_budget == Decimal("250.00") and acme.ingest_limit_per_minute == 1200
    entry = AuditEntry.objects.get(action="client.limits")
    assert entry.after["monthly_budget"] == "250.00"
    # Empty means no limit.
    login(operator).post(url, {"monthly_budget": "", "ingest_limit_per_minute": "1200"})
    assert Client.objects.get(pk=acme.pk).monthly_budget is None


def test_bad_limits_are_refused_with_the_field(operator, acme):
    url = reverse("client-keys", args=["acme"])
    response = login(operator).post(url, {"monthly_budget": "-5", "ingest_limit_per_minute": "0"})
    assert response.status_code == 422
    html = response.content.decode()
    assert "monthly budget" in html and "ingest limit per minute" in html
    acme.refresh_from_db()
    assert acme.monthly_budget is None and acme.ingest_limit_per_minute == 60_000


def test_others_cannot_set_a_budget(reviewer, client_a, acme):
    url = reverse("client-keys", args=["acme"])
    for user in (reviewer, client_a):
        response = login(user).post(url, {"monthly_budget": "1", "ingest_limit_per_minute": "1"})
        assert response.status_code == 403
    acme.refresh_from_db()
    assert acme.monthly_budget is None


def test_the_pipeline_page_shows_spend_against_its_budgets(
    operator, client_a, client_b, acme, acme_pipeline
):
    acme_pipeline.daily_budget = Decimal("10.00")
    acme_pipeline.save()
    acme.monthly_budget = Decimal("100.00")
    acme.save()
    rollups_add({acme_pipeline.pk: {"cost": Decimal("9.00")}}, at=timezone.now())
    url = reverse("pipeline-detail", args=["acme", "triage"])
    for user in (operator, client_a):
        html = login(user).get(url).content.decode()
        assert 'data-testid="budgets"' in html
        assert "9.00 of 10.00 spent today (90%)" in html
        assert "Over 80% spent." in html
        assert "9.00 of 100.00 spent this month (9%)" in html
    assert login(client_b).get(url).status_code == 404


def test_a_pipeline_without_budgets_shows_none(operator, acme_pipeline):
    html = login(operator).get(reverse("pipeline-detail", args=["acme", "triage"])).content
    assert b'data-testid="budgets"' not in html
