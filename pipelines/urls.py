from __future__ import annotations

from django.urls import path

from pipelines import views

urlpatterns = [
    path("pipelines/", views.pipeline_list, name="pipeline-list"),
    path(
        "pipelines/<slug:client_slug>/<slug:slug>/", views.pipeline_detail, name="pipeline-detail"
    ),
    path("items/<int:pk>/", views.item_detail, name="item-detail"),
]
