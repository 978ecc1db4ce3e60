"""Review pages: the queue (live counts, start reviewing, assigning), the review screen of one
task (approve, edit, reject, release; the next task swapped in after each decision), and queue
membership."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import push_url, reswap, retarget

from controlplane.access import role_required
from controlplane.htmx import redirect_after_post
from controlplane.roles import Role
from controlplane.selectors import client_list_for_user
from review.forms import errors_place, input_rows, output_fields, output_read
from review.live import queue_page_context
from review.models import ReviewTask
from review.selectors import (
    queue_candidate_list,
    queue_get_for_user,
    queue_member_list,
    queue_person_get,
    task_get_for_user,
    task_held_get,
)
from review.services import (
    queue_member_add,
    queue_member_remove,
    task_assign,
    task_claim,
    task_claim_next,
    task_decide,
    task_release,
    task_renew,
)
from review.services.queues import queue_update

REVIEWING = (Role.OPERATOR, Role.REVIEWER)
SCREEN = "review/task.html"
STATE_MESSAGES = {
    "empty": "Nothing is waiting for you right now.",
    "lost": "Your lease on this task expired and it may be with another reviewer now: "
    "nothing you entered was saved.",
    "taken": "Someone else has this task, it waits for the person it is assigned to, or it "
    "was decided.",
    "already_decided": "This task is closed: it was decided, or its item moved on.",
    "item_moved_on": "The item no longer waits for review; this task was closed.",
    "not_claimed": "Claim this task before deciding it.",
    "second_opinion": "You have this item's other blind audit: its second opinion must come "
    "from someone else.",
}
# A decision refused because of the task's state (not the answer) answers 409 Conflict.
STATE_CODES = {"lease_lost": "lost", "already_decided": "already_decided"}
STATE_CODES |= {"item_moved_on": "item_moved_on", "not_claimed": "not_claimed", "taken": "taken"}
STATE_CODES |= {"second_opinion": "second_opinion"}
DONE = {"approve": "Approved", "edit": "Edited and approved", "reject": "Rejected"}


# --- The queue -------------------------------------------------------------------------------


@require_GET
@role_required(*REVIEWING)
def review_queue(request: HttpRequest) -> HttpResponse:
    context = queue_page_context(user=request.user)
    if request.htmx:
        return render(request, "review/queue.html#queue-live", context)
    context["clients"] = client_list_for_user(user=request.user)
    context["held"] = task_held_get(user=request.user)
    # Websockets need the ASGI server; under WSGI the page polls instead.
    context["websocket"] = isinstance(request, ASGIRequest)
    return render(request, "review/queue.html", context)


@require_POST
@role_required(Role.OPERATOR)
def review_task_assign(request: HttpRequest, pk: int) -> HttpResponse:
    task = task_get_for_user(user=request.user, pk=pk)
    chosen = request.POST.get("assignee", "")
    assignee = queue_person_get(queue=task.queue, pk=chosen) if chosen else None
    problem = ""
    try:
        task_assign(task=task, assignee=assignee, actor=request.user)
    except ValidationError as exc:
        problem = " ".join(exc.messages)
    if not request.htmx:
        if problem:
            messages.error(request, problem)
        return redirect("review-queue")
    context = queue_page_context(user=request.user)
    context["assign_error"] = problem
    return render(request, "review/queue.html#queue-live", context, status=422 if problem else 200)


@require_http_methods(["GET", "POST"])
@role_required(Role.OPERATOR)
def review_queue_members(request: HttpRequest, pk: int) -> HttpResponse:
    """The queue's members (POST `user` adds one) and its settings (POST
    `second_opinion_rate`)."""
    queue = queue_get_for_user(user=request.user, pk=pk)
    problem = ""
    rate_errors: list[str] = []
    rate_value = str(queue.second_opinion_rate)
    status = 200
    if request.method == "POST" and "second_opinion_rate" in request.POST:
        rate_value = request.POST["second_opinion_rate"]
        try:
            queue_update(queue=queue, second_opinion_rate=rate_value, actor=request.user)
        except ValidationError as exc:
            rate_errors = exc.message_dict.get("second_opinion_rate", exc.messages)
            status = 422
        else:
            messages.success(request, f"Second opinions of {queue.name} saved.")
            return redirect_after_post(request, "review-queue-members", queue.pk)
    elif request.method == "POST":
        person = queue_person_get(queue=queue, pk=request.POST.get("user", ""))
        try:
            queue_member_add(queue=queue, user=person, actor=request.user)
        except ValidationError as exc:
            problem = " ".join(exc.messages)
            status = 422
        else:
            messages.success(request, f"{person.get_username()} now works {queue.name}.")
            return redirect_after_post(request, "review-queue-members", queue.pk)
    context = {
        "queue": queue,
        "members": queue_member_list(queue=queue),
        "candidates": queue_candidate_list(queue=queue),
        "problem": problem,
        "rate_value": rate_value,
        "rate_errors": rate_errors,
    }
    return render(request, "review/queue_members.html", context, status=status)


@require_POST
@role_required(Role.OPERATOR)
def review_queue_member_remove(request: HttpRequest, pk: int, user_pk: int) -> HttpResponse:
    queue = queue_get_for_user(user=request.user, pk=pk)
    person = queue_person_get(queue=queue, pk=user_pk)
    if queue_member_remove(queue=queue, user=person, actor=request.user):
        messages.success(request, f"{person.get_username()} no longer works {queue.name}.")
    return redirect_after_post(request, "review-queue-members", queue.pk)


# --- The review screen -----------------------------------------------------------------------


def _holds(task: ReviewTask, user) -> bool:
    return task.lease_is_live() and task.claimed_by_id == user.pk


def _screen_context(
    request: HttpRequest,
    task: ReviewTask | None,
    *,
    state: str = "",
    fields=None,
    errors: dict[str, list[str]] | None = None,
    done: str = "",
) -> dict[str, Any]:
    context: dict[str, Any] = {
        "task": task,
        "state": state,
        "state_message": STATE_MESSAGES.get(state, ""),
        "done": done,
        "errors": {},
    }
    if task is None:
        return context
    blind = task.kind == ReviewTask.Kind.AUDIT
    step = task.step
    if fields is None:
        fields = output_fields(
            kind=step.kind,
            labels=step.labels or [],
            output_schema=step.output_schema,
            output=None if blind else task.model_output,
        )
    errors = dict(errors or {})
    decision_errors = errors.pop("decision", [])
    reject_errors = errors.pop("reject_reason", [])
    note_errors = errors.pop("note", [])
    other_errors = errors_place(fields, errors)
    context.update(
        {
            "blind": blind,
            "held": _holds(task, request.user),
            "fields": fields,
            "form_errors": [
                *decision_errors,
                *(f"{path}: {m}" for path, ms in other_errors.items() for m in ms),
            ],
            "reject_errors": reject_errors,
            "note_errors": note_errors,
            "reject_reasons": list(enumerate(ReviewTask.RejectReason.choices, start=1)),
            "chosen_reason": request.POST.get("reject_reason", ""),
            "note": request.POST.get("note", ""),
            "input_rows": input_rows(task.item.data),
            "ledger": list(task.item.ledger.order_by("at", "id")),
            "threshold": step.confidence_threshold,
            "can_approve": not blind and task.model_output is not None,
            "now": timezone.now(),
        }
    )
    return context


def _screen(
    request: HttpRequest, task: ReviewTask | None, *, status: int = 200, push: bool = False, **kw
) -> HttpResponse:
    """The review screen: the whole page, or for htmx its main region (pushing its URL when
    the region now shows another task)."""
    context = _screen_context(request, task, **kw)
    if not request.htmx:
        return render(request, SCREEN, context, status=status)
    response = render(request, f"{SCREEN}#screen", context, status=status)
    if push:
        url = reverse("review-task", args=[task.pk]) if task else reverse("review-start")
        push_url(response, url)
    return response


def _shown(request: HttpRequest, task: ReviewTask | None, *, done: str = "") -> HttpResponse:
    """A task just claimed (or None: the empty state), after a decision or a start."""
    if not request.htmx:
        if done:
            messages.success(request, done)
        return redirect("review-task", task.pk) if task else redirect("review-start")
    return _screen(request, task, state="" if task else "empty", push=True, done=done)


@require_http_methods(["GET", "POST"])
@role_required(*REVIEWING)
def review_start(request: HttpRequest) -> HttpResponse:
    """POST: claim the next task (of one queue with `queue`) and show it. GET: the task the
    user already holds, or the empty state."""
    if request.method == "POST":
        queue_id = request.POST.get("queue", "")
        queue = queue_get_for_user(user=request.user, pk=queue_id) if queue_id else None
        return _shown(request, task_claim_next(user=request.user, queue=queue))
    held = task_held_get(user=request.user)
    if held is not None:
        return redirect("review-task", held.pk)
    return _screen(request, None, state="empty")


@require_GET
@role_required(*REVIEWING)
def review_task(request: HttpRequest, pk: int) -> HttpResponse:
    task = task_get_for_user(user=request.user, pk=pk)
    state = "" if task.is_active else "already_decided"
    return _screen(request, task, state=state)


@require_POST
@role_required(*REVIEWING)
def review_task_claim(request: HttpRequest, pk: int) -> HttpResponse:
    task = task_get_for_user(user=request.user, pk=pk)
    try:
        task = task_claim(task=task, user=request.user)
    except ValidationError as exc:
        return _screen(request, task, state=STATE_CODES.get(exc.code, "taken"), status=409)
    if not request.htmx:
        return redirect("review-task", task.pk)
    return _screen(request, task)


@require_POST
@role_required(*REVIEWING)
def review_task_decide(request: HttpRequest, pk: int) -> HttpResponse:
    task = task_get_for_user(user=request.user, pk=pk)
    decision = request.POST.get("decision", "")
    fields = None
    output = None
    if decision == ReviewTask.Decision.EDIT:
        step = task.step
        fields = output_fields(
            kind=step.kind, labels=step.labels or [], output_schema=step.output_schema, output=None
        )
        output, problems = output_read(fields, request.POST)
        if problems:
            return _screen(request, task, fields=fields, errors=problems, status=422)
    try:
        task_decide(
            task=task,
            user=request.user,
            decision=decision,
            output=output,
            reject_reason=request.POST.get("reject_reason", ""),
            note=request.POST.get("note", ""),
        )
    except ValidationError as exc:
        if hasattr(exc, "error_dict"):
            return _screen(request, task, fields=fields, errors=exc.message_dict, status=422)
        task.refresh_from_db()
        return _screen(request, task, state=STATE_CODES.get(exc.code, "taken"), status=409)
    done = f"{DONE[decision]} item #{task.item_id}."
    return _shown(request, task_claim_next(user=request.user), done=done)


@require_POST
@role_required(*REVIEWING)
def review_task_skip(request: HttpRequest, pk: int) -> HttpResponse:
    """Pass over the task on the screen: it goes back to its queue and the next one loads."""
    task = task_get_for_user(user=request.user, pk=pk)
    done = f"Skipped item #{task.item_id}: it is back in {task.queue.name} for someone else."
    return _shown(request, task_claim_next(user=request.user, skip=task), done=done)


@require_POST
@role_required(*REVIEWING)
def review_task_release(request: HttpRequest, pk: int) -> HttpResponse:
    task = task_get_for_user(user=request.user, pk=pk)
    task_release(task=task, user=request.user)
    messages.info(request, f"Task of item #{task.item_id} given back to {task.queue.name}.")
    return redirect_after_post(request, "review-queue")


@require_POST
@role_required(*REVIEWING)
def review_task_renew(request: HttpRequest, pk: int) -> HttpResponse:
    """Called by the review screen every 30 seconds while it is open."""
    task = task_get_for_user(user=request.user, pk=pk)
    try:
        task = task_renew(task=task, user=request.user)
    except ValidationError:
        task.refresh_from_db()
        response = _screen(request, task, state="lost", status=409)
        if request.htmx:
            retarget(response, "#review-screen")
            reswap(response, "outerHTML")
        return response
    return render(request, f"{SCREEN}#lease", {"task": task, "held": True})
