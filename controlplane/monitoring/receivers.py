"""Signal receivers of the monitoring app: every new pipeline gets the default alert rules."""

from __future__ import annotations

from django.db.models.signals import post_save
from django.dispatch import receiver

from pipelines.models import Pipeline


@receiver(post_save, sender=Pipeline, dispatch_uid="sluice-alert-rules-for-pipeline")
def _pipeline_created(sender, instance: Pipeline, created: bool, raw: bool = False, **kwargs):
    # Fixtures (raw) carry their own rows; only a pipeline made by the application gets rules.
    if created and not raw:
        from controlplane.monitoring.alert_services import alert_rules_default_create

        alert_rules_default_create(pipeline=instance)
