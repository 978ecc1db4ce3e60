"""The dead-letter page: what failed for good, why, and a re-drive after a dry run."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_http_methods

from controlplane.access import role_required
from controlplane.htmx import redirect_after_post
from controlplane.params import parse_id
from controlplane.roles import Role
from pipelines.models import Item
from pipelines.selectors import item_list_for_user
from pipelines.services.redrive import REDRIVABLE, items_redrive, items_redrive_dry_run

PAGE = 100


@require_http_methods(["GET", "POST"])
@role_required(Role.OPERATOR)
def dead_letter_list(request: HttpRequest) -> HttpResponse:
    params = request.POST if request.method == "POST" else request.GET
    status = params.get("status") or Item.Status.DEAD_LETTERED
    if status not in REDRIVABLE:
        status = Item.Status.DEAD_LETTERED
    items = item_list_for_user(user=request.user).filter(status=status)
    error_class = params.get("error_class", "")
    if error_class:
        items = items.filter(error_class=error_class)
    client = params.get("client", "")
    if client:
        items = items.filter(pipeline__client__slug=client)
    before = parse_id(params.get("before"))
    if before is not None:
        items = items.filter(pk__lt=before)
    selected = [i for i in map(parse_id, request.POST.getlist("ids")) if i is not None]
    dry_run = None
    if request.method == "POST" and selected:
        chosen = list(items.filter(pk__in=selected).select_related("pipeline"))
        if request.POST.get("action") == "redrive":
            count = items_redrive(items=chosen, actor=request.user)
            messages.success(request, f"{count} item{'s' if count != 1 else ''} queued again.")
            return redirect_after_post(request, "dead-letter-list")
        dry_run = items_redrive_dry_run(items=chosen)
    page = list(items.select_related("pipeline__client").order_by("-id")[: PAGE + 1])
    context = {
        "items": page[:PAGE],
        "next_before": page[PAGE - 1].pk if len(page) > PAGE else None,
        "status": status,
        "error_class": error_class,
        "client": client,
        "selected": set(selected),
        "dry_run": dry_run,
    }
    return render(request, "pipelines/dead_letters.html", context)
