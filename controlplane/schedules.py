"""Every recurring task of Sluice, declared once; `schedules_ensure` makes the database agree."""

from __future__ import annotations

from dataclasses import dataclass

from django_q.models import Schedule


@dataclass(frozen=True)
class Recurring:
    name: str
    func: str
    minutes: int


SCHEDULES: tuple[Recurring, ...] = (
    Recurring(name="sluice.heartbeat", func="controlplane.tasks.heartbeat_task", minutes=1),
    # The row is the truth: these find work whose wake-up was lost (a dead worker, a dropped
    # Redis message) within a minute.
    Recurring(name="sluice.sweep", func="pipelines.tasks.items_sweep_task", minutes=1),
    Recurring(name="sluice.engine", func="pipelines.tasks.engine_drain_task", minutes=1),
    Recurring(name="sluice.deliveries", func="pipelines.tasks.deliveries_send_task", minutes=1),
    # Reviewers' decisions become examples; the local models learn from them here.
    Recurring(
        name="sluice.local_models", func="pipelines.tasks.local_models_refresh_task", minutes=5
    ),
    # Review tasks past their due time are flagged overdue and raised in priority.
    Recurring(
        name="sluice.review_escalate", func="review.tasks.tasks_escalate_overdue_task", minutes=1
    ),
    # Alert rules on the rollups: open, update and resolve alerts, and notify.
    Recurring(
        name="sluice.alerts",
        func="controlplane.monitoring.alert_tasks.alerts_evaluate_task",
        minutes=1,
    ),
    # Gradual rollouts of prompt versions: guards judged, stages stepped up, promoted or
    # rolled back.
    Recurring(name="sluice.rollouts", func="pipelines.tasks.rollouts_evaluate_task", minutes=1),
    # Queue depth, in flight and review backlog per pipeline, breakers and worker health, kept a
    # week for the dashboards; and the counter totals /metrics adds up from (once an hour).
    Recurring(
        name="sluice.gauge_samples",
        func="controlplane.monitoring.sample_tasks.gauge_samples_take_task",
        minutes=1,
    ),
    # Scheduled client reports whose week or month has ended, each period sent once.
    Recurring(
        name="sluice.reports",
        func="controlplane.reports.tasks.reports_send_due_task",
        minutes=60,
    ),
)


def schedules_ensure() -> None:
    """Create or update the declared schedules and drop stale `sluice.*` ones (idempotent)."""
    for recurring in SCHEDULES:
        Schedule.objects.update_or_create(
            name=recurring.name,
            defaults={
                "func": recurring.func,
                "schedule_type": Schedule.MINUTES,
                "minutes": recurring.minutes,
                "repeats": -1,
            },
        )
    Schedule.objects.filter(name__startswith="sluice.").exclude(
        name__in=[r.name for r in SCHEDULES]
    ).delete()
