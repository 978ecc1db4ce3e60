"""django-q2 entry points of the review layer: thin, call one service."""

from __future__ import annotations

from review.services.escalation import tasks_escalate_overdue


def tasks_escalate_overdue_task() -> int:
    return tasks_escalate_overdue()
