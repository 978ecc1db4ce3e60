"""django-q2 entry point of the per-minute monitoring bookkeeping: the samples (gauges, breakers
and worker health) and, once an hour has settled, the counter totals /metrics serves. Thin,
calls the services, safe to run twice."""

from __future__ import annotations

from controlplane.monitoring.health import health_samples_take
from controlplane.monitoring.samples import gauge_samples_take
from controlplane.monitoring.totals import counter_totals_advance


def gauge_samples_take_task() -> dict[str, int]:
    return {**gauge_samples_take(), **health_samples_take(), **counter_totals_advance()}
