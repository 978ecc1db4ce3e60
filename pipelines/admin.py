from __future__ import annotations

from django.contrib import admin

from pipelines.models import Item, LedgerEvent, Pipeline


@admin.register(Pipeline)
class PipelineAdmin(admin.ModelAdmin):
    list_display = ["name", "client", "slug", "status", "updated_at"]
    list_filter = ["status", "client"]
    search_fields = ["name", "slug"]


class LedgerInline(admin.TabularInline):
    model = LedgerEvent
    extra = 0
    can_delete = False
    readonly_fields = ["at", "actor", "from_status", "to_status", "detail"]

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Item)
class ItemAdmin(admin.ModelAdmin):
    list_display = ["id", "pipeline", "status", "priority", "external_id", "created_at"]
    list_filter = ["status", "pipeline"]
    search_fields = ["external_id"]
    inlines = [LedgerInline]
    show_full_result_count = False
