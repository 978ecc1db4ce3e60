"""The alert pages: history with filters, acknowledge and resolve, rules per pipeline and their
changes in the audit log. Operators only."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from controlplane.models import AuditEntry
from controlplane.monitoring.alert_services import alerts_evaluate
from controlplane.monitoring.alerts import Kind
from controlplane.monitoring.models import Alert, AlertRule
from pipelines.services.rollups import rollups_add
from tests.conftest import login


@pytest.fixture
def firing(acme_pipeline):
    rollups_add({acme_pipeline.pk: {"dead_lettered": 2}}, at=timezone.now())
    alerts_evaluate()
    return Alert.objects.get(pipeline=acme_pipeline, rule__kind=Kind.DEAD_LETTERS)


def test_the_list_shows_open_alerts_and_the_history_on_request(firing, operator):
    http = login(operator)
    Alert.objects.filter(pk=firing.pk).update(
        state=Alert.State.RESOLVED, resolved_at=timezone.now()
    )
    page = http.get(reverse("alert-list"))
    assert b"items dead-lettered" not in page.content
    page = http.get(reverse("alert-list"), {"state": "resolved"})
    assert b"items dead-lettered" in page.content and b"resolved by itself" in page.content


def test_the_list_filters_by_pipeline_and_kind(firing, globex_pipeline, operator):
    rollups_add({globex_pipeline.pk: {"dead_lettered": 1}}, at=timezone.now())
    alerts_evaluate(now=timezone.now() + timedelta(seconds=1))
    http = login(operator)
    page = http.get(reverse("alert-list"), {"pipeline": globex_pipeline.pk})
    assert b"Contract review" in page.content and b"Ticket triage: 2" not in page.content
    page = http.get(reverse("alert-list"), {"kind": Kind.QUEUE_DEPTH})
    assert b"No alerts match" in page.content
    # Nonsense filters are ignored, never a 500.
    nonsense = {"state": "x", "pipeline": "²", "kind": "y"}
    assert http.get(reverse("alert-list"), nonsense).status_code == 200


def test_an_operator_acknowledges_then_resolves_an_alert(firing, operator):
    http = login(operator)
    response = http.post(
        reverse("alert-acknowledge", args=[firing.pk]), {"back": "state=open&evil=//x"}
    )
    assert response.status_code == 302 and response["Location"] == "/alerts/?state=open"
    firing.refresh_from_db()
    assert firing.state == Alert.State.ACKNOWLEDGED and firing.acknowledged_by == operator
    http.post(reverse("alert-resolve", args=[firing.pk]))
    firing.refresh_from_db()
    assert firing.state == Alert.State.RESOLVED and firing.resolved_by == operator
    page = http.get(reverse("alert-list"), {"state": "all"})
    assert b"acknowledged by olivia" in page.content and b"resolved by olivia" in page.content


def test_a_resolved_incident_that_goes_on_opens_again_after_the_cooldown(firing, operator):
    login(operator).post(reverse("alert-resolve", args=[firing.pk]))
    now = timezone.now()
    alerts_evaluate(now=now + timedelta(minutes=1))
    assert Alert.objects.filter(rule=firing.rule).count() == 1
    rollups_add({firing.pipeline_id: {"dead_lettered": 1}}, at=now + timedelta(minutes=31))
    alerts_evaluate(now=now + timedelta(minutes=31))
    assert Alert.objects.filter(rule=firing.rule, state=Alert.State.FIRING).count() == 1


@pytest.mark.parametrize("persona", ["reviewer", "client_a", "client_b", "no_role"])
def test_only_operators_acknowledge_or_resolve(world, firing, persona):
    http = login(world[persona])
    assert http.post(reverse("alert-acknowledge", args=[firing.pk])).status_code == 403
    assert http.post(reverse("alert-resolve", args=[firing.pk])).status_code == 403
    firing.refresh_from_db()
    assert firing.state == Alert.State.FIRING


def test_acknowledging_an_unknown_alert_is_404(operator, db):
    assert login(operator).post(reverse("alert-acknowledge", args=[999999])).status_code == 404


def test_a_pipelines_rules_are_listed_with_their_thresholds(acme_pipeline, operator):
    page = login(operator).get(
        reverse("alert-rule-pipeline", args=[acme_pipeline.client.slug, acme_pipeline.slug])
    )
    assert page.status_code == 200
    for label, *_ in AlertRule.KindChoice.choices:
        if label not in (Kind.BREAKER_OPEN, Kind.WORKER_SILENT):
            assert AlertRule.KindChoice(label).label.encode() in page.content
    assert b"Circuit breaker open" not in page.content
    page = login(operator).get(reverse("alert-rule-list"))
    assert b"Circuit breaker open" in page.content and b"Ticket triage" in page.content


def test_changing_a_rule_is_audited(acme_pipeline, operator):
    rule = AlertRule.objects.get(pipeline=acme_pipeline, kind=Kind.ERROR_RATE)
    response = login(operator).post(
        reverse("alert-rule-edit", args=[rule.pk]),
        {
            "enabled": "on",
            "threshold": "25",
            "window_minutes": "30",
            "cooldown_minutes": "10",
            "show_in_app": "on",
            "notify_email": "on",
            "recipients": "ops@example.com",
            "webhook_url": "",
        },
    )
    assert response.status_code == 302
    rule.refresh_from_db()
    assert (rule.threshold, rule.window_minutes, rule.cooldown_minutes) == (25, 30, 10)
    assert rule.notify_webhook is False
    entry = AuditEntry.objects.get(action="alert_rule.update")
    assert entry.actor == operator and entry.client == acme_pipeline.client
    assert entry.before["threshold"] == 10 and entry.after["threshold"] == 25
    assert entry.after["recipients"] == "ops@example.com"


def test_a_bad_rule_change_is_refused_with_the_reason(acme_pipeline, operator):
    rule = AlertRule.objects.get(pipeline=acme_pipeline, kind=Kind.ERROR_RATE)
    response = login(operator).post(
        reverse("alert-rule-edit", args=[rule.pk]),
        {
            "threshold": "-1",
            "window_minutes": "15",
            "cooldown_minutes": "30",
            "recipients": "not-an-address",
            "webhook_url": "ftp://example.com/x",
        },
    )
    assert response.status_code == 422
    assert b"not an email address" in response.content
    assert b"cannot be negative" in response.content
    rule.refresh_from_db()
    assert rule.threshold == 10
    assert not AuditEntry.objects.filter(action="alert_rule.update").exists()


def test_global_rules_keep_their_fixed_fields(operator, db):
    rule = AlertRule.objects.get(pipeline__isnull=True, kind=Kind.WORKER_SILENT)
    response = login(operator).post(
        reverse("alert-rule-edit", args=[rule.pk]),
        {"enabled": "on", "threshold": "99", "window_minutes": "5", "cooldown_minutes": "30"},
    )
    assert response.status_code == 302
    rule.refresh_from_db()
    assert rule.window_minutes == 5 and rule.threshold == 0


# --- adding and deleting rules ------------------------------------------------------------------


def _new_rule(**overrides) -> dict[str, str]:
    data = {
        "kind": Kind.ERROR_RATE.value,
        "threshold": "5",
        "window_minutes": "10",
        "cooldown_minutes": "20",
        "enabled": "on",
        "show_in_app": "on",
        "notify_webhook": "on",
        "webhook_url": "https://hooks.example.com/ops",
        "recipients": "",
    }
    data.update(overrides)
    return data


def test_an_operator_adds_a_rule_to_a_pipeline_and_it_is_audited(acme_pipeline, operator):
    http = login(operator)
    page = http.get(reverse("alert-rule-create"), {"pipeline": acme_pipeline.pk})
    assert page.status_code == 200 and b"Add an alert rule" in page.content
    before = AlertRule.objects.filter(pipeline=acme_pipeline, kind=Kind.ERROR_RATE).count()
    response = http.post(reverse("alert-rule-create"), _new_rule(pipeline=str(acme_pipeline.pk)))
    assert response.status_code == 302
    assert response["Location"] == reverse("alert-rule-pipeline", args=["acme", "triage"])
    rule = AlertRule.objects.filter(pipeline=acme_pipeline, kind=Kind.ERROR_RATE).latest("id")
    assert AlertRule.objects.filter(pipeline=acme_pipeline, kind=Kind.ERROR_RATE).count() == (
        before + 1
    )
    assert (rule.threshold, rule.window_minutes, rule.cooldown_minutes) == (5, 10, 20)
    assert rule.notify_email is False and rule.webhook_url == "https://hooks.example.com/ops"
    entry = AuditEntry.objects.get(action="alert_rule.create")
    assert entry.actor == operator and entry.client == acme_pipeline.client
    assert entry.object_id == str(rule.pk) and entry.after["threshold"] == 5
    assert entry.after["kind"] == Kind.ERROR_RATE
    # The new rule is evaluated like the defaults: 1 failed call of 10 is above 5%.
    rollups_add({acme_pipeline.pk: {"calls": 10, "failed_transient": 1}}, at=timezone.now())
    alerts_evaluate()
    assert Alert.objects.filter(rule=rule, state=Alert.State.FIRING).exists()


def test_a_global_rule_is_added_without_a_pipeline(operator, db):
    response = login(operator).post(
        reverse("alert-rule-create"),
        _new_rule(kind=Kind.WORKER_SILENT.value, threshold="50", webhook_url=""),
    )
    assert response.status_code == 302 and response["Location"] == reverse("alert-rule-list")
    rule = AlertRule.objects.filter(kind=Kind.WORKER_SILENT).latest("id")
    # A worker rule has no threshold: the one sent is ignored.
    assert rule.pipeline is None and rule.threshold == 0 and rule.window_minutes == 10


def test_adding_a_rule_names_the_field_that_is_wrong(acme_pipeline, operator):
    http = login(operator)
    count = AlertRule.objects.count()
    cases = [
        (_new_rule(kind=Kind.BREAKER_OPEN.value, pipeline=str(acme_pipeline.pk)), "pipeline"),
        (_new_rule(kind=Kind.QUEUE_DEPTH.value), "pipeline"),
        (_new_rule(kind="nonsense", pipeline=str(acme_pipeline.pk)), "kind"),
        (_new_rule(pipeline=str(acme_pipeline.pk), threshold="-3"), "threshold"),
        (_new_rule(pipeline=str(acme_pipeline.pk), window_minutes="0"), "window_minutes"),
        (_new_rule(pipeline=str(acme_pipeline.pk), cooldown_minutes="99999"), "cooldown_minutes"),
        (_new_rule(pipeline=str(acme_pipeline.pk), recipients="nobody"), "recipients"),
        (_new_rule(pipeline=str(acme_pipeline.pk), webhook_url="ftp://x.example"), "webhook_url"),
        (_new_rule(pipeline="999999"), "pipeline"),
    ]
    for data, field in cases:
        response = http.post(reverse("alert-rule-create"), data)
        assert response.status_code == 422, (data, field)
        form = response.context["form"]
        assert field in form.errors, (field, form.errors)
        assert f'id="id_{field}-error"'.encode() in response.content, field
    assert AlertRule.objects.count() == count
    assert not AuditEntry.objects.filter(action="alert_rule.create").exists()


def test_deleting_a_rule_asks_first_then_deletes_it_with_its_alerts(firing, operator):
    http = login(operator)
    rule = firing.rule
    page = http.get(reverse("alert-rule-delete", args=[rule.pk]))
    assert page.status_code == 200
    assert b"Delete rule" in page.content and b"1 alert (open and past)" in page.content
    assert AlertRule.objects.filter(pk=rule.pk).exists()  # asking deletes nothing
    response = http.post(reverse("alert-rule-delete", args=[rule.pk]))
    assert response.status_code == 302
    assert response["Location"] == reverse("alert-rule-pipeline", args=["acme", "triage"])
    assert not AlertRule.objects.filter(pk=rule.pk).exists()
    assert not Alert.objects.filter(pk=firing.pk).exists()
    entry = AuditEntry.objects.get(action="alert_rule.delete")
    assert entry.actor == operator and entry.object_id == str(rule.pk)
    assert entry.before["kind"] == Kind.DEAD_LETTERS and entry.client == rule.pipeline.client


def test_the_last_rule_of_a_pipeline_or_of_a_global_kind_is_kept(acme_pipeline, operator):
    http = login(operator)
    *others, last = AlertRule.objects.filter(pipeline=acme_pipeline)
    AlertRule.objects.filter(pk__in=[r.pk for r in others]).delete()
    response = http.post(reverse("alert-rule-delete", args=[last.pk]))
    assert response.status_code == 422 and b"turn it off instead" in response.content
    assert AlertRule.objects.filter(pk=last.pk).exists()
    breaker = AlertRule.objects.get(pipeline__isnull=True, kind=Kind.BREAKER_OPEN)
    assert http.post(reverse("alert-rule-delete", args=[breaker.pk])).status_code == 422
    assert AlertRule.objects.filter(pk=breaker.pk).exists()
    assert not AuditEntry.objects.filter(action="alert_rule.delete").exists()


@pytest.mark.parametrize("persona", ["reviewer", "client_a", "client_b", "no_role"])
def test_only_operators_add_or_delete_rules(world, persona):
    pipeline = world["acme_item"].pipeline
    rule = AlertRule.objects.filter(pipeline=pipeline).first()
    count = AlertRule.objects.count()
    http = login(world[persona])
    response = http.post(reverse("alert-rule-create"), _new_rule(pipeline=str(pipeline.pk)))
    assert response.status_code == 403
    assert http.post(reverse("alert-rule-delete", args=[rule.pk])).status_code == 403
    assert AlertRule.objects.count() == count


def test_deleting_an_unknown_rule_is_404(operator, db):
    assert login(operator).post(reverse("alert-rule-delete", args=[999999])).status_code == 404
