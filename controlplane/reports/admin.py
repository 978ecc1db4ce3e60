from __future__ import annotations

from django.contrib import admin

from controlplane.admin_base import EmergencyOnlyAdmin
from controlplane.reports.models import ReportDelivery, ReportSchedule, ReportSettings


@admin.register(ReportSettings)
class ReportSettingsAdmin(EmergencyOnlyAdmin):
    list_display = ["client", "review_rate_per_hour", "updated_at"]


@admin.register(ReportSchedule)
class ReportScheduleAdmin(EmergencyOnlyAdmin):
    list_display = ["client", "cadence", "recipients", "enabled", "created_at"]
    list_filter = ["cadence", "enabled"]


@admin.register(ReportDelivery)
class ReportDeliveryAdmin(EmergencyOnlyAdmin):
    list_display = ["schedule", "period_start", "period_end", "status", "sent_at"]
    list_filter = ["status"]
