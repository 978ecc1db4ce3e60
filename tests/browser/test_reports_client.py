"""A client signs in, lands on its report, changes the date range, downloads the CSV and the PDF,
and cannot open another client's report."""

from __future__ import annotations

import csv
import io
import subprocess
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from pipelines.models import Item
from tests.browser.test_personas import sign_in
from tests.test_reports import run_items, simulated_route

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_client_reads_downloads_and_is_kept_to_its_own_report(
    page, live_server, world, operator, tmp_path
):
    simulated_route(world["acme_step"], operator, name="Sim acme")
    run_items(world["acme_step"].pipeline, 30, prefix="acme")
    base = live_server.url
    sign_in(page, base, "alice")
    page.wait_for_url(f"{base}/reports/acme/")
    page.get_by_role("heading", name="Acme Corp: capacity, cost and quality").wait_for()
    # The charts are drawn by plotly (no inline script, so nothing the CSP refuses).
    page.locator("[data-testid=chart-throughput] .main-svg").first.wait_for()

    today = timezone.now().date()
    since = today - timedelta(days=6)
    form = page.get_by_test_id("range-form")
    form.get_by_label("From").fill(since.isoformat())
    form.get_by_label("To").fill(today.isoformat())
    form.get_by_role("button", name="Show").click()
    page.wait_for_url(f"**/reports/acme/?since={since.isoformat()}&until={today.isoformat()}")
    assert f"{since:%d %b %Y} to {today:%d %b %Y}" in page.get_by_test_id("period").inner_text()
    rows = page.get_by_test_id("table-cost_day").locator("tbody tr")
    assert rows.count() == 7

    with page.expect_download() as download:
        page.get_by_test_id("csv-cost_pipeline").click()
    assert download.value.suggested_filename == (
        f"sluice-acme-{since.isoformat()}-{today.isoformat()}-cost-pipeline.csv"
    )
    header, *lines = list(csv.reader(io.StringIO(download.value.path().read_text())))
    assert header[0] == "Pipeline" and [line[0] for line in lines] == ["Ticket triage"]
    spent = sum((i.cost for i in Item.objects.filter(pipeline__client__slug="acme")), Decimal(0))
    assert Decimal(lines[0][2]) == spent > 0

    with page.expect_download() as download:
        page.get_by_test_id("pdf-link").click()
    pdf = tmp_path / download.value.suggested_filename
    download.value.save_as(pdf)
    assert pdf.read_bytes().startswith(b"%PDF")
    subprocess.run(["pdftoppm", "-r", "30", "-png", str(pdf), str(tmp_path / "p")], check=True)
    assert len(list(tmp_path.glob("p-*.png"))) == 5

    response = page.goto(f"{base}/reports/globex/")
    assert response.status == 404
    response = page.goto(f"{base}/reports/globex/report.pdf")
    assert response.status == 404
    assert page.problems == []
