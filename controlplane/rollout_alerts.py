"""The shell's answer to rollouts: a rollout that a guard rolled back raises an alert (banner,
email, webhook) naming the guard and its numbers. `pipelines` cannot import the monitoring app,
so the alert is raised here, on `pipelines.signals.rollout_finished`.

It is filed under the pipeline's "Rollout rolled back by a guard" rules (kind
`rollout_rolled_back`, one by default), subject `rollout:<id>`. A rollback is an event rather
than a condition, so evaluation on the rollups leaves the alert alone: it stays open until an
operator acknowledges it (which resolves it) or resolves it, or until a new rollout of the same
step starts (someone has acted on it), and stays in the alert history."""

from __future__ import annotations

import logging
from typing import Any

from django.db.models.signals import post_save
from django.dispatch import receiver

from pipelines.guards import GUARD_LABELS
from pipelines.models import Rollout
from pipelines.signals import rollout_finished

logger = logging.getLogger(__name__)


def rollout_subject(rollout_id: int) -> str:
    return f"rollout:{rollout_id}"


def _why(rollout: Rollout) -> tuple[str, float]:
    """The tripped guards with their numbers (or, without one, the rollout's reason), and the
    value the alert keeps: the first tripped guard's candidate value, else the share."""
    evidence: dict[str, Any] = rollout.evidence or {}
    tripped = [g for g in evidence.get("guards", []) if g.get("tripped")]
    if not tripped:
        return rollout.reason, float(evidence.get("share") or 0)
    stage = f"at stage {evidence.get('stage')} ({evidence.get('share')}%)"
    guards = ", ".join(GUARD_LABELS.get(g["guard"], g["guard"]) for g in tripped)
    numbers = "; ".join(g["sentence"] for g in tripped)
    return f"{guards} guard tripped {stage}: {numbers}", float(tripped[0]["candidate"] or 0)


@receiver(rollout_finished, dispatch_uid="sluice-rollout-alert")
def rollout_alert(sender, rollout: Rollout, automatic: bool, **kwargs) -> None:
    if not automatic or rollout.status != Rollout.Status.ROLLED_BACK:
        return
    from controlplane.monitoring.alert_services import alert_event_raise
    from controlplane.monitoring.alerts import Finding, Kind

    step = rollout.step
    pipeline = step.pipeline
    why, value = _why(rollout)
    finding = Finding(
        subject=rollout_subject(rollout.pk),
        summary=(
            f"{pipeline.client.name} / {pipeline.name} · {step.name}: rollout of prompt "
            f"v{rollout.candidate.number} rolled back to v{rollout.baseline.number}: {why}"
        ),
        value=round(value, 6),
        pipeline_id=pipeline.pk,
    )
    if not alert_event_raise(kind=Kind.ROLLOUT_ROLLED_BACK, finding=finding):
        logger.info("rollout %s rolled back: no alert (its rules are off)", rollout.pk)


@receiver(post_save, sender=Rollout, dispatch_uid="sluice-rollout-alert-resolve")
def _rollout_started(sender, instance: Rollout, created: bool, raw: bool = False, **kwargs):
    # A new rollout of the step means someone has taken up the last one's rollback: its alert
    # is over. Written in the starting transaction, by whoever started it.
    if not created or raw:
        return
    from controlplane.monitoring.alert_services import alerts_resolve_subjects
    from controlplane.monitoring.alerts import Kind

    earlier = Rollout.objects.filter(step_id=instance.step_id, status=Rollout.Status.ROLLED_BACK)
    alerts_resolve_subjects(
        kind=Kind.ROLLOUT_ROLLED_BACK,
        subjects=[rollout_subject(pk) for pk in earlier.values_list("pk", flat=True)],
        actor=instance.created_by,
    )
