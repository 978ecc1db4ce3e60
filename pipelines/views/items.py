from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from controlplane.access import role_required
from controlplane.params import parse_id
from controlplane.roles import Role, role_of
from pipelines.gate import public_error_message
from pipelines.metrics import cost_report
from pipelines.models import Item
from pipelines.selectors import (
    item_get_for_user,
    item_list_for_user,
    pipeline_get_for_user,
    pipeline_list_for_user,
)
from pipelines.services.budgets import budgets_for

PAGE_SIZE = 50


@require_GET
@role_required(Role.OPERATOR, Role.CLIENT)
def pipeline_list(request: HttpRequest) -> HttpResponse:
    pipelines = pipeline_list_for_user(user=request.user)
    return render(request, "pipelines/pipeline_list.html", {"pipelines": pipelines})


@require_GET
@role_required(Role.OPERATOR, Role.CLIENT)
def pipeline_detail(request: HttpRequest, client_slug: str, slug: str) -> HttpResponse:
    pipeline = pipeline_get_for_user(user=request.user, client_slug=client_slug, slug=slug)
    status = request.GET.get("status", "")
    if status not in Item.Status.values:
        status = ""
    items = item_list_for_user(user=request.user).filter(pipeline=pipeline)
    if status:
        items = items.filter(status=status)
    before = parse_id(request.GET.get("before"))
    if before is not None:
        items = items.filter(pk__lt=before)
    # Keyset pagination: never counts the item table, however large it grows.
    page = list(items.order_by("-id")[: PAGE_SIZE + 1])
    now = timezone.now()
    context = {
        "pipeline": pipeline,
        "budgets": budgets_for([pipeline], now=now).get(pipeline.pk, []),
        "cost_today": cost_report(
            pipeline_id=pipeline.pk, since=now.replace(hour=0, minute=0, second=0, microsecond=0)
        ),
        "items": page[:PAGE_SIZE],
        "next_before": page[PAGE_SIZE - 1].pk if len(page) > PAGE_SIZE else None,
        "status": status,
        "statuses": Item.Status.choices,
    }
    if request.htmx and before:
        return render(request, "pipelines/pipeline_detail.html#item-rows", context)
    return render(request, "pipelines/pipeline_detail.html", context)


@require_GET
@role_required(Role.OPERATOR, Role.CLIENT)
def item_detail(request: HttpRequest, pk: int) -> HttpResponse:
    item = item_get_for_user(user=request.user, pk=pk)
    # Clients see what happened to their item, not the operator's providers, hosts or errors.
    operator_view = role_of(request.user) != Role.CLIENT
    context = {
        "item": item,
        "ledger": item.ledger.all(),
        "operator_view": operator_view,
        "error_text": item.error_message
        if operator_view
        else public_error_message(item.error_class, item.error_message),
    }
    return render(request, "pipelines/item_detail.html", context)
