from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from controlplane import views
from controlplane.api import api
from controlplane.monitoring import views as monitoring_views

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("accounts/login/", views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path(
        "accounts/password/",
        auth_views.PasswordChangeView.as_view(),
        name="password_change",
    ),
    path(
        "accounts/password/done/",
        auth_views.PasswordChangeDoneView.as_view(),
        name="password_change_done",
    ),
    path("clients/", views.client_list, name="client-list"),
    path("clients/<slug:slug>/keys/", views.client_keys, name="client-keys"),
    path("people/", views.person_list, name="person-list"),
    path("system/", views.system_status, name="system-status"),
    path("audit/", views.audit_list, name="audit-list"),
    path("dashboards/", monitoring_views.dashboard_overview, name="dashboard-overview"),
    path(
        "dashboards/<slug:client_slug>/<slug:slug>/",
        monitoring_views.dashboard_pipeline,
        name="dashboard-pipeline",
    ),
    path("", include("controlplane.monitoring.alert_urls")),
    path("", include("controlplane.reports.urls")),
    path("", include("pipelines.urls")),
    path("", include("review.urls")),
    path("api/", api.urls),
    path("admin/", admin.site.urls),
]
