from __future__ import annotations

from django.urls import path

from controlplane.monitoring import alert_views, metrics_view

urlpatterns = [
    path("alerts/", alert_views.alert_list, name="alert-list"),
    path("alerts/banner/", alert_views.alert_banner, name="alert-banner"),
    path(
        "alerts/<int:pk>/acknowledge/",
        alert_views.alert_acknowledge_view,
        name="alert-acknowledge",
    ),
    path("alerts/<int:pk>/resolve/", alert_views.alert_resolve_view, name="alert-resolve"),
    path("alerts/rules/", alert_views.alert_rule_list, name="alert-rule-list"),
    path("alerts/rules/new/", alert_views.alert_rule_create_view, name="alert-rule-create"),
    path("alerts/rules/<int:pk>/", alert_views.alert_rule_edit, name="alert-rule-edit"),
    path(
        "alerts/rules/<int:pk>/delete/",
        alert_views.alert_rule_delete_view,
        name="alert-rule-delete",
    ),
    path(
        "pipelines/<slug:client_slug>/<slug:slug>/alert-rules/",
        alert_views.alert_rule_pipeline,
        name="alert-rule-pipeline",
    ),
    path("metrics", metrics_view.metrics_view, name="metrics"),
]
