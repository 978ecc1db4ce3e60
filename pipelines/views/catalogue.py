"""Operator pages for the provider and model catalogue."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_http_methods, require_POST

from controlplane.access import role_required
from controlplane.forms import copy_errors
from controlplane.htmx import redirect_after_post
from controlplane.roles import Role
from pipelines.forms import AiModelForm, ProviderForm
from pipelines.selectors import provider_get, provider_list
from pipelines.services import configuration as config
from pipelines.services.breaker import (
    breaker_event_list,
    breaker_reset,
    breaker_state,
    breaker_states,
)
from pipelines.services.ratelimit import rate_used


@require_http_methods(["GET", "POST"])
@role_required(Role.OPERATOR)
def provider_list_view(request: HttpRequest) -> HttpResponse:
    form = ProviderForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = dict(form.cleaned_data)
        try:
            provider = config.provider_create(
                name=data.pop("name"), kind=data.pop("kind"), actor=request.user, **data
            )
        except ValidationError as exc:
            copy_errors(form, exc)
        else:
            messages.success(request, f"Provider “{provider.name}” added.")
            return redirect_after_post(request, "provider-detail", provider.pk)
    providers = list(provider_list())
    breakers = breaker_states(providers)
    context = {"providers": [(p, breakers[p.pk]) for p in providers], "form": form}
    return render(
        request, "pipelines/provider_list.html", context, status=422 if form.errors else 200
    )


@require_http_methods(["GET", "POST"])
@role_required(Role.OPERATOR)
def provider_detail(request: HttpRequest, pk: int) -> HttpResponse:
    provider = provider_get(pk=pk)
    section = request.POST.get("section", "")
    form = ProviderForm(request.POST if section == "provider" else None, instance=provider)
    model_form = AiModelForm(request.POST if section == "model" else None, prefix="model")
    try:
        if section == "provider" and form.is_valid():
            config.provider_update(provider=provider, actor=request.user, **form.cleaned_data)
            messages.success(request, "Provider saved.")
            return redirect_after_post(request, "provider-detail", provider.pk)
        if section == "model" and model_form.is_valid():
            data = dict(model_form.cleaned_data)
            model = config.aimodel_create(
                provider=provider, name=data.pop("name"), actor=request.user, **data
            )
            messages.success(request, f"Model “{model.name}” added.")
            return redirect_after_post(request, "provider-detail", provider.pk)
    except ValidationError as exc:
        copy_errors(model_form if section == "model" else form, exc)
    provider.refresh_from_db()
    context = {
        "provider": provider,
        "form": form,
        "model_form": model_form,
        "models": provider.models.all(),
        "breaker": breaker_state(provider),
        "breaker_events": breaker_event_list(provider=provider),
        "rate_used": rate_used(provider=provider),
    }
    if request.htmx and request.method == "GET":
        # The breaker section refreshes itself while the page is open.
        return render(request, "pipelines/provider_detail.html#breaker", context)
    failed = bool(form.errors or model_form.errors)
    return render(request, "pipelines/provider_detail.html", context, status=422 if failed else 200)


@require_POST
@role_required(Role.OPERATOR)
def provider_breaker_reset(request: HttpRequest, pk: int) -> HttpResponse:
    provider = provider_get(pk=pk)
    breaker_reset(provider=provider, actor=request.user)
    messages.success(
        request, f"The breaker of “{provider.name}” is closed: calls go through again."
    )
    return redirect_after_post(request, "provider-detail", provider.pk)
