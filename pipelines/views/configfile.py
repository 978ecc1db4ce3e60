"""Configuration as code in the browser: download a pipeline as YAML, check and apply a file."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_http_methods

from controlplane.access import role_required
from controlplane.htmx import redirect_after_post
from controlplane.roles import Role
from pipelines.configfile import (
    config_load,
    pipeline_export_yaml,
    pipeline_import,
    pipeline_import_plan,
)
from pipelines.selectors import pipeline_get_for_user

MAX_CONFIG_BYTES = 2 * 1024 * 1024


class ConfigImportForm(forms.Form):
    text = forms.CharField(
        label="Pipeline YAML",
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 18, "class": "code", "spellcheck": "false"}),
    )
    file = forms.FileField(required=False, help_text="Or upload a .yaml file.")

    def clean(self):
        cleaned = super().clean()
        upload = cleaned.get("file")
        if upload:
            if upload.size > MAX_CONFIG_BYTES:
                raise forms.ValidationError("The file is larger than 2 MB.")
            try:
                cleaned["text"] = upload.read().decode("utf-8-sig")
            except UnicodeDecodeError:
                raise forms.ValidationError("The file is not UTF-8 text.") from None
        if not cleaned.get("text", "").strip():
            raise forms.ValidationError("Paste a pipeline's YAML or upload a file.")
        return cleaned


@require_GET
@role_required(Role.OPERATOR)
def pipeline_export(request: HttpRequest, client_slug: str, slug: str) -> HttpResponse:
    pipeline = pipeline_get_for_user(user=request.user, client_slug=client_slug, slug=slug)
    response = HttpResponse(
        pipeline_export_yaml(pipeline=pipeline), content_type="application/yaml; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="{client_slug}-{slug}.yaml"'
    return response


@require_http_methods(["GET", "POST"])
@role_required(Role.OPERATOR)
def pipeline_import_view(request: HttpRequest) -> HttpResponse:
    form = ConfigImportForm(request.POST or None, request.FILES or None)
    problems: list[str] = []
    plan = None
    if request.method == "POST" and form.is_valid():
        try:
            doc = config_load(text=form.cleaned_data["text"])
            plan = pipeline_import_plan(doc=doc)
            if request.POST.get("apply") and plan.changed:
                pipeline = pipeline_import(doc=doc, actor=request.user)
                messages.success(request, f"Imported: {plan.describe()}.")
                return redirect_after_post(
                    request, "pipeline-settings", pipeline.client.slug, pipeline.slug
                )
        except ValidationError as exc:
            problems = exc.messages
            plan = None
    context = {"form": form, "problems": problems, "plan": plan}
    status = 422 if problems or form.errors else 200
    return render(request, "pipelines/pipeline_import.html", context, status=status)
