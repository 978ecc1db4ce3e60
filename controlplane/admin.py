from __future__ import annotations

from django.contrib import admin

from controlplane.admin_base import EmergencyOnlyAdmin, EmergencyOnlyInline
from controlplane.models import ApiKey, AuditEntry, Client, Membership, WorkerHeartbeat


class MembershipInline(EmergencyOnlyInline):
    model = Membership
    extra = 0


@admin.register(Client)
class ClientAdmin(EmergencyOnlyAdmin):
    list_display = ["name", "slug", "contact_email", "is_active", "created_at"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(EmergencyOnlyAdmin):
    list_display = ["user", "client", "created_at"]
    list_filter = ["client"]


@admin.register(AuditEntry)
class AuditEntryAdmin(EmergencyOnlyAdmin):
    """Read-only: the audit log is evidence and cannot be edited."""

    list_display = ["at", "actor_label", "action", "object_type", "object_repr", "client"]
    list_filter = ["action", "object_type", "client"]
    search_fields = ["object_repr", "actor_label"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(EmergencyOnlyAdmin):
    list_display = ["cluster", "host", "pid", "last_seen"]


@admin.register(ApiKey)
class ApiKeyAdmin(EmergencyOnlyAdmin):
    """Keys are created in the app (shown once); here they can only be read or revoked."""

    list_display = ["client", "name", "prefix", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["client"]
    readonly_fields = ["client", "name", "prefix", "key_hash", "created_by", "last_used_at"]

    def has_add_permission(self, request):
        return False
