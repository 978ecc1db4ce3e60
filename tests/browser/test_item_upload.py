"""An operator uploads a CSV of items in the browser and a real worker submits them."""

from __future__ import annotations

import pytest

from tests.browser.test_personas import sign_in
from tests.processes import WorkerCluster

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ITEMS = (
    "external_id,text,priority\n"
    + "".join(f"T-{n},Ticket number {n},{n % 10}\n" for n in range(25))
    + "T-3,Sent twice,1\n"
    + "T-99,Bad priority,urgent\n"
)


@pytest.fixture
def worker():
    with WorkerCluster() as cluster:
        yield cluster


def test_an_operator_uploads_a_csv_and_sees_the_finished_summary(
    page, live_server, operator, acme_pipeline, worker, tmp_path
):
    base = live_server.url
    sign_in(page, base, "olivia")
    page.goto(f"{base}/pipelines/acme/triage/")
    page.get_by_role("link", name="Upload items").click()
    page.wait_for_url(f"{base}/pipelines/acme/triage/upload/")

    path = tmp_path / "tickets.csv"
    path.write_text(ITEMS)
    page.get_by_label("File").set_input_files(str(path))
    page.get_by_role("button", name="Upload").click()

    status = page.locator("#upload-slot [data-testid=import-status]")
    status.and_(page.locator("[data-status=done]")).wait_for(timeout=60_000)
    assert status.locator("[data-testid=upload-read]").inner_text() == "27"
    assert status.locator("[data-testid=upload-queued]").inner_text() == "25"
    assert status.locator("[data-testid=upload-deduplicated]").inner_text() == "1"
    assert status.locator("[data-testid=upload-rejected]").inner_text() == "1"
    summary = status.locator("[data-testid=upload-summary]").inner_text()
    assert "27 rows read; 25 items queued, 1 duplicate, 0 quarantined" in summary
    assert 'priority must be a whole number from 0 to 9, got "urgent"' in status.inner_text()

    # The items are on the pipeline's page.
    status.get_by_role("link", name="See the items").click()
    assert "T-24" in page.locator("[data-testid=item-table]").inner_text()
    assert page.problems == []
