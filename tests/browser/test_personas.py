from __future__ import annotations

import pytest

from tests.factories import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def sign_in(page, base_url: str, username: str) -> None:
    page.goto(f"{base_url}/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state("networkidle")


def nav_labels(page) -> list[str]:
    return [text.strip() for text in page.locator("[data-testid=nav] a").all_inner_texts()]


@pytest.mark.parametrize(
    ("persona", "username", "landing", "nav"),
    [
        (
            "operator",
            "olivia",
            "/pipelines/",
            [
                "Pipelines",
                "Dashboards",
                "Reports",
                "Review",
                "Dead letters",
                "Providers",
                "Alerts",
                "Clients",
                "People",
                "Audit",
                "System",
            ],
        ),
        ("reviewer", "rita", "/review/", ["Review"]),
        ("client_a", "alice", "/reports/acme/", ["Pipelines", "Dashboards", "Reports"]),
    ],
)
def test_each_persona_signs_in_and_sees_its_navigation(
    page, live_server, world, persona, username, landing, nav
):
    sign_in(page, live_server.url, username)
    assert page.url == f"{live_server.url}{landing}"
    assert nav_labels(page) == nav
    assert page.problems == []


def test_a_client_sees_only_its_pipelines_and_cannot_open_operator_pages(page, live_server, world):
    sign_in(page, live_server.url, "alice")
    page.get_by_role("link", name="Pipelines").click()
    table = page.locator("[data-testid=pipeline-table]")
    assert "Ticket triage" in table.inner_text()
    assert "Contract review" not in table.inner_text()
    response = page.goto(f"{live_server.url}/clients/")
    assert response.status == 403
    assert page.get_by_role("heading", name="You can't open this page").is_visible()
    response = page.goto(f"{live_server.url}/pipelines/globex/contracts/")
    assert response.status == 404


def test_an_operator_creates_a_client_with_htmx_errors_in_place(page, live_server, world):
    sign_in(page, live_server.url, "olivia")
    page.get_by_role("link", name="Clients").click()
    form = page.locator("#client-form")
    form.get_by_label("Name").fill("Acme again")
    form.get_by_label("Slug").fill("acme")
    form.get_by_role("button", name="Create client").click()
    # The error is swapped into the form in place; the page did not reload.
    error = page.locator("#client-form .field-error")
    error.wait_for()
    assert "already exists" in error.inner_text()
    page.locator("#client-form").get_by_label("Slug").fill("acme-two")
    page.locator("#client-form").get_by_role("button", name="Create client").click()
    page.wait_for_url(f"{live_server.url}/clients/")
    page.get_by_text("Client “Acme again” created.").wait_for()
    assert "acme-two" in page.locator("[data-testid=client-table]").inner_text()
    assert page.problems == []


def test_signing_out_returns_to_the_login_page(page, live_server, world):
    sign_in(page, live_server.url, "rita")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{live_server.url}/accounts/login/")
    page.goto(f"{live_server.url}/review/")
    assert "/accounts/login/" in page.url
