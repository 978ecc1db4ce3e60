"""Playwright driving Debian's Chromium against a live Sluice server.

Without Chromium these tests skip with a message; CI sets SLUICE_REQUIRE_BROWSER=1 so that a
missing browser fails instead of skipping.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("SLUICE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        message = (
            f"Chromium not found at {CHROMIUM}: install it (apt-get install chromium) or set "
            "SLUICE_CHROMIUM to its path to run the browser tests"
        )
        if os.environ.get("SLUICE_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls are
    # ordinary synchronous code and safe here.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(10_000)
    # Console errors (CSP refusals, script errors) fail the tests that check them; a 4xx answer
    # the test provoked on purpose is not a problem.
    problems: list[str] = []

    def on_console(msg) -> None:
        expected = msg.text.startswith(
            "Failed to load resource: the server responded with a status of 4"
        )
        if msg.type == "error" and not expected:
            problems.append(msg.text)

    page.on("console", on_console)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.problems = problems
    yield page
    context.close()
