"""Extension points of the review layer; the shell listens here (alerts, live pages).

tasks_overdue: review tasks went past their due time and were escalated (flagged overdue and
    raised in priority). Sent once per escalation batch, after its transaction committed.
    Arguments: task_ids, a list of ReviewTask ids; queue_ids, the ids of their queues.
"""

from __future__ import annotations

from django.dispatch import Signal

tasks_overdue = Signal()
