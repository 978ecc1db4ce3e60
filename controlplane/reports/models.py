"""What the client reports keep of their own: the review rate per client (to price human review)
and scheduled report emails with the history of what was sent."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models

from controlplane.models import Client

# What an hour of a reviewer's time costs when an operator has not set a rate for the client.
DEFAULT_REVIEW_RATE_PER_HOUR = Decimal("30.00")


class ReportSettings(models.Model):
    """Per client: what an hour of human review costs, so a report's unit cost is complete."""

    client = models.OneToOneField(Client, on_delete=models.CASCADE, related_name="report_settings")
    review_rate_per_hour = models.DecimalField(
        max_digits=10,
        decimal_places=2,
        default=DEFAULT_REVIEW_RATE_PER_HOUR,
        validators=[MinValueValidator(Decimal("0"))],
        help_text="USD per hour of reviewer time: reviewer minutes are priced at this rate.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "report settings"

    def __str__(self) -> str:
        return f"report settings of {self.client}"


class ReportSchedule(models.Model):
    """A report emailed to chosen recipients every week (Monday, for the week before) or every
    month (the 1st, for the month before), with the PDF attached."""

    class Cadence(models.TextChoices):
        WEEKLY = "weekly"
        MONTHLY = "monthly"

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="report_schedules")
    cadence = models.CharField(max_length=8, choices=Cadence.choices, default=Cadence.WEEKLY)
    recipients = models.TextField(help_text="Email addresses, comma-separated.")
    enabled = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["client", "cadence", "id"]

    def __str__(self) -> str:
        return f"{self.get_cadence_display()} report of {self.client}"

    @property
    def recipient_list(self) -> list[str]:
        return [a.strip() for a in self.recipients.split(",") if a.strip()]


class ReportDelivery(models.Model):
    """One scheduled report for one period: claimed before sending, so a period is sent once
    even when two workers run the schedule at the same time."""

    class Status(models.TextChoices):
        SENDING = "sending"
        SENT = "sent"
        FAILED = "failed"

    schedule = models.ForeignKey(
        ReportSchedule, on_delete=models.CASCADE, related_name="deliveries"
    )
    period_start = models.DateField()
    period_end = models.DateField(help_text="The last day of the period (inclusive).")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.SENDING)
    recipients = models.TextField(blank=True)
    error = models.TextField(blank=True)
    pdf_bytes = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["schedule", "period_start"], name="report_delivery_once_per_period"
            )
        ]

    def __str__(self) -> str:
        return f"{self.schedule} {self.period_start}..{self.period_end} ({self.status})"
