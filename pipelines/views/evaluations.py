"""Offline evaluations of a step's prompt versions: start one in the background, watch its
progress, reopen it later and compare two case by case. Operators only."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_http_methods

from controlplane.access import role_required
from controlplane.forms import copy_errors
from controlplane.htmx import redirect_after_post
from controlplane.params import parse_id
from controlplane.roles import Role
from pipelines.forms import EvaluationForm
from pipelines.selectors import (
    evaluation_get_for_user,
    evaluation_list,
    step_get_for_user,
)
from pipelines.services.evaluation_runs import (
    evaluation_create,
    evaluation_summary,
    evaluations_compare,
)


@require_http_methods(["GET", "POST"])
@role_required(Role.OPERATOR)
def step_evaluations(request: HttpRequest, pk: int) -> HttpResponse:
    step = step_get_for_user(user=request.user, pk=pk)
    form = EvaluationForm(request.POST or None, step=step)
    if request.method == "POST" and form.is_valid():
        try:
            evaluation = evaluation_create(step=step, actor=request.user, **form.cleaned_data)
        except ValidationError as exc:
            copy_errors(form, exc)
        else:
            messages.success(request, f"Evaluation of v{evaluation.version.number} queued.")
            return redirect_after_post(request, "evaluation-detail", evaluation.pk)
    evaluations = evaluation_list(step=step)
    context = {
        "step": step,
        "pipeline": step.pipeline,
        "form": form,
        "evaluations": [(e, evaluation_summary(e)) for e in evaluations],
    }
    status = 422 if form.errors else 200
    template = "pipelines/step_evaluations.html"
    if request.htmx and request.method == "POST":
        template += "#start-form"
    return render(request, template, context, status=status)


@require_GET
@role_required(Role.OPERATOR)
def evaluation_detail(request: HttpRequest, pk: int) -> HttpResponse:
    evaluation = evaluation_get_for_user(user=request.user, pk=pk)
    step = evaluation.step
    context = {
        "evaluation": evaluation,
        "summary": evaluation_summary(evaluation),
        "step": step,
        "pipeline": step.pipeline,
        "others": [e for e in evaluation_list(step=step, limit=50) if e.pk != evaluation.pk],
    }
    raw = request.GET.get("compare", "")
    if raw:
        other_pk = parse_id(raw)
        if other_pk is None:
            context["compare_error"] = "Choose an evaluation to compare with."
        else:
            other = evaluation_get_for_user(user=request.user, pk=other_pk)
            try:
                context["differences"] = evaluations_compare(left=evaluation, right=other)
            except ValidationError as exc:
                context["compare_error"] = " ".join(exc.messages)
            else:
                context["other"] = other
                context["other_summary"] = evaluation_summary(other)
    template = "pipelines/evaluation_detail.html"
    if request.htmx:
        template += "#progress"
    status = 400 if "compare_error" in context else 200
    return render(request, template, context, status=status)
