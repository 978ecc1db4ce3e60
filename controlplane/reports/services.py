"""Writes of the client reports: the review rate per client, report schedules, and sending the
scheduled reports that are due (each period once)."""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.core.mail import EmailMessage
from django.db import IntegrityError, transaction
from django.utils import timezone

from controlplane.models import Client
from controlplane.reports.calc import Period
from controlplane.reports.models import ReportDelivery, ReportSchedule, ReportSettings
from controlplane.services import audit_record

logger = logging.getLogger(__name__)


def report_settings_update(*, client: Client, review_rate_per_hour: Decimal, actor) -> None:
    """Set the client's review rate, with an audit entry."""
    with transaction.atomic():
        found, _ = ReportSettings.objects.select_for_update().get_or_create(client=client)
        before = {"review_rate_per_hour": str(found.review_rate_per_hour)}
        found.review_rate_per_hour = review_rate_per_hour
        found.full_clean()
        found.save()
        audit_record(
            actor=actor,
            action="report_settings.update",
            obj=found,
            client=client,
            before=before,
            after={"review_rate_per_hour": str(review_rate_per_hour)},
        )


def report_schedule_create(
    *, client: Client, cadence: str, recipients: str, actor
) -> ReportSchedule:
    """A new scheduled report for the client, with an audit entry."""
    with transaction.atomic():
        schedule = ReportSchedule(
            client=client, cadence=cadence, recipients=recipients, created_by=actor
        )
        schedule.full_clean()
        schedule.save()
        audit_record(
            actor=actor,
            action="report_schedule.create",
            obj=schedule,
            client=client,
            after={"cadence": cadence, "recipients": recipients},
        )
    return schedule


def report_schedule_delete(*, schedule: ReportSchedule, actor) -> None:
    """Stop a scheduled report (its history goes with it), with an audit entry."""
    with transaction.atomic():
        audit_record(
            actor=actor,
            action="report_schedule.delete",
            obj=schedule,
            client=schedule.client,
            before={"cadence": schedule.cadence, "recipients": schedule.recipients},
        )
        schedule.delete()


def period_due(cadence: str, *, today: date) -> Period:
    """The last complete period of a cadence: the week (Monday to Sunday) or the calendar month
    before the one `today` is in."""
    if cadence == ReportSchedule.Cadence.MONTHLY:
        last = today.replace(day=1) - timedelta(days=1)
        return Period(last.replace(day=1), last)
    monday = today - timedelta(days=today.weekday())
    return Period(monday - timedelta(days=7), monday - timedelta(days=1))


def reports_send_due(*, now: datetime | None = None) -> dict[str, int]:
    """Send every enabled schedule's report for its last complete period, unless that period
    was sent already. A period is claimed by inserting its delivery row (unique per schedule
    and period) before anything is sent, so two runs at once send it once; a failed send is
    retried by the next run. Returns how many were sent and failed."""
    now = now or timezone.now()
    counts = {"sent": 0, "failed": 0}
    for schedule in ReportSchedule.objects.filter(enabled=True).select_related("client"):
        period = period_due(schedule.cadence, today=now.date())
        delivery = _delivery_claim(schedule, period)
        if delivery is None:
            continue
        counts[_delivery_send(delivery, schedule, period, now=now)] += 1
    return counts


def _delivery_claim(schedule: ReportSchedule, period: Period) -> ReportDelivery | None:
    try:
        with transaction.atomic():
            return ReportDelivery.objects.create(
                schedule=schedule, period_start=period.first, period_end=period.last
            )
    except IntegrityError:
        pass
    # Sent (or being sent) already; a failed one is taken again by a conditional UPDATE.
    retried = ReportDelivery.objects.filter(
        schedule=schedule, period_start=period.first, status=ReportDelivery.Status.FAILED
    ).update(status=ReportDelivery.Status.SENDING, error="")
    if retried != 1:
        return None
    return ReportDelivery.objects.get(schedule=schedule, period_start=period.first)


def _delivery_send(
    delivery: ReportDelivery, schedule: ReportSchedule, period: Period, *, now: datetime
) -> str:
    from controlplane.reports.pdf import report_pdf
    from controlplane.reports.report import report_build

    client = schedule.client
    recipients = schedule.recipient_list
    try:
        report = report_build(client=client, period=period, now=now)
        pdf = report_pdf(report, tables=report.tables)
        cadence = schedule.get_cadence_display()
        message = EmailMessage(
            subject=f"[Sluice] {client.name}: {cadence.lower()} report, {period.label}",
            body=_email_text(report),
            to=recipients,
        )
        message.attach(
            f"sluice-{client.slug}-{period.first}-{period.last}.pdf", pdf, "application/pdf"
        )
        message.send()
    except Exception as exc:  # a mail server down must not stop the other schedules
        logger.warning("scheduled report %s failed: %s", schedule.pk, exc)
        ReportDelivery.objects.filter(pk=delivery.pk).update(
            status=ReportDelivery.Status.FAILED, error=str(exc)[:2000]
        )
        return "failed"
    ReportDelivery.objects.filter(pk=delivery.pk).update(
        status=ReportDelivery.Status.SENT,
        recipients=", ".join(recipients),
        pdf_bytes=len(pdf),
        sent_at=timezone.now(),
    )
    return "sent"


def _email_text(report) -> str:
    lines = [
        f"{report.client.name}: report for {report.period.label} (UTC).",
        "",
        *(f"{k['label']}: {k['value']}" for k in report.kpis),
        "",
        "The full report is attached as a PDF.",
    ]
    return "\n".join(lines)
