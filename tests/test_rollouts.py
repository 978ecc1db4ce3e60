"""Gradual rollout of a prompt version: sticky arms, guards that roll back or promote on the
step rollups, the audit entries and the alert, through the real engine and the simulated
provider (each prompt version with its own error rate or latency)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from django.db.models import Sum
from django.utils import timezone

from controlplane.models import AuditEntry
from pipelines.guards import takes_candidate
from pipelines.models import Item, PromptLabel, Provider, Rollout, StepRollup
from pipelines.services import configuration as config
from pipelines.services.engine import engine_run_batch
from pipelines.services.resume import item_reject, item_resume
from pipelines.services.rollouts import (
    rollout_compare,
    rollout_pause,
    rollout_promote,
    rollout_resume,
    rollout_rollback,
    rollout_start,
    rollouts_evaluate,
)
from tests.test_engine import WORKER, simulated_route, submit

ROLLUP_FIELDS = ("started", "accepted", "held", "failed", "approved", "edited", "rejected", "cost")


def per_version(step) -> dict[int, SimpleNamespace]:
    """The step's rollups summed per version: a run may straddle a minute."""
    rows = (
        StepRollup.objects.filter(step=step)
        .values("version")
        .annotate(**{f"{name}_sum": Sum(name) for name in ROLLUP_FIELDS})
    )
    return {
        row["version"]: SimpleNamespace(**{name: row[f"{name}_sum"] for name in ROLLUP_FIELDS})
        for row in rows
    }


def _run_all() -> None:
    """Run batches until nothing is runnable now (retries wait for later)."""
    while engine_run_batch(worker=WORKER):
        pass


@pytest.fixture
def sim_step(acme_step, operator):
    model = simulated_route(acme_step, operator)
    config.step_update(step=acme_step, actor=operator, confidence_threshold="0.3")
    # A failing candidate must not open the shared provider's breaker in these tests: they
    # measure the version, not the breaker (tests/test_breaker.py does).
    Provider.objects.filter(pk=model.provider_id).update(breaker_failure_threshold=100_000)
    return acme_step


def candidate(step, operator, **simulation):
    parameters = {"simulation": simulation} if simulation else {}
    return config.prompt_version_create(
        step=step,
        template="Classify this support ticket: {{ text }}",
        parameters=parameters,
        actor=operator,
    )


def texts(n: int, start: int = 0) -> list[str]:
    return [f"ticket number {i} about an invoice" for i in range(start, start + n)]


def test_a_share_only_adds_items_as_it_rises():
    for item_id in range(1, 500):
        shares = [takes_candidate(item_id=item_id, rollout_id=7, share=s) for s in (5, 25, 50)]
        # Once in the candidate's arm at a share, an item stays there at every higher share.
        assert shares == sorted(shares)
    taken = sum(takes_candidate(item_id=i, rollout_id=7, share=25) for i in range(1, 4001))
    assert 850 < taken < 1150


def test_the_arm_is_recorded_and_a_rerun_keeps_it_when_the_share_rises(sim_step, operator):
    v2 = candidate(sim_step, operator)
    rollout = rollout_start(step=sim_step, candidate=v2, stages="50, 100", actor=operator)
    items = submit(sim_step.pipeline, *texts(60))
    _run_all()
    arms = {}
    for item in items:
        item.refresh_from_db()
        arm = item.rollout_arms["topic"]
        assert arm["rollout"] == rollout.pk
        assert item.outputs["topic"]["prompt_version"] == arm["version"]
        run = item.ledger.filter(from_status="running").get()
        assert run.detail["rollout"] == rollout.pk
        assert run.detail["prompt_version"] == arm["version"]
        arms[item.pk] = arm["version"]
    assert set(arms.values()) == {1, 2}
    # The candidate now takes everything new; items that ran production re-run production.
    Rollout.objects.filter(pk=rollout.pk).update(stage=1)
    Item.objects.filter(pk__in=list(arms)).update(status=Item.Status.QUEUED, step_position=1)
    _run_all()
    for item in Item.objects.filter(pk__in=list(arms)):
        assert item.outputs["topic"]["prompt_version"] == arms[item.pk]
    [new] = submit(sim_step.pipeline, "a ticket after the share rose")
    _run_all()
    new.refresh_from_db()
    assert new.outputs["topic"]["prompt_version"] == 2


def test_the_engine_writes_per_version_step_rollups(sim_step, operator):
    v2 = candidate(sim_step, operator, failure_rates={"transient": 1})
    rollout_start(step=sim_step, candidate=v2, stages="50, 100", actor=operator)
    submit(sim_step.pipeline, *texts(40))
    _run_all()
    rows = per_version(sim_step)
    assert rows[2].failed == rows[2].started > 0 and rows[2].accepted == 0
    assert rows[1].failed == 0 and rows[1].accepted + rows[1].held == rows[1].started > 0
    assert rows[1].cost > 0 and rows[2].cost == 0
    on_production = sum(
        1
        for arm in Item.objects.values_list("rollout_arms", flat=True)
        if arm["topic"]["version"] == 1
    )
    assert rows[1].started == on_production
    # A failed attempt that was due again at once ran again: attempts, not items.
    assert rows[2].started >= 40 - on_production


def test_a_candidate_with_a_higher_error_rate_is_rolled_back_with_an_alert(sim_step, operator):
    from controlplane.monitoring.models import Alert

    v2 = candidate(sim_step, operator, failure_rates={"transient": 0.6})
    rollout = rollout_start(
        step=sim_step, candidate=v2, stages="50, 100", min_items=20, actor=operator
    )
    submit(sim_step.pipeline, *texts(120))
    _run_all()
    with pytest.MonkeyPatch.context() as mp:
        # The alert is raised after commit; run it now, as a committed transaction would.
        mp.setattr("django.db.transaction.on_commit", lambda fn, *a, **k: fn())
        assert rollouts_evaluate()["rolled_back"] == 1
    rollout.refresh_from_db()
    assert rollout.status == Rollout.Status.ROLLED_BACK
    assert rollout.evidence["tripped"] == ["error_rate"]
    assert "error rate: candidate" in rollout.reason
    assert not PromptLabel.objects.filter(step=sim_step, name="candidate").exists()
    assert PromptLabel.objects.get(step=sim_step, name="production").version.number == 1
    entry = AuditEntry.objects.get(action="rollout.rollback")
    assert entry.actor_label == "rollout guard"
    guards = {g["guard"]: g for g in entry.after["guards"]}
    assert guards["error_rate"]["tripped"] is True
    assert guards["error_rate"]["candidate"] > 0.3 and guards["error_rate"]["production"] == 0
    assert not guards["p95_latency"]["tripped"] and not guards["cost_per_item"]["tripped"]
    alert = Alert.objects.get(subject=f"rollout:{rollout.pk}")
    assert alert.rule.kind == "rollout_rolled_back" and alert.state == Alert.State.FIRING
    assert "rolled back" in alert.summary and "error rate guard tripped" in alert.summary
    # Every new item runs production again.
    [item] = submit(sim_step.pipeline, "after the rollback")
    _run_all()
    item.refresh_from_db()
    assert item.outputs["topic"]["prompt_version"] == 1


def test_a_slower_candidate_is_rolled_back_by_the_latency_guard(sim_step, operator):
    v2 = candidate(sim_step, operator, latency_ms={"p50": 40, "p95": 60})
    rollout = rollout_start(
        step=sim_step, candidate=v2, stages="50, 100", min_items=15, actor=operator
    )
    submit(sim_step.pipeline, *texts(60))
    _run_all()
    assert rollouts_evaluate()["rolled_back"] == 1
    rollout.refresh_from_db()
    assert rollout.evidence["tripped"] == ["p95_latency"]
    assert "p95 model latency" in rollout.reason


def test_reviewers_rejecting_the_candidate_roll_it_back(sim_step, operator):
    v2 = candidate(sim_step, operator)
    rollout = rollout_start(
        step=sim_step, candidate=v2, stages="50, 100", min_items=10, actor=operator
    )
    config.step_update(step=sim_step, actor=operator, confidence_threshold="0.99")
    items = submit(sim_step.pipeline, *texts(80))
    _run_all()
    for item in items:
        item.refresh_from_db()
        assert item.status == Item.Status.IN_REVIEW
        detail = {"reviewer": "rita"}
        if item.outputs["topic"]["prompt_version"] == 2:
            item_reject(
                item_id=item.pk,
                reason="wrong",
                actor_label="user:rita",
                detail={**detail, "decision": "reject"},
            )
        else:
            item_resume(
                item_id=item.pk,
                output=item.outputs["topic"]["output"],
                actor_label="user:rita",
                detail={**detail, "decision": "approve"},
            )
    rows = per_version(sim_step)
    assert rows[2].rejected == rows[2].held and rows[2].approved == 0
    assert rows[1].approved == rows[1].held and rows[1].rejected == 0
    rollouts_evaluate()
    rollout.refresh_from_db()
    assert rollout.status == Rollout.Status.ROLLED_BACK
    assert "reject_rate" in rollout.evidence["tripped"]


def test_a_candidate_as_good_as_production_steps_up_and_is_promoted(sim_step, operator):
    v2 = candidate(sim_step, operator)
    rollout = rollout_start(
        step=sim_step, candidate=v2, stages="25, 100", min_items=15, actor=operator
    )
    assert rollouts_evaluate()["waiting"] == 1  # nothing measured yet: no verdict
    submit(sim_step.pipeline, *texts(100))
    _run_all()
    assert rollouts_evaluate()["stepped"] == 1
    rollout.refresh_from_db()
    assert rollout.stage == 1 and rollout.share == 100
    step_entry = AuditEntry.objects.get(action="rollout.step")
    assert step_entry.before == {"stage": 1, "share": 25}
    assert step_entry.after["share"] == 100
    submit(sim_step.pipeline, *texts(30, start=500))
    _run_all()
    assert rollouts_evaluate()["promoted"] == 1
    rollout.refresh_from_db()
    assert rollout.status == Rollout.Status.PROMOTED
    assert PromptLabel.objects.get(step=sim_step, name="production").version == v2
    assert not PromptLabel.objects.filter(step=sim_step, name="candidate").exists()
    promoted = AuditEntry.objects.get(action="rollout.promote")
    assert "every guard held" in promoted.after["reason"]
    assert AuditEntry.objects.filter(action="prompt.publish", after={"production": 2}).exists()


def test_the_operator_can_pause_resume_promote_and_roll_back_by_hand(sim_step, operator):
    v2 = candidate(sim_step, operator)
    rollout = rollout_start(step=sim_step, candidate=v2, actor=operator)
    rollout = rollout_pause(rollout=rollout, actor=operator)
    assert rollout.share == 0
    submit(sim_step.pipeline, *texts(20))
    _run_all()
    assert not StepRollup.objects.filter(step=sim_step, version=2).exists()
    rollout = rollout_resume(rollout=rollout, actor=operator)
    assert rollout.status == Rollout.Status.RUNNING
    rollout = rollout_rollback(rollout=rollout, actor=operator)
    assert rollout.status == Rollout.Status.ROLLED_BACK
    assert rollout.reason == "rolled back by olivia"
    with pytest.raises(Exception, match="cannot do that now"):
        rollout_promote(rollout=rollout, actor=operator)
    again = rollout_start(step=sim_step, candidate=v2, actor=operator)
    again = rollout_promote(rollout=again, actor=operator)
    assert PromptLabel.objects.get(step=sim_step, name="production").version == v2
    actions = list(
        AuditEntry.objects.filter(action__startswith="rollout.")
        .order_by("id")
        .values_list("action", "actor_label")
    )
    assert actions == [
        ("rollout.start", "olivia"),
        ("rollout.pause", "olivia"),
        ("rollout.resume", "olivia"),
        ("rollout.rollback", "olivia"),
        ("rollout.start", "olivia"),
        ("rollout.promote", "olivia"),
    ]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("stages", "50, 25, 100", "rising"),
        ("stages", "5, 25", "must be 100"),
        ("stages", "five", "whole percents"),
        ("min_items", "0", "from 1"),
        ("rate_margin", "2", "from 0 to 1"),
        ("relative_margin", "nan", "Enter a number"),
    ],
)
def test_bad_settings_are_refused_on_their_field(sim_step, operator, field, value, message):
    from django.core.exceptions import ValidationError

    v2 = candidate(sim_step, operator)
    with pytest.raises(ValidationError) as caught:
        rollout_start(step=sim_step, candidate=v2, actor=operator, **{field: value})
    assert message in " ".join(caught.value.message_dict[field])


def test_production_cannot_be_rolled_out_and_one_rollout_runs_at_a_time(sim_step, operator):
    from django.core.exceptions import ValidationError

    v1 = sim_step.prompt_versions.get(number=1)
    with pytest.raises(ValidationError, match="production already"):
        rollout_start(step=sim_step, candidate=v1, actor=operator)
    v2 = candidate(sim_step, operator)
    rollout_start(step=sim_step, candidate=v2, actor=operator)
    with pytest.raises(ValidationError, match="under way"):
        rollout_start(step=sim_step, candidate=v2, actor=operator)


def test_guards_wait_for_the_minimum_sample(sim_step, operator):
    v2 = candidate(sim_step, operator, failure_rates={"transient": 1})
    rollout = rollout_start(
        step=sim_step, candidate=v2, stages="50, 100", min_items=500, actor=operator
    )
    submit(sim_step.pipeline, *texts(40))
    _run_all()
    comparison = rollout_compare(rollout=rollout)
    assert not comparison.enough and not comparison.tripped
    assert rollouts_evaluate() == {"rolled_back": 0, "promoted": 0, "stepped": 0, "waiting": 1}
    assert timezone.now()  # the rollout is still running
    rollout.refresh_from_db()
    assert rollout.status == Rollout.Status.RUNNING


def test_the_guards_run_every_minute_from_the_declared_schedule(sim_step, operator):
    from importlib import import_module

    from controlplane.schedules import SCHEDULES

    [recurring] = [r for r in SCHEDULES if r.name == "sluice.rollouts"]
    assert recurring.minutes == 1
    module, name = recurring.func.rsplit(".", 1)
    task = getattr(import_module(module), name)
    assert task() == "no rollout running"
    v2 = candidate(sim_step, operator, failure_rates={"transient": 1})
    rollout_start(step=sim_step, candidate=v2, stages="50, 100", min_items=5, actor=operator)
    submit(sim_step.pipeline, *texts(30))
    _run_all()
    assert task() == "1 rolled_back"


def test_guards_and_the_live_page_read_rollups_never_the_item_table(sim_step, operator):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.urls import reverse

    from tests.conftest import login

    v2 = candidate(sim_step, operator)
    rollout = rollout_start(
        step=sim_step, candidate=v2, stages="50, 100", min_items=1000, actor=operator
    )
    submit(sim_step.pipeline, *texts(40))
    _run_all()
    http = login(operator)
    url = reverse("rollout-detail", args=[rollout.pk])
    with CaptureQueriesContext(connection) as queries:
        rollouts_evaluate()
        assert http.get(url, headers={"HX-Request": "true"}).status_code == 200
    item_table = Item._meta.db_table
    assert not [q["sql"] for q in queries if f'"{item_table}"' in q["sql"]]
    assert any("pipelines_steprollup" in q["sql"] for q in queries)


def test_a_rollout_whose_production_moved_by_hand_ends_saying_so(sim_step, operator):
    v2 = candidate(sim_step, operator)
    v3 = candidate(sim_step, operator)
    rollout = rollout_start(step=sim_step, candidate=v2, actor=operator)
    config.prompt_label_move(step=sim_step, label="production", version=v3, actor=operator)
    assert rollouts_evaluate()["rolled_back"] == 1
    rollout.refresh_from_db()
    assert rollout.status == Rollout.Status.ROLLED_BACK
    assert rollout.reason.startswith("production moved from v1 to v3 during the rollout")
    assert PromptLabel.objects.get(step=sim_step, name="production").version == v3
