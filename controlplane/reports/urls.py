from __future__ import annotations

from django.urls import path

from controlplane.reports import views

urlpatterns = [
    path("reports/", views.report_index, name="report-index"),
    path("reports/<slug:client_slug>/", views.report_client, name="report-client"),
    path("reports/<slug:client_slug>/print/", views.report_print, name="report-print"),
    path("reports/<slug:client_slug>/report.pdf", views.report_pdf_download, name="report-pdf"),
    path("reports/<slug:client_slug>/csv/<slug:table>.csv", views.report_csv, name="report-csv"),
    path("reports/<slug:client_slug>/settings/", views.report_settings, name="report-settings"),
    path(
        "reports/<slug:client_slug>/schedules/<str:pk>/delete/",
        views.report_schedule_remove,
        name="report-schedule-delete",
    ),
]
