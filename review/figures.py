"""The review pages' charts and display strings: data in, plotly figure dicts and text out. No
ORM, no request."""

from __future__ import annotations

from collections.abc import Sequence

# One colour per age bucket, from fresh to stale.
BUCKET_COLOURS = ("#16a34a", "#65a30d", "#d97706", "#dc2626")


def backlog_figure(labels: Sequence[str], queues: Sequence[tuple[str, Sequence[int]]]) -> dict:
    """Waiting tasks by age bucket (`labels`), one stacked bar per queue ((name, counts)):
    each bar's segments are the buckets, so its height is that queue's whole backlog."""
    names = [name for name, _ in queues]
    traces = [
        {
            "type": "bar",
            "orientation": "h",
            "name": label,
            "x": [counts[index] for _, counts in queues],
            "y": names,
            "marker": {"color": BUCKET_COLOURS[index % len(BUCKET_COLOURS)]},
            "hovertemplate": f"{label}: %{{x:,}}<extra>%{{y}}</extra>",
        }
        for index, label in enumerate(labels)
    ]
    return {
        "data": traces,
        "layout": {
            "barmode": "stack",
            "xaxis": {"title": {"text": "Waiting tasks"}, "rangemode": "tozero"},
            "yaxis": {"automargin": True, "autorange": "reversed"},
            "legend": {"orientation": "h", "y": 1.15, "x": 0, "traceorder": "normal"},
            "margin": {"l": 10, "r": 20, "t": 30, "b": 45},
            "height": max(220, 60 + 40 * len(queues)),
        },
    }


def duration_text(seconds: float | None, *, unknown: str = "—") -> str:
    """A duration as people read it on a backlog: "40 s", "12 min", "3.5 h", "2.1 days"."""
    if seconds is None:
        return unknown
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
