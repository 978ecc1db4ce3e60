"""The Django admin is for emergencies: operators may read everything there, and only a
superuser may change anything, because edits there bypass the services (no audit entry, no
ledger event, no validation of rules or routes)."""

from __future__ import annotations

from django.contrib import admin


class EmergencyOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, *args):
        return request.user.is_superuser and super().has_add_permission(request, *args)

    def has_change_permission(self, request, obj=None):
        return request.user.is_superuser and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser and super().has_delete_permission(request, obj)


class EmergencyOnlyInline(admin.TabularInline):
    def has_add_permission(self, request, obj=None):
        return request.user.is_superuser

    def has_change_permission(self, request, obj=None):
        return request.user.is_superuser

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser
