"""Alert pages (operators): the list with filters and history, acknowledge and resolve, the
banner every operator page polls, and the rules of each pipeline and the global ones."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from controlplane.access import role_required
from controlplane.forms import copy_errors
from controlplane.htmx import redirect_after_post
from controlplane.monitoring import alert_selectors as selectors
from controlplane.monitoring.alert_forms import AlertRuleCreateForm, AlertRuleForm
from controlplane.monitoring.alert_rule_services import (
    alert_rule_create,
    alert_rule_delete,
    alert_rule_update,
)
from controlplane.monitoring.alert_services import alert_acknowledge, alert_resolve
from controlplane.monitoring.alerts import KIND_HELP
from controlplane.monitoring.models import AlertRule
from controlplane.params import parse_id
from controlplane.roles import Role
from pipelines.selectors import pipeline_get_for_user

ALERT_PAGE = 50


@require_GET
@role_required(Role.OPERATOR)
def alert_list(request: HttpRequest) -> HttpResponse:
    state = request.GET.get("state", "open")
    if state not in selectors.STATE_FILTERS:
        state = "open"
    kind = request.GET.get("kind", "")
    filters = {
        "state": state,
        "pipeline": parse_id(request.GET.get("pipeline")),
        "kind": kind if kind in AlertRule.KindChoice.values else "",
    }
    alerts = list(
        selectors.alert_search(
            user=request.user,
            state=filters["state"],
            pipeline_id=filters["pipeline"],
            kind=filters["kind"],
            before=parse_id(request.GET.get("before")),
            limit=ALERT_PAGE + 1,
        )
    )
    context = {
        "alerts": alerts[:ALERT_PAGE],
        "next_before": alerts[ALERT_PAGE - 1].pk if len(alerts) > ALERT_PAGE else None,
        "filters": filters,
        "states": selectors.STATE_FILTERS,
        "kinds": AlertRule.KindChoice.choices,
        "pipelines": selectors.alert_pipeline_choices(),
    }
    return render(request, "monitoring/alert_list.html", context)


@require_POST
@role_required(Role.OPERATOR)
def alert_acknowledge_view(request: HttpRequest, pk: int) -> HttpResponse:
    alert = selectors.alert_get_for_user(user=request.user, pk=pk)
    alert_acknowledge(alert=alert, actor=request.user)
    messages.success(request, f"Acknowledged: {alert.summary}")
    return redirect_after_post(request, _back(request))


@require_POST
@role_required(Role.OPERATOR)
def alert_resolve_view(request: HttpRequest, pk: int) -> HttpResponse:
    alert = selectors.alert_get_for_user(user=request.user, pk=pk)
    alert_resolve(alert=alert, actor=request.user)
    messages.success(request, f"Resolved: {alert.summary}")
    return redirect_after_post(request, _back(request))


def _back(request: HttpRequest) -> str:
    """The alert list with the filters the form came from (only those, only our own page)."""
    back = QueryDict(request.POST.get("back", ""))
    kept = {key: back[key] for key in ("state", "pipeline", "kind") if back.get(key)}
    url = reverse("alert-list")
    return f"{url}?{urlencode(kept)}" if kept else url


@never_cache
@require_GET
def alert_banner(request: HttpRequest) -> HttpResponse:
    if not request.user.is_authenticated and request.htmx:
        # The session ended while the page polled: reloading sends the page to the login.
        return HttpResponse(status=204, headers={"HX-Refresh": "true"})
    return _alert_banner(request)


@role_required(Role.OPERATOR)
def _alert_banner(request: HttpRequest) -> HttpResponse:
    alerts, total = selectors.alert_banner_list(user=request.user)
    return render(
        request, "monitoring/partials/alert_banner.html", {"alerts": alerts, "total": total}
    )


@require_GET
@role_required(Role.OPERATOR)
def alert_rule_list(request: HttpRequest) -> HttpResponse:
    context = {
        "rules": selectors.alert_rule_list_for_user(user=request.user),
        "pipelines": selectors.alert_pipeline_choices(),
        "pipeline": None,
    }
    return render(request, "monitoring/alert_rules.html", context)


@require_GET
@role_required(Role.OPERATOR)
def alert_rule_pipeline(request: HttpRequest, client_slug: str, slug: str) -> HttpResponse:
    pipeline = pipeline_get_for_user(user=request.user, client_slug=client_slug, slug=slug)
    context = {
        "rules": selectors.alert_rule_list_for_user(user=request.user, pipeline=pipeline),
        "pipelines": selectors.alert_pipeline_choices(),
        "pipeline": pipeline,
    }
    return render(request, "monitoring/alert_rules.html", context)


@require_http_methods(["GET", "POST"])
@role_required(Role.OPERATOR)
def alert_rule_edit(request: HttpRequest, pk: int) -> HttpResponse:
    rule = selectors.alert_rule_get_for_user(user=request.user, pk=pk)
    form = AlertRuleForm(request.POST or None, instance=rule)
    if request.method == "POST":
        done = _rule_save(
            request,
            form,
            lambda fields: alert_rule_update(rule=rule, actor=request.user, **fields),
            said="Rule saved",
        )
        if done is not None:
            return done
    context = {"rule": rule, "form": form}
    return render(request, "monitoring/alert_rule_edit.html", context, status=_status(request))


@require_http_methods(["GET", "POST"])
@role_required(Role.OPERATOR)
def alert_rule_create_view(request: HttpRequest) -> HttpResponse:
    pipeline_id = parse_id(request.GET.get("pipeline"))
    initial = {} if pipeline_id is None else {"pipeline": pipeline_id}
    form = AlertRuleCreateForm(request.POST or None, initial=initial)
    if request.method == "POST":
        done = _rule_save(
            request,
            form,
            lambda fields: alert_rule_create(actor=request.user, **fields),
            said="Rule added",
        )
        if done is not None:
            return done
    context = {"form": form, "kind_help": list(KIND_HELP.values())}
    return render(request, "monitoring/alert_rule_create.html", context, status=_status(request))


def _rule_save(
    request: HttpRequest,
    form: forms.ModelForm,
    save: Callable[[dict[str, Any]], AlertRule],
    *,
    said: str,
) -> HttpResponse | None:
    """Save a posted rule form through its service: the redirect to the rule's list, or None
    with the errors on the form (by field where the form has it)."""
    if not form.is_valid():
        return None
    try:
        rule = save(dict(form.cleaned_data))
    except ValidationError as exc:
        copy_errors(form, exc)
        return None
    messages.success(request, f"{said}: {rule}.")
    return _back_to_rules(request, rule)


def _status(request: HttpRequest) -> int:
    # A form shown again after a POST was refused.
    return 422 if request.method == "POST" else 200


def _back_to_rules(request: HttpRequest, rule: AlertRule) -> HttpResponse:
    """The rules page the rule is listed on: its pipeline's, or the global rules."""
    if rule.pipeline_id:
        return redirect_after_post(
            request, "alert-rule-pipeline", rule.pipeline.client.slug, rule.pipeline.slug
        )
    return redirect_after_post(request, "alert-rule-list")


@require_http_methods(["GET", "POST"])
@role_required(Role.OPERATOR)
def alert_rule_delete_view(request: HttpRequest, pk: int) -> HttpResponse:
    rule = selectors.alert_rule_get_for_user(user=request.user, pk=pk)
    error = ""
    if request.method == "POST":
        try:
            alert_rule_delete(rule=rule, actor=request.user)
        except ValidationError as exc:
            error = " ".join(exc.messages)
        else:
            messages.success(request, f"Rule deleted: {rule}.")
            return _back_to_rules(request, rule)
    context = {"rule": rule, "error": error, "alerts": rule.alerts.count()}
    return render(
        request, "monitoring/alert_rule_delete.html", context, status=422 if error else 200
    )
