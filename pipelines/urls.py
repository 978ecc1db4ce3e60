from __future__ import annotations

from django.urls import path

from pipelines.views import (
    catalogue,
    configfile,
    configuration,
    dead_letters,
    evaluations,
    examples,
    items,
    rollouts,
    threshold,
    uploads,
)

urlpatterns = [
    path("pipelines/", items.pipeline_list, name="pipeline-list"),
    path("pipelines/new/", configuration.pipeline_create, name="pipeline-create"),
    path("pipelines/import/", configfile.pipeline_import_view, name="pipeline-import"),
    path(
        "pipelines/<slug:client_slug>/<slug:slug>/export.yaml",
        configfile.pipeline_export,
        name="pipeline-export",
    ),
    path(
        "pipelines/<slug:client_slug>/<slug:slug>/", items.pipeline_detail, name="pipeline-detail"
    ),
    path(
        "pipelines/<slug:client_slug>/<slug:slug>/upload/",
        uploads.pipeline_upload,
        name="pipeline-upload",
    ),
    path(
        "pipelines/<slug:client_slug>/<slug:slug>/uploads/<int:pk>/",
        uploads.pipeline_upload_status,
        name="pipeline-upload-status",
    ),
    path(
        "pipelines/<slug:client_slug>/<slug:slug>/settings/",
        configuration.pipeline_settings,
        name="pipeline-settings",
    ),
    path(
        "pipelines/<slug:client_slug>/<slug:slug>/steps/new/",
        configuration.step_create,
        name="step-create",
    ),
    path("steps/<int:pk>/", configuration.step_detail, name="step-detail"),
    path("steps/<int:pk>/prompt/", configuration.prompt_editor, name="prompt-editor"),
    path("steps/<int:pk>/prompt/diff/", configuration.prompt_diff, name="prompt-diff"),
    path("steps/<int:pk>/prompt/try/", configuration.prompt_try, name="prompt-try"),
    path(
        "steps/<int:pk>/prompt/<int:number>/label/",
        configuration.prompt_label,
        name="prompt-label",
    ),
    path("steps/<int:pk>/threshold/", threshold.step_threshold, name="step-threshold"),
    path("steps/<int:pk>/examples/", examples.example_list_view, name="example-list"),
    path(
        "steps/<int:pk>/examples/imports/<int:import_pk>/",
        examples.example_import_status,
        name="example-import",
    ),
    path("steps/<int:pk>/examples/delete/", examples.example_delete_view, name="example-delete"),
    path("steps/<int:pk>/rollouts/", rollouts.step_rollouts, name="step-rollouts"),
    path("rollouts/<int:pk>/", rollouts.rollout_detail, name="rollout-detail"),
    path("rollouts/<int:pk>/<slug:action>/", rollouts.rollout_action, name="rollout-action"),
    path("steps/<int:pk>/evaluations/", evaluations.step_evaluations, name="step-evaluations"),
    path("evaluations/<int:pk>/", evaluations.evaluation_detail, name="evaluation-detail"),
    path("items/<int:pk>/", items.item_detail, name="item-detail"),
    path("dead-letters/", dead_letters.dead_letter_list, name="dead-letter-list"),
    path("providers/", catalogue.provider_list_view, name="provider-list"),
    path("providers/<int:pk>/", catalogue.provider_detail, name="provider-detail"),
    path(
        "providers/<int:pk>/breaker/reset/",
        catalogue.provider_breaker_reset,
        name="provider-breaker-reset",
    ),
]
