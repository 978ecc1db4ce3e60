"""The shell's answer to `pipelines.signals.rollout_finished`: a rollout that a guard rolled
back raises an alert (banner, email, webhook) naming the guard and its numbers. `pipelines`
cannot import the monitoring app, so the alert is raised here.

The alert is filed under the pipeline's "error rate worse than before" rule (a candidate worse
than production is that kind of regression) with a subject of its own, so it never merges with
that rule's own incidents; as an event rather than a condition, the next evaluation resolves it
and it stays in the alert history."""

from __future__ import annotations

import logging

from django.db import IntegrityError, transaction
from django.dispatch import receiver
from django.utils import timezone

from controlplane.logs import log_fields
from pipelines.models import Rollout
from pipelines.signals import rollout_finished

logger = logging.getLogger(__name__)

# The rule kinds a rollback alert is filed under, by preference.
RULE_KINDS = ("error_rate_baseline", "error_rate")


@receiver(rollout_finished, dispatch_uid="sluice-rollout-alert")
def rollout_alert(sender, rollout: Rollout, automatic: bool, **kwargs) -> None:
    if not automatic or rollout.status != Rollout.Status.ROLLED_BACK:
        return
    from controlplane.monitoring.models import Alert, AlertRule
    from controlplane.monitoring.notify import alerts_notify

    step = rollout.step
    rules = {
        rule.kind: rule
        for rule in AlertRule.objects.filter(pipeline_id=step.pipeline_id, kind__in=RULE_KINDS)
    }
    rule = next((rules[k] for k in RULE_KINDS if k in rules), None)
    if rule is None:
        logger.warning(
            "rollout %s rolled back; the pipeline has no rule to alert under", rollout.pk
        )
        return
    now = timezone.now()
    summary = (
        f"{step.pipeline.name} · {step.name}: rollout of prompt v{rollout.candidate.number} "
        f"rolled back — {rollout.reason}"
    )
    try:
        with transaction.atomic():
            alert = Alert.objects.create(
                rule=rule,
                pipeline_id=step.pipeline_id,
                subject=f"rollout:{rollout.pk}",
                summary=summary[:500],
                value=float(rollout.share),
                opened_at=now,
                last_seen_at=now,
            )
    except IntegrityError:
        return  # raised already
    logger.warning(
        "alert opened: %s",
        alert.summary,
        extra=log_fields(alert_id=alert.pk, pipeline_id=step.pipeline_id),
    )
    alerts_notify(opened=[alert], resolved=[])
