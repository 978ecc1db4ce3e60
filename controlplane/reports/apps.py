from __future__ import annotations

from django.apps import AppConfig


class ReportsConfig(AppConfig):
    name = "controlplane.reports"
    label = "reports"
    verbose_name = "Sluice client reports"
