from __future__ import annotations

from django.contrib import admin

from controlplane.admin_base import EmergencyOnlyAdmin
from controlplane.monitoring.models import (
    Alert,
    AlertRule,
    BreakerSample,
    CounterTotal,
    GaugeSample,
    HealthSample,
)


@admin.register(AlertRule)
class AlertRuleAdmin(EmergencyOnlyAdmin):
    list_display = ["kind", "pipeline", "threshold", "window_minutes", "enabled", "updated_at"]
    list_filter = ["kind", "enabled"]


@admin.register(Alert)
class AlertAdmin(EmergencyOnlyAdmin):
    list_display = ["opened_at", "state", "summary", "last_seen_at", "resolved_at"]
    list_filter = ["state", "rule__kind"]
    search_fields = ["summary", "subject"]


@admin.register(GaugeSample)
class GaugeSampleAdmin(EmergencyOnlyAdmin):
    list_display = ["at", "pipeline", "queued", "running", "waiting_retry", "in_review"]
    list_filter = ["pipeline"]
    date_hierarchy = "at"


@admin.register(HealthSample)
class HealthSampleAdmin(EmergencyOnlyAdmin):
    list_display = ["at", "clusters_alive", "clusters_running", "workers", "queued_tasks"]
    date_hierarchy = "at"


@admin.register(BreakerSample)
class BreakerSampleAdmin(EmergencyOnlyAdmin):
    list_display = ["at", "provider", "state", "failures"]
    list_filter = ["state", "provider"]
    date_hierarchy = "at"


@admin.register(CounterTotal)
class CounterTotalAdmin(EmergencyOnlyAdmin):
    list_display = ["pipeline", "through", "updated_at"]
