"""An operator builds a pipeline in the browser, end to end, with a real worker importing."""

from __future__ import annotations

import pytest

from tests.browser.test_personas import sign_in
from tests.processes import WorkerCluster

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

EXAMPLES = (
    "text,label\n"
    + "".join(
        f"{text} {n},{label}\n"
        for n in range(20)
        for text, label in (
            ("I was charged twice for my order", "billing"),
            ("The app crashes when I open settings", "bug"),
            ("Please update the email on my account", "account"),
        )
    )
    + "hello,unknown-label\n"
)


@pytest.fixture
def worker():
    with WorkerCluster() as cluster:
        yield cluster


def test_an_operator_builds_a_pipeline_publishes_and_rolls_back(
    page, live_server, operator, acme, provider, worker, tmp_path
):
    base = live_server.url
    sign_in(page, base, "olivia")

    # A pipeline for Acme, with an input schema.
    page.get_by_role("link", name="Pipelines").click()
    page.get_by_role("button", name="New pipeline").or_(
        page.get_by_role("link", name="New pipeline")
    ).click()
    page.get_by_label("Client").select_option(label="Acme Corp")
    page.get_by_label("Name").fill("Ticket triage")
    page.get_by_label("Slug").fill("tickets")
    page.get_by_label("Input schema").fill(
        '{"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}'
    )
    page.get_by_role("button", name="Create pipeline").click()
    page.wait_for_url(f"{base}/pipelines/acme/tickets/settings/")

    # A classify step; a template variable the schema lacks is refused first.
    page.get_by_role("button", name="Add a step").click()
    page.get_by_label("Name").fill("Topic")
    page.get_by_label("Slug").fill("topic")
    page.locator("#id_labels").fill("billing, bug, account")
    page.get_by_label("Template").fill("Ticket from {{ customer }}: {{ text }}")
    page.get_by_role("button", name="Add step").click()
    page.get_by_text('variable "customer" is not in the input schema').wait_for()
    page.get_by_label("Template").fill("Classify this ticket: {{ text }}")
    page.get_by_role("button", name="Add step").click()
    page.get_by_text("added with prompt version 1").wait_for()

    # Examples, imported by the worker, with the rejected row reported.
    page.get_by_role("link", name="Examples").click()
    path = tmp_path / "tickets.csv"
    path.write_text(EXAMPLES)
    page.get_by_label("File").set_input_files(str(path))
    page.get_by_role("button", name="Upload").click()
    status = page.locator("#import-slot [data-testid=import-status]")
    status.and_(page.locator("[data-status=done]")).wait_for(timeout=60_000)
    assert status.locator("[data-testid=import-accepted]").inner_text() == "60"
    assert status.locator("[data-testid=import-rejected]").inner_text() == "1"
    assert "unknown-label" in status.inner_text()

    # Version 2, published, then rolled back to version 1.
    page.get_by_role("link", name="Topic").click()
    page.get_by_role("link", name="Prompt versions").click()
    page.get_by_label("Template").fill("Which topic is this support ticket about?\n{{ text }}")
    page.get_by_label("Change note").fill("clearer question")
    page.get_by_role("button", name="Save version").click()
    page.get_by_text("Version 2 saved").wait_for()
    page.get_by_role("button", name="Publish v2").click()
    page.get_by_text("Production now runs version 2.").wait_for()
    page.get_by_role("button", name="Roll back to v1").click()
    page.get_by_text("Production now runs version 1.").wait_for()

    # Both changes are in the audit log, by this operator.
    page.get_by_role("link", name="Audit").click()
    table = page.locator("[data-testid=audit-table]")
    text = table.inner_text()
    assert "prompt.publish" in text and "prompt.rollback" in text
    rollback_row = table.locator("tr", has_text="prompt.rollback")
    assert "olivia" in rollback_row.inner_text()
    assert page.problems == []
