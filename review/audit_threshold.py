"""A step's threshold from its blind audits: the error rate people found in auto-accepted output
at or above each threshold, and the lowest threshold that keeps it within a target.

Audits only sample outputs the gate accepted, so they say nothing about confidences below the
lowest one audited: no threshold under that floor is suggested. No ORM, no request.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from pipelines.threshold import (
    CurvePoint,
    Outcome,
    threshold_curve,
    threshold_figure,
    threshold_suggest,
)

# With no error among n audits, the true error rate is under 3 / n with 95% confidence (the
# "rule of three"): fewer audits than 3 / target cannot show a rate under the target at all.
RULE_OF_THREE = 3.0


def audits_needed(target_error_rate: float) -> int | None:
    """Audits needed above a threshold to show, with 95% confidence, an error rate under the
    target even when none of them is wrong; None for a target of 0 (no number is enough)."""
    if target_error_rate <= 0:
        return None
    return math.ceil(RULE_OF_THREE / target_error_rate - 1e-9)


def audit_floor(curve: Sequence[CurvePoint]) -> CurvePoint | None:
    """The highest threshold that still counts every audit: the lowest the audits can judge
    (below it, the same audits would be counted for outputs nobody audited). None without
    audits."""
    if not curve or curve[0].accepted == 0:
        return None
    total = curve[0].accepted
    return [point for point in curve if point.accepted == total][-1]


def audit_threshold_suggest(
    outcomes: Sequence[Outcome], *, target_error_rate: float, step: float = 0.01
) -> CurvePoint | None:
    """The lowest threshold, no lower than the audits reach, at which the audited outputs at
    or above it were wrong at most `target_error_rate` of the time; None when none is."""
    suggestion = threshold_suggest(outcomes, target_error_rate=target_error_rate, step=step)
    if suggestion is None:
        return None
    floor = audit_floor(threshold_curve(outcomes, step=step))
    # Below the floor every audit is counted, as at the floor itself: the same error rate.
    if floor is not None and suggestion.threshold < floor.threshold:
        return floor
    return suggestion


def audit_error_figure(
    curve: Sequence[CurvePoint],
    *,
    target_error_rate: float,
    current: float | None = None,
    suggested: float | None = None,
) -> dict[str, Any]:
    """A JSON-serialisable plotly figure: the audited error rate at or above each threshold
    against the target, and how many audits stand behind each point."""
    x = [point.threshold for point in curve]
    traces = [
        {
            "type": "scatter",
            "mode": "lines",
            "name": "Error rate of audited output at or above",
            "x": x,
            # None where no audit is counted: plotly draws a gap, not a zero.
            "y": [point.error_rate for point in curve],
            "hovertemplate": "%{y:.1%}",
            "line": {"color": "#dc2626"},
        },
        {
            "type": "scatter",
            "mode": "lines",
            "name": "Audits at or above",
            "x": x,
            "y": [point.accepted for point in curve],
            "yaxis": "y2",
            "hovertemplate": "%{y:,}",
            "line": {"color": "#6b7280", "dash": "dot"},
        },
    ]
    shapes: list[dict[str, Any]] = [
        {
            "type": "line",
            "xref": "paper",
            "yref": "y",
            "x0": 0,
            "x1": 1,
            "y0": target_error_rate,
            "y1": target_error_rate,
            "line": {"dash": "dash", "width": 1.5, "color": "#d97706"},
            "label": {"text": "target", "textposition": "end", "font": {"color": "#d97706"}},
        }
    ]
    # The same dashed markers as the threshold tool's own chart.
    shapes += threshold_figure(curve, current=current, suggested=suggested)["layout"]["shapes"]
    rates = [point.error_rate for point in curve if point.error_rate is not None]
    return {
        "data": traces,
        "layout": {
            "xaxis": {"title": {"text": "Auto-accept threshold"}, "range": [0, 1]},
            "yaxis": {
                "title": {"text": "Error rate"},
                "range": [0, max([target_error_rate * 2, *rates, 0.01]) * 1.05],
                "tickformat": ".0%",
            },
            "yaxis2": {
                "title": {"text": "Audits"},
                "overlaying": "y",
                "side": "right",
                "rangemode": "tozero",
                "showgrid": False,
            },
            "hovermode": "x unified",
            "legend": {"orientation": "h", "y": 1.12, "x": 0},
            "margin": {"l": 55, "r": 55, "t": 40, "b": 45},
            "shapes": shapes,
        },
    }
