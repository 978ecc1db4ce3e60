"""Gradual rollouts of a step's prompt versions: start one, watch the candidate against
production live, pause, resume, promote or roll back by hand. Operators only. The live region
is polled under WSGI; under ASGI the shell's rollout ticker (controlplane/rollouts_live.py)
pushes it over /ws/rollouts/<id>/."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from controlplane.access import role_required
from controlplane.forms import copy_errors
from controlplane.htmx import redirect_after_post
from controlplane.roles import Role
from pipelines.forms import RolloutStartForm
from pipelines.guards import GUARD_LABELS, format_value
from pipelines.models import Rollout
from pipelines.rollout_figures import rollout_figures
from pipelines.selectors import rollout_get_for_user, rollout_list, step_get_for_user
from pipelines.services import rollouts as service

ACTIONS = {
    "pause": service.rollout_pause,
    "resume": service.rollout_resume,
    "promote": service.rollout_promote,
    "rollback": service.rollout_rollback,
}
# The page's live region: what the page polls under WSGI, and what its websocket is sent.
LIVE_TEMPLATE = "pipelines/rollout_detail.html#live"


@require_http_methods(["GET", "POST"])
@role_required(Role.OPERATOR)
def step_rollouts(request: HttpRequest, pk: int) -> HttpResponse:
    step = step_get_for_user(user=request.user, pk=pk)
    form = RolloutStartForm(request.POST or None, step=step)
    if request.method == "POST" and form.is_valid():
        try:
            rollout = service.rollout_start(step=step, actor=request.user, **form.cleaned_data)
        except ValidationError as exc:
            copy_errors(form, exc)
        else:
            messages.success(
                request,
                f"Rollout of v{rollout.candidate.number} started at {rollout.share}% of items.",
            )
            return redirect_after_post(request, "rollout-detail", rollout.pk)
    context = {
        "step": step,
        "pipeline": step.pipeline,
        "form": form,
        "rollouts": rollout_list(step=step),
    }
    status = 422 if form.errors else 200
    template = "pipelines/step_rollouts.html"
    if request.htmx and request.method == "POST":
        template += "#start-form"
    return render(request, template, context, status=status)


def rollout_page_context(*, rollout: Rollout, websocket: bool) -> dict[str, Any]:
    """What the live region of the rollout page shows: status and stages, why it ended, the
    guard table, the sample and the chart figures, read from the step rollups (six queries).
    The page renders it, and the shell's rollout ticker renders it once per tick for every
    viewer (`websocket`: the region is fed by the socket rather than polled)."""
    candidate, production = service.rollout_arms(rollout=rollout)
    comparison = service.rollout_compare(rollout=rollout, arms=(candidate, production))
    minutes = service.arm_minutes(
        step_id=rollout.step_id,
        versions=[rollout.candidate.number, rollout.baseline.number],
        since=rollout.started_at,
    )
    rows = [
        {
            "label": GUARD_LABELS[r.guard],
            "guard": r.guard,
            "candidate": format_value(r.guard, r.candidate),
            "production": format_value(r.guard, r.production),
            "limit": format_value(r.guard, r.limit),
            "tripped": r.tripped,
            "judged": r.judged,
        }
        for r in comparison.results
    ]
    figures = rollout_figures(
        {
            "candidate": minutes[rollout.candidate.number],
            "production": minutes[rollout.baseline.number],
        },
        limits={r.guard: r.limit for r in comparison.results if r.limit is not None},
    )
    return {
        "rollout": rollout,
        "websocket": websocket,
        "stages": [
            {"share": share, "index": i, "current": i == rollout.stage}
            for i, share in enumerate(rollout.stages)
        ],
        "tripped_guards": [GUARD_LABELS[g] for g in rollout.evidence.get("tripped", [])],
        "rows": rows,
        "candidate_numbers": candidate,
        "production_numbers": production,
        "figures": figures,
        "enough": comparison.enough,
    }


@require_GET
@role_required(Role.OPERATOR)
def rollout_detail(request: HttpRequest, pk: int) -> HttpResponse:
    rollout = rollout_get_for_user(user=request.user, pk=pk)
    # Websockets need the ASGI server; under WSGI the live region polls instead.
    websocket = isinstance(request, ASGIRequest)
    context = rollout_page_context(rollout=rollout, websocket=websocket)
    if request.htmx:
        return render(request, LIVE_TEMPLATE, context)
    context.update(step=rollout.step, pipeline=rollout.step.pipeline)
    return render(request, "pipelines/rollout_detail.html", context)


@require_POST
@role_required(Role.OPERATOR)
def rollout_action(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    rollout = rollout_get_for_user(user=request.user, pk=pk)
    act = ACTIONS.get(action)
    if act is None:
        return HttpResponseBadRequest(
            f"Unknown action {action!r}: pause, resume, promote or rollback."
        )
    try:
        rollout = act(rollout=rollout, actor=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, f"Rollout {rollout.get_status_display()}.")
    return redirect_after_post(request, "rollout-detail", pk)
