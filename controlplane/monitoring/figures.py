"""The dashboards' charts and tiles: data in, plotly figure dicts and display strings out. No ORM,
no request: the page and the live updates build them with the same functions.

Times on the x axis are UTC strings ("YYYY-MM-DD HH:MM:SS"), which plotly reads as dates and which
sort as text, so the page can merge a live update into a trace by comparing them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pipelines.metrics import GAUGE_CAP, STEP_MEASURE, Point

# Failures by error class, as the rollups count them; input errors are the quarantined items.
ERROR_CLASSES = (
    ("transient", "failed_transient"),
    ("processing", "failed_processing"),
    ("system", "failed_system"),
    ("provider limit", "failed_provider_limit"),
    ("input", "quarantined"),
)
QUEUE_GAUGES = (
    ("queued", "queued"),
    ("waiting to retry", "waiting_retry"),
    ("running", "running"),
    ("delivering", "delivering"),
)
QUANTILES = (50, 95, 99)
# Tick marks of the latency chart's log axis, in seconds, with their labels.
LATENCY_TICKS = (
    (0.001, "1 ms"),
    (0.01, "10 ms"),
    (0.1, "100 ms"),
    (1, "1 s"),
    (10, "10 s"),
    (60, "1 min"),
    (600, "10 min"),
    (3600, "1 h"),
    (86400, "1 day"),
)
# A log axis cannot draw 0: faster than this is drawn as this.
LATENCY_FLOOR = 0.001
COLOURS = {
    "ingested": "#6b7280",
    "accepted": "#16a34a",
    "to review": "#d97706",
    "failed": "#dc2626",
}


@dataclass(frozen=True)
class Sample:
    """Gauges at one time, summed over the pipelines on the dashboard: a stored sample (a minute,
    or an hour's peak) or the live count of one tick."""

    at: datetime
    gauges: Mapping[str, int]


def x_of(at: datetime) -> str:
    """A chart's x value: the UTC time as text."""
    if at.tzinfo is not None:
        at = at.astimezone(UTC)
    return at.strftime("%Y-%m-%d %H:%M:%S")


def throughput_figure(points: Sequence[Point], *, resolution: str) -> dict[str, Any]:
    x = [x_of(p.at) for p in points]
    traces = [
        _line("ingested", x, [int(p.count("ingested")) for p in points]),
        _line("accepted", x, [int(p.count("accepted")) for p in points]),
        _line("to review", x, [int(p.count("held_for_review")) for p in points]),
        _line("failed", x, [p.failed + int(p.count("quarantined")) for p in points]),
    ]
    return _figure(traces, y_title=f"items per {resolution}")


def latency_figure(points: Sequence[Point], *, sla_seconds: float | None) -> dict[str, Any]:
    """End-to-end p50/p95/p99 per point (a gap where nothing finished) and the SLA line."""
    x = [x_of(p.at) for p in points]
    # Markers too: a lone busy hour between idle ones has no neighbour to draw a line to.
    traces = [
        {
            **_line(f"p{q}", x, [_latency(p.percentile("end_to_end", q)) for p in points]),
            "mode": "lines+markers",
            "marker": {"size": 4},
            "hovertemplate": "%{y:.3~g} s",
        }
        for q in QUANTILES
    ]
    figure = _figure(traces, y_title="end to end")
    # Latency spans milliseconds to minutes: a log axis keeps both readable, labelled in
    # durations rather than powers of ten.
    figure["layout"]["yaxis"] = {
        "title": {"text": "end to end"},
        "type": "log",
        "tickvals": [t for t, _ in LATENCY_TICKS],
        "ticktext": [label for _, label in LATENCY_TICKS],
    }
    if sla_seconds:
        figure["layout"]["shapes"] = [
            {
                "type": "line",
                "xref": "paper",
                "yref": "y",
                "x0": 0,
                "x1": 1,
                "y0": sla_seconds,
                "y1": sla_seconds,
                "line": {"dash": "dash", "width": 1.5, "color": "#dc2626"},
                "label": {"text": f"SLA {sla_seconds:g} s", "textposition": "end"},
            }
        ]
    return figure


def error_rate_figure(points: Sequence[Point]) -> dict[str, Any]:
    """Per point, the share of attempts that failed, by error class (stacked)."""
    x = [x_of(p.at) for p in points]
    rates: list[list[float]] = [[] for _ in ERROR_CLASSES]
    for point in points:
        counts = [int(point.count(field)) for _, field in ERROR_CLASSES]
        attempts = max(int(point.count("started")) + int(point.count("quarantined")), sum(counts))
        for row, n in zip(rates, counts, strict=True):
            row.append(round(n / attempts, 4) if attempts else 0.0)
    traces = [
        {**_line(name, x, row), "stackgroup": "errors"}
        for (name, _), row in zip(ERROR_CLASSES, rates, strict=True)
    ]
    figure = _figure(traces, y_title="share of attempts")
    figure["layout"]["yaxis"]["tickformat"] = ".0%"
    return figure


def cost_figure(points: Sequence[Point], *, resolution: str) -> dict[str, Any]:
    x = [x_of(p.at) for p in points]
    traces = [
        {**_line("cost", x, [_money(p.count("cost")) for p in points]), "type": "bar"},
        {
            **_line("saved by the cache", x, [_money(p.count("cost_saved")) for p in points]),
            "type": "bar",
        },
    ]
    figure = _figure(traces, y_title=f"USD per {resolution}")
    figure["layout"]["barmode"] = "group"
    return figure


def queue_figure(samples: Sequence[Sample]) -> dict[str, Any]:
    x = [x_of(s.at) for s in samples]
    traces = [
        _line(name, x, [int(s.gauges.get(key, 0)) for s in samples]) for name, key in QUEUE_GAUGES
    ]
    return _figure(traces, y_title="items")


def backlog_figure(samples: Sequence[Sample]) -> dict[str, Any]:
    x = [x_of(s.at) for s in samples]
    traces = [_line("in review", x, [int(s.gauges.get("in_review", 0)) for s in samples])]
    return _figure(traces, y_title="items waiting for a person")


@dataclass(frozen=True)
class BudgetBar:
    """One budget on the spend chart: whose it is, its period, its limit and the spend so far."""

    label: str
    spent: Decimal
    limit: Decimal


def budget_figure(bars: Sequence[BudgetBar]) -> dict[str, Any]:
    """Spend as a share of each budget, with marks at the 80% warning and the 100% hold."""
    percent = [round(float(b.spent / b.limit) * 100, 1) if b.limit > 0 else 100.0 for b in bars]
    trace = {
        "type": "bar",
        "orientation": "h",
        "name": "spent",
        "x": percent,
        "y": [b.label for b in bars],
        "text": [f"${b.spent:,.2f} of ${b.limit:,.2f}" for b in bars],
        "textposition": "auto",
        "marker": {
            "color": [
                "#dc2626" if p >= 100 else "#d97706" if p >= 80 else "#16a34a" for p in percent
            ]
        },
        "hovertemplate": "%{x:.1f}% %{text}<extra></extra>",
    }
    layout: dict[str, Any] = {
        "xaxis": {"title": {"text": "% of budget spent"}, "range": [0, max([110, *percent])]},
        "yaxis": {"automargin": True, "visible": bool(bars)},
        "margin": {"l": 10, "r": 20, "t": 10, "b": 45},
        "showlegend": False,
        "shapes": [
            {
                "type": "line",
                "xref": "x",
                "yref": "paper",
                "x0": mark,
                "x1": mark,
                "y0": 0,
                "y1": 1,
                "line": {"dash": "dot", "width": 1, "color": colour},
            }
            for mark, colour in ((80, "#d97706"), (100, "#dc2626"))
        ],
    }
    if not bars:
        layout["annotations"] = [
            {
                "text": "No budget set",
                "xref": "paper",
                "yref": "paper",
                "x": 0.5,
                "y": 0.5,
                "showarrow": False,
            }
        ]
    return {"data": [trace], "layout": layout}


HEALTH_LINES = (
    ("clusters alive", "clusters_alive", "y"),
    ("worker processes", "workers", "y"),
    ("queued tasks", "queued_tasks", "y3"),
)
BREAKER_LEVELS = ("closed", "half-open", "open")


def health_figure(points: Sequence[Any], *, providers: Sequence[tuple[int, str]]) -> dict[str, Any]:
    """The installation's health over time (operators only): each provider's breaker as a step
    line on a closed / half-open / open scale above, and below it the worker clusters alive,
    worker processes and tasks waiting in the queue (on their own axis, right). `points` are
    `health.HealthPoint`s; a provider not sampled at a point has a gap there."""
    x = [x_of(p.at) for p in points]
    traces: list[dict[str, Any]] = [
        {
            **_line(name, x, [p.breakers.get(pk) for p in points]),
            "yaxis": "y2",
            "line": {"shape": "hv"},
            "mode": "lines+markers",
            "marker": {"size": 3},
            "legendgroup": "breakers",
        }
        for pk, name in providers
    ]
    for name, key, axis in HEALTH_LINES:
        trace = _line(name, x, [p.values.get(key) for p in points])
        trace["yaxis"] = axis
        if axis == "y3":
            trace["line"] = {"dash": "dot"}
        traces.append(trace)
    figure = _figure(traces, y_title="workers")
    layout = figure["layout"]
    layout["yaxis"].update({"domain": [0, 0.42], "rangemode": "tozero", "automargin": True})
    layout["yaxis2"] = {
        "domain": [0.55, 1],
        "range": [-0.3, 2.3],
        "tickvals": [0, 1, 2],
        "ticktext": list(BREAKER_LEVELS),
        "title": {"text": "breakers"},
        "fixedrange": True,
        "automargin": True,
    }
    layout["yaxis3"] = {
        "overlaying": "y",
        "side": "right",
        "rangemode": "tozero",
        "showgrid": False,
        "tickformat": ",d",
        "title": {"text": "queued tasks"},
    }
    layout["margin"] = {**layout["margin"], "r": 55}
    return figure


# The per-step table of a pipeline's dashboard: (key of a row, column heading).
STEP_COLUMNS = (
    ("step", "Step"),
    ("started", "Started"),
    ("accepted", "Accepted"),
    ("held", "Held for review"),
    ("approved", "Approved"),
    ("edited", "Edited"),
    ("rejected", "Rejected"),
    ("failed", "Failed"),
    ("cost", "Cost"),
    ("cost_per_item", "Cost per item"),
    ("p50", "p50 processing"),
    ("p95", "p95 processing"),
)
# Outcomes of a step's attempts, as the throughput per step chart stacks them.
STEP_OUTCOMES = (("accepted", "accepted"), ("to review", "held"), ("failed", "failed"))
STEP_BARS_FIT = 6


def step_rows(
    steps: Sequence[tuple[int, str]], totals: Mapping[int, Point]
) -> list[dict[str, str]]:
    """One row per step (`steps` are (id, name) in pipeline order) as the table shows it, from
    the step's summed rollups; a step without work in the range has zeros and dashes. Cost per
    item divides the cost by the attempts that finished (accepted, held or failed), as the
    rollout guards do."""
    rows = []
    for step_id, name in steps:
        point = totals.get(step_id) or Point(at=datetime.min)
        counts = {key: int(point.count(key)) for key, _ in STEP_COLUMNS[1:8]}
        cost = Decimal(point.count("cost"))
        finished = counts["accepted"] + counts["held"] + counts["failed"]
        rows.append(
            {
                "step": name,
                **{key: f"{n:,}" for key, n in counts.items()},
                "cost": _dollars(cost),
                "cost_per_item": _dollars(cost / finished, fine=True) if finished else "—",
                "p50": _duration(point.percentile(STEP_MEASURE, 50)),
                "p95": _duration(point.percentile(STEP_MEASURE, 95)),
            }
        )
    return rows


def step_throughput_figure(
    steps: Sequence[tuple[int, str]], totals: Mapping[int, Point]
) -> dict[str, Any]:
    """Items each step finished over the range, stacked by outcome: one bar per step, the
    first step on top."""
    names = [name for _, name in steps]
    empty = Point(at=datetime.min)
    traces = [
        {
            "type": "bar",
            "orientation": "h",
            "name": label,
            "x": [int((totals.get(pk) or empty).count(key)) for pk, _ in steps],
            "y": names,
            "marker": {"color": COLOURS[label]},
            "hovertemplate": f"%{{x:,}} {label}<extra></extra>",
        }
        for label, key in STEP_OUTCOMES
    ]
    layout: dict[str, Any] = {
        "barmode": "stack",
        "xaxis": {"title": {"text": "items"}, "rangemode": "tozero", "tickformat": ",d"},
        "yaxis": {"automargin": True, "autorange": "reversed"},
        "legend": {"orientation": "h", "y": 1.15, "x": 0, "traceorder": "normal"},
        "margin": {"l": 10, "r": 20, "t": 30, "b": 45},
    }
    # The chart box fits about six bars; more steps make it taller rather than thinner.
    if len(steps) > STEP_BARS_FIT:
        layout["height"] = 100 + 30 * len(steps)
    return {"data": traces, "layout": layout}


def charts_build(
    *,
    points: Sequence[Point],
    samples: Sequence[Sample],
    budgets: Sequence[BudgetBar],
    resolution: str,
    sla_seconds: float | None,
) -> dict[str, dict[str, Any]]:
    """Every chart of a dashboard, by the name the page knows it by."""
    return {
        "throughput": throughput_figure(points, resolution=resolution),
        "latency": latency_figure(points, sla_seconds=sla_seconds),
        "queue": queue_figure(samples),
        "errors": error_rate_figure(points),
        "cost": cost_figure(points, resolution=resolution),
        "budget": budget_figure(budgets),
        "backlog": backlog_figure(samples),
    }


def traces_of(figure: Mapping[str, Any]) -> list[dict[str, list]]:
    """Only the x and y of each trace: what a live update carries for the page to merge."""
    return [{"x": trace["x"], "y": trace["y"]} for trace in figure["data"]]


def tiles_build(
    *,
    recent: Point,
    minutes: int,
    gauges: Mapping[str, int],
    cost_today: Decimal,
    saved_today: Decimal,
) -> dict[str, str]:
    """The headline numbers as the tiles show them. `recent` sums the last `minutes` minutes."""
    processed = int(recent.count("accepted")) + int(recent.count("held_for_review"))
    failures = [int(recent.count(field)) for _, field in ERROR_CLASSES]
    attempts = max(int(recent.count("started")) + int(recent.count("quarantined")), sum(failures))
    p95 = recent.percentile("end_to_end", 95)
    depth = int(gauges.get("queued", 0)) + int(gauges.get("waiting_retry", 0))
    capped = any(int(gauges.get(k, 0)) >= GAUGE_CAP for k in ("queued", "waiting_retry"))
    return {
        "items_per_minute": f"{processed / minutes:,.1f}" if minutes else "0.0",
        "p95": _duration(p95),
        "queue_depth": f"{depth:,}{'+' if capped else ''}",
        "error_rate": f"{sum(failures) / attempts:.1%}" if attempts else "0.0%",
        "cost_today": _dollars(cost_today),
        "cache_savings": _dollars(saved_today),
    }


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def _dollars(amount: Decimal, *, fine: bool = False) -> str:
    """Dollars to the cent; under a dollar to four decimals, and `fine` amounts (a cost per
    item) under a cent to six."""
    if amount >= 1 or amount == 0:
        return f"${amount:,.2f}"
    return f"${amount:,.6f}" if fine and amount < Decimal("0.01") else f"${amount:,.4f}"


def _money(value: int | Decimal) -> float:
    return round(float(value), 6)


def _latency(value: float | None) -> float | None:
    """Seconds as the latency chart draws them: 4 significant digits, at least LATENCY_FLOOR."""
    return None if value is None else float(f"{max(value, LATENCY_FLOOR):.4g}")


def _line(name: str, x: list[str], y: list) -> dict[str, Any]:
    trace: dict[str, Any] = {"type": "scatter", "mode": "lines", "name": name, "x": x, "y": y}
    if name in COLOURS:
        trace["line"] = {"color": COLOURS[name]}
    return trace


def _figure(traces: list[dict[str, Any]], *, y_title: str) -> dict[str, Any]:
    return {
        "data": traces,
        "layout": {
            "xaxis": {"type": "date"},
            "yaxis": {"title": {"text": y_title}, "rangemode": "tozero"},
            "hovermode": "x unified",
            "legend": {"orientation": "h", "y": 1.15, "x": 0},
            "margin": {"l": 55, "r": 20, "t": 30, "b": 35},
        },
    }
