"""Gradual rollout of a candidate prompt version: it takes a growing share of a step's items
(sticky per item), is compared with production on guard metrics read from the step rollups at
every stage, and is rolled back when worse beyond the margin or promoted after the last stage.
The operator may pause, resume, promote or roll back by hand at any time."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from controlplane.services import audit_record
from pipelines.guards import ArmNumbers, Comparison, compare
from pipelines.models import (
    PromptLabel,
    PromptVersion,
    Rollout,
    Step,
    StepLatencyRollup,
    StepRollup,
)
from pipelines.services.configuration import prompt_label_move, prompt_label_remove
from pipelines.signals import rollout_finished

logger = logging.getLogger(__name__)

ROLLOUT_ACTOR = "rollout guard"
MAX_STAGES = 10


def rollouts_active(*, step_ids: Iterable[int]) -> dict[int, Rollout]:
    """The running or paused rollout of each of these steps that has one, with its versions."""
    return {
        rollout.step_id: rollout
        for rollout in Rollout.objects.filter(
            step_id__in=list(step_ids), status__in=Rollout.ACTIVE
        ).select_related("candidate", "baseline")
    }


def stages_parse(raw: str | Sequence[Any]) -> list[int]:
    """Rising percents ending at 100, from "5, 25, 50, 100" or a list; ValidationError on the
    field `stages` otherwise."""
    parts = raw.replace("%", "").replace(",", " ").split() if isinstance(raw, str) else list(raw)
    try:
        stages = [int(str(p).strip()) for p in parts]
    except ValueError:
        raise ValidationError(
            {"stages": "Write whole percents separated by commas, e.g. 5, 25, 50, 100."}
        ) from None
    if not stages or len(stages) > MAX_STAGES:
        raise ValidationError({"stages": f"Give from 1 to {MAX_STAGES} stages."})
    if any(s < 1 or s > 100 for s in stages) or stages != sorted(set(stages)):
        raise ValidationError({"stages": "Stages are rising percents from 1 to 100."})
    if stages[-1] != 100:
        raise ValidationError({"stages": "The last stage must be 100%: it ends in promotion."})
    return stages


def _decimal(value: Any, field: str, low: Decimal, high: Decimal) -> Decimal:
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise ValidationError({field: "Enter a number."}) from None
    if not number.is_finite() or number < low or number > high:
        raise ValidationError({field: f"Enter a number from {low} to {high}."})
    return number


@transaction.atomic
def rollout_start(
    *,
    step: Step,
    candidate: PromptVersion,
    stages: str | Sequence[Any] = (5, 25, 50, 100),
    min_items: Any = 50,
    rate_margin: Any = "0.05",
    relative_margin: Any = "0.2",
    actor: AbstractBaseUser | None,
) -> Rollout:
    """Start a rollout of `candidate` against the step's production version: the candidate
    label moves to it and it takes the first stage's share of new items. ValidationError with
    the field when the settings are wrong or a rollout of the step is under way."""
    step = Step.objects.select_for_update().select_related("pipeline__client").get(pk=step.pk)
    if candidate.step_id != step.pk:
        raise ValidationError({"candidate": "That version belongs to another step."})
    production = (
        PromptLabel.objects.filter(step=step, name=PromptLabel.Name.PRODUCTION)
        .select_related("version")
        .first()
    )
    if production is None:
        raise ValidationError({"candidate": "The step has no production version to compare with."})
    if production.version_id == candidate.pk:
        raise ValidationError({"candidate": f"Version {candidate.number} is production already."})
    if Rollout.objects.filter(step=step, status__in=Rollout.ACTIVE).exists():
        raise ValidationError({"candidate": "A rollout of this step is under way already."})
    parsed = stages_parse(stages)
    try:
        items = int(str(min_items))
    except ValueError:
        raise ValidationError({"min_items": "Enter a whole number."}) from None
    if not 1 <= items <= 1_000_000:
        raise ValidationError({"min_items": "Enter a whole number from 1 to 1,000,000."})
    rollout = Rollout.objects.create(
        step=step,
        candidate=candidate,
        baseline=production.version,
        stages=parsed,
        min_items=items,
        rate_margin=_decimal(rate_margin, "rate_margin", Decimal(0), Decimal(1)),
        relative_margin=_decimal(relative_margin, "relative_margin", Decimal(0), Decimal(10)),
        stage_started_at=timezone.now(),
        created_by=actor,
    )
    prompt_label_move(step=step, label=PromptLabel.Name.CANDIDATE, version=candidate, actor=actor)
    _audit(rollout, actor, "rollout.start", after=_settings(rollout))
    return rollout


def _settings(rollout: Rollout) -> dict[str, Any]:
    return {
        "candidate": rollout.candidate.number,
        "production": rollout.baseline.number,
        "stages": rollout.stages,
        "min_items": rollout.min_items,
        "rate_margin": str(rollout.rate_margin),
        "relative_margin": str(rollout.relative_margin),
    }


def _audit(
    rollout: Rollout,
    actor: AbstractBaseUser | None,
    action: str,
    *,
    before: dict | None = None,
    after: dict | None = None,
) -> None:
    audit_record(
        actor=actor,
        actor_label=None if actor else ROLLOUT_ACTOR,
        action=action,
        obj=rollout,
        client=rollout.step.pipeline.client,
        before=before,
        after=after,
    )


def _locked(rollout: Rollout) -> Rollout:
    return (
        Rollout.objects.select_for_update()
        .select_related("step__pipeline__client", "candidate", "baseline")
        .get(pk=rollout.pk)
    )


def _refuse_unless(rollout: Rollout, *statuses: str) -> None:
    if rollout.status not in statuses:
        raise ValidationError(
            f"The rollout is {rollout.get_status_display()}; it cannot do that now.",
            code="rollout_state",
        )


@transaction.atomic
def rollout_pause(*, rollout: Rollout, actor: AbstractBaseUser | None) -> Rollout:
    """Stop giving new items to the candidate (items already on it keep it)."""
    rollout = _locked(rollout)
    _refuse_unless(rollout, Rollout.Status.RUNNING)
    rollout.status = Rollout.Status.PAUSED
    rollout.save(update_fields=["status"])
    _audit(
        rollout, actor, "rollout.pause", before={"status": "running"}, after={"status": "paused"}
    )
    return rollout


@transaction.atomic
def rollout_resume(*, rollout: Rollout, actor: AbstractBaseUser | None) -> Rollout:
    """Go on with a paused rollout; its stage starts counting again."""
    rollout = _locked(rollout)
    _refuse_unless(rollout, Rollout.Status.PAUSED)
    rollout.status = Rollout.Status.RUNNING
    rollout.stage_started_at = timezone.now()
    rollout.save(update_fields=["status", "stage_started_at"])
    _audit(
        rollout, actor, "rollout.resume", before={"status": "paused"}, after={"status": "running"}
    )
    return rollout


def _finish(
    rollout: Rollout,
    *,
    status: str,
    reason: str,
    evidence: dict[str, Any],
    actor: AbstractBaseUser | None,
) -> Rollout:
    now = timezone.now()
    step = rollout.step
    if status == Rollout.Status.PROMOTED:
        prompt_label_move(
            step=step,
            label=PromptLabel.Name.PRODUCTION,
            version=rollout.candidate,
            actor=actor,
            actor_label=None if actor else ROLLOUT_ACTOR,
        )
    prompt_label_remove(step=step, label=PromptLabel.Name.CANDIDATE, actor=actor)
    before = {"status": rollout.status, "share": rollout.share}
    rollout.status, rollout.reason, rollout.evidence = status, reason[:2000], evidence
    rollout.finished_at = now
    rollout.save(update_fields=["status", "reason", "evidence", "finished_at"])
    action = "rollout.promote" if status == Rollout.Status.PROMOTED else "rollout.rollback"
    _audit(
        rollout,
        actor,
        action,
        before=before,
        after={"status": status, "reason": reason, **evidence},
    )
    finished = rollout
    transaction.on_commit(lambda: _announce(finished, automatic=actor is None))
    return rollout


def _announce(rollout: Rollout, *, automatic: bool) -> None:
    """Tell the layers above (the alert); a receiver's failure must not stop the guards of
    the other rollouts, so it is logged instead of raised."""
    for receiver, answer in rollout_finished.send_robust(
        sender=Rollout, rollout=rollout, automatic=automatic
    ):
        if isinstance(answer, Exception):
            logger.error("rollout %s: %r failed: %s", rollout.pk, receiver, answer)


@transaction.atomic
def rollout_promote(
    *, rollout: Rollout, actor: AbstractBaseUser | None, reason: str = ""
) -> Rollout:
    """Make the candidate production now (by hand, or after the last stage)."""
    rollout = _locked(rollout)
    _refuse_unless(rollout, *Rollout.ACTIVE)
    evidence = _evidence(rollout, rollout_compare(rollout=rollout))
    reason = reason or f"promoted by {actor.get_username() if actor else ROLLOUT_ACTOR}"
    return _finish(
        rollout, status=Rollout.Status.PROMOTED, reason=reason, evidence=evidence, actor=actor
    )


@transaction.atomic
def rollout_rollback(
    *,
    rollout: Rollout,
    actor: AbstractBaseUser | None,
    reason: str = "",
    evidence: dict[str, Any] | None = None,
) -> Rollout:
    """Take the candidate off: every item of the step runs production again."""
    rollout = _locked(rollout)
    _refuse_unless(rollout, *Rollout.ACTIVE)
    if evidence is None:
        evidence = _evidence(rollout, rollout_compare(rollout=rollout))
    reason = reason or f"rolled back by {actor.get_username() if actor else ROLLOUT_ACTOR}"
    return _finish(
        rollout, status=Rollout.Status.ROLLED_BACK, reason=reason, evidence=evidence, actor=actor
    )


# --- Numbers and guards -----------------------------------------------------------------------


def arm_numbers(*, step_id: int, version: int, since: datetime) -> ArmNumbers:
    """What one prompt version of a step did since `since` (from the minute it falls in), from
    the step rollups: two aggregate queries."""
    from pipelines.services.rollups import minute_of

    start = minute_of(since)
    sums = StepRollup.objects.filter(step_id=step_id, version=version, minute__gte=start).aggregate(
        started=Sum("started"),
        accepted=Sum("accepted"),
        held=Sum("held"),
        failed=Sum("failed"),
        approved=Sum("approved"),
        edited=Sum("edited"),
        rejected=Sum("rejected"),
        cost=Sum("cost"),
    )
    latency = dict(
        StepLatencyRollup.objects.filter(step_id=step_id, version=version, minute__gte=start)
        .values_list("bucket")
        .annotate(n=Sum("count"))
        .order_by()
    )
    return ArmNumbers(
        **{key: value or 0 for key, value in sums.items() if key != "cost"},
        cost=sums["cost"] or Decimal("0"),
        latency=latency,
    )


_ARM_COUNTERS = ("started", "accepted", "held", "failed", "approved", "edited", "rejected")


def arm_minutes(
    *, step_id: int, versions: Sequence[int], since: datetime
) -> dict[int, list[tuple[datetime, ArmNumbers]]]:
    """Per prompt version, what it did each minute since `since` (minutes with nothing left
    out), from the step rollups: two queries, whatever the number of items."""
    from pipelines.services.rollups import minute_of

    start = minute_of(since)
    latency: dict[tuple[int, datetime], dict[int, int]] = {}
    for version, minute, bucket, count in StepLatencyRollup.objects.filter(
        step_id=step_id, version__in=list(versions), minute__gte=start
    ).values_list("version", "minute", "bucket", "count"):
        latency.setdefault((version, minute), {})[bucket] = count
    found: dict[int, list[tuple[datetime, ArmNumbers]]] = {v: [] for v in versions}
    for row in (
        StepRollup.objects.filter(step_id=step_id, version__in=list(versions), minute__gte=start)
        .order_by("minute")
        .values("version", "minute", "cost", *_ARM_COUNTERS)
    ):
        numbers = ArmNumbers(
            **{name: row[name] for name in _ARM_COUNTERS},
            cost=row["cost"],
            latency=latency.get((row["version"], row["minute"]), {}),
        )
        found[row["version"]].append((row["minute"], numbers))
    return found


def rollout_arms(*, rollout: Rollout) -> tuple[ArmNumbers, ArmNumbers]:
    """The candidate since its stage started, and production since the rollout started (it
    keeps the traffic the candidate does not take, and at 100% has no new items)."""
    candidate = arm_numbers(
        step_id=rollout.step_id, version=rollout.candidate.number, since=rollout.stage_started_at
    )
    production = arm_numbers(
        step_id=rollout.step_id, version=rollout.baseline.number, since=rollout.started_at
    )
    return candidate, production


def rollout_compare(
    *, rollout: Rollout, arms: tuple[ArmNumbers, ArmNumbers] | None = None
) -> Comparison:
    """The candidate against production on every guard, with the rollout's sample and margins
    (`arms`: the numbers of `rollout_arms`, when the caller has read them already)."""
    candidate, production = arms or rollout_arms(rollout=rollout)
    return compare(
        candidate=candidate,
        production=production,
        min_items=rollout.min_items,
        rate_margin=float(rollout.rate_margin),
        relative_margin=float(rollout.relative_margin),
    )


def _evidence(rollout: Rollout, comparison: Comparison) -> dict[str, Any]:
    return {
        "stage": rollout.stage + 1,
        "share": rollout.share if rollout.status == Rollout.Status.RUNNING else 0,
        "guards": [
            {
                "guard": r.guard,
                "candidate": r.candidate,
                "production": r.production,
                "limit": r.limit,
                "tripped": r.tripped,
                "judged": r.judged,
                "sentence": r.sentence(),
            }
            for r in comparison.results
        ],
    }


def rollouts_evaluate() -> dict[str, int]:
    """Judge every running rollout once: roll back the ones whose candidate trips a guard,
    step up the ones whose stage has its sample and holds, promote after the last stage."""
    counts = {"rolled_back": 0, "promoted": 0, "stepped": 0, "waiting": 0}
    for pk in Rollout.objects.filter(status=Rollout.Status.RUNNING).values_list("id", flat=True):
        counts[_evaluate_one(pk)] += 1
    return counts


@transaction.atomic
def _evaluate_one(pk: int) -> str:
    rollout = _locked(Rollout(pk=pk))
    if rollout.status != Rollout.Status.RUNNING:
        return "waiting"
    production = (
        PromptLabel.objects.filter(step_id=rollout.step_id, name=PromptLabel.Name.PRODUCTION)
        .select_related("version")
        .first()
    )
    if production is None or production.version_id != rollout.baseline_id:
        # Someone published another version meanwhile: the comparison has lost its baseline.
        now_running = f"v{production.version.number}" if production else "no version"
        rollout_rollback(
            rollout=rollout,
            actor=None,
            reason=f"production moved from v{rollout.baseline.number} to {now_running} during "
            "the rollout, so the candidate has nothing to be compared with",
            evidence={"production": production.version.number if production else None},
        )
        return "rolled_back"
    comparison = rollout_compare(rollout=rollout)
    tripped = comparison.tripped
    if tripped:
        reason = "; ".join(r.sentence() for r in tripped)
        logger.warning("rollout %s rolled back: %s", rollout.pk, reason)
        rollout_rollback(
            rollout=rollout,
            actor=None,
            reason=f"guard tripped at stage {rollout.stage + 1} ({rollout.share}%): {reason}",
            evidence={**_evidence(rollout, comparison), "tripped": [r.guard for r in tripped]},
        )
        return "rolled_back"
    if not comparison.enough:
        return "waiting"
    if rollout.stage + 1 >= len(rollout.stages):
        rollout_promote(
            rollout=rollout,
            actor=None,
            reason=f"every guard held through the last stage ({rollout.share}%)",
        )
        return "promoted"
    before = {"stage": rollout.stage + 1, "share": rollout.share}
    evidence = _evidence(rollout, comparison)
    rollout.stage += 1
    rollout.stage_started_at = timezone.now()
    rollout.save(update_fields=["stage", "stage_started_at"])
    _audit(
        rollout,
        None,
        "rollout.step",
        before=before,
        after={"stage": rollout.stage + 1, "share": rollout.share, "evidence": evidence},
    )
    return "stepped"
