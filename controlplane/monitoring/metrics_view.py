"""`/metrics`: the live numbers in the Prometheus text format, read from the rollups and the
capped gauges on every scrape (a custom collector; nothing is kept in process memory, so every
web process answers the same).

Counters count the current UTC day: they start from zero at midnight, which Prometheus's
`rate()` and `increase()` treat as a counter reset (as after a restart); each counter's
`_created` series says when its day began. A latency histogram is cumulative over the same day.

Behind a bearer token (SLUICE_METRICS_TOKEN); without one configured the endpoint does not
exist (404).
"""

from __future__ import annotations

import hmac
import math
from collections.abc import Iterator
from datetime import datetime, timedelta

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from controlplane.models import WorkerHeartbeat
from controlplane.monitoring.models import Alert
from pipelines import metrics
from pipelines.histogram import BOUNDS
from pipelines.models import BreakerEvent, Pipeline, Provider
from pipelines.services.breaker import breaker_states
from pipelines.services.budgets import budgets_for, day_bounds

PREFIX = "sluice"
LABELS = ("client", "pipeline")
# Rollup counters and how they are exposed: (metric name, help, extra label or None).
COUNTER_NAMES: dict[str, tuple[str, str]] = {
    "ingested": ("items_ingested", "Items received"),
    "started": ("items_started", "Items claimed by a worker (each attempt of each step)"),
    "calls": ("model_calls", "Model calls made"),
    "accepted": ("items_accepted", "Outputs accepted automatically by the gate"),
    "held_for_review": ("items_held_for_review", "Outputs held for a person"),
    "reviewed": ("items_reviewed", "Review decisions on held items"),
    "rejected": ("items_rejected", "Items rejected"),
    "quarantined": ("items_quarantined", "Items quarantined for bad input"),
    "dead_lettered": ("items_dead_lettered", "Items dead-lettered after their last attempt"),
    "cache_hits": ("cache_hits", "Model answers served from the result cache"),
}


def _labels(pipeline: Pipeline) -> list[str]:
    return [pipeline.client.slug, pipeline.slug]


class SluiceCollector(Collector):
    """Reads pipelines.metrics once per scrape: two rollup queries for all pipelines, the
    capped gauges per pipeline and status, budgets, breakers, heartbeats and open alerts."""

    def __init__(self, *, now: datetime | None = None) -> None:
        self.now = now

    def collect(self) -> Iterator[Metric]:
        now = self.now or timezone.now()
        pipelines = list(Pipeline.objects.select_related("client").order_by("pk"))
        ids = [p.pk for p in pipelines]
        day_start, _ = day_bounds(now)
        created = day_start.timestamp()
        until = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
        today = metrics.totals_by_pipeline(pipeline_ids=ids, since=day_start, until=until)
        yield from self._counters(pipelines, today, created)
        yield from self._latency(pipelines, today, created)
        yield from self._gauges(pipelines, now)
        yield from self._budgets(pipelines, now)
        yield from self._breakers()
        yield from self._workers(now)
        open_alerts = GaugeMetricFamily(
            f"{PREFIX}_alerts_open", "Alerts firing or acknowledged, by state", labels=["state"]
        )
        counted = dict.fromkeys(Alert.OPEN_STATES, 0)
        for state in Alert.objects.filter(state__in=Alert.OPEN_STATES).values_list(
            "state", flat=True
        ):
            counted[state] += 1
        for state, n in counted.items():
            open_alerts.add_metric([state], n)
        yield open_alerts

    def _counters(self, pipelines, today, created) -> Iterator[Metric]:
        for field, (name, help_text) in COUNTER_NAMES.items():
            family = CounterMetricFamily(
                f"{PREFIX}_{name}", f"{help_text}, today (UTC)", labels=LABELS
            )
            for p in pipelines:
                family.add_metric(_labels(p), int(today[p.pk].count(field)), created=created)
            yield family
        failed = CounterMetricFamily(
            f"{PREFIX}_items_failed",
            "Failed attempts by error class, today (UTC)",
            labels=[*LABELS, "error_class"],
        )
        tokens = CounterMetricFamily(
            f"{PREFIX}_tokens",
            "Model tokens used, today (UTC)",
            labels=[*LABELS, "direction"],
        )
        cost = CounterMetricFamily(
            f"{PREFIX}_cost",
            "Spend on model calls, today (UTC), in the price list's currency",
            labels=LABELS,
        )
        saved = CounterMetricFamily(
            f"{PREFIX}_cost_saved", "Spend the result cache avoided, today (UTC)", labels=LABELS
        )
        for p in pipelines:
            point = today[p.pk]
            for error_class in ("transient", "processing", "system", "provider_limit"):
                failed.add_metric(
                    [*_labels(p), error_class],
                    int(point.count(f"failed_{error_class}")),
                    created=created,
                )
            for direction in ("input", "output"):
                tokens.add_metric(
                    [*_labels(p), direction],
                    int(point.count(f"{direction}_tokens")),
                    created=created,
                )
            cost.add_metric(_labels(p), float(point.count("cost")), created=created)
            saved.add_metric(_labels(p), float(point.count("cost_saved")), created=created)
        yield from (failed, tokens, cost, saved)

    def _latency(self, pipelines, today, created) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            f"{PREFIX}_latency_seconds",
            "Seconds per item by measure (queue_wait, processing, end_to_end, review_wait), "
            "today (UTC); from the rollups' buckets, which keep counts but no sum",
            labels=[*LABELS, "measure"],
        )
        for p in pipelines:
            for measure in metrics.MEASURES:
                counts = today[p.pk].latency.get(measure, {})
                family.add_metric([*_labels(p), measure], _cumulative(counts), sum_value=None)
        yield family

    def _gauges(self, pipelines, now) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            f"{PREFIX}_queue_depth",
            f"Items of the pipeline in each live status now (each capped at {metrics.GAUGE_CAP})",
            labels=[*LABELS, "status"],
        )
        backlog = GaugeMetricFamily(
            f"{PREFIX}_review_backlog", "Items waiting for a person now", labels=LABELS
        )
        oldest = GaugeMetricFamily(
            f"{PREFIX}_queue_oldest_age_seconds",
            "Seconds the oldest queued item has waited (0 when none waits)",
            labels=LABELS,
        )
        gauges = metrics.gauges(pipeline_ids=[p.pk for p in pipelines])
        for p in pipelines:
            values = gauges[p.pk]
            for status in metrics.GAUGE_STATUSES:
                depth.add_metric([*_labels(p), status], values.get(status, 0))
            backlog.add_metric(_labels(p), values.get("in_review", 0))
            age = metrics.oldest_queued_age(pipeline_ids=[p.pk], now=now)
            oldest.add_metric(_labels(p), max(0.0, age or 0.0))
        yield from (depth, backlog, oldest)

    def _budgets(self, pipelines, now) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            f"{PREFIX}_budget_spent_ratio",
            "Spend against each budget of the pipeline (1 = spent; work is held)",
            labels=[*LABELS, "budget"],
        )
        by_id = {p.pk: p for p in pipelines}
        for pid, budgets in budgets_for(pipelines, now=now).items():
            for budget in budgets:
                scope = "daily" if budget.scope == "pipeline" else "client_monthly"
                family.add_metric([*_labels(by_id[pid]), scope], budget.fraction)
        yield family

    def _breakers(self) -> Iterator[Metric]:
        states = GaugeMetricFamily(
            f"{PREFIX}_breaker_state",
            "Circuit breaker of each provider: 1 for its current state",
            labels=["provider", "state"],
        )
        failures = GaugeMetricFamily(
            f"{PREFIX}_breaker_failures",
            "Consecutive failures counted by each provider's breaker",
            labels=["provider"],
        )
        providers = list(Provider.objects.order_by("pk"))
        views = breaker_states(providers)
        for provider in providers:
            view = views[provider.pk]
            for state in BreakerEvent.State.values:
                states.add_metric([provider.name, state], 1 if view.state == state else 0)
            failures.add_metric([provider.name], view.failures)
        yield from (states, failures)

    def _workers(self, now) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            f"{PREFIX}_worker_heartbeat_age_seconds",
            "Seconds since each worker cluster's last heartbeat",
            labels=["host", "cluster"],
        )
        for beat in WorkerHeartbeat.objects.order_by("host", "cluster"):
            family.add_metric(
                [beat.host, beat.cluster], max(0.0, (now - beat.last_seen).total_seconds())
            )
        yield family


def _cumulative(counts: dict[int, int]) -> list[tuple[str, float]]:
    """Prometheus buckets from the rollup's: cumulative counts per upper bound, +Inf last."""
    buckets = []
    running = 0
    for index, bound in enumerate(BOUNDS):
        running += counts.get(index, 0)
        le = "+Inf" if math.isinf(bound) else f"{float(bound):g}"
        buckets.append((le, float(running)))
    return buckets


def metrics_text(*, now: datetime | None = None) -> bytes:
    """The exposition, for a scrape or a test."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SluiceCollector(now=now))
    return generate_latest(registry)


def _authorised(request: HttpRequest, token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


@never_cache
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    token = settings.SLUICE_METRICS_TOKEN
    if not token:
        raise Http404("Metrics are off: set SLUICE_METRICS_TOKEN")
    if not _authorised(request, token):
        return HttpResponse(
            "A bearer token is required.\n",
            status=401,
            content_type="text/plain",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    return HttpResponse(metrics_text(), content_type=CONTENT_TYPE_PLAIN_0_0_4)
