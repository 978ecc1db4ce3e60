"""The numbers of review as pages: the backlog and when it will be drained, reviewer statistics,
and a step's threshold judged from its blind audits."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from controlplane.access import role_required
from controlplane.params import parse_float
from controlplane.roles import Role
from pipelines.selectors import step_get_for_user
from pipelines.threshold import threshold_curve
from review.audit_threshold import (
    audit_error_figure,
    audit_floor,
    audit_threshold_suggest,
    audits_needed,
)
from review.figures import backlog_figure, duration_text
from review.selectors import (
    AGE_BUCKETS,
    Backlog,
    audit_outcome_list,
    backlog_get,
    peer_agreement_get,
    queue_backlog_list,
    reviewer_stats_list,
)

STATS_RANGES = {
    "24h": ("24 hours", timedelta(hours=24)),
    "7d": ("7 days", timedelta(days=7)),
    "30d": ("30 days", timedelta(days=30)),
}
AUDIT_TABLE_THRESHOLDS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.99)
DEFAULT_TARGET_PERCENT = 2.0


def _partial(request: HttpRequest, template: str, name: str) -> str:
    return f"{template}#{name}" if request.htmx else template


def _backlog_row(name: str, backlog: Backlog, now: datetime) -> dict:
    if not backlog.waiting:
        drain = "nothing waiting"
    else:
        drain = duration_text(backlog.drain_seconds, unknown="no recent decisions")
    oldest = backlog.oldest_opened_at
    return {
        "name": name,
        "backlog": backlog,
        "oldest": duration_text(max((now - oldest).total_seconds(), 0)) if oldest else "—",
        "drain": drain,
    }


@require_GET
@role_required(Role.OPERATOR, Role.REVIEWER)
def review_backlog(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    overall = backlog_get(user=request.user, now=now)
    queues = queue_backlog_list(user=request.user, now=now)
    context = {
        "overall": _backlog_row("All queues", overall, now),
        "rows": [_backlog_row(q.queue.name, q.backlog, now) for q in queues],
        "bucket_labels": [label for label, _, _ in AGE_BUCKETS],
        "figure": backlog_figure(
            [label for label, _, _ in AGE_BUCKETS],
            [(q.queue.name, [b.count for b in q.backlog.buckets]) for q in queues],
        ),
    }
    return render(request, _partial(request, "review/backlog.html", "backlog"), context)


@require_GET
@role_required(Role.OPERATOR, Role.REVIEWER)
def review_stats(request: HttpRequest) -> HttpResponse:
    range_name = request.GET.get("range", "")
    if range_name not in STATS_RANGES:
        range_name = "24h"
    until = timezone.now()
    since = until - STATS_RANGES[range_name][1]
    stats = reviewer_stats_list(user=request.user, since=since, until=until)
    context = {
        "range_name": range_name,
        "ranges": [(name, label) for name, (label, _) in STATS_RANGES.items()],
        "range_label": STATS_RANGES[range_name][0],
        "rows": [{"stats": s, "median": duration_text(s.median_handling_seconds)} for s in stats],
        "peers": peer_agreement_get(user=request.user, since=since, until=until),
    }
    return render(request, "review/stats.html", context)


def _target(raw: str) -> float:
    """The target error rate from a percentage, within 0 to 50%."""
    return min(max(parse_float(raw, DEFAULT_TARGET_PERCENT) / 100, 0.0), 0.5)


@require_GET
@role_required(Role.OPERATOR)
def review_audit_threshold(request: HttpRequest, pk: int) -> HttpResponse:
    step = step_get_for_user(user=request.user, pk=pk)
    target = _target(request.GET.get("target", str(DEFAULT_TARGET_PERCENT)))
    outcomes = audit_outcome_list(step=step)
    needed = audits_needed(target)
    context = {
        "step": step,
        "pipeline": step.pipeline,
        "target_percent": round(target * 100, 2),
        "audits": len(outcomes),
        "needed": needed,
        "audit_percent": round(float(step.audit_rate) * 100, 1),
    }
    if outcomes:
        curve = threshold_curve(outcomes)
        floor = audit_floor(curve)
        suggestion = audit_threshold_suggest(outcomes, target_error_rate=target)
        current = float(step.confidence_threshold)
        by_threshold = {round(point.threshold, 2): point for point in curve}
        shown = sorted({round(floor.threshold, 2), *AUDIT_TABLE_THRESHOLDS})
        context.update(
            floor=floor,
            suggestion=suggestion,
            enough=suggestion is not None and needed is not None and suggestion.accepted >= needed,
            figure=audit_error_figure(
                curve,
                target_error_rate=target,
                current=current,
                suggested=suggestion.threshold if suggestion else None,
            ),
            rows=[
                {
                    "point": by_threshold[t],
                    "errors": round((by_threshold[t].error_rate or 0) * by_threshold[t].accepted),
                    "enough": needed is not None and by_threshold[t].accepted >= needed,
                }
                for t in shown
                if t >= floor.threshold and t in by_threshold
            ],
        )
    template = _partial(request, "review/audit_threshold.html", "audit-threshold")
    return render(request, template, context)
