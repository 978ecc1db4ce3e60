"""Dead letters: listed with their reason, tried without writing, re-driven on purpose."""

from __future__ import annotations

from django.urls import reverse
from django.utils import timezone

from controlplane.models import AuditEntry
from pipelines.models import Item
from pipelines.services import configuration as config
from pipelines.services.engine import MAX_ATTEMPTS, engine_run_batch
from tests.conftest import login
from tests.test_engine import simulated_route, submit


def dead_letter(step, operator, n=2):
    simulated_route(step, operator, failure_rates={"transient": 1.0})
    items = submit(step.pipeline, *[f"text {i}" for i in range(n)])
    for _ in range(MAX_ATTEMPTS):
        engine_run_batch(worker="w")
        Item.objects.filter(status="waiting_retry").update(next_attempt_at=timezone.now())
    assert set(Item.objects.values_list("status", flat=True)) == {"dead_lettered"}
    return items


def test_dead_letters_are_listed_with_their_error(operator, acme_step):
    items = dead_letter(acme_step, operator)
    html = login(operator).get(reverse("dead-letter-list")).content.decode()
    for item in items:
        assert f"#{item.pk}<" in html
    assert "transient" in html


def test_a_dry_run_shows_what_would_happen_and_writes_nothing(operator, acme_step):
    [item, _] = dead_letter(acme_step, operator)
    healthy = simulated_route(acme_step, operator)
    config.step_update(step=acme_step, actor=operator, confidence_threshold="0")
    del healthy
    events = item.ledger.count()
    response = login(operator).post(
        reverse("dead-letter-list"), {"ids": [item.pk], "action": "dry-run"}
    )
    assert response.status_code == 200
    assert "would be accepted" in response.content.decode()
    item.refresh_from_db()
    assert item.status == "dead_lettered" and item.ledger.count() == events


def test_re_drive_queues_them_with_fresh_attempts_and_an_audit_entry(operator, acme_step):
    items = dead_letter(acme_step, operator)
    simulated_route(acme_step, operator)
    config.step_update(step=acme_step, actor=operator, confidence_threshold="0")
    response = login(operator).post(
        reverse("dead-letter-list"), {"ids": [i.pk for i in items], "action": "redrive"}
    )
    assert response.status_code == 302
    for item in items:
        item.refresh_from_db()
        assert (item.status, item.attempts, item.error_class) == ("queued", 0, "")
        assert item.ledger.order_by("id").last().actor == f"user:{operator.username}"
    assert AuditEntry.objects.get(action="items.redrive").after["items"] == 2
    engine_run_batch(worker="w")
    assert set(Item.objects.values_list("status", flat=True)) == {"accepted"}


def test_only_dead_letters_and_rejections_can_be_re_driven(operator, acme_step, acme_item):
    response = login(operator).post(
        reverse("dead-letter-list"), {"ids": [acme_item.pk], "action": "redrive"}
    )
    assert response.status_code == 302
    acme_item.refresh_from_db()
    assert acme_item.status == "queued"
    assert not AuditEntry.objects.filter(action="items.redrive").exists()
