"""Alert pages (operators): the list with filters and history, acknowledge and resolve, the
banner every operator page polls, and the rules of each pipeline and the global ones."""

from __future__ import annotations

from urllib.parse import urlencode

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
from controlplane.monitoring.alert_forms import AlertRuleForm
from controlplane.monitoring.alert_services import (
    alert_acknowledge,
    alert_resolve,
    alert_rule_update,
)
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
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                alert_rule_update(rule=rule, actor=request.user, **form.cleaned_data)
            except ValidationError as exc:
                copy_errors(form, exc)
            else:
                messages.success(request, f"Rule saved: {rule}.")
                if rule.pipeline_id:
                    return redirect_after_post(
                        request,
                        "alert-rule-pipeline",
                        rule.pipeline.client.slug,
                        rule.pipeline.slug,
                    )
                return redirect_after_post(request, "alert-rule-list")
        status = 422
    return render(
        request, "monitoring/alert_rule_edit.html", {"rule": rule, "form": form}, status=status
    )
