"""Clients of one customer never see another's data; reviewers see only their clients."""

from __future__ import annotations

from django.urls import reverse

from tests.conftest import login
from tests.factories import ItemFactory


def test_a_client_lists_only_its_own_pipelines(world):
    html = login(world["client_a"]).get(reverse("pipeline-list")).content.decode()
    assert "Ticket triage" in html
    assert "Contract review" not in html


def test_an_operator_lists_every_clients_pipelines(world):
    html = login(world["operator"]).get(reverse("pipeline-list")).content.decode()
    assert "Ticket triage" in html
    assert "Contract review" in html


def test_a_client_gets_404_for_another_clients_pipeline_and_item(world):
    http = login(world["client_b"])
    assert http.get(reverse("pipeline-detail", args=["acme", "triage"])).status_code == 404
    assert http.get(reverse("item-detail", args=[world["acme_item"].pk])).status_code == 404
    # Same slug under their own client is theirs; another client's slug is not reachable.
    assert http.get(reverse("pipeline-detail", args=["globex", "triage"])).status_code == 404


def test_the_item_page_shows_the_ledger(world):
    html = (
        login(world["client_a"])
        .get(reverse("item-detail", args=[world["acme_item"].pk]))
        .content.decode()
    )
    assert "acme-1" in html
    assert 'data-testid="ledger"' in html


def test_a_reviewer_sees_only_their_queues_tasks_in_review(world, acme_pipeline, globex_pipeline):
    from tests.reviewing import classify_step, hold, join

    globex_step = classify_step(globex_pipeline, world["operator"], slug="clause", name="Clause")
    join(world["acme_step"], world["reviewer"])
    mine = ItemFactory(pipeline=acme_pipeline)
    theirs = ItemFactory(pipeline=globex_pipeline)
    hold(mine, world["acme_step"])
    hold(theirs, globex_step)
    html = login(world["reviewer"]).get(reverse("review-queue")).content.decode()
    assert f"#{mine.pk}<" in html
    assert f"#{theirs.pk}<" not in html
    html = login(world["operator"]).get(reverse("review-queue")).content.decode()
    assert f"#{mine.pk}<" in html and f"#{theirs.pk}<" in html


def test_pipeline_items_page_by_keyset_and_filter_by_status(world, acme_pipeline):
    ItemFactory.create_batch(60, pipeline=acme_pipeline)
    http = login(world["client_a"])
    url = reverse("pipeline-detail", args=["acme", "triage"])
    first = http.get(url).context
    assert len(first["items"]) == 50
    before = first["next_before"]
    assert before is not None
    rest = http.get(url, {"before": before}, headers={"HX-Request": "true"})
    assert rest.status_code == 200
    assert len(rest.context["items"]) == 11
    assert "<html" not in rest.content.decode()
    queued = http.get(url, {"status": "in_review"}).context["items"]
    assert queued == []


def test_clients_see_what_happened_but_not_provider_errors_or_hosts(world):
    item = world["acme_item"]
    item.status, item.error_class = "waiting_retry", "transient"
    item.error_message = "Could not reach http://10.0.0.5/v1: connection refused"
    item.save()
    item.ledger.create(
        actor="worker:host-7:4242",
        from_status="running",
        to_status="waiting_retry",
        detail={"error": item.error_message},
    )
    client_html = (
        login(world["client_a"]).get(reverse("item-detail", args=[item.pk])).content.decode()
    )
    assert "10.0.0.5" not in client_html and "host-7" not in client_html
    assert "retried automatically" in client_html
    operator_html = (
        login(world["operator"]).get(reverse("item-detail", args=[item.pk])).content.decode()
    )
    assert "10.0.0.5" in operator_html and "host-7" in operator_html
