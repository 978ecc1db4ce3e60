"""Alert notifications: email through Django's mailer, a Slack-compatible webhook to a real
server on loopback, and the banner in the app; a failing channel never stops evaluation."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from controlplane.monitoring.alert_rule_services import alert_rule_update
from controlplane.monitoring.alert_services import alerts_evaluate
from controlplane.monitoring.alerts import Kind
from controlplane.monitoring.models import Alert, AlertRule
from pipelines.services.rollups import rollups_add
from tests.conftest import login
from tests.processes import free_port
from tests.test_delivery import Receiver


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


def dead_letters_rule(pipeline) -> AlertRule:
    return AlertRule.objects.get(pipeline=pipeline, kind=Kind.DEAD_LETTERS)


def incident(pipeline, *, at) -> None:
    rollups_add({pipeline.pk: {"dead_lettered": 2}}, at=at)
    alerts_evaluate(now=at)


def test_an_alert_is_emailed_once_and_again_when_it_resolves(acme_pipeline, operator):
    rule = dead_letters_rule(acme_pipeline)
    alert_rule_update(
        rule=rule,
        actor=operator,
        recipients="ops@example.com; oncall@example.com",
        notify_webhook=False,
    )
    now = timezone.now()
    incident(acme_pipeline, at=now)
    alerts_evaluate(now=now + timedelta(minutes=1))
    sent = [m for m in mail.outbox if "dead-lettered" in m.subject]
    assert len(sent) == 1
    assert sent[0].to == ["ops@example.com", "oncall@example.com"]
    assert sent[0].subject.startswith("[Sluice] Alert: Acme Corp / Ticket triage")
    alert = Alert.objects.get(rule=rule)
    assert alert.notifications == {"email": "sent to 2"}

    alerts_evaluate(now=now + timedelta(minutes=30))
    resolved = [m for m in mail.outbox if m.subject.startswith("[Sluice] Resolved")]
    assert len(resolved) == 1 and "dead-lettered" in resolved[0].subject


def test_without_recipients_the_operators_with_an_address_get_the_email(acme_pipeline, operator):
    operator.email = "olivia@example.com"
    operator.save()
    alert_rule_update(rule=dead_letters_rule(acme_pipeline), actor=operator, notify_webhook=False)
    incident(acme_pipeline, at=timezone.now())
    [sent] = [m for m in mail.outbox if "dead-lettered" in m.subject]
    assert sent.to == ["olivia@example.com"]


def test_a_webhook_gets_slack_compatible_json(acme_pipeline, operator, receiver):
    rule = dead_letters_rule(acme_pipeline)
    alert_rule_update(rule=rule, actor=operator, notify_email=False, webhook_url=receiver.url)
    incident(acme_pipeline, at=timezone.now())
    [(headers, body)] = receiver.received
    assert headers["Content-Type"] == "application/json"
    payload = json.loads(body)
    assert set(payload) == {"text"}
    assert payload["text"].startswith("Alert: Acme Corp / Ticket triage: 2 items dead-lettered")
    assert Alert.objects.get(rule=rule).notifications == {"webhook": "sent (200)"}


def test_rules_without_a_url_use_the_installation_webhook(acme_pipeline, receiver, settings):
    settings.SLUICE_ALERT_WEBHOOK_URL = receiver.url
    incident(acme_pipeline, at=timezone.now())
    assert any(b"dead-lettered" in body for _, body in receiver.received)


def test_a_webhook_that_is_down_is_logged_and_evaluation_goes_on(acme_pipeline, operator, caplog):
    closed_port = free_port()
    rule = dead_letters_rule(acme_pipeline)
    alert_rule_update(
        rule=rule,
        actor=operator,
        notify_email=False,
        webhook_url=f"http://127.0.0.1:{closed_port}/hook",
    )
    incident(acme_pipeline, at=timezone.now())
    alert = Alert.objects.get(rule=rule)
    assert alert.state == Alert.State.FIRING
    assert alert.notifications["webhook"].startswith("failed:")
    assert "alert webhook" in caplog.text


def test_a_mail_server_that_is_down_is_noted_and_evaluation_goes_on(
    acme_pipeline, operator, settings
):
    settings.MAILERS = {
        "default": {
            "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {"host": "127.0.0.1", "port": 9, "timeout": 2},
        }
    }
    rule = dead_letters_rule(acme_pipeline)
    alert_rule_update(rule=rule, actor=operator, recipients="ops@example.com", notify_webhook=False)
    incident(acme_pipeline, at=timezone.now())
    alert = Alert.objects.get(rule=rule)
    assert alert.state == Alert.State.FIRING
    assert alert.notifications["email"].startswith("failed:")


def test_the_banner_shows_firing_alerts_to_operators_until_acknowledged(acme_pipeline, operator):
    incident(acme_pipeline, at=timezone.now())
    http = login(operator)
    page = http.get(reverse("pipeline-list"))
    assert b'id="alert-banner"' in page.content
    banner = http.get(reverse("alert-banner"), headers={"HX-Request": "true"})
    assert banner.status_code == 200
    assert b"items dead-lettered" in banner.content
    alert = Alert.objects.get(rule__kind=Kind.DEAD_LETTERS)
    http.post(reverse("alert-acknowledge", args=[alert.pk]))
    banner = http.get(reverse("alert-banner"), headers={"HX-Request": "true"})
    assert b"items dead-lettered" not in banner.content


def test_rules_not_shown_in_the_app_stay_off_the_banner(acme_pipeline, operator):
    alert_rule_update(rule=dead_letters_rule(acme_pipeline), actor=operator, show_in_app=False)
    incident(acme_pipeline, at=timezone.now())
    banner = login(operator).get(reverse("alert-banner"))
    assert b"items dead-lettered" not in banner.content


def test_clients_and_reviewers_get_no_banner(acme_pipeline, client_a, reviewer):
    incident(acme_pipeline, at=timezone.now())
    for user in (client_a, reviewer):
        http = login(user)
        landing = "pipeline-list" if user is client_a else "review-queue"
        assert b'id="alert-banner"' not in http.get(reverse(landing)).content
        assert http.get(reverse("alert-banner")).status_code == 403


def test_an_expired_session_polling_the_banner_reloads_the_page(db, client):
    response = client.get(reverse("alert-banner"), headers={"HX-Request": "true"})
    assert response.status_code == 204 and response["HX-Refresh"] == "true"
