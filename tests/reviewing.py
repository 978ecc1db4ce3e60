"""Helpers for review tests: hold items for review without running a model, and make people
members of queues."""

from __future__ import annotations

from pipelines.models import Item
from pipelines.services.configuration import step_create
from pipelines.signals import Held
from review.models import ReviewTask
from review.services import queue_ensure, queue_member_add, tasks_open_for_held


def hold(item, step, *, reason="low confidence 0.50 < 0.80", output=None, confidence=0.5):
    """Put `item` in review at `step` as the gate would, and return its open task."""
    if output is None and step.kind == "classify":
        output = {"label": step.labels[0]}
    item.status = Item.Status.IN_REVIEW
    item.step_position = step.position
    item.hold_reason = reason
    if output is not None:
        item.outputs = {
            **item.outputs,
            step.slug: {"output": output, "confidence": confidence, "verdict": reason},
        }
    item.save()
    tasks_open_for_held(held=[Held(item, step, reason)])
    return ReviewTask.objects.get(item=item, step=step, status__in=ReviewTask.ACTIVE)


def join(step, *users, actor=None):
    """Make reviewers members of the step's queue; returns the queue."""
    queue = queue_ensure(step=step)
    for user in users:
        queue_member_add(queue=queue, user=user, actor=actor)
    return queue


def classify_step(pipeline, actor, *, slug="urgency", name="Urgency", labels=("low", "high")):
    """Another classify step at the end of `pipeline`."""
    return step_create(
        pipeline=pipeline,
        name=name,
        slug=slug,
        kind="classify",
        labels=list(labels),
        template="{{ text }}",
        actor=actor,
    )
