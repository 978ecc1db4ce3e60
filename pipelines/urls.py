from __future__ import annotations

from django.urls import path

from pipelines.views import catalogue, configuration, items

urlpatterns = [
    path("pipelines/", items.pipeline_list, name="pipeline-list"),
    path("pipelines/new/", configuration.pipeline_create, name="pipeline-create"),
    path(
        "pipelines/<slug:client_slug>/<slug:slug>/", items.pipeline_detail, name="pipeline-detail"
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
    path(
        "steps/<int:pk>/prompt/<int:number>/label/",
        configuration.prompt_label,
        name="prompt-label",
    ),
    path("items/<int:pk>/", items.item_detail, name="item-detail"),
    path("providers/", catalogue.provider_list_view, name="provider-list"),
    path("providers/<int:pk>/", catalogue.provider_detail, name="provider-detail"),
]
