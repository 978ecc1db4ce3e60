"""The shell's answer to system errors: a pipeline the engine paused because its configuration
broke raises an alert (banner, email, webhook) naming the cause. `pipelines` cannot import the
monitoring app, so the alert is raised here, on `pipelines.signals.pipeline_paused`.

It is filed under the pipeline's "Pipeline paused by a system error" rules (kind
`pipeline_paused`, one by default), subject `pipeline:<id>`. A pause is an event rather than a
condition on the rollups, so evaluation leaves the alert alone: it stays open until the
pipeline is active again (someone fixed the configuration and resumed it), or until an operator
acknowledges or resolves it, and stays in the alert history."""

from __future__ import annotations

import logging

from django.db.models.signals import post_save
from django.dispatch import receiver
from django.utils import timezone

from pipelines.models import Pipeline
from pipelines.signals import pipeline_paused

logger = logging.getLogger(__name__)


@receiver(pipeline_paused, dispatch_uid="sluice-pipeline-paused-alert")
def pipeline_paused_alert(sender, pipeline: Pipeline, reason: str, **kwargs) -> None:
    from controlplane.monitoring.alert_services import alert_open
    from controlplane.monitoring.alerts import Finding, Kind, pipeline_subject
    from controlplane.monitoring.models import AlertRule
    from controlplane.monitoring.notify import alerts_notify

    rules = list(
        AlertRule.objects.filter(
            pipeline_id=pipeline.pk, kind=Kind.PIPELINE_PAUSED, enabled=True
        ).order_by("pk")
    )
    if not rules:
        logger.info("pipeline %s paused; its pause alerts are off", pipeline.pk)
        return
    finding = Finding(
        subject=pipeline_subject(pipeline.pk),
        summary=(
            f"{pipeline.client.name} / {pipeline.name} paused by a system error; its items "
            f"are kept and wait: {reason}"
        ),
        value=1.0,
        pipeline_id=pipeline.pk,
    )
    now = timezone.now()
    # alert_open logs each alert it opens; one already open (paused again) is None.
    opened = [a for a in (alert_open(rule=r, finding=finding, now=now) for r in rules) if a]
    if opened:
        alerts_notify(opened=opened, resolved=[])


@receiver(post_save, sender=Pipeline, dispatch_uid="sluice-pipeline-paused-alert-resolve")
def _pipeline_saved(sender, instance: Pipeline, created: bool, raw: bool = False, **kwargs):
    # Active again: someone fixed what broke and resumed it, so the pause's alert is over.
    # Written in the resuming transaction; one UPDATE that finds nothing on most saves.
    if created or raw or instance.status != Pipeline.Status.ACTIVE:
        return
    from controlplane.monitoring.alert_services import alerts_resolve_subjects
    from controlplane.monitoring.alerts import Kind, pipeline_subject

    alerts_resolve_subjects(
        kind=Kind.PIPELINE_PAUSED, subjects=[pipeline_subject(instance.pk)], actor=None
    )
