"""Alert rules on the rollups: defaults with every pipeline, one alert per incident, resolving
when the condition clears, cooldown before the next one, and each kind of rule."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.utils import timezone

from controlplane.models import WorkerHeartbeat
from controlplane.monitoring import alerts
from controlplane.monitoring.alert_rule_services import alert_rule_update
from controlplane.monitoring.alert_services import alert_rules_ensure, alerts_evaluate
from controlplane.monitoring.alerts import Facts, Kind, PipelineFacts, RuleSpec, Window
from controlplane.monitoring.models import Alert, AlertRule
from controlplane.schedules import SCHEDULES
from pipelines.models import Item
from pipelines.services.rollups import latencies_add, rollups_add
from tests.factories import ItemFactory, PipelineFactory


def rule_of(pipeline, kind: str, threshold: float | None = None) -> AlertRule:
    rules = AlertRule.objects.filter(pipeline=pipeline, kind=kind)
    if threshold is not None:
        rules = rules.filter(threshold=threshold)
    return rules.get()


def alerts_of(pipeline, kind: str):
    return Alert.objects.filter(pipeline=pipeline, rule__kind=kind).order_by("id")


# --- Pure rules -----------------------------------------------------------------------------


def test_one_failure_in_two_calls_is_not_an_error_rate():
    assert Window(calls=2, failed=1).error_rate is None
    assert Window(calls=20, failed=5).error_rate == 25.0


def test_a_baseline_near_zero_does_not_make_a_small_change_look_enormous():
    assert alerts.worse_by(0.2, 0.1, alerts.ERROR_RATE_FLOOR) < 0
    assert alerts.worse_by(1.5, 1.0, alerts.ERROR_RATE_FLOOR) == pytest.approx(50)


def test_the_incident_steps_are_open_update_resolve_and_cooldown():
    now = timezone.now()
    step = alerts.alert_step
    assert (
        step(found=True, has_open=False, last_resolved_at=None, cooldown_minutes=30, now=now).action
        == "open"
    )
    assert (
        step(found=True, has_open=True, last_resolved_at=None, cooldown_minutes=30, now=now).action
        == "update"
    )
    assert (
        step(found=False, has_open=True, last_resolved_at=None, cooldown_minutes=30, now=now).action
        == "resolve"
    )
    recent = now - timedelta(minutes=10)
    assert (
        step(found=True, has_open=False, last_resolved_at=recent, cooldown_minutes=30, now=now)
    ).action == "cooldown"
    assert (
        step(found=True, has_open=False, last_resolved_at=recent, cooldown_minutes=5, now=now)
    ).action == "open"


def test_p95_over_the_sla_needs_enough_items_to_mean_anything():
    rule = RuleSpec(kind=Kind.LATENCY_SLA, threshold=100, window_minutes=15, pipeline_id=1)
    few = PipelineFacts(name="p", sla_seconds=60, windows={15: Window(p95=90, latency_samples=3)})
    many = PipelineFacts(name="p", sla_seconds=60, windows={15: Window(p95=90, latency_samples=30)})
    now = timezone.now()
    assert alerts.rule_check(rule, Facts(now=now, pipelines={1: few})) == []
    [finding] = alerts.rule_check(rule, Facts(now=now, pipelines={1: many}))
    assert finding.subject == "pipeline:1" and finding.value == 90
    assert "SLA" in finding.summary


# --- Defaults -------------------------------------------------------------------------------


def test_every_new_pipeline_gets_the_default_rules(acme_pipeline):
    kinds = sorted(AlertRule.objects.filter(pipeline=acme_pipeline).values_list("kind", flat=True))
    assert kinds == sorted(d.kind.value for d in alerts.PIPELINE_DEFAULTS)
    budgets = AlertRule.objects.filter(pipeline=acme_pipeline, kind=Kind.BUDGET)
    assert sorted(budgets.values_list("threshold", flat=True)) == [80, 100]


def test_global_rules_exist_once_after_migrate(db):
    alert_rules_ensure()
    alert_rules_ensure()
    for kind in (Kind.BREAKER_OPEN, Kind.WORKER_SILENT):
        assert AlertRule.objects.filter(pipeline__isnull=True, kind=kind).count() == 1


def test_pipelines_without_rules_get_them_on_migrate(acme_pipeline):
    AlertRule.objects.filter(pipeline=acme_pipeline).delete()
    alert_rules_ensure()
    assert AlertRule.objects.filter(pipeline=acme_pipeline).count() == len(alerts.PIPELINE_DEFAULTS)


def test_the_evaluation_runs_every_minute_on_the_schedule():
    [recurring] = [r for r in SCHEDULES if r.name == "sluice.alerts"]
    assert recurring.minutes == 1
    assert recurring.func == "controlplane.monitoring.alert_tasks.alerts_evaluate_task"


# --- One incident, one alert ----------------------------------------------------------------


def test_an_error_rate_incident_is_one_alert_updated_while_it_lasts(acme_pipeline):
    now = timezone.now()
    rollups_add({acme_pipeline.pk: {"calls": 20, "failed_transient": 5}}, at=now)
    assert alerts_evaluate(now=now)["opened"] >= 1
    [alert] = alerts_of(acme_pipeline, Kind.ERROR_RATE)
    assert alert.state == Alert.State.FIRING
    assert alert.value == pytest.approx(25.0)
    assert "25.0%" in alert.summary and "Ticket triage" in alert.summary

    rollups_add({acme_pipeline.pk: {"calls": 20, "failed_transient": 15}}, at=now)
    later = now + timedelta(minutes=1)
    alerts_evaluate(now=later)
    alerts_evaluate(now=later)
    [alert] = alerts_of(acme_pipeline, Kind.ERROR_RATE)
    assert alert.value == pytest.approx(50.0)
    assert alert.last_seen_at == later and alert.opened_at == now


def test_the_alert_resolves_when_the_condition_clears(acme_pipeline):
    now = timezone.now()
    rollups_add({acme_pipeline.pk: {"calls": 20, "failed_transient": 5}}, at=now)
    alerts_evaluate(now=now)
    # The window (15 minutes) has moved past the failures.
    counts = alerts_evaluate(now=now + timedelta(minutes=16))
    assert counts["resolved"] >= 1
    [alert] = alerts_of(acme_pipeline, Kind.ERROR_RATE)
    assert alert.state == Alert.State.RESOLVED
    assert alert.resolved_by is None and alert.resolved_at == now + timedelta(minutes=16)


def test_no_new_alert_before_the_cooldown_has_passed(acme_pipeline):
    start = timezone.now() - timedelta(hours=2)
    rollups_add({acme_pipeline.pk: {"dead_lettered": 1}}, at=start)
    alerts_evaluate(now=start)
    alerts_evaluate(now=start + timedelta(minutes=20))  # resolves
    # A second incident 10 minutes later, within the 30 minute cooldown: no alert.
    second = start + timedelta(minutes=30)
    rollups_add({acme_pipeline.pk: {"dead_lettered": 2}}, at=second)
    alerts_evaluate(now=second)
    assert [a.state for a in alerts_of(acme_pipeline, Kind.DEAD_LETTERS)] == ["resolved"]
    # Still going once the cooldown is over: a new alert.
    third = start + timedelta(minutes=51)
    rollups_add({acme_pipeline.pk: {"dead_lettered": 1}}, at=third)
    alerts_evaluate(now=third)
    assert [a.state for a in alerts_of(acme_pipeline, Kind.DEAD_LETTERS)] == [
        "resolved",
        "firing",
    ]


def test_an_acknowledged_alert_stays_one_alert_and_still_resolves(acme_pipeline, operator):
    from controlplane.monitoring.alert_services import alert_acknowledge

    now = timezone.now()
    rollups_add({acme_pipeline.pk: {"dead_lettered": 3}}, at=now)
    alerts_evaluate(now=now)
    [alert] = alerts_of(acme_pipeline, Kind.DEAD_LETTERS)
    alert_acknowledge(alert=alert, actor=operator)
    alerts_evaluate(now=now + timedelta(minutes=1))
    [alert] = alerts_of(acme_pipeline, Kind.DEAD_LETTERS)
    assert alert.state == Alert.State.ACKNOWLEDGED and alert.acknowledged_by == operator
    alerts_evaluate(now=now + timedelta(minutes=20))
    [alert] = alerts_of(acme_pipeline, Kind.DEAD_LETTERS)
    assert alert.state == Alert.State.RESOLVED


def test_a_disabled_rule_opens_nothing_and_its_open_alert_resolves(acme_pipeline, operator):
    now = timezone.now()
    rollups_add({acme_pipeline.pk: {"dead_lettered": 3}}, at=now)
    alerts_evaluate(now=now)
    rule = rule_of(acme_pipeline, Kind.DEAD_LETTERS)
    alert_rule_update(rule=rule, actor=operator, enabled=False)
    assert alerts_of(acme_pipeline, Kind.DEAD_LETTERS).get().state == Alert.State.RESOLVED
    alerts_evaluate(now=now + timedelta(hours=2))
    assert alerts_of(acme_pipeline, Kind.DEAD_LETTERS).count() == 1


def test_a_second_evaluation_at_the_same_moment_does_nothing(acme_pipeline):
    cache.add("alerts:evaluating", 1, timeout=30)
    try:
        assert alerts_evaluate() == {"skipped": 1}
    finally:
        cache.delete("alerts:evaluating")


# --- Each kind ------------------------------------------------------------------------------


def test_queue_depth_over_the_threshold(acme_pipeline, operator):
    alert_rule_update(rule=rule_of(acme_pipeline, Kind.QUEUE_DEPTH), actor=operator, threshold=2)
    for _ in range(3):
        ItemFactory(pipeline=acme_pipeline)
    ItemFactory(pipeline=acme_pipeline, status=Item.Status.WAITING_RETRY)
    alerts_evaluate()
    [alert] = alerts_of(acme_pipeline, Kind.QUEUE_DEPTH)
    assert alert.value == 4 and "4 items waiting" in alert.summary


def test_p95_end_to_end_over_the_pipelines_sla(acme_pipeline):
    now = timezone.now()
    acme_pipeline.latency_target_seconds = 60
    acme_pipeline.save()
    latencies_add({(acme_pipeline.pk, "end_to_end"): [100.0] * 20}, at=now)
    alerts_evaluate(now=now)
    [alert] = alerts_of(acme_pipeline, Kind.LATENCY_SLA)
    assert 60 < alert.value <= 120


def test_spend_at_80_and_100_percent_of_the_budget(acme_pipeline):
    now = timezone.now()
    acme_pipeline.daily_budget = Decimal("10")
    acme_pipeline.save()
    rollups_add({acme_pipeline.pk: {"cost": Decimal("8.5")}}, at=now)
    alerts_evaluate(now=now)
    assert [a.rule.threshold for a in alerts_of(acme_pipeline, Kind.BUDGET)] == [80]
    rollups_add({acme_pipeline.pk: {"cost": Decimal("2")}}, at=now)
    alerts_evaluate(now=now)
    firing = alerts_of(acme_pipeline, Kind.BUDGET)
    assert sorted(a.rule.threshold for a in firing) == [80, 100]
    assert "daily budget of 10" in firing.last().summary


def test_an_open_breaker_is_one_alert_per_provider(provider, monkeypatch):
    from pipelines.services import breaker

    provider.breaker_failure_threshold = 2
    provider.save()
    breaker.breaker_record({provider.pk: [False, False]})
    alerts_evaluate()
    [alert] = Alert.objects.filter(rule__kind=Kind.BREAKER_OPEN)
    assert alert.subject == f"provider:{provider.pk}" and alert.pipeline is None
    assert "Local" in alert.summary and "open" in alert.summary
    breaker.breaker_reset(provider=provider, actor=None)
    alerts_evaluate()
    assert Alert.objects.get(rule__kind=Kind.BREAKER_OPEN).state == Alert.State.RESOLVED


def test_a_worker_cluster_without_a_heartbeat_for_three_minutes(db):
    now = timezone.now()
    WorkerHeartbeat.objects.create(host="h1", cluster="sluice", pid=1, last_seen=now)
    WorkerHeartbeat.objects.create(
        host="h2", cluster="sluice", pid=2, last_seen=now - timedelta(minutes=4)
    )
    alerts_evaluate(now=now)
    [alert] = Alert.objects.filter(rule__kind=Kind.WORKER_SILENT)
    assert alert.subject == "worker:h2/sluice" and "h2/sluice" in alert.summary


def test_review_tasks_overdue(acme_pipeline, acme_step):
    from review.models import ReviewTask
    from tests.reviewing import join

    queue = join(acme_step)  # the step's queue, however the step got it
    now = timezone.now()
    for _ in range(2):
        ReviewTask.objects.create(
            item=ItemFactory(pipeline=acme_pipeline, status=Item.Status.IN_REVIEW),
            step=acme_step,
            queue=queue,
            reason_code=ReviewTask.ReasonCode.LOW_CONFIDENCE,
            due_at=now - timedelta(minutes=5),
            overdue=True,
        )
    alerts_evaluate(now=now)
    [alert] = alerts_of(acme_pipeline, Kind.REVIEW_OVERDUE)
    assert alert.value == 2 and "2 review tasks overdue" in alert.summary


def test_p95_20_percent_worse_than_the_day_before(acme_pipeline):
    now = timezone.now()
    for hours in range(2, 12):
        latencies_add(
            {(acme_pipeline.pk, "end_to_end"): [1.0] * 5}, at=now - timedelta(hours=hours)
        )
    latencies_add({(acme_pipeline.pk, "end_to_end"): [8.0] * 20}, at=now)
    alerts_evaluate(now=now)
    [alert] = alerts_of(acme_pipeline, Kind.LATENCY_BASELINE)
    assert alert.value >= 20 and "worse than" in alert.summary


def test_error_rate_worse_than_the_day_before(acme_pipeline):
    now = timezone.now()
    rollups_add(
        {acme_pipeline.pk: {"calls": 1000, "failed_transient": 20}}, at=now - timedelta(hours=5)
    )
    rollups_add({acme_pipeline.pk: {"calls": 100, "failed_transient": 5}}, at=now)
    alerts_evaluate(now=now)
    [alert] = alerts_of(acme_pipeline, Kind.ERROR_RATE_BASELINE)
    assert alert.value == pytest.approx(150)
    # Error rate 5% is under the 10% rule: only the baseline rule speaks.
    assert not alerts_of(acme_pipeline, Kind.ERROR_RATE).exists()


def test_a_quiet_pipeline_opens_nothing(acme_pipeline):
    other = PipelineFactory(client=acme_pipeline.client)
    rollups_add(
        {other.pk: {"calls": 50, "failed_system": 50, "dead_lettered": 4}}, at=timezone.now()
    )
    alerts_evaluate()
    assert not Alert.objects.filter(pipeline=acme_pipeline).exists()
    assert Alert.objects.filter(pipeline=other).exists()


# --- Rollouts rolled back ---------------------------------------------------------------------


def _rolled_back_by_the_error_rate_guard(step, operator, capture):
    """A rollout of a second version whose arm failed 10 of 20 attempts against production's
    none, judged by the guard schedule with the alert sent after commit."""
    from pipelines.services.configuration import prompt_version_create
    from pipelines.services.rollouts import rollout_start, rollouts_evaluate
    from pipelines.services.rollups import step_rollups_add

    version = prompt_version_create(step=step, template="Topic? {{ text }}", actor=operator)
    rollout = rollout_start(
        step=step, candidate=version, stages="50, 100", min_items=10, actor=operator
    )
    step_rollups_add(
        {
            (step.pipeline_id, step.pk, 2): {"started": 20, "failed": 10, "accepted": 10},
            (step.pipeline_id, step.pk, 1): {"started": 20, "accepted": 20},
        },
        at=timezone.now(),
    )
    with capture(execute=True):
        assert rollouts_evaluate()["rolled_back"] == 1
    return rollout


def test_a_guard_rolling_a_rollout_back_opens_an_alert_of_its_own_kind_with_the_numbers(
    acme_step, operator, django_capture_on_commit_callbacks, mailoutbox
):
    operator.email = "olivia@example.com"
    operator.save(update_fields=["email"])
    rollout = _rolled_back_by_the_error_rate_guard(
        acme_step, operator, django_capture_on_commit_callbacks
    )
    [alert] = Alert.objects.all()
    assert alert.rule == rule_of(acme_step.pipeline, Kind.ROLLOUT_ROLLED_BACK)
    assert alert.subject == f"rollout:{rollout.pk}" and alert.state == Alert.State.FIRING
    assert alert.summary == (
        "Acme Corp / Ticket triage · Topic: rollout of prompt v2 rolled back to v1: error rate "
        "guard tripped at stage 1 (50%): error rate: candidate 50.0% vs production 0.0%, worse "
        "than the limit 5.0%"
    )
    assert alert.value == 0.5
    [mail] = mailoutbox
    assert "Rollout rolled back by a guard" in mail.body and "candidate 50.0%" in mail.body
    # An event, not a condition: evaluation leaves it open.
    alerts_evaluate()
    alert.refresh_from_db()
    assert alert.state == Alert.State.FIRING


def test_acknowledging_a_rollback_alert_resolves_it(
    acme_step, operator, django_capture_on_commit_callbacks
):
    from controlplane.monitoring.alert_services import alert_acknowledge

    _rolled_back_by_the_error_rate_guard(acme_step, operator, django_capture_on_commit_callbacks)
    alert = alert_acknowledge(alert=Alert.objects.get(), actor=operator)
    assert alert.state == Alert.State.RESOLVED
    assert alert.acknowledged_by == operator and alert.resolved_by == operator


def test_a_new_rollout_of_the_step_resolves_the_last_ones_alert(
    acme_step, operator, django_capture_on_commit_callbacks
):
    from pipelines.services.rollouts import rollout_start

    rollout = _rolled_back_by_the_error_rate_guard(
        acme_step, operator, django_capture_on_commit_callbacks
    )
    rollout_start(step=acme_step, candidate=rollout.candidate, actor=operator)
    alert = Alert.objects.get()
    assert alert.state == Alert.State.RESOLVED and alert.resolved_by == operator


def test_no_rollback_alert_when_its_rule_is_off_or_a_person_rolled_back(
    acme_step, operator, django_capture_on_commit_callbacks
):
    from pipelines.services.configuration import prompt_version_create
    from pipelines.services.rollouts import rollout_rollback, rollout_start

    rule = rule_of(acme_step.pipeline, Kind.ROLLOUT_ROLLED_BACK)
    alert_rule_update(rule=rule, actor=operator, enabled=False)
    _rolled_back_by_the_error_rate_guard(acme_step, operator, django_capture_on_commit_callbacks)
    alert_rule_update(rule=rule, actor=operator, enabled=True)
    version = prompt_version_create(step=acme_step, template="Again {{ text }}", actor=operator)
    rollout = rollout_start(step=acme_step, candidate=version, actor=operator)
    with django_capture_on_commit_callbacks(execute=True):
        rollout_rollback(rollout=rollout, actor=operator)
    assert not Alert.objects.exists()


def test_pipelines_with_rules_get_the_rollback_rule_from_the_migration(acme_pipeline):
    from importlib import import_module

    from django.apps import apps

    migration = import_module("controlplane.monitoring.migrations.0005_rollout_rolled_back_rule")
    AlertRule.objects.filter(kind=Kind.ROLLOUT_ROLLED_BACK).delete()
    bare = PipelineFactory()
    AlertRule.objects.filter(pipeline=bare).delete()
    migration.add_rollback_rules(apps, None)
    migration.add_rollback_rules(apps, None)
    assert rule_of(acme_pipeline, Kind.ROLLOUT_ROLLED_BACK).enabled
    # A pipeline without rules gets every default, this one included, from alert_rules_ensure.
    assert not AlertRule.objects.filter(pipeline=bare).exists()
    alert_rules_ensure()
    assert rule_of(bare, Kind.ROLLOUT_ROLLED_BACK)
