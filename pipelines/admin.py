from __future__ import annotations

from django.contrib import admin

from controlplane.admin_base import EmergencyOnlyAdmin, EmergencyOnlyInline
from pipelines.models import (
    AiModel,
    BreakerEvent,
    Delivery,
    Evaluation,
    Example,
    ExampleImport,
    IdempotencyKey,
    Item,
    ItemUpload,
    LatencyRollup,
    LedgerEvent,
    Pipeline,
    PromptLabel,
    PromptVersion,
    Provider,
    Rollout,
    Rollup,
    RouteEntry,
    Step,
    StepLatencyRollup,
    StepRollup,
    TrainedModel,
)


@admin.register(Pipeline)
class PipelineAdmin(EmergencyOnlyAdmin):
    list_display = ["name", "client", "slug", "status", "updated_at"]
    list_filter = ["status", "client"]
    search_fields = ["name", "slug"]


class LedgerInline(EmergencyOnlyInline):
    model = LedgerEvent
    extra = 0
    can_delete = False
    readonly_fields = ["at", "actor", "from_status", "to_status", "detail"]

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Item)
class ItemAdmin(EmergencyOnlyAdmin):
    list_display = ["id", "pipeline", "status", "priority", "external_id", "created_at"]
    list_filter = ["status", "pipeline"]
    search_fields = ["external_id"]
    inlines = [LedgerInline]
    show_full_result_count = False


@admin.register(Provider)
class ProviderAdmin(EmergencyOnlyAdmin):
    list_display = ["name", "kind", "base_url", "api_key_env", "max_concurrency"]
    list_filter = ["kind"]


@admin.register(AiModel)
class AiModelAdmin(EmergencyOnlyAdmin):
    list_display = [
        "name",
        "provider",
        "input_price_per_mtok",
        "output_price_per_mtok",
        "is_active",
    ]
    list_filter = ["provider", "is_active"]


class RouteInline(EmergencyOnlyInline):
    model = RouteEntry
    extra = 0


class PromptLabelInline(EmergencyOnlyInline):
    model = PromptLabel
    extra = 0


@admin.register(Step)
class StepAdmin(EmergencyOnlyAdmin):
    list_display = ["name", "pipeline", "position", "kind", "confidence_threshold"]
    list_filter = ["kind", "pipeline__client"]
    inlines = [RouteInline, PromptLabelInline]


@admin.register(PromptVersion)
class PromptVersionAdmin(EmergencyOnlyAdmin):
    """Versions are immutable: the admin shows them and never changes one."""

    list_display = ["step", "number", "author", "created_at", "change_note"]
    list_filter = ["step__pipeline"]
    readonly_fields = ["step", "number", "template", "parameters", "change_note", "author"]

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Example)
class ExampleAdmin(EmergencyOnlyAdmin):
    list_display = ["id", "step", "source", "created_at"]
    list_filter = ["source", "step__pipeline"]
    show_full_result_count = False


@admin.register(ExampleImport)
class ExampleImportAdmin(EmergencyOnlyAdmin):
    list_display = ["filename", "step", "status", "accepted", "rejected", "created_at"]
    list_filter = ["status"]
    exclude = ["content"]
    readonly_fields = [
        "step",
        "filename",
        "size",
        "status",
        "bytes_done",
        "accepted",
        "rejected",
        "rejected_rows",
        "error",
        "created_by",
        "finished_at",
    ]


@admin.register(LedgerEvent)
class LedgerEventAdmin(EmergencyOnlyAdmin):
    """The ledger is evidence: readable here, never edited."""

    list_display = ["item", "at", "actor", "from_status", "to_status"]
    list_filter = ["to_status"]
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(RouteEntry)
class RouteEntryAdmin(EmergencyOnlyAdmin):
    list_display = ["step", "position", "model", "min_input_chars", "min_priority"]


@admin.register(PromptLabel)
class PromptLabelAdmin(EmergencyOnlyAdmin):
    list_display = ["step", "name", "version", "moved_at"]


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(EmergencyOnlyAdmin):
    list_display = ["client", "key", "status_code", "created_at"]
    list_filter = ["client"]
    readonly_fields = ["client", "key", "request_hash", "status_code", "response"]


@admin.register(Delivery)
class DeliveryAdmin(EmergencyOnlyAdmin):
    list_display = ["item", "url", "status", "attempts", "next_attempt_at", "delivered_at"]
    list_filter = ["status"]
    show_full_result_count = False


@admin.register(ItemUpload)
class ItemUploadAdmin(EmergencyOnlyAdmin):
    list_display = ["filename", "pipeline", "status", "accepted", "rejected", "created_at"]
    list_filter = ["status"]
    exclude = ["content"]
    readonly_fields = [
        "pipeline",
        "filename",
        "size",
        "status",
        "bytes_done",
        "accepted",
        "deduplicated",
        "quarantined",
        "rejected",
        "rejected_rows",
        "error",
        "created_by",
        "finished_at",
    ]


@admin.register(BreakerEvent)
class BreakerEventAdmin(EmergencyOnlyAdmin):
    list_display = ["provider", "at", "from_state", "to_state", "failures", "reason"]
    list_filter = ["to_state", "provider"]


@admin.register(Rollup)
class RollupAdmin(EmergencyOnlyAdmin):
    list_display = ["pipeline", "minute", "ingested", "accepted", "calls", "cost"]
    list_filter = ["pipeline"]
    date_hierarchy = "minute"


@admin.register(TrainedModel)
class TrainedModelAdmin(EmergencyOnlyAdmin):
    list_display = ["step", "examples", "labels", "training_seconds", "trained_at"]
    exclude = ["content"]


@admin.register(LatencyRollup)
class LatencyRollupAdmin(EmergencyOnlyAdmin):
    list_display = ["pipeline", "minute", "measure", "bucket", "count"]
    list_filter = ["measure", "pipeline"]


@admin.register(StepRollup)
class StepRollupAdmin(EmergencyOnlyAdmin):
    list_display = ["step", "version", "minute", "started", "accepted", "held", "failed", "cost"]
    list_filter = ["pipeline"]
    date_hierarchy = "minute"


@admin.register(Rollout)
class RolloutAdmin(EmergencyOnlyAdmin):
    list_display = ["step", "candidate", "baseline", "status", "stage", "started_at"]
    list_filter = ["status"]


@admin.register(Evaluation)
class EvaluationAdmin(EmergencyOnlyAdmin):
    list_display = ["step", "version", "source", "status", "done", "total", "created_at"]
    list_filter = ["status", "source"]
    exclude = ["results"]


@admin.register(StepLatencyRollup)
class StepLatencyRollupAdmin(EmergencyOnlyAdmin):
    list_display = ["step", "version", "minute", "bucket", "count"]
