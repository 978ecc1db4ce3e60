"""Uploading a file of items to a pipeline, with its progress: operators, and the users of the
pipeline's client."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_http_methods
from django_htmx.http import reswap, retarget

from controlplane.access import role_required
from controlplane.htmx import redirect_after_post
from controlplane.roles import Role
from pipelines.selectors import item_upload_get, item_upload_list, pipeline_get_for_user
from pipelines.services.uploads import item_upload_start
from pipelines.views.files import upload_start


class ItemUploadForm(forms.Form):
    file = forms.FileField(help_text="CSV with a header row, or JSONL: one item per line.")


@require_http_methods(["GET", "POST"])
@role_required(Role.OPERATOR, Role.CLIENT)
def pipeline_upload(request: HttpRequest, client_slug: str, slug: str) -> HttpResponse:
    pipeline = pipeline_get_for_user(user=request.user, client_slug=client_slug, slug=slug)
    form = ItemUploadForm(request.POST, request.FILES) if request.method == "POST" else None
    if form is not None and form.is_valid():
        job = upload_start(
            form,
            lambda name, content: item_upload_start(
                pipeline=pipeline, filename=name, content=content, actor=request.user
            ),
        )
        if job is not None:
            if request.htmx:
                context = {"pipeline": pipeline, "job": job}
                return render(request, "pipelines/partials/item_upload.html", context)
            messages.success(request, f"Uploading {job.filename}.")
            return redirect_after_post(request, "pipeline-upload", client_slug, slug)
    context = {
        "pipeline": pipeline,
        "form": form or ItemUploadForm(),
        "uploads": item_upload_list(pipeline=pipeline),
    }
    if form is None:
        return render(request, "pipelines/pipeline_upload.html", context)
    if request.htmx:
        # The form posts into the upload list; its errors go back into the form itself.
        page = "pipelines/pipeline_upload.html#upload-form"
        response = render(request, page, context, status=422)
        return reswap(retarget(response, "#upload-form"), "outerHTML")
    return render(request, "pipelines/pipeline_upload.html", context, status=422)


@require_GET
@role_required(Role.OPERATOR, Role.CLIENT)
def pipeline_upload_status(
    request: HttpRequest, client_slug: str, slug: str, pk: int
) -> HttpResponse:
    pipeline = pipeline_get_for_user(user=request.user, client_slug=client_slug, slug=slug)
    job = item_upload_get(pipeline=pipeline, pk=pk)
    context = {"pipeline": pipeline, "job": job}
    return render(request, "pipelines/partials/item_upload.html", context)
