"""Operator pages for a step's labeled examples: upload with progress, list, search, delete."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import reswap, retarget

from controlplane.access import role_required
from controlplane.htmx import redirect_after_post
from controlplane.params import parse_id
from controlplane.roles import Role
from pipelines.selectors import example_list, step_get_for_user
from pipelines.services.examples import example_delete, example_import_start
from pipelines.views.files import upload_start

PAGE = 50


class ExampleUploadForm(forms.Form):
    file = forms.FileField(help_text="CSV with a header row, or JSONL: one example per line.")


@require_http_methods(["GET", "POST"])
@role_required(Role.OPERATOR)
def example_list_view(request: HttpRequest, pk: int) -> HttpResponse:
    step = step_get_for_user(user=request.user, pk=pk)
    form = ExampleUploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        job = upload_start(
            form,
            lambda name, content: example_import_start(
                step=step, filename=name, content=content, actor=request.user
            ),
        )
        if job is not None:
            if request.htmx:
                return render(
                    request, "pipelines/partials/example_import.html", {"step": step, "job": job}
                )
            messages.success(request, f"Importing {job.filename}.")
            return redirect_after_post(request, "example-list", step.pk)
    query = request.GET.get("q", "").strip()
    rows = list(
        example_list(
            step=step, query=query, before=parse_id(request.GET.get("before")), limit=PAGE + 1
        )
    )
    context = {
        "step": step,
        "pipeline": step.pipeline,
        "form": form,
        "examples": rows[:PAGE],
        "next_before": rows[PAGE - 1].pk if len(rows) > PAGE else None,
        "query": query,
        "imports": step.example_imports.defer("content")[:5],
    }
    status = 422 if form.errors else 200
    if request.htmx and request.method == "POST":
        # The form posts into the import slot; its errors go back into the form itself.
        response = render(request, "pipelines/examples.html#upload-form", context, status=status)
        return reswap(retarget(response, "#upload-form"), "outerHTML")
    return render(request, "pipelines/examples.html", context, status=status)


@require_GET
@role_required(Role.OPERATOR)
def example_import_status(request: HttpRequest, pk: int, import_pk: int) -> HttpResponse:
    step = step_get_for_user(user=request.user, pk=pk)
    job = step.example_imports.defer("content").filter(pk=import_pk).first()
    if job is None:
        raise Http404("No such import")
    return render(request, "pipelines/partials/example_import.html", {"step": step, "job": job})


@require_POST
@role_required(Role.OPERATOR)
def example_delete_view(request: HttpRequest, pk: int) -> HttpResponse:
    step = step_get_for_user(user=request.user, pk=pk)
    ids = [i for i in map(parse_id, request.POST.getlist("ids")) if i is not None]
    deleted = example_delete(step=step, ids=ids, actor=request.user)
    messages.success(request, f"Deleted {deleted} example{'s' if deleted != 1 else ''}.")
    return redirect_after_post(request, "example-list", step.pk)
