"""django-q2 entry point of alerts: thin, calls one service, safe to run twice."""

from __future__ import annotations

from controlplane.monitoring.alert_services import alerts_evaluate


def alerts_evaluate_task() -> dict[str, int]:
    return alerts_evaluate()
