"""Writes of the review layer, one module per subdomain, all importable from here:

- `opening`: tasks for held items and blind audits (`tasks_open_for_held`,
  `tasks_open_for_audit`), called in the engine's transaction.
- `claiming`: `task_claim_next`, `task_claim`, `task_renew`, `task_release` (leases).
- `decisions`: `task_decide` (which resumes or rejects the item), `examples_learn`.
- `queues`: `queue_ensure`, `queue_member_add`, `queue_member_remove`, `task_assign`.
- `escalation`: `tasks_escalate_overdue` (the review SLA).
"""

from __future__ import annotations

from review.services.claiming import (
    LEASE_SECONDS,
    task_claim,
    task_claim_next,
    task_release,
    task_renew,
)
from review.services.decisions import examples_learn, task_decide
from review.services.escalation import tasks_escalate_overdue
from review.services.opening import tasks_open_for_audit, tasks_open_for_held
from review.services.queues import (
    queue_ensure,
    queue_member_add,
    queue_member_remove,
    task_assign,
)

__all__ = [
    "LEASE_SECONDS",
    "examples_learn",
    "queue_ensure",
    "queue_member_add",
    "queue_member_remove",
    "task_assign",
    "task_claim",
    "task_claim_next",
    "task_decide",
    "task_release",
    "task_renew",
    "tasks_escalate_overdue",
    "tasks_open_for_audit",
    "tasks_open_for_held",
]
