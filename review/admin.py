from __future__ import annotations

from django.contrib import admin

from controlplane.admin_base import EmergencyOnlyAdmin, EmergencyOnlyInline
from review.models import QueueMembership, ReviewQueue, ReviewTask


class MembershipInline(EmergencyOnlyInline):
    model = QueueMembership
    extra = 0
    raw_id_fields = ["user"]


@admin.register(ReviewQueue)
class ReviewQueueAdmin(EmergencyOnlyAdmin):
    list_display = ["name", "pipeline", "step", "created_at"]
    list_filter = ["pipeline__client"]
    search_fields = ["name"]
    inlines = [MembershipInline]


@admin.register(ReviewTask)
class ReviewTaskAdmin(EmergencyOnlyAdmin):
    list_display = [
        "id",
        "queue",
        "kind",
        "status",
        "reason_code",
        "priority",
        "due_at",
        "overdue",
        "claimed_by",
        "decision",
    ]
    list_filter = ["status", "kind", "reason_code", "overdue", "queue"]
    raw_id_fields = ["item", "assignee", "claimed_by", "decided_by"]
    show_full_result_count = False


@admin.register(QueueMembership)
class QueueMembershipAdmin(EmergencyOnlyAdmin):
    list_display = ["queue", "user", "created_at"]
    list_filter = ["queue"]
    raw_id_fields = ["user"]
