"""Who works which queue, how often its audits get a second opinion, and who a task waits for:
operators' decisions, each in the audit log."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction

from controlplane.roles import Role, role_of
from controlplane.selectors import client_list_for_user
from controlplane.services import audit_record
from pipelines.models import Step
from review.models import QueueMembership, ReviewQueue, ReviewTask
from review.services.opening import queues_for_steps


def _operator_required(actor) -> None:
    # No actor: Sluice itself (the demo data, a management command), never a request.
    if actor is not None and role_of(actor) != Role.OPERATOR:
        raise PermissionDenied("Only operators manage review queues.")


def queue_ensure(*, step: Step) -> ReviewQueue:
    """The queue of a step, created if it has none yet (to add members before any item is
    held there)."""
    return queues_for_steps({step.pk: (step, step.pipeline)})[step.pk]


def _serves(user, queue: ReviewQueue) -> bool:
    return client_list_for_user(user=user).filter(pk=queue.pipeline.client_id).exists()


@transaction.atomic
def queue_member_add(
    *, queue: ReviewQueue, user, actor, actor_label: str | None = None
) -> QueueMembership:
    """Make a reviewer a member of a queue (operators only; idempotent). The reviewer must
    serve the queue's client: membership never widens what a reviewer may see."""
    _operator_required(actor)
    if role_of(user) != Role.REVIEWER:
        raise ValidationError(
            {"user": "Only reviewers join queues; operators work every queue already."}
        )
    if not _serves(user, queue):
        raise ValidationError(
            {
                "user": f"{user.get_username()} does not review for {queue.pipeline.client}: "
                "add the client to their clients first."
            }
        )
    membership, created = QueueMembership.objects.get_or_create(queue=queue, user=user)
    if created:
        audit_record(
            actor=actor,
            actor_label=actor_label,
            action="review_queue.member_add",
            obj=queue,
            client=queue.pipeline.client,
            after={"member": user.get_username()},
        )
    return membership


@transaction.atomic
def queue_member_remove(*, queue: ReviewQueue, user, actor, actor_label: str | None = None) -> bool:
    """Take a person off a queue (operators only). Tasks of the queue assigned to them wait for
    anyone again; a task they hold returns to the queue when its lease expires. Returns
    whether they were a member."""
    _operator_required(actor)
    deleted, _ = QueueMembership.objects.filter(queue=queue, user=user).delete()
    if not deleted:
        return False
    ReviewTask.objects.filter(queue=queue, assignee=user, status__in=ReviewTask.ACTIVE).update(
        assignee=None
    )
    audit_record(
        actor=actor,
        actor_label=actor_label,
        action="review_queue.member_remove",
        obj=queue,
        client=queue.pipeline.client,
        before={"member": user.get_username()},
    )
    return True


def _rate(raw: object) -> Decimal:
    """A share from 0 to 1 with at most three decimals, or a ValidationError on the field."""
    try:
        rate = Decimal(str(raw).strip())
    except InvalidOperation:
        rate = None
    if rate is None or not rate.is_finite() or not 0 <= rate <= 1:
        raise ValidationError(
            {"second_opinion_rate": "Enter a share from 0 to 1, such as 0.2 for one audit in five."}
        )
    if rate != rate.quantize(Decimal("0.001")):
        raise ValidationError({"second_opinion_rate": "Use at most three decimals, such as 0.125."})
    return rate.quantize(Decimal("0.001"))


@transaction.atomic
def queue_update(
    *, queue: ReviewQueue, second_opinion_rate: object, actor, actor_label: str | None = None
) -> ReviewQueue:
    """Set the share of the queue's blind audits answered by two reviewers (operators only;
    0 to 1). Audits already open keep their tasks. Raises ValidationError on
    second_opinion_rate."""
    _operator_required(actor)
    new = _rate(second_opinion_rate)
    queue = (
        ReviewQueue.objects.select_for_update().select_related("pipeline__client").get(pk=queue.pk)
    )
    old = queue.second_opinion_rate
    if old == new:
        return queue
    queue.second_opinion_rate = new
    queue.save(update_fields=["second_opinion_rate"])
    audit_record(
        actor=actor,
        actor_label=actor_label,
        action="review_queue.second_opinion_rate",
        obj=queue,
        client=queue.pipeline.client,
        before={"second_opinion_rate": str(old)},
        after={"second_opinion_rate": str(new)},
    )
    return queue


@transaction.atomic
def task_assign(*, task: ReviewTask, assignee, actor, actor_label: str | None = None) -> ReviewTask:
    """Reserve a waiting task for one person (operators only; None to unreserve): claiming
    gives it to them first, and to nobody else until it is overdue. The assignee must be a
    member of the task's queue or an operator."""
    _operator_required(actor)
    task = ReviewTask.objects.select_related("queue__pipeline__client", "assignee").get(pk=task.pk)
    if not task.is_active:
        raise ValidationError("This task was already decided.", code="already_decided")
    if assignee is not None and role_of(assignee) != Role.OPERATOR:
        member = QueueMembership.objects.filter(queue=task.queue, user=assignee).exists()
        if not (member and role_of(assignee) == Role.REVIEWER and _serves(assignee, task.queue)):
            raise ValidationError(
                {"assignee": f"{assignee.get_username()} is not a member of {task.queue}."}
            )
    before = task.assignee.get_username() if task.assignee else None
    after = assignee.get_username() if assignee else None
    if before == after:
        return task
    task.assignee = assignee
    task.save(update_fields=["assignee"])
    audit_record(
        actor=actor,
        actor_label=actor_label,
        action="review_task.assign",
        obj=task,
        client=task.queue.pipeline.client,
        before={"assignee": before},
        after={"assignee": after},
    )
    return task
