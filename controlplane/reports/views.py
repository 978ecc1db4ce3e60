"""Client report pages: the index (operators: every client; a client goes straight to its own),
one client's report over a date range, its print page, CSV of each table, the PDF, and the
operators' settings and schedules. Reports of a client the user may not see are a 404."""

from __future__ import annotations

from decimal import Decimal

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from controlplane.access import role_required
from controlplane.htmx import redirect_after_post
from controlplane.params import parse_id
from controlplane.reports import selectors
from controlplane.reports.calc import MAX_DAYS, PeriodError, period_parse
from controlplane.reports.figures import charts_build
from controlplane.reports.forms import ReportScheduleForm, ReportSettingsForm
from controlplane.reports.narrative import capacity_text, cost_text, quality_text
from controlplane.reports.pdf import report_pdf
from controlplane.reports.report import Report, report_build
from controlplane.reports.services import (
    report_schedule_create,
    report_schedule_delete,
    report_settings_update,
)
from controlplane.roles import Role, role_of

# Title, tables, chart and words of each section of the page.
SECTIONS = (
    ("Capacity", ("capacity", "limits", "growth"), "throughput", capacity_text),
    ("Cost", ("cost_pipeline", "cost_step", "cost_model", "budget"), "cost", cost_text),
    ("SLA and quality", ("sla",), "quality", quality_text),
    ("Per day", ("cost_day",), None, None),
)
CHART_TITLES = {
    "throughput": "Items per day",
    "cost": "Cost and savings per day",
    "models": "Cost per model",
    "quality": "Latency target and review rate per day",
}


@require_GET
@role_required(Role.OPERATOR, Role.CLIENT)
def report_index(request: HttpRequest) -> HttpResponse:
    clients = list(selectors.report_client_list_for_user(user=request.user))
    if role_of(request.user) == Role.CLIENT:
        if not clients:
            raise Http404("No client")
        return redirect("report-client", clients[0].slug)
    return render(request, "reports/index.html", {"clients": clients})


@require_GET
@role_required(Role.OPERATOR, Role.CLIENT)
def report_client(request: HttpRequest, client_slug: str) -> HttpResponse:
    return _report_page(request, client_slug, template="reports/report.html")


@require_GET
@role_required(Role.OPERATOR, Role.CLIENT)
def report_print(request: HttpRequest, client_slug: str) -> HttpResponse:
    return _report_page(request, client_slug, template="reports/print.html")


@require_GET
@role_required(Role.OPERATOR, Role.CLIENT)
def report_csv(request: HttpRequest, client_slug: str, table: str) -> HttpResponse:
    report = _report_or_error(request, client_slug)
    if isinstance(report, HttpResponse):
        return report
    found = report.tables.get(table)
    if found is None:
        raise Http404("No such table")
    response = HttpResponse(found.csv_text(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = (
        f'attachment; filename="{_filename(report)}-{table.replace("_", "-")}.csv"'
    )
    return response


@require_GET
@role_required(Role.OPERATOR, Role.CLIENT)
def report_pdf_download(request: HttpRequest, client_slug: str) -> HttpResponse:
    report = _report_or_error(request, client_slug)
    if isinstance(report, HttpResponse):
        return report
    response = HttpResponse(
        report_pdf(report, tables=report.tables), content_type="application/pdf"
    )
    response["Content-Disposition"] = f'attachment; filename="{_filename(report)}.pdf"'
    return response


@require_http_methods(["GET", "POST"])
@role_required(Role.OPERATOR)
def report_settings(request: HttpRequest, client_slug: str) -> HttpResponse:
    client = selectors.report_client_get_for_user(user=request.user, slug=client_slug)
    rate = selectors.review_rate_get(client=client)
    action = request.POST.get("action", "")
    rate_form = ReportSettingsForm(
        request.POST if action == "rate" else None, initial={"review_rate_per_hour": rate}
    )
    schedule_form = ReportScheduleForm(request.POST if action == "schedule" else None)
    status = 200
    if request.method == "POST":
        if action == "rate" and rate_form.is_valid():
            value: Decimal = rate_form.cleaned_data["review_rate_per_hour"]
            report_settings_update(client=client, review_rate_per_hour=value, actor=request.user)
            messages.success(request, f"Review is now priced at ${value} an hour.")
            return redirect_after_post(request, "report-settings", client.slug)
        if action == "schedule" and schedule_form.is_valid():
            report_schedule_create(client=client, actor=request.user, **schedule_form.cleaned_data)
            messages.success(request, "Scheduled report added.")
            return redirect_after_post(request, "report-settings", client.slug)
        status = 422 if action in ("rate", "schedule") else 400
    context = {
        "client": client,
        "rate_form": rate_form,
        "schedule_form": schedule_form,
        "schedules": selectors.report_schedule_list(client=client),
        "deliveries": selectors.report_delivery_list(client=client),
    }
    return render(request, "reports/settings.html", context, status=status)


@require_POST
@role_required(Role.OPERATOR)
def report_schedule_remove(request: HttpRequest, client_slug: str, pk: str) -> HttpResponse:
    client = selectors.report_client_get_for_user(user=request.user, slug=client_slug)
    schedule = selectors.report_schedule_get(client=client, pk=parse_id(pk))
    if schedule is None:
        raise Http404("No such schedule")
    report_schedule_delete(schedule=schedule, actor=request.user)
    messages.success(request, "Scheduled report removed.")
    return redirect_after_post(request, "report-settings", client.slug)


# --- helpers ---------------------------------------------------------------------------------


def _report_or_error(request: HttpRequest, client_slug: str) -> Report | HttpResponse:
    """The report the request asks for, or the 400 page saying what is wrong with its dates.
    The client is looked up first: another client's report is a 404 whatever the dates."""
    client = selectors.report_client_get_for_user(user=request.user, slug=client_slug)
    now = timezone.now()
    try:
        period = period_parse(request.GET.get("since"), request.GET.get("until"), today=now.date())
    except PeriodError as exc:
        context = {"client": client, "message": str(exc), "max_days": MAX_DAYS}
        return render(request, "reports/bad_range.html", context, status=400)
    operator = role_of(request.user) == Role.OPERATOR
    preview = operator and request.GET.get("preview") == "client"
    return report_build(
        client=client, period=period, now=now, operator_view=operator and not preview
    )


def _report_page(request: HttpRequest, client_slug: str, *, template: str) -> HttpResponse:
    report = _report_or_error(request, client_slug)
    if isinstance(report, HttpResponse):
        return report
    charts = charts_build(report)
    operator = role_of(request.user) == Role.OPERATOR
    preview = operator and not report.operator_view
    query = report.period.query() + ("&preview=client" if preview else "")
    sections = [
        {
            "title": title,
            "tables": [report.tables[name] for name in names],
            "chart": _chart(chart, charts) if chart else None,
            "text": words(report) if words else "",
        }
        for title, names, chart, words in SECTIONS
    ]
    sections[1]["extra_chart"] = _chart("models", charts)
    context = {
        "report": report,
        "client": report.client,
        "summary": report.tables["summary"],
        "sections": sections,
        "query": query,
        "operator": operator,
        "preview": preview,
    }
    return render(request, template, context)


def _chart(name: str, charts: dict) -> dict:
    return {"id": f"chart-{name}", "title": CHART_TITLES[name], "figure": charts[name]}


def _filename(report: Report) -> str:
    return f"sluice-{report.client.slug}-{report.period.first}-{report.period.last}"
