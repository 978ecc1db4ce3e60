"""Charts of a rollout: the candidate against production, minute by minute, on each guard
metric. Pure: numbers in, plotly figure dicts out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pipelines.guards import GUARD_LABELS, GUARDS, ArmNumbers

CHARTED = ("error_rate", "review_rate", "p95_latency", "cost_per_item")
COLOURS = {"candidate": "#d97706", "production": "#2563eb"}


def rollout_figures(
    minutes: Mapping[str, Sequence[tuple[datetime, ArmNumbers]]],
    *,
    limits: Mapping[str, float | None] | None = None,
) -> dict[str, dict[str, Any]]:
    """One figure per charted guard metric, a line per arm ({"candidate": [(minute, numbers)],
    "production": …}); `limits` draws the candidate's current limit on each metric."""
    figures = {}
    for metric in CHARTED:
        traces = []
        for arm, points in minutes.items():
            traces.append(
                {
                    "type": "scatter",
                    "mode": "lines+markers",
                    "name": arm,
                    "x": [minute.isoformat() for minute, _ in points],
                    "y": [numbers.metrics()[metric] for _, numbers in points],
                    "line": {"color": COLOURS.get(arm, "#6b7280")},
                    "connectgaps": False,
                }
            )
        layout: dict[str, Any] = {
            "title": {"text": GUARD_LABELS[metric], "font": {"size": 14}},
            "hovermode": "x unified",
            "legend": {"orientation": "h", "y": -0.25, "x": 0},
            "margin": {"l": 55, "r": 15, "t": 35, "b": 40},
            "height": 260,
            "xaxis": {"type": "date", "tickformat": "%H:%M"},
            "yaxis": {"rangemode": "tozero"},
        }
        if GUARDS[metric] == "rate":
            layout["yaxis"]["tickformat"] = ".0%"
        elif metric == "p95_latency":
            layout["yaxis"]["ticksuffix"] = " s"
        limit = (limits or {}).get(metric)
        if limit is not None:
            layout["shapes"] = [
                {
                    "type": "line",
                    "xref": "paper",
                    "x0": 0,
                    "x1": 1,
                    "y0": limit,
                    "y1": limit,
                    "line": {"color": "#dc2626", "dash": "dot", "width": 1},
                }
            ]
        figures[metric] = {"data": traces, "layout": layout}
    return figures
