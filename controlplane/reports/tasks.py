from __future__ import annotations

from controlplane.reports.services import reports_send_due


def reports_send_due_task() -> dict[str, int]:
    """Hourly: send the scheduled reports whose period is complete and not sent yet."""
    return reports_send_due()
