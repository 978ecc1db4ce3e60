"""A person's decision on a review task: approve the model's output, edit it (validated against
the step's output contract) or reject the item. A held item resumes through the pipelines
layer; a blind audit only records whether the person agreed with the model. Approved and
edited answers become labeled examples of their step."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from controlplane.roles import Role
from pipelines.models import Example
from pipelines.services.resume import item_ledger_note, item_reject, item_resume
from review.models import ReviewTask
from review.outputs import output_problems, outputs_agree
from review.services.claiming import reviewer_role

Decision = ReviewTask.Decision
Status = ReviewTask.Status
NOTE_MAX_CHARS = 2000


def _field_error(field: str, message: str, code: str) -> ValidationError:
    return ValidationError({field: ValidationError(message, code=code)})


def _locked(task_id: int) -> ReviewTask:
    tasks = ReviewTask.objects.select_related("item", "step", "queue")
    if connection.vendor == "postgresql":
        tasks = tasks.select_for_update(of=("self",))
    return tasks.get(pk=task_id)


def _check_decider(task: ReviewTask, user, role: Role) -> None:
    """Only the person holding the task decides it; an operator may decide any active task."""
    if task.status in (Status.DECIDED, Status.CANCELLED):
        raise ValidationError(
            "This task is closed: it was decided, or its item moved on.", code="already_decided"
        )
    if role == Role.OPERATOR:
        return
    if task.status == Status.OPEN:
        raise ValidationError("Claim this task before deciding it.", code="not_claimed")
    if task.claimed_by_id != user.pk:
        raise ValidationError(
            "Another reviewer has this task now: your lease on it expired.", code="lease_lost"
        )


def _decided_output(
    task: ReviewTask, *, decision: str, output: Any, reject_reason: str, note: str
) -> Any:
    """The output the decision stands for (None for a rejection), or ValidationError: keyed
    by field (decision, reject_reason, note) or by the output's JSON path ("$.amount")."""
    if decision not in Decision.values:
        raise _field_error("decision", "Choose approve, edit or reject.", code="invalid_decision")
    if len(note) > NOTE_MAX_CHARS:
        raise _field_error(
            "note", f"Keep the note under {NOTE_MAX_CHARS} characters.", code="note_too_long"
        )
    if decision == Decision.REJECT:
        if reject_reason not in ReviewTask.RejectReason.values:
            raise _field_error(
                "reject_reason", "Choose why the item is rejected.", code="invalid_reject_reason"
            )
        if reject_reason == ReviewTask.RejectReason.OTHER and not note.strip():
            raise _field_error("note", "Say why the item is rejected.", code="note_required")
        return None
    if decision == Decision.APPROVE:
        if task.model_output is None:
            raise _field_error(
                "decision",
                "The model gave no output to approve: edit the output instead.",
                code="nothing_to_approve",
            )
        output = task.model_output
    step = task.step
    problems = output_problems(
        kind=step.kind, labels=step.labels or [], output_schema=step.output_schema, output=output
    )
    if problems:
        raise ValidationError(
            {
                path: [ValidationError(message, code="invalid_output") for message in messages]
                for path, messages in problems.items()
            }
        )
    return output


_DECIDED_FIELDS = [
    "status",
    "decision",
    "decided_output",
    "reject_reason",
    "note",
    "decided_by",
    "decided_at",
    "handling_seconds",
    "agreed",
    "lease_expires_at",
]


def _record(
    task: ReviewTask, *, user, decision: str, output: Any, reject_reason: str, note: str
) -> None:
    """Set the decision on the task (not saved): who, when, the time they spent since their
    claim, and whether their answer is the model's."""
    now = timezone.now()
    task.status = Status.DECIDED
    task.decision = decision
    task.decided_output = output
    task.reject_reason = reject_reason if decision == Decision.REJECT else ""
    task.note = note
    task.decided_by = user
    task.decided_at = now
    task.handling_seconds = (
        round((now - task.claimed_at).total_seconds(), 1)
        if task.claimed_by_id == user.pk and task.claimed_at
        else None
    )
    # A rejected output is a disagreement with the model, when the model had one.
    task.agreed = (
        False
        if decision == Decision.REJECT and task.model_output is not None
        else outputs_agree(output, task.model_output)
    )
    task.lease_expires_at = None


def task_decide(
    *,
    task: ReviewTask,
    user,
    decision: str,
    output: Any = None,
    reject_reason: str = "",
    note: str = "",
) -> ReviewTask:
    """Decide a task: `approve` the model's output as is, `edit` it (`output`, valid against
    the step's output schema; a classify step's label one of its labels) or `reject` it
    (`reject_reason` one of ReviewTask.RejectReason; a note is required for "other").

    A held item then goes on to its next step or is finished (accepted, or rejected), with a
    ledger event naming the reviewer and the time spent; a blind audit leaves the item as it
    is and records whether the person agreed with the model. An approved or edited answer
    becomes a labeled example of the step.

    Only the person holding the task (or an operator) decides it. Nothing is written when it
    raises ValidationError: field errors keyed by decision, reject_reason, note or the
    output's JSON path; or a message with code already_decided, not_claimed, lease_lost, or
    item_moved_on (the item no longer waits for review: the task is cancelled)."""
    role = reviewer_role(user)
    note = note.strip()
    moved_on = False
    with transaction.atomic():
        task = _locked(task.pk)
        _check_decider(task, user, role)
        decided_output = _decided_output(
            task, decision=decision, output=output, reject_reason=reject_reason, note=note
        )
        try:
            with transaction.atomic():
                _record(
                    task,
                    user=user,
                    decision=decision,
                    output=decided_output,
                    reject_reason=reject_reason,
                    note=note,
                )
                task.save(update_fields=_DECIDED_FIELDS)
                _apply_to_item(task, user=user)
                examples_learn(tasks=[task])
        except ValidationError as exc:
            if getattr(exc, "code", None) != "not_in_review":
                raise
            moved_on = True
            ReviewTask.objects.filter(pk=task.pk).update(
                status=Status.CANCELLED, lease_expires_at=None
            )
        else:
            task.item.refresh_from_db()
    if moved_on:
        raise ValidationError(
            "The item no longer waits for review; this task was closed.", code="item_moved_on"
        )
    return task


def _apply_to_item(task: ReviewTask, *, user) -> None:
    actor = f"user:{user.get_username()}"
    detail: dict[str, Any] = {
        "task": task.pk,
        "decision": task.decision,
        "reviewer": user.get_username(),
        "handling_seconds": task.handling_seconds,
    }
    if task.kind == ReviewTask.Kind.AUDIT:
        item_ledger_note(
            item_id=task.item_id,
            actor_label=actor,
            detail={**detail, "step": task.step.slug, "audit": True, "agreed": task.agreed},
        )
    elif task.decision == Decision.REJECT:
        item_reject(
            item_id=task.item_id,
            reason=task.reject_reason,
            actor_label=actor,
            detail={**detail, "reject_reason": task.reject_reason},
        )
    else:
        item_resume(
            item_id=task.item_id, output=task.decided_output, actor_label=actor, detail=detail
        )


@transaction.atomic
def examples_learn(*, tasks: Sequence[ReviewTask]) -> int:
    """Turn decided tasks with an answer (approved or edited) into labeled examples of their
    step (source: review), in one INSERT; a task teaches once, however often this is called.
    Returns how many examples were made."""
    fresh = ReviewTask.objects.filter(
        pk__in=[task.pk for task in tasks],
        status=Status.DECIDED,
        decision__in=[Decision.APPROVE, Decision.EDIT],
        learned_at__isnull=True,
    )
    if connection.vendor == "postgresql":
        fresh = fresh.select_for_update()
    ids = list(fresh.values_list("id", flat=True))
    if not ids:
        return 0
    now = timezone.now()
    rows = ReviewTask.objects.filter(pk__in=ids).values_list(
        "step_id", "item__data", "decided_output"
    )
    Example.objects.bulk_create(
        Example(step_id=step_id, data=data, expected=expected, source=Example.Source.REVIEW)
        for step_id, data, expected in rows
    )
    ReviewTask.objects.filter(pk__in=ids).update(learned_at=now)
    for task in tasks:
        if task.pk in ids:
            task.learned_at = now
    return len(ids)
