from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from controlplane.access import role_required
from controlplane.roles import Role
from controlplane.selectors import client_list_for_user
from review.selectors import task_open_list_for_user


@require_GET
@role_required(Role.OPERATOR, Role.REVIEWER)
def review_queue(request: HttpRequest) -> HttpResponse:
    context = {
        "tasks": task_open_list_for_user(user=request.user),
        "clients": client_list_for_user(user=request.user),
    }
    return render(request, "review/queue.html", context)
