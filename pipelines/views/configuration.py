"""Operator pages that configure pipelines, steps and prompts. Every write goes through a
service; an invalid form answers 422 with the field errors (swapped in place for htmx)."""

from __future__ import annotations

import difflib
import json

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from controlplane.access import role_required
from controlplane.forms import copy_errors
from controlplane.htmx import redirect_after_post
from controlplane.roles import Role
from pipelines.forms import (
    PipelineCreateForm,
    PipelineSettingsForm,
    PromptLabelForm,
    PromptVersionForm,
    RouteFormSet,
    StepCreateForm,
    StepForm,
)
from pipelines.models import Pipeline, PromptLabel
from pipelines.selectors import (
    pipeline_get_for_user,
    prompt_label_version,
    prompt_version_get,
    prompt_version_list,
    sample_data,
    step_get_for_user,
)
from pipelines.services import configuration as config
from pipelines.services.trial import step_try


@require_http_methods(["GET", "POST"])
@role_required(Role.OPERATOR)
def pipeline_create(request: HttpRequest) -> HttpResponse:
    form = PipelineCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = dict(form.cleaned_data)
        try:
            pipeline = config.pipeline_create(
                client=data.pop("client"),
                name=data.pop("name"),
                slug=data.pop("slug"),
                actor=request.user,
                **data,
            )
        except ValidationError as exc:
            copy_errors(form, exc)
        else:
            messages.success(request, f"Pipeline “{pipeline.name}” created as a draft.")
            return redirect_after_post(
                request, "pipeline-settings", pipeline.client.slug, pipeline.slug
            )
    status = 422 if form.errors else 200
    return render(request, "pipelines/pipeline_create.html", {"form": form}, status=status)


@require_http_methods(["GET", "POST"])
@role_required(Role.OPERATOR)
def pipeline_settings(request: HttpRequest, client_slug: str, slug: str) -> HttpResponse:
    pipeline = pipeline_get_for_user(user=request.user, client_slug=client_slug, slug=slug)
    form = PipelineSettingsForm(request.POST or None, instance=pipeline)
    if request.method == "POST":
        status_change = request.POST.get("status")
        try:
            if status_change:
                if status_change not in Pipeline.Status.values:
                    raise ValidationError({"status": [f"Unknown status {status_change!r}."]})
                config.pipeline_update(pipeline=pipeline, actor=request.user, status=status_change)
                messages.success(request, f"Pipeline is now {status_change}.")
                return redirect_after_post(request, "pipeline-settings", client_slug, slug)
            if form.is_valid():
                config.pipeline_update(pipeline=pipeline, actor=request.user, **form.cleaned_data)
                messages.success(request, "Settings saved.")
                return redirect_after_post(request, "pipeline-settings", client_slug, slug)
        except ValidationError as exc:
            copy_errors(form, exc)
        pipeline.refresh_from_db()
    context = {
        "pipeline": pipeline,
        "form": form,
        "steps": pipeline.steps.prefetch_related("prompt_labels__version", "route__model"),
        "statuses": Pipeline.Status.choices,
    }
    status = 422 if form.errors else 200
    if request.htmx and request.method == "POST":
        return render(
            request, "pipelines/pipeline_settings.html#settings-form", context, status=status
        )
    return render(request, "pipelines/pipeline_settings.html", context, status=status)


@require_http_methods(["GET", "POST"])
@role_required(Role.OPERATOR)
def step_create(request: HttpRequest, client_slug: str, slug: str) -> HttpResponse:
    pipeline = pipeline_get_for_user(user=request.user, client_slug=client_slug, slug=slug)
    form = StepCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = dict(form.cleaned_data)
        try:
            step = config.step_create(
                pipeline=pipeline,
                name=data.pop("name"),
                slug=data.pop("slug"),
                template=data.pop("template"),
                actor=request.user,
                **data,
            )
        except ValidationError as exc:
            copy_errors(form, exc)
        else:
            messages.success(request, f"Step “{step.name}” added with prompt version 1.")
            return redirect_after_post(request, "step-detail", step.pk)
    status = 422 if form.errors else 200
    context = {"pipeline": pipeline, "form": form}
    return render(request, "pipelines/step_create.html", context, status=status)


@require_http_methods(["GET", "POST"])
@role_required(Role.OPERATOR)
def step_detail(request: HttpRequest, pk: int) -> HttpResponse:
    step = step_get_for_user(user=request.user, pk=pk)
    section = request.POST.get("section", "")
    form = StepForm(request.POST if section == "settings" else None, instance=step)
    initial = [
        {"model": e.model_id, "min_input_chars": e.min_input_chars, "min_priority": e.min_priority}
        for e in step.route.all()
    ]
    route = RouteFormSet(
        request.POST if section == "route" else None, initial=initial, prefix="route"
    )
    if section == "settings" and form.is_valid():
        try:
            config.step_update(step=step, actor=request.user, **form.cleaned_data)
        except ValidationError as exc:
            copy_errors(form, exc)
        else:
            messages.success(request, "Step saved.")
            return redirect_after_post(request, "step-detail", step.pk)
    if section == "route" and route.is_valid():
        entries = [
            row for row in route.cleaned_data if row and not row.get("DELETE") and row.get("model")
        ]
        try:
            config.route_set(step=step, entries=entries, actor=request.user)
        except ValidationError as exc:
            route._non_form_errors = route.error_class(exc.messages)
        else:
            messages.success(request, "Route saved.")
            return redirect_after_post(request, "step-detail", step.pk)
    step.refresh_from_db()
    context = {
        "step": step,
        "pipeline": step.pipeline,
        "form": form,
        "route": route,
        "production": prompt_label_version(step=step, label=PromptLabel.Name.PRODUCTION),
        "candidate": prompt_label_version(step=step, label=PromptLabel.Name.CANDIDATE),
    }
    failed = form.errors or route.total_error_count() if section else False
    return render(request, "pipelines/step_detail.html", context, status=422 if failed else 200)


@require_http_methods(["GET", "POST"])
@role_required(Role.OPERATOR)
def prompt_editor(request: HttpRequest, pk: int) -> HttpResponse:
    step = step_get_for_user(user=request.user, pk=pk)
    production = prompt_label_version(step=step, label=PromptLabel.Name.PRODUCTION)
    initial = {}
    if production:
        initial = {"template": production.template, "parameters": production.parameters}
    form = PromptVersionForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            version = config.prompt_version_create(
                step=step, actor=request.user, **form.cleaned_data
            )
        except ValidationError as exc:
            copy_errors(form, exc)
        else:
            messages.success(
                request, f"Version {version.number} saved. It runs once you publish it."
            )
            return redirect_after_post(request, "prompt-editor", step.pk)
    versions = prompt_version_list(step=step)
    context = {
        "step": step,
        "pipeline": step.pipeline,
        "form": form,
        "versions": versions,
        "production": production,
        "sample": json.dumps(sample_data(step=step), indent=2, ensure_ascii=False),
    }
    status = 422 if form.errors else 200
    if request.htmx and request.method == "POST":
        return render(request, "pipelines/prompt_editor.html#version-form", context, status=status)
    return render(request, "pipelines/prompt_editor.html", context, status=status)


@require_POST
@role_required(Role.OPERATOR)
def prompt_label(request: HttpRequest, pk: int, number: int) -> HttpResponse:
    step = step_get_for_user(user=request.user, pk=pk)
    version = prompt_version_get(step=step, number=number)
    form = PromptLabelForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a label and an action.")
        return redirect_after_post(request, "prompt-editor", step.pk)
    label, action = form.cleaned_data["label"], form.cleaned_data["action"]
    try:
        if action == "remove":
            config.prompt_label_remove(step=step, label=label, actor=request.user)
            messages.success(request, f"The {label} label was removed.")
        else:
            config.prompt_label_move(step=step, label=label, version=version, actor=request.user)
            messages.success(request, f"{label.title()} now runs version {version.number}.")
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    return redirect_after_post(request, "prompt-editor", step.pk)


@require_GET
@role_required(Role.OPERATOR)
def prompt_diff(request: HttpRequest, pk: int) -> HttpResponse:
    step = step_get_for_user(user=request.user, pk=pk)
    versions = prompt_version_list(step=step)
    numbers = [v.number for v in versions]
    try:
        a = int(request.GET.get("a") or (numbers[1] if len(numbers) > 1 else numbers[0]))
        b = int(request.GET.get("b") or numbers[0])
    except (ValueError, IndexError):
        a = b = None
    left = prompt_version_get(step=step, number=a) if a is not None else None
    right = prompt_version_get(step=step, number=b) if b is not None else None
    table = None
    too_long = False
    if left and right and max(left.template.count("\n"), right.template.count("\n")) > 400:
        # The side-by-side diff is quadratic in lines: long templates get a unified diff.
        too_long = True
        table = "\n".join(
            difflib.unified_diff(
                left.template.splitlines(),
                right.template.splitlines(),
                fromfile=f"version {left.number}",
                tofile=f"version {right.number}",
                lineterm="",
            )
        )
    elif left and right:
        table = difflib.HtmlDiff(tabsize=4, wrapcolumn=70).make_table(
            left.template.splitlines(),
            right.template.splitlines(),
            fromdesc=f"version {left.number}",
            todesc=f"version {right.number}",
        )
    context = {
        "step": step,
        "pipeline": step.pipeline,
        "versions": versions,
        "left": left,
        "right": right,
        "table": table,
        "unified": too_long,
    }
    return render(request, "pipelines/prompt_diff.html", context)


@require_POST
@role_required(Role.OPERATOR)
def prompt_try(request: HttpRequest, pk: int) -> HttpResponse:
    """Run the template in the editor on a sample once and show what the gate would decide."""
    step = step_get_for_user(user=request.user, pk=pk)
    error = ""
    try:
        data = json.loads(request.POST.get("sample") or "{}")
        parameters = json.loads(request.POST.get("parameters") or "{}")
    except json.JSONDecodeError as exc:
        error = f"The sample and the parameters must be JSON: {exc.msg} at line {exc.lineno}."
    else:
        if not isinstance(data, dict) or not isinstance(parameters, dict):
            error = "The sample and the parameters must be JSON objects."
    if error:
        return render(request, "pipelines/partials/trial.html", {"error": error}, status=422)
    trial = step_try(
        step=step, template=request.POST.get("template", ""), parameters=parameters, data=data
    )
    return render(request, "pipelines/partials/trial.html", {"trial": trial, "step": step})
