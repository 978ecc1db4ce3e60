"""Dashboard pages: the overview of every pipeline the user may see, and one per pipeline. The
page holds the whole range; static/js/dashboard.js then keeps it live over the websocket."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from controlplane.access import role_required
from controlplane.monitoring.figures import STEP_COLUMNS
from controlplane.monitoring.live import dashboard_read, dashboard_scope, range_name_of
from controlplane.roles import Role, role_of
from pipelines.metrics import RANGES

RANGE_LABELS = {"15m": "15 min", "1h": "1 hour", "24h": "24 hours", "7d": "7 days"}
CHARTS = (
    ("throughput", "Throughput"),
    ("latency", "Latency, end to end"),
    ("queue", "Queue depth"),
    ("errors", "Error rate by class"),
    ("cost", "Cost"),
    ("budget", "Spend against budget"),
    ("backlog", "Review backlog"),
    ("health", "Breakers and workers"),
)
TILES = (
    ("items_per_minute", "Items / min (5 min)"),
    ("p95", "p95 latency (5 min)"),
    ("queue_depth", "Queue depth"),
    ("error_rate", "Error rate (5 min)"),
    ("cost_today", "Cost today"),
    ("cache_savings", "Cache savings today"),
)


@require_GET
@role_required(Role.OPERATOR, Role.CLIENT)
def dashboard_overview(request: HttpRequest) -> HttpResponse:
    pipelines = dashboard_scope(user=request.user)
    return _render(request, pipelines=pipelines, pipeline=None)


@require_GET
@role_required(Role.OPERATOR, Role.CLIENT)
def dashboard_pipeline(request: HttpRequest, client_slug: str, slug: str) -> HttpResponse:
    [pipeline] = dashboard_scope(user=request.user, client_slug=client_slug, slug=slug)
    return _render(request, pipelines=[pipeline], pipeline=pipeline)


def _render(request: HttpRequest, *, pipelines, pipeline) -> HttpResponse:
    range_name = range_name_of(request.GET.get("range"))
    operations = role_of(request.user) == Role.OPERATOR
    data = dashboard_read(
        pipelines=pipelines,
        single=pipeline is not None,
        range_name=range_name,
        operations=operations,
        now=timezone.now(),
    )
    context = {
        "pipeline": pipeline,
        "pipelines": pipelines,
        "range_name": range_name,
        "ranges": [(name, RANGE_LABELS.get(name, name)) for name in RANGES],
        "charts": [
            {"name": name, "title": title, "figure": data["charts"][name], "id": f"chart-{name}"}
            for name, title in CHARTS
            # The health history is on an operator's overview only.
            if name in data["charts"]
        ],
        "tiles": [
            {"name": name, "label": label, "value": data["tiles"][name]} for name, label in TILES
        ],
        "operations": operations,
        "breakers": data.get("breakers", []),
        "workers": data.get("workers", []),
        "subscribe_to": f"{pipeline.client.slug}/{pipeline.slug}" if pipeline else "",
    }
    if "steps" in data:
        # A pipeline's own dashboard: its steps over the range, as a table and a chart.
        context["step_columns"] = STEP_COLUMNS
        context["step_rows"] = [[row[key] for key, _ in STEP_COLUMNS] for row in data["steps"]]
        context["step_chart"] = {"figure": data["charts"]["steps"], "id": "chart-steps"}
    return render(request, "monitoring/dashboard.html", context)
