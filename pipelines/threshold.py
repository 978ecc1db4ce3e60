"""Evidence for picking a step's auto-accept threshold: how much would pass, and how well."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# A grid finer than 10,001 points shows nothing more on a chart and only costs memory and time.
MIN_STEP = 0.0001
MAX_STEP = 0.5


@dataclass(frozen=True)
class Outcome:
    """One past output: the model's confidence in it and whether it turned out correct."""

    confidence: float
    correct: bool


@dataclass(frozen=True)
class CurvePoint:
    """What a threshold would have done to the outcomes; accuracy is None when nothing passes."""

    threshold: float
    accepted: int
    accepted_share: float
    accuracy: float | None
    error_rate: float | None


def threshold_curve(outcomes: Sequence[Outcome], *, step: float = 0.01) -> list[CurvePoint]:
    """Return one point per threshold 0, step, ..., 1; confidence >= threshold is auto-accepted."""
    intervals = _intervals(step)
    ordered = sorted(
        (_checked_confidence(index, outcome.confidence), bool(outcome.correct))
        for index, outcome in enumerate(outcomes)
    )
    total = len(ordered)
    # correct_from[i] counts correct outcomes among ordered[i:], so every threshold reads its
    # accepted set's accuracy in O(1) once the sweep has found where that set starts.
    correct_from = [0] * (total + 1)
    for i in range(total - 1, -1, -1):
        correct_from[i] = correct_from[i + 1] + ordered[i][1]

    points = []
    first_accepted = 0
    for i in range(intervals + 1):
        # i / intervals is the nearest float to the exact grid value, so a threshold of 0.7 equals
        # a confidence written as 0.7, where i * step would drift (57 * 0.01 != 0.57).
        threshold = i / intervals
        # Thresholds only rise, so the first accepted index only moves forward: one pass in all.
        while first_accepted < total and ordered[first_accepted][0] < threshold:
            first_accepted += 1
        accepted = total - first_accepted
        correct = correct_from[first_accepted]
        points.append(
            CurvePoint(
                threshold=threshold,
                accepted=accepted,
                accepted_share=accepted / total if total else 0.0,
                accuracy=correct / accepted if accepted else None,
                error_rate=(accepted - correct) / accepted if accepted else None,
            )
        )
    return points


def threshold_suggest(
    outcomes: Sequence[Outcome],
    *,
    target_error_rate: float,
    min_accepted: int = 1,
    step: float = 0.01,
) -> CurvePoint | None:
    """Return the lowest threshold accepting >= min_accepted items within the error target."""
    if not 0.0 <= target_error_rate < 1.0:
        raise ValueError(f"target_error_rate must be within [0, 1); got {target_error_rate!r}")
    if isinstance(min_accepted, bool) or not isinstance(min_accepted, int) or min_accepted < 1:
        raise ValueError(f"min_accepted must be a whole number of at least 1; got {min_accepted!r}")
    # The lowest qualifying threshold auto-accepts the most items, so it saves the most review
    # work while still meeting the quality target. The error rate does not fall monotonically as
    # the threshold rises, so scan every point instead of bisecting.
    for point in threshold_curve(outcomes, step=step):
        if (
            point.error_rate is not None
            and point.accepted >= min_accepted
            and point.error_rate <= target_error_rate
        ):
            return point
    return None


def threshold_figure(
    curve: Sequence[CurvePoint],
    *,
    current: float | None = None,
    suggested: float | None = None,
) -> dict[str, Any]:
    """Return a JSON-serialisable plotly figure of share and accuracy against threshold."""
    x = [point.threshold for point in curve]
    # Accuracy stays None (JSON null) where nothing is accepted so plotly draws a gap, not a zero.
    traces = [
        _line_trace("Auto-accepted share", x, [point.accepted_share for point in curve]),
        _line_trace("Accuracy of auto-accepted", x, [point.accuracy for point in curve]),
    ]
    shapes = [
        _marker_line(value, label=label, colour=colour)
        for value, label, colour in (
            (current, "current", "#6b7280"),
            (suggested, "suggested", "#16a34a"),
        )
        if value is not None
    ]
    return {
        "data": traces,
        "layout": {
            "xaxis": {"title": {"text": "Auto-accept threshold"}, "range": [0, 1]},
            "yaxis": {
                "title": {"text": "Share of items"},
                "range": [0, 1.02],
                "tickformat": ".0%",
            },
            "hovermode": "x unified",
            "legend": {"orientation": "h", "y": 1.12, "x": 0},
            "margin": {"l": 50, "r": 20, "t": 40, "b": 45},
            "shapes": shapes,
        },
    }


def _intervals(step: float) -> int:
    if not MIN_STEP <= step <= MAX_STEP:
        raise ValueError(f"step must be within [{MIN_STEP}, {MAX_STEP}]; got {step!r}")
    intervals = round(1 / step)
    # A step that does not divide 1 would leave the grid short of the threshold 1.0 itself.
    if not math.isclose(intervals * step, 1.0, rel_tol=1e-9):
        raise ValueError(f"step must divide 1 into whole intervals; got {step!r}")
    return intervals


def _checked_confidence(index: int, confidence: float) -> float:
    # The chained comparison is False for NaN as well, so one check covers both.
    if not 0.0 <= confidence <= 1.0:
        raise ValueError(f"outcome {index} has confidence {confidence!r}; must be within [0, 1]")
    return float(confidence)


def _line_trace(name: str, x: list[float], y: list[float | None]) -> dict[str, Any]:
    return {
        "type": "scatter",
        "mode": "lines",
        "name": name,
        "x": x,
        "y": y,
        "hovertemplate": "%{y:.1%}",
    }


def _marker_line(value: float, *, label: str, colour: str) -> dict[str, Any]:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{label} threshold must be within [0, 1]; got {value!r}")
    return {
        "type": "line",
        "xref": "x",
        "yref": "paper",
        "x0": value,
        "x1": value,
        "y0": 0,
        "y1": 1,
        "line": {"dash": "dash", "width": 1.5, "color": colour},
        "label": {"text": label, "textposition": "end", "font": {"color": colour}},
    }
