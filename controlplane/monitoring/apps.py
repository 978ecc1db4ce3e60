from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _after_migrate(sender, **kwargs) -> None:
    from controlplane.monitoring.alert_services import alert_rules_ensure

    alert_rules_ensure()


class MonitoringConfig(AppConfig):
    name = "controlplane.monitoring"
    label = "monitoring"
    verbose_name = "Sluice monitoring"

    def ready(self) -> None:
        from controlplane.monitoring import receivers  # noqa: F401 -- connects the receivers

        post_migrate.connect(_after_migrate, sender=self, dispatch_uid="sluice-alert-rules")
