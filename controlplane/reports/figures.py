"""The report's plotly charts: a report's days in, figure dicts out (drawn by static/js/charts.js).
No ORM. The layout is the dashboards' (`controlplane.monitoring.figures`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from controlplane.monitoring.figures import _figure, _line

# The capacity line is drawn when it is within this many times the busiest day.
CAPACITY_LINE_WITHIN = 5


def _x(days: Sequence[dict[str, Any]]) -> list[str]:
    return [day["day"].isoformat() for day in days]


def throughput_figure(days: Sequence[dict[str, Any]], *, capacity_per_day: float | None):
    """Items received and finished per day, and the daily capacity as a dashed line."""
    x = _x(days)
    traces = [
        {**_line("finished", x, [day["finished"] for day in days]), "type": "bar"},
        _line("received", x, [day["ingested"] for day in days]),
    ]
    figure = _figure(traces, y_title="items per day")
    busiest = max([day["ingested"] for day in days] + [day["finished"] for day in days] + [0])
    # Far above the volume, the line would flatten the bars: the capacity table says it instead.
    if capacity_per_day and capacity_per_day <= max(busiest, 1) * CAPACITY_LINE_WITHIN:
        figure["layout"]["shapes"] = [_hline(capacity_per_day, "capacity")]
    return figure


def cost_figure(days: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Model and review cost per day (stacked) and what the cache and routing saved."""
    x = _x(days)
    traces = [
        {**_line("model cost", x, [float(day["cost"]) for day in days]), "type": "bar"},
        {**_line("review cost", x, [float(day["review_cost"]) for day in days]), "type": "bar"},
        _line("saved by the cache", x, [float(day["cache_saved"]) for day in days]),
        _line("saved by routing", x, [float(day["routing_saved"]) for day in days]),
    ]
    figure = _figure(traces, y_title="USD per day")
    figure["layout"]["barmode"] = "stack"
    return figure


def quality_figure(days: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per day, the share of items within the latency target and the review rate."""
    x = _x(days)
    traces = [
        {
            **_line("within the latency target", x, [day["within_sla"] for day in days]),
            "mode": "lines+markers",
        },
        {
            **_line("review rate", x, [day["review_rate"] for day in days]),
            "mode": "lines+markers",
        },
    ]
    figure = _figure(traces, y_title="share of items")
    figure["layout"]["yaxis"]["tickformat"] = ".0%"
    return figure


def model_cost_figure(rows: Sequence[Sequence[Any]]) -> dict[str, Any]:
    """Cost per model (rows of the cost-per-model table), as horizontal bars."""
    return {
        "data": [
            {
                "type": "bar",
                "orientation": "h",
                "x": [float(row[3]) for row in rows],
                "y": [str(row[0]) for row in rows],
                "hovertemplate": "%{y}: $%{x:.4f}<extra></extra>",
            }
        ],
        "layout": {
            "xaxis": {"title": {"text": "USD"}},
            "yaxis": {"automargin": True},
            "margin": {"l": 10, "r": 20, "t": 10, "b": 45},
            "showlegend": False,
        },
    }


def _hline(y: float, label: str) -> dict[str, Any]:
    return {
        "type": "line",
        "xref": "paper",
        "yref": "y",
        "x0": 0,
        "x1": 1,
        "y0": y,
        "y1": y,
        "line": {"dash": "dash", "width": 1.5, "color": "#dc2626"},
        "label": {"text": label, "textposition": "end"},
    }


def charts_build(report) -> dict[str, dict[str, Any]]:
    """Every chart of a report, by name."""
    capacity = report.total.capacity * 1440 if report.total.capacity else None
    return {
        "throughput": throughput_figure(report.days, capacity_per_day=capacity),
        "cost": cost_figure(report.days),
        "models": model_cost_figure(report.tables["cost_model"].rows),
        "quality": quality_figure(report.days),
    }
