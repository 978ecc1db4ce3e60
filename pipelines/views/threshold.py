"""The threshold tool: pick a step's confidence threshold from evidence, not by feel."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_http_methods

from controlplane.access import role_required
from controlplane.htmx import redirect_after_post
from controlplane.params import parse_float
from controlplane.roles import Role
from pipelines.selectors import step_get_for_user
from pipelines.services import configuration as config
from pipelines.services.evaluation import step_outcomes
from pipelines.threshold import threshold_curve, threshold_figure, threshold_suggest

TABLE_THRESHOLDS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.99)


def _target(raw: str) -> float:
    return min(max(parse_float(raw, 5.0) / 100, 0.0), 0.5)


@require_http_methods(["GET", "POST"])
@role_required(Role.OPERATOR)
def step_threshold(request: HttpRequest, pk: int) -> HttpResponse:
    step = step_get_for_user(user=request.user, pk=pk)
    if request.method == "POST":
        try:
            value = Decimal(request.POST.get("threshold", ""))
            config.step_update(step=step, actor=request.user, confidence_threshold=value)
        except (InvalidOperation, ValidationError):
            messages.error(request, "The threshold must be a number between 0 and 1.")
        else:
            messages.success(request, f"Threshold set to {value}.")
        return redirect_after_post(request, "step-threshold", step.pk)
    target = _target(request.GET.get("target", "5"))
    outcomes, source = step_outcomes(step=step)
    context = {
        "step": step,
        "pipeline": step.pipeline,
        "source": source,
        "target_percent": round(target * 100, 2),
        "outcomes": len(outcomes),
    }
    if outcomes:
        curve = threshold_curve(outcomes)
        suggestion = threshold_suggest(
            outcomes, target_error_rate=target, min_accepted=max(1, len(outcomes) // 50)
        )
        by_threshold = {round(point.threshold, 2): point for point in curve}
        current = float(step.confidence_threshold)
        context.update(
            figure=threshold_figure(
                curve, current=current, suggested=suggestion.threshold if suggestion else None
            ),
            suggestion=suggestion,
            current_point=by_threshold.get(round(current, 2)),
            rows=[by_threshold[t] for t in TABLE_THRESHOLDS if t in by_threshold],
        )
    return render(request, "pipelines/step_threshold.html", context)
