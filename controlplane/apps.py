from __future__ import annotations

from django.apps import AppConfig, apps
from django.db.models.signals import post_migrate


def _after_migrate(sender, **kwargs) -> None:
    # post_migrate is sent once per app with models; act after the last one, when every
    # permission exists.
    with_models = [config for config in apps.get_app_configs() if config.models_module]
    if sender is not with_models[-1]:
        return
    from controlplane.schedules import schedules_ensure
    from controlplane.services import roles_ensure

    roles_ensure()
    schedules_ensure()


class ControlplaneConfig(AppConfig):
    name = "controlplane"
    verbose_name = "Sluice control plane"

    def ready(self) -> None:
        post_migrate.connect(_after_migrate, dispatch_uid="sluice-after-migrate")
        # The shell's receivers: a rollout rolled back by a guard raises an alert, and so does
        # a pipeline the engine paused for a system error.
        from controlplane import rollout_alerts, system_alerts  # noqa: F401
