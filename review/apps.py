from __future__ import annotations

from django.apps import AppConfig


def _open_review_tasks(sender, held, **kwargs) -> None:
    from review.services.opening import tasks_open_for_held

    tasks_open_for_held(held=held)


def _open_audit_tasks(sender, sampled, **kwargs) -> None:
    from review.services.opening import tasks_open_for_audit

    tasks_open_for_audit(sampled=sampled)


def _open_queue(sender, step, **kwargs) -> None:
    from review.services.queues import queue_ensure

    queue_ensure(step=step)


class ReviewConfig(AppConfig):
    name = "review"

    def ready(self) -> None:
        # The engine sends these inside its transaction: the tasks are written with the batch.
        from pipelines.signals import items_held, items_sampled_for_audit, step_created

        items_held.connect(_open_review_tasks, dispatch_uid="review.open_review_tasks")
        items_sampled_for_audit.connect(_open_audit_tasks, dispatch_uid="review.open_audit_tasks")
        # Every step has its queue from the start, so operators can staff it ahead of work.
        step_created.connect(_open_queue, dispatch_uid="review.open_queue")
