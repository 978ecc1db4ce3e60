"""`/metrics`: the live numbers in the Prometheus text format, read from the rollups and the
capped gauges on every scrape (a custom collector; nothing is kept in process memory, so every
web process answers the same).

Counters count everything since the pipeline was created and never go down: the counter totals
(`totals.py`) hold the rollups up to an hour boundary, and a scrape adds the rollups after it.
Each counter's `_created` series is the pipeline's creation. The latency histograms are
cumulative in the same way.

Behind a bearer token (SLUICE_METRICS_TOKEN); without one configured the endpoint does not
exist (404).
"""

from __future__ import annotations

import hmac
import math
from collections.abc import Iterator
from datetime import datetime

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
from controlplane.monitoring.health import health_latest
from controlplane.monitoring.models import Alert
from controlplane.monitoring.totals import counter_totals_read
from pipelines import metrics
from pipelines.histogram import BOUNDS
from pipelines.models import BreakerEvent, Pipeline, Provider
from pipelines.services.breaker import breaker_states
from pipelines.services.budgets import budgets_for

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


# Health sample fields and how they are exposed.
HEALTH_NAMES: dict[str, tuple[str, str]] = {
    "clusters_alive": (
        "worker_clusters_alive",
        "Worker clusters with a heartbeat in the last two minutes, at the newest health sample",
    ),
    "clusters_running": (
        "worker_clusters_running",
        "Worker clusters whose django-q2 Stat was current, at the newest health sample",
    ),
    "workers": (
        "worker_processes",
        "Worker processes of the running clusters (django-q2 Stat), at the newest health sample",
    ),
    "queued_tasks": (
        "task_queue_depth",
        "Tasks waiting in the django-q2 broker's queue, at the newest health sample",
    ),
    "breakers_open": (
        "breakers_open",
        "Providers whose breaker was open or half-open, at the newest health sample",
    ),
}


def _labels(pipeline: Pipeline) -> list[str]:
    return [pipeline.client.slug, pipeline.slug]


class SluiceCollector(Collector):
    """Reads once per scrape, a fixed number of queries whatever the number of pipelines: the
    counter totals and the rollups after them, the capped gauges (one statement), the oldest
    queued items, budgets, breakers, heartbeats, the newest health sample and open alerts."""

    def __init__(self, *, now: datetime | None = None) -> None:
        self.now = now

    def collect(self) -> Iterator[Metric]:
        now = self.now or timezone.now()
        pipelines = list(Pipeline.objects.select_related("client").order_by("pk"))
        totals = counter_totals_read(pipeline_ids=[p.pk for p in pipelines])
        yield from self._counters(pipelines, totals)
        yield from self._latency(pipelines, totals)
        yield from self._gauges(pipelines, now)
        yield from self._budgets(pipelines, now)
        yield from self._breakers()
        yield from self._workers(now)
        yield from self._health(now)
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

    def _counters(self, pipelines, totals) -> Iterator[Metric]:
        for field, (name, help_text) in COUNTER_NAMES.items():
            family = CounterMetricFamily(f"{PREFIX}_{name}", help_text, labels=LABELS)
            for p in pipelines:
                family.add_metric(_labels(p), int(totals[p.pk].count(field)), created=_created(p))
            yield family
        failed = CounterMetricFamily(
            f"{PREFIX}_items_failed",
            "Failed attempts by error class",
            labels=[*LABELS, "error_class"],
        )
        tokens = CounterMetricFamily(
            f"{PREFIX}_tokens", "Model tokens used", labels=[*LABELS, "direction"]
        )
        cost = CounterMetricFamily(
            f"{PREFIX}_cost",
            "Spend on model calls, in the price list's currency",
            labels=LABELS,
        )
        saved = CounterMetricFamily(
            f"{PREFIX}_cost_saved", "Spend the result cache avoided", labels=LABELS
        )
        for p in pipelines:
            point = totals[p.pk]
            created = _created(p)
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

    def _latency(self, pipelines, totals) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            f"{PREFIX}_latency_seconds",
            "Seconds per item by measure (queue_wait, processing, end_to_end, review_wait); "
            "from the rollups' buckets, which keep counts but no sum",
            labels=[*LABELS, "measure"],
        )
        for p in pipelines:
            for measure in metrics.MEASURES:
                counts = totals[p.pk].latency.get(measure, {})
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
        ids = [p.pk for p in pipelines]
        gauges = metrics.gauges(pipeline_ids=ids)
        ages = metrics.oldest_queued_ages(pipeline_ids=ids, now=now)
        for p in pipelines:
            values = gauges[p.pk]
            for status in metrics.GAUGE_STATUSES:
                depth.add_metric([*_labels(p), status], values.get(status, 0))
            backlog.add_metric(_labels(p), values.get("in_review", 0))
            oldest.add_metric(_labels(p), max(0.0, ages.get(p.pk) or 0.0))
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

    def _health(self, now) -> Iterator[Metric]:
        """The newest health sample (the per-minute schedule): workers, queued tasks, breakers."""
        point = health_latest()
        if point is None:
            return
        age = GaugeMetricFamily(
            f"{PREFIX}_health_sample_age_seconds",
            "Seconds since the newest health sample (taken every minute by the workers)",
        )
        age.add_metric([], max(0.0, (now - point.at).total_seconds()))
        yield age
        for key, (name, help_text) in HEALTH_NAMES.items():
            value = point.values.get(key)
            if value is None:
                continue
            family = GaugeMetricFamily(f"{PREFIX}_{name}", help_text)
            family.add_metric([], value)
            yield family


def _created(pipeline: Pipeline) -> float:
    """When a pipeline's counters began: its creation."""
    return pipeline.created_at.timestamp()


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
