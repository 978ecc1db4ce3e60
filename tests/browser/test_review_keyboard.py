"""A reviewer works three held items by keyboard only, on a real ASGI server: approves one, edits
one (an invalid edit is refused with the field named, then a valid one is saved) and rejects one;
each decision swaps the next task in without reloading the page, and the items end as decided."""

from __future__ import annotations

import re

import pytest
from django.conf import settings

from pipelines.models import Item
from pipelines.services import configuration as config
from pipelines.services.engine import engine_run_batch
from review.models import ReviewTask
from tests.browser.test_dashboard_live import asgi_server  # noqa: F401 (a fixture)
from tests.conftest import login
from tests.factories import PipelineFactory
from tests.reviewing import join
from tests.test_engine import WORKER, simulated_route, submit

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

AMOUNT_SCHEMA = {
    "type": "object",
    "properties": {"amount": {"type": "number"}},
    "required": ["amount"],
}
TASK_URL = re.compile(r"/review/tasks/(\d+)/$")


def _task_on_screen(page) -> ReviewTask:
    return ReviewTask.objects.get(pk=int(TASK_URL.search(page.url).group(1)))


def _wait_for_next(page, previous: ReviewTask) -> ReviewTask:
    page.wait_for_url(lambda url: TASK_URL.search(url) and f"/{previous.pk}/" not in url)
    return _task_on_screen(page)


def test_a_reviewer_works_three_tasks_by_keyboard_only(
    page,
    asgi_server,  # noqa: F811
    acme,
    operator,
    reviewer,
):
    pipeline = PipelineFactory(client=acme, slug="invoices", name="Invoices")
    step = config.step_create(
        pipeline=pipeline,
        name="Amount",
        slug="amount",
        kind="generate",
        output_schema=AMOUNT_SCHEMA,
        template="{{ text }}",
        actor=operator,
    )
    join(step, reviewer)
    simulated_route(step, operator, confidence={"alpha": 1, "beta": 50})
    items = submit(pipeline, "Invoice 7: 10 EUR", "Invoice 8: twelve and a half", "Cheap pills!!")
    engine_run_batch(worker=WORKER)
    assert {i.status for i in Item.objects.filter(pipeline=pipeline)} == {"in_review"}

    session = login(reviewer).cookies[settings.SESSION_COOKIE_NAME].value
    page.context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": asgi_server}]
    )
    page.goto(f"{asgi_server}/review/")
    page.locator("[data-live-status]", has_text="live").wait_for()
    assert page.get_by_test_id("waiting-total").inner_text() == "3 waiting"

    # n: start reviewing.
    page.keyboard.press("n")
    page.wait_for_url(TASK_URL)
    page.evaluate("() => { window.sluiceNotReloaded = true; }")
    first = _task_on_screen(page)
    assert page.get_by_test_id("hold-reason").inner_text().startswith("Held: low confidence")

    # s: skip it; it goes back to the queue (and comes back later) and another task loads.
    page.keyboard.press("s")
    page.get_by_test_id("review-done").filter(has_text=f"Skipped item #{first.item_id}").wait_for()
    first = _wait_for_next(page, first)

    # a: approve the model's output; the next task is swapped in.
    page.keyboard.press("a")
    page.get_by_test_id("review-done").filter(has_text=f"Approved item #{first.item_id}").wait_for()
    second = _wait_for_next(page, first)

    # e: edit; an amount that is not a number is refused with the field named.
    page.keyboard.press("e")
    page.keyboard.press("Control+A")
    page.keyboard.type("ten")
    page.keyboard.press("Enter")
    error = page.locator('[data-error-for="$.amount"]')
    error.wait_for()
    assert "is not of type 'number'" in error.inner_text()
    assert _task_on_screen(page) == second
    # The refused field has the focus: correct it and save with Enter.
    page.keyboard.press("Control+A")
    page.keyboard.type("12.5")
    page.keyboard.press("Enter")
    page.get_by_test_id("review-done").filter(
        has_text=f"Edited and approved item #{second.item_id}"
    ).wait_for()
    third = _wait_for_next(page, second)

    # r, then 4: reject as spam.
    page.keyboard.press("r")
    page.keyboard.press("4")
    page.get_by_test_id("review-done").filter(has_text=f"Rejected item #{third.item_id}").wait_for()
    page.get_by_test_id("review-state").filter(has_text="Nothing is waiting").wait_for()
    assert page.url.endswith("/review/start/")

    # ?: the help overlay lists the shortcuts.
    page.keyboard.press("?")
    assert page.get_by_test_id("review-help").is_visible()
    page.keyboard.press("Escape")

    assert page.evaluate("() => window.sluiceNotReloaded") is True
    assert page.problems == []

    decided = {t.item_id: t for t in ReviewTask.objects.filter(item__in=items)}
    approved = Item.objects.get(pk=first.item_id)
    assert approved.status == Item.Status.ACCEPTED
    assert approved.result == decided[first.item_id].model_output
    edited = Item.objects.get(pk=second.item_id)
    assert edited.status == Item.Status.ACCEPTED and edited.result == {"amount": 12.5}
    rejected = Item.objects.get(pk=third.item_id)
    assert rejected.status == Item.Status.REJECTED
    for item, decision in ((approved, "approve"), (edited, "edit"), (rejected, "reject")):
        event = item.ledger.order_by("id").last()
        assert event.actor == "user:rita" and event.detail["decision"] == decision
        assert event.from_status == "in_review"
        assert decided[item.pk].decided_by == reviewer
    assert rejected.ledger.order_by("id").last().detail["reject_reason"] == "spam"
