"""Client reports: the numbers reconcile with the ledger, each client reaches only its own
reports and exports, bad dates get a 400, the PDF has its pages, scheduled emails go out once
per period, and operators price review and preview what a client sees."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from controlplane.reports.calc import (
    MAX_DAYS,
    Period,
    PeriodError,
    drain_minutes,
    month_forecast,
    period_parse,
    share_within,
    trend_fit,
)
from controlplane.reports.models import ReportDelivery, ReportSchedule
from controlplane.reports.report import report_build
from controlplane.reports.services import period_due, reports_send_due
from controlplane.schedules import SCHEDULES
from pipelines.histogram import bucket_counts
from pipelines.models import Item, LedgerEvent
from pipelines.services import configuration as config
from pipelines.services.engine import engine_drain
from pipelines.services.ingest import items_submit
from review.models import ReviewTask
from review.services import task_claim_next, task_decide
from tests.conftest import login
from tests.reviewing import classify_step, join
from tests.test_engine import simulated_route as engine_route

TABLES = (
    "summary",
    "capacity",
    "limits",
    "growth",
    "cost_pipeline",
    "cost_step",
    "cost_model",
    "cost_day",
    "budget",
    "sla",
)
WORKER = "worker:reports"


def simulated_route(step, operator, *, name, rate_limit=0, confidence=None):
    """test_engine's simulated route (1-2 ms calls, priced), with a named provider."""
    model = engine_route(step, operator, **({"confidence": confidence} if confidence else {}))
    config.provider_update(
        provider=model.provider, actor=operator, name=name, rate_limit_per_minute=rate_limit
    )
    return model


def run_items(pipeline, count: int, *, prefix: str) -> None:
    for start in range(0, count, 500):
        items_submit(
            pipeline=pipeline,
            entries=[
                {"data": {"text": f"{prefix} ticket {n} about billing"}}
                for n in range(start, min(count, start + 500))
            ],
            actor="test",
        )
    while engine_drain(worker=WORKER, seconds=60):
        pass


@pytest.fixture
def busy(acme_step, globex_pipeline, operator):
    """Both clients' pipelines with a simulated route, items run through the engine."""
    sure = {"alpha": 60, "beta": 1}
    simulated_route(acme_step, operator, name="Sim acme", rate_limit=600, confidence=sure)
    globex_step = classify_step(globex_pipeline, operator, slug="kind", name="Kind")
    simulated_route(globex_step, operator, name="Sim globex")
    run_items(acme_step.pipeline, 40, prefix="acme")
    run_items(globex_pipeline, 30, prefix="globex")
    return {"acme_step": acme_step, "globex_step": globex_step}


def today_period() -> Period:
    today = timezone.now().date()
    return Period(today - timedelta(days=6), today)


def query(period: Period) -> str:
    return f"?{period.query()}"


def rows_of(response) -> list[list[str]]:
    return list(csv.reader(io.StringIO(response.content.decode())))


# --- reconciliation --------------------------------------------------------------------------


def test_report_totals_reconcile_with_the_ledger_over_thousands_of_items(
    acme, globex, acme_step, globex_pipeline, operator
):
    simulated_route(acme_step, operator, name="Sim acme")
    globex_step = classify_step(globex_pipeline, operator, slug="kind", name="Kind")
    simulated_route(globex_step, operator, name="Sim globex")
    run_items(acme_step.pipeline, 1800, prefix="acme")
    run_items(globex_pipeline, 1400, prefix="globex")
    assert not Item.objects.filter(status__in=["queued", "running"]).exists()
    now = timezone.now()
    period = Period(now.date(), now.date())
    for client in (acme, globex):
        items = Item.objects.filter(pipeline__client=client)
        item_total = sum((item.cost for item in items), Decimal(0))
        ledger_total = sum(
            (
                Decimal(detail.get("cost", "0"))
                for detail in LedgerEvent.objects.filter(item__pipeline__client=client).values_list(
                    "detail", flat=True
                )
            ),
            Decimal(0),
        )
        report = report_build(client=client, period=period, now=now, operator_view=True)
        assert item_total > 0
        assert report.current.cost == item_total == ledger_total
        # Every breakdown adds up to the same total.
        assert sum(row[2] for row in report.tables["cost_pipeline"].rows) == item_total
        assert sum(row[3] for row in report.tables["cost_step"].rows) == item_total
        assert sum(row[3] for row in report.tables["cost_model"].rows) == item_total
        assert sum(row[2] for row in report.tables["cost_day"].rows) == item_total
        assert report.current.finished == items.exclude(status="in_review").count()


def test_the_csv_export_of_cost_per_pipeline_matches_the_page(busy, client_a, acme):
    period = today_period()
    response = login(client_a).get(
        reverse("report-csv", args=["acme", "cost_pipeline"]) + query(period)
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment;" in response["Content-Disposition"]
    header, *rows = rows_of(response)
    assert header[:3] == ["Pipeline", "Items finished", "Model cost"]
    assert [row[0] for row in rows] == ["Ticket triage"]
    expected = sum((i.cost for i in Item.objects.filter(pipeline__client=acme)), Decimal(0))
    assert Decimal(rows[0][2]) == expected


def test_the_cost_section_shows_what_cascade_routing_saved_and_its_escalations(
    acme_step, operator, client_a, tmp_path
):
    from tests.test_cascade import SURE, UNSURE, cheap_then_strong, model, price

    config.step_update(step=acme_step, actor=operator, cascade=True, confidence_threshold="0.8")
    # Two answers the cheap model was sure of, then one it was not (asked the strong one again).
    cheap, strong = cheap_then_strong(acme_step, operator, cheap_confidence=SURE)
    run_items(acme_step.pipeline, 2, prefix="sure")
    unsure = model(operator, "Unsure", price=1, confidence=UNSURE)
    config.route_set(step=acme_step, entries=[{"model": unsure}, {"model": strong}], actor=operator)
    run_items(acme_step.pipeline, 1, prefix="unsure")
    saved = 2 * (price(strong) - price(cheap))
    period = today_period()
    http = login(client_a)

    report = report_build(
        client=acme_step.pipeline.client, period=period, now=timezone.now(), operator_view=False
    )
    assert report.current.routing_saved == saved and report.current.escalations == 1
    page = http.get(reverse("report-client", args=["acme"]) + query(period)).content.decode()
    assert "Saved by routing to cheaper models" in page and f"${saved:.4f}" in page
    assert "Answers escalated to the stronger model" in page

    summary = rows_of(http.get(reverse("report-csv", args=["acme", "summary"]) + query(period)))
    by_measure = {row[0]: row[1:] for row in summary}
    assert Decimal(by_measure["Saved by routing to cheaper models"][0]) == saved
    assert by_measure["Answers escalated to the stronger model"][0] == "1"
    header, row = rows_of(
        http.get(reverse("report-csv", args=["acme", "cost_pipeline"]) + query(period))
    )
    columns = dict(zip(header, row, strict=True))
    assert Decimal(columns["Saved by routing"]) == saved and columns["Escalations"] == "1"
    [step_row] = report.tables["cost_step"].rows
    assert step_row[4:] == [saved, 1]

    pdf = http.get(reverse("report-pdf", args=["acme"]) + query(period))
    pages = [" ".join(text.split()) for text in pdf_pages(pdf.content, tmp_path)]
    assert "Saved by routing to cheaper models" in pages[0] and f"${saved:.4f}" in pages[0]
    assert "Answers escalated to the stronger model" in pages[0]
    assert (
        f"routing to cheaper models ${saved:.4f} (1 answer escalated to the stronger model)"
        in pages[2]
    )


# --- access ----------------------------------------------------------------------------------


def report_urls(slug: str) -> list[str]:
    return [
        reverse("report-client", args=[slug]),
        reverse("report-print", args=[slug]),
        reverse("report-pdf", args=[slug]),
        *(reverse("report-csv", args=[slug, table]) for table in TABLES),
    ]


def test_a_client_reaches_every_report_url_and_export_of_its_own(busy, client_a):
    http = login(client_a)
    for url in report_urls("acme"):
        response = http.get(url)
        assert response.status_code == 200, url
        body = response.content
        assert b"Contract review" not in body and b"Sim globex" not in body, url


@pytest.mark.parametrize("url", ["page", "print", "pdf", *TABLES, "settings", "delete"])
def test_another_clients_report_urls_and_exports_are_not_found(busy, client_b, url):
    http = login(client_b)
    urls = dict(
        zip(("page", "print", "pdf", *TABLES), report_urls("acme"), strict=True),
        settings=reverse("report-settings", args=["acme"]),
        delete=reverse("report-schedule-delete", args=["acme", 1]),
    )
    if url == "settings":
        assert http.get(urls[url]).status_code == 403
    elif url == "delete":
        assert http.post(urls[url]).status_code == 403
    else:
        # Another client's report is a 404 whatever the dates, even invalid ones.
        assert http.get(urls[url]).status_code == 404
        assert http.get(urls[url] + "?since=nonsense").status_code == 404


def test_a_client_lands_on_its_own_report(client_a):
    http = login(client_a)
    home = http.get(reverse("home"))
    assert home["Location"] == reverse("report-index")
    index = http.get(reverse("report-index"))
    assert index["Location"] == reverse("report-client", args=["acme"])
    page = http.get(index["Location"])
    assert page.status_code == 200
    assert b"Acme Corp: capacity, cost and quality" in page.content
    assert b"Settings and schedules" not in page.content


def test_an_unknown_table_is_not_found(client_a):
    response = login(client_a).get(reverse("report-csv", args=["acme", "salaries"]))
    assert response.status_code == 404


def test_operators_see_every_client_and_can_preview_what_a_client_sees(busy, operator, client_a):
    http = login(operator)
    index = http.get(reverse("report-index"))
    assert b"Acme Corp" in index.content and b"Globex" in index.content
    period = today_period()
    url = reverse("report-client", args=["acme"]) + query(period)
    own = http.get(url)
    assert b"Sim acme" in own.content  # the provider behind the rate limit
    assert b"Preview as client" in own.content
    preview = http.get(url + "&preview=client")
    assert b"Sim acme" not in preview.content
    assert b'data-testid="preview-banner"' in preview.content
    client_view = login(client_a).get(url)
    assert b"Sim acme" not in client_view.content
    limits = http.get(reverse("report-csv", args=["acme", "limits"]) + query(period))
    assert "Sim acme" in limits.content.decode()


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ("since=yesterday", "must be a date written YYYY-MM-DD"),
        ("since=2026-02-30", "must be a date written YYYY-MM-DD"),
        ("since=2026-03-10&until=2026-03-01", "on or before"),
        ("since=2025-01-01&until=2025-12-31", f"at most {MAX_DAYS} days"),
        ("since=2999-01-01&until=2999-01-02", "future"),
        ("since=0001-01-01&until=0001-01-02", "on or after 2000-01-01"),
    ],
)
def test_bad_dates_get_a_400_with_the_reason_on_every_report_url(client_a, params, message):
    http = login(client_a)
    for url in report_urls("acme"):
        response = http.get(f"{url}?{params}")
        assert response.status_code == 400, url
        assert message in response.content.decode(), url


def test_a_quarter_is_the_longest_range_and_reads_fine(busy, client_a, tmp_path):
    today = timezone.now().date()
    since = today - timedelta(days=MAX_DAYS - 1)
    params = f"?since={since.isoformat()}&until={today.isoformat()}"
    http = login(client_a)
    page = http.get(reverse("report-client", args=["acme"]) + params)
    assert page.status_code == 200
    assert len(page.context["report"].days) == MAX_DAYS
    pdf = http.get(reverse("report-pdf", args=["acme"]) + params)
    pages = pdf_pages(pdf.content, tmp_path)
    assert len(pages) > 5 and "Per day" in pages[4]


# --- the page --------------------------------------------------------------------------------


def test_the_page_compares_with_the_previous_period_and_draws_charts(busy, client_a):
    period = today_period()
    response = login(client_a).get(reverse("report-client", args=["acme"]) + query(period))
    html = response.content.decode()
    assert period.label in html and period.previous.label in html
    for chart in ("throughput", "cost", "models", "quality"):
        assert f'data-plotly="chart-{chart}"' in html
        assert f'id="chart-{chart}"' in html  # its figure, as json_script
    for table in TABLES:
        assert f'data-testid="csv-{table}"' in html
    assert "Growth projection" in html
    assert "The bottleneck is the provider rate limit" in html
    finished = Item.objects.filter(pipeline__client__slug="acme").exclude(status="in_review")
    assert response.context["report"].current.finished == finished.count() > 0


def test_the_print_page_has_no_navigation_and_the_whole_report(busy, client_a):
    response = login(client_a).get(reverse("report-print", args=["acme"]))
    html = response.content.decode()
    assert 'data-testid="nav"' not in html
    assert "SLA and quality" in html and "Per day" in html
    assert "js/reports.js" in html


def test_capacity_names_the_bottleneck_and_what_would_raise_it(busy, operator, acme):
    now = timezone.now()
    report = report_build(client=acme, period=today_period(), now=now, operator_view=True)
    [pipeline] = report.capacities
    assert pipeline.capacity is not None and pipeline.capacity > 0
    names = {limit.name for limit in pipeline.limits}
    assert {"concurrency limit", "provider rate limit", "provider concurrency"} <= names
    # 600 calls a minute is far below what 32 slots of 1 ms calls allow.
    assert pipeline.bottleneck.name == "provider rate limit"
    assert pipeline.capacity == pytest.approx(600.0)
    assert "rate limit" in pipeline.bottleneck.remedy
    assert 0 < pipeline.headroom <= 1


def test_review_time_is_priced_at_the_clients_rate_set_by_an_operator(
    acme, acme_step, operator, reviewer
):
    simulated_route(acme_step, operator, name="Sim unsure", confidence={"alpha": 1, "beta": 50})
    run_items(acme_step.pipeline, 3, prefix="unsure")
    unstaffed = report_build(client=acme, period=today_period(), now=timezone.now())
    [pipeline] = unstaffed.capacities
    assert pipeline.bottleneck.name == "review staffing" and pipeline.capacity == 0
    assert "Add reviewers" in pipeline.bottleneck.remedy
    join(acme_step, reviewer)
    decided = 0
    while (task := task_claim_next(user=reviewer)) is not None:
        # The reviewer took a minute and a half over each.
        ReviewTask.objects.filter(pk=task.pk).update(
            claimed_at=task.claimed_at - timedelta(seconds=90)
        )
        task.refresh_from_db()
        task_decide(task=task, user=reviewer, decision="approve")
        decided += 1
    assert decided == 3
    http = login(operator)
    response = http.post(
        reverse("report-settings", args=["acme"]),
        {"action": "rate", "review_rate_per_hour": "90.00"},
    )
    assert response.status_code == 302
    report = report_build(client=acme, period=today_period(), now=timezone.now())
    seconds = report.current.review_seconds
    assert seconds > 0
    assert report.review_rate_per_hour == Decimal("90.00")
    assert report.current.review_cost == (Decimal(str(seconds)) / 3600 * Decimal("90.00")).quantize(
        Decimal("0.01")
    )
    assert report.current.review_rate == pytest.approx(1.0)
    bad = http.post(
        reverse("report-settings", args=["acme"]),
        {"action": "rate", "review_rate_per_hour": "-3"},
    )
    assert bad.status_code == 422


# --- PDF -------------------------------------------------------------------------------------


def pdf_pages(content: bytes, tmp_path) -> list[str]:
    """Render the PDF with poppler's pdftoppm (it must open), and return each page's text."""
    assert shutil.which("pdftoppm"), "poppler-utils is needed: apt-get install poppler-utils"
    path = tmp_path / "report.pdf"
    path.write_bytes(content)
    subprocess.run(
        ["pdftoppm", "-r", "40", "-png", str(path), str(tmp_path / "page")],
        check=True,
        timeout=60,
    )
    images = sorted(tmp_path.glob("page-*.png"))
    texts = []
    for number in range(1, len(images) + 1):
        done = subprocess.run(
            ["pdftotext", "-layout", "-f", str(number), "-l", str(number), str(path), "-"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        texts.append(done.stdout.decode())
    assert all(image.stat().st_size > 1000 for image in images)
    return texts


def test_the_pdf_opens_and_has_a_page_per_section(busy, client_a, tmp_path):
    period = today_period()
    response = login(client_a).get(reverse("report-pdf", args=["acme"]) + query(period))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response.content.startswith(b"%PDF")
    pages = pdf_pages(response.content, tmp_path)
    assert len(pages) == 5
    assert "Acme Corp: capacity, cost and quality report" in pages[0]
    assert "Summary" in pages[0]
    assert "Capacity" in pages[1] and "Bottleneck" in pages[1]
    assert "Cost per pipeline" in pages[2] and "Cost per model" in pages[2]
    assert "SLA and quality" in pages[3]
    assert "Per day" in pages[4]
    assert "Page 5" in pages[4]
    assert "Contract review" not in "".join(pages)


def test_a_report_without_any_work_still_makes_a_whole_pdf(acme_pipeline, client_a, tmp_path):
    response = login(client_a).get(reverse("report-pdf", args=["acme"]))
    pages = pdf_pages(response.content, tmp_path)
    # Thirty days in the appendix still fit one page.
    assert len(pages) == 5
    assert "Capacity is not measured yet" in pages[1]
    assert "No measurement in this period" in pages[3]


# --- scheduled reports -----------------------------------------------------------------------


def test_the_report_schedule_is_declared_hourly():
    [entry] = [s for s in SCHEDULES if s.name == "sluice.reports"]
    assert entry.minutes == 60
    assert entry.func == "controlplane.reports.tasks.reports_send_due_task"


def test_the_due_period_is_the_last_complete_week_or_month():
    wednesday = date(2026, 11, 25)
    assert period_due("weekly", today=wednesday) == Period(date(2026, 11, 16), date(2026, 11, 22))
    assert period_due("monthly", today=wednesday) == Period(date(2026, 10, 1), date(2026, 10, 31))
    assert period_due("monthly", today=date(2026, 1, 1)) == Period(
        date(2025, 12, 1), date(2025, 12, 31)
    )


def test_a_weekly_report_is_emailed_with_its_pdf_once_per_week(busy, acme, operator, tmp_path):
    http = login(operator)
    response = http.post(
        reverse("report-settings", args=["acme"]),
        {"action": "schedule", "cadence": "weekly", "recipients": "boss@acme.test, cfo@acme.test"},
    )
    assert response.status_code == 302
    schedule = ReportSchedule.objects.get(client=acme)
    monday = datetime(2026, 12, 7, 0, 30, tzinfo=UTC)
    assert reports_send_due(now=monday) == {"sent": 1, "failed": 0}
    [message] = mail.outbox
    assert message.to == ["boss@acme.test", "cfo@acme.test"]
    assert "30 Nov 2026 to 06 Dec 2026" in message.subject
    [(filename, content, mimetype)] = message.attachments
    assert filename == "sluice-acme-2026-11-30-2026-12-06.pdf"
    assert mimetype == "application/pdf"
    assert len(pdf_pages(content, tmp_path)) == 5
    # Run again in the same week (and by a second worker): nothing more is sent.
    assert reports_send_due(now=monday + timedelta(hours=1)) == {"sent": 0, "failed": 0}
    assert reports_send_due(now=monday + timedelta(days=6)) == {"sent": 0, "failed": 0}
    assert len(mail.outbox) == 1
    assert reports_send_due(now=monday + timedelta(days=7)) == {"sent": 1, "failed": 0}
    assert len(mail.outbox) == 2
    history = http.get(reverse("report-settings", args=["acme"])).content.decode()
    assert "2026-11-30 to 2026-12-06" in history and "2026-12-07 to 2026-12-13" in history
    assert ReportDelivery.objects.filter(schedule=schedule, status="sent").count() == 2


def test_a_failed_send_is_recorded_and_retried_by_the_next_run(busy, acme, operator, settings):
    ReportSchedule.objects.create(client=acme, cadence="monthly", recipients="boss@acme.test")
    settings.MAILERS = {
        "default": {
            "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {"host": "127.0.0.1", "port": 9, "timeout": 2},
        }
    }
    first = datetime(2026, 12, 1, 0, 10, tzinfo=UTC)
    assert reports_send_due(now=first) == {"sent": 0, "failed": 1}
    [delivery] = ReportDelivery.objects.all()
    assert delivery.status == "failed" and delivery.error
    settings.MAILERS = {
        "default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend", "OPTIONS": {}}
    }
    assert reports_send_due(now=first + timedelta(hours=1)) == {"sent": 1, "failed": 0}
    delivery.refresh_from_db()
    assert delivery.status == "sent" and delivery.period_end == date(2026, 11, 30)


def test_a_schedule_with_a_bad_address_is_refused_next_to_the_field(acme, operator):
    response = login(operator).post(
        reverse("report-settings", args=["acme"]),
        {"action": "schedule", "cadence": "weekly", "recipients": "boss@acme.test, nope"},
    )
    assert response.status_code == 422
    assert "is not an email address" in response.content.decode()
    assert not ReportSchedule.objects.exists()


def test_an_operator_removes_a_schedule_and_only_of_that_client(acme, globex, operator):
    schedule = ReportSchedule.objects.create(client=acme, cadence="weekly", recipients="a@b.test")
    http = login(operator)
    wrong = http.post(reverse("report-schedule-delete", args=["globex", schedule.pk]))
    assert wrong.status_code == 404
    done = http.post(reverse("report-schedule-delete", args=["acme", schedule.pk]))
    assert done.status_code == 302
    assert not ReportSchedule.objects.exists()


def test_a_report_page_never_reads_the_item_table_itself(busy, client_a):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        response = login(client_a).get(reverse("report-client", args=["acme"]))
    assert response.status_code == 200
    item_table = connection.ops.quote_name(Item._meta.db_table)
    # The ledger read joins items for their pipeline; nothing selects or counts from them.
    assert not [q["sql"] for q in queries if f"FROM {item_table}" in q["sql"]]


def test_csv_cells_a_spreadsheet_would_run_are_quoted():
    from controlplane.reports.tables import Column, Table

    table = Table("t", "T", [Column("Model"), Column("Cost", "money")])
    table.rows = [["=HYPERLINK(1)", Decimal("-0.50")], ["@sum", Decimal("0.000100")]]
    assert table.csv_text().splitlines() == ["Model,Cost", "'=HYPERLINK(1),-0.5", "'@sum,0.0001"]


# --- arithmetic ------------------------------------------------------------------------------


def test_periods_default_to_the_last_thirty_days_and_compare_with_the_one_before():
    period = period_parse(None, None, today=date(2026, 11, 30))
    assert period == Period(date(2026, 11, 1), date(2026, 11, 30))
    assert period.previous == Period(date(2026, 10, 2), date(2026, 10, 31))
    with pytest.raises(PeriodError):
        period_parse("2026-01-01", "2026-06-01", today=date(2026, 11, 30))


def test_share_within_reads_the_histogram_like_the_percentiles():
    counts = bucket_counts([0.2, 0.4, 3, 20, 40])
    assert share_within(counts, 60) == pytest.approx(1.0)
    assert share_within(counts, 0.5) == pytest.approx(0.4)
    assert share_within(counts, 20) == pytest.approx(0.6 + 0.2 * 0.5)
    assert share_within({}, 10) is None


def test_the_trend_projects_growth_and_when_it_meets_capacity():
    trend = trend_fit([100, 110, 120, 130], capacity_per_day=230)
    assert trend.per_day == pytest.approx(130)
    assert trend.in_30_days == pytest.approx(430)
    assert trend.days_to_capacity == pytest.approx(10)
    assert trend_fit([100, 90, 80], capacity_per_day=500).days_to_capacity is None
    assert trend_fit([5], capacity_per_day=None) is None


def test_month_forecast_and_drain_time():
    now = datetime(2026, 11, 16, 0, 0, tzinfo=UTC)  # half of a 30-day month
    assert month_forecast(spent=Decimal("50"), now=now) == Decimal("100.00")
    # A month of cheap calls is not forecast as nothing.
    assert month_forecast(spent=Decimal("0.000147"), now=now) == Decimal("0.000294")
    assert drain_minutes(backlog=600, capacity=20, inflow=10) == pytest.approx(60)
    assert drain_minutes(backlog=600, capacity=10, inflow=10) is None
    assert drain_minutes(backlog=0, capacity=None, inflow=3) == 0
