from __future__ import annotations

from django.apps import AppConfig


def _open_review_tasks(sender, held, **kwargs) -> None:
    from review.services.opening import tasks_open_for_held

    tasks_open_for_held(held=held)


def _open_audit_tasks(sender, sampled, **kwargs) -> None:
    from review.services.opening import tasks_open_for_audit

    tasks_open_for_audit(sampled=sampled)


class ReviewConfig(AppConfig):
    name = "review"

    def ready(self) -> None:
        # The engine sends these inside its transaction: the tasks are written with the batch.
        from pipelines.signals import items_held, items_sampled_for_audit

        items_held.connect(_open_review_tasks, dispatch_uid="review.open_review_tasks")
        items_sampled_for_audit.connect(_open_audit_tasks, dispatch_uid="review.open_audit_tasks")
