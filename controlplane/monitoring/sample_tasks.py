"""django-q2 entry point of the gauge samples: thin, calls one service, safe to run twice."""

from __future__ import annotations

from controlplane.monitoring.samples import gauge_samples_take


def gauge_samples_take_task() -> dict[str, int]:
    return gauge_samples_take()
