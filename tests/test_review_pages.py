"""The review pages: start reviewing, the review screen (approve, edit, reject, release; the next
task swapped in by htmx), lease renewal, blind audits, assigning and queue membership, and who
may open what."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client as HttpClient
from django.urls import reverse
from django.utils import timezone

from controlplane.models import AuditEntry
from controlplane.roles import Role
from pipelines.models import Item, LedgerEvent
from pipelines.services import configuration as config
from pipelines.services.engine import engine_run_batch
from review.forms import errors_place, input_rows, output_fields, output_read
from review.models import QueueMembership, ReviewTask
from review.services import task_claim_next
from tests.conftest import login
from tests.factories import ItemFactory, PipelineFactory, make_user
from tests.reviewing import hold, join
from tests.test_engine import WORKER, simulated_route, submit

HTMX = {"HTTP_HX_REQUEST": "true"}
INVOICE_SCHEMA = {
    "type": "object",
    "properties": {
        "amount": {"type": "number", "description": "Total with tax"},
        "currency": {"type": "string", "enum": ["EUR", "USD"]},
        "paid": {"type": "boolean"},
        "lines": {"type": "array", "items": {"type": "object"}},
        "memo": {"type": "string"},
    },
    "required": ["amount", "currency"],
}


@pytest.fixture
def queue(acme_step, reviewer):
    return join(acme_step, reviewer)


@pytest.fixture
def rita(reviewer):
    return login(reviewer)


@pytest.fixture
def invoice_step(acme, operator, reviewer):
    pipeline = PipelineFactory(client=acme, slug="invoices", name="Invoices")
    step = config.step_create(
        pipeline=pipeline,
        name="Extract",
        slug="extract",
        kind="generate",
        output_schema=INVOICE_SCHEMA,
        template="{{ text }}",
        actor=operator,
    )
    join(step, reviewer)
    return step


@pytest.fixture
def globex_task(globex_pipeline, operator):
    step = config.step_create(
        pipeline=globex_pipeline,
        name="Clause",
        slug="clause",
        kind="classify",
        labels=["ok", "risky"],
        template="{{ text }}",
        actor=operator,
    )
    return hold(ItemFactory(pipeline=globex_pipeline), step)


def held_task(step, **options) -> ReviewTask:
    return hold(ItemFactory(pipeline=step.pipeline, data={"text": "refund me"}), step, **options)


def start(http, **extra):
    return http.post(reverse("review-start"), **extra)


def decide(http, task, **data):
    return http.post(reverse("review-task-decide", args=[task.pk]), data, **HTMX)


# --- Start reviewing ---------------------------------------------------------------------------


def test_start_reviewing_claims_the_most_urgent_task_and_opens_its_screen(
    acme_step, queue, reviewer, rita
):
    held_task(acme_step)
    urgent = held_task(acme_step)
    ReviewTask.objects.filter(pk=urgent.pk).update(priority=5)
    response = start(rita)
    assert response.status_code == 302
    assert response["Location"] == reverse("review-task", args=[urgent.pk])
    urgent.refresh_from_db()
    assert urgent.status == "claimed" and urgent.claimed_by == reviewer
    page = rita.get(response["Location"])
    assert page.status_code == 200
    assert b'data-testid="decision-form"' in page.content
    assert b"refund me" in page.content and b"low confidence 0.50 &lt; 0.80" in page.content


def test_start_reviewing_with_nothing_waiting_says_so(acme_step, queue, rita):
    response = start(rita)
    assert response["Location"] == reverse("review-start")
    page = rita.get(reverse("review-start"))
    assert b"Nothing is waiting for you right now." in page.content
    swapped = start(rita, **HTMX)
    assert b"Nothing is waiting" in swapped.content and b"<html" not in swapped.content
    assert swapped["HX-Push-Url"] == reverse("review-start")


def test_start_reviewing_one_queue_only_takes_from_it(acme_step, queue, invoice_step, rita):
    other = held_task(invoice_step, output={"amount": 1, "currency": "EUR"})
    ReviewTask.objects.filter(pk=other.pk).update(priority=9)
    mine = held_task(acme_step)
    response = start(rita, data={"queue": queue.pk})
    assert response["Location"] == reverse("review-task", args=[mine.pk])


def test_a_reviewer_sees_only_their_queues_and_clients_on_the_queue_page(
    acme_step, queue, globex_task, rita
):
    acme_task = held_task(acme_step)
    page = rita.get(reverse("review-queue")).content.decode()
    assert reverse("review-task", args=[acme_task.pk]) in page
    assert reverse("review-task", args=[globex_task.pk]) not in page
    assert "Globex" not in page and "Start reviewing" in page
    assert "assignee" not in page  # operators only


def test_an_operator_sees_every_queue_with_assign_controls(acme_step, queue, globex_task, operator):
    held_task(acme_step)
    page = login(operator).get(reverse("review-queue")).content.decode()
    assert "Globex" in page and "Acme Corp" in page
    assert page.count('name="assignee"') == 2
    assert reverse("review-queue-members", args=[queue.pk]) in page


def test_without_websockets_the_queue_page_polls_its_live_region(acme_step, queue, rita):
    task = held_task(acme_step)
    page = rita.get(reverse("review-queue")).content.decode()
    assert 'hx-trigger="every 5s"' in page and "data-review-live" not in page
    region = rita.get(reverse("review-queue"), **HTMX).content.decode()
    assert "<html" not in region and reverse("review-task", args=[task.pk]) in region


# --- Who may open a task -----------------------------------------------------------------------


def test_a_reviewer_of_acme_gets_404_for_a_globex_task_by_url(globex_task, rita):
    names = ("review-task-claim", "review-task-decide", "review-task-release", "review-task-skip")
    for name in names:
        response = rita.post(reverse(name, args=[globex_task.pk]), {"decision": "approve"})
        assert response.status_code == 404
    assert rita.get(reverse("review-task", args=[globex_task.pk])).status_code == 404
    assert rita.post(reverse("review-task-renew", args=[globex_task.pk])).status_code == 404
    globex_task.refresh_from_db()
    assert globex_task.status == "open"


def test_client_users_and_people_without_a_role_are_refused_and_anonymous_sent_to_login(
    acme_step, queue, client_a, no_role
):
    task = held_task(acme_step)
    urls = [reverse("review-task", args=[task.pk]), reverse("review-start")]
    for user in (client_a, no_role):
        http = login(user)
        for url in urls:
            assert http.get(url).status_code == 403
        assert http.post(reverse("review-task-decide", args=[task.pk])).status_code == 403
        assert http.post(reverse("review-task-skip", args=[task.pk])).status_code == 403
    anonymous = HttpClient().post(reverse("review-task-decide", args=[task.pk]))
    assert anonymous.status_code == 302 and "login" in anonymous["Location"]
    task.refresh_from_db()
    assert task.status == "open"


def test_a_reviewer_may_not_manage_members_or_assign(acme_step, queue, reviewer, rita):
    task = held_task(acme_step)
    assert rita.get(reverse("review-queue-members", args=[queue.pk])).status_code == 403
    response = rita.post(reverse("review-task-assign", args=[task.pk]), {"assignee": reviewer.pk})
    assert response.status_code == 403


# --- Decisions through the screen ---------------------------------------------------------------


def test_approving_accepts_the_item_and_swaps_in_the_next_task(acme_step, queue, reviewer, rita):
    first = held_task(acme_step, output={"label": "bug"})
    second = held_task(acme_step)
    start(rita)
    response = decide(rita, first, decision="approve")
    assert response.status_code == 200
    body = response.content.decode()
    assert body.lstrip().startswith('<div id="review-screen"') and "<html" not in body
    assert f"Approved item #{first.item_id}." in body
    assert f"Item #{second.item_id}" in body
    assert response["HX-Push-Url"] == reverse("review-task", args=[second.pk])
    item = Item.objects.get(pk=first.item_id)
    assert item.status == Item.Status.ACCEPTED and item.result == {"label": "bug"}
    event = item.ledger.order_by("id").last()
    assert event.actor == "user:rita" and event.detail["decision"] == "approve"
    second.refresh_from_db()
    assert second.status == "claimed" and second.claimed_by == reviewer


def test_without_htmx_a_decision_redirects_to_the_next_task(acme_step, queue, rita):
    first = held_task(acme_step)
    second = held_task(acme_step)
    start(rita)
    response = rita.post(reverse("review-task-decide", args=[first.pk]), {"decision": "approve"})
    assert response.status_code == 302
    assert response["Location"] == reverse("review-task", args=[second.pk])


def test_an_edited_label_replaces_the_models(acme_step, queue, rita):
    task = held_task(acme_step, output={"label": "bug"})
    start(rita)
    response = decide(rita, task, decision="edit", **{"out:label": "account"})
    assert response.status_code == 200 and b"Nothing is waiting" in response.content
    item = Item.objects.get(pk=task.item_id)
    assert item.result == {"label": "account"}
    assert item.ledger.order_by("id").last().detail["decision"] == "edit"


def test_an_invalid_edit_is_refused_with_422_and_the_message_next_to_the_field(invoice_step, rita):
    task = held_task(invoice_step, output={"amount": 10, "currency": "EUR"}, reason="x")
    start(rita)
    events = LedgerEvent.objects.count()
    response = decide(rita, task, decision="edit", **{"out:amount": "ten", "out:currency": '"EUR"'})
    assert response.status_code == 422
    body = response.content.decode()
    assert 'data-error-for="$.amount"' in body and "&#x27;ten&#x27; is not of type" in body
    assert 'value="ten"' in body  # what they typed stays in the field
    task.refresh_from_db()
    assert task.status == "claimed" and Item.objects.get(pk=task.item_id).status == "in_review"
    assert LedgerEvent.objects.count() == events
    response = decide(
        rita,
        task,
        decision="edit",
        **{"out:amount": "12.5", "out:currency": '"USD"', "out:paid": "true", "out:lines": "[]"},
    )
    assert response.status_code == 200
    assert Item.objects.get(pk=task.item_id).result == {
        "amount": 12.5,
        "currency": "USD",
        "paid": True,
        "lines": [],
    }


def test_a_required_field_left_empty_and_broken_json_are_refused_before_deciding(
    invoice_step, rita
):
    task = held_task(invoice_step, output={"amount": 10, "currency": "EUR"}, reason="x")
    start(rita)
    response = decide(rita, task, decision="edit", **{"out:amount": "", "out:lines": "[1,"})
    assert response.status_code == 422
    body = response.content.decode()
    assert 'data-error-for="$.amount"' in body and "This field is required." in body
    assert 'data-error-for="$.lines"' in body and "is not valid JSON" in body


def test_the_screen_generates_the_form_from_the_output_schema(invoice_step, rita):
    task = held_task(
        invoice_step, output={"amount": 10, "currency": "EUR", "extra": {"a": 1}}, reason="x"
    )
    start(rita)
    body = rita.get(reverse("review-task", args=[task.pk])).content.decode()
    assert 'name="out:amount" value="10"' in body
    assert '<option value="&quot;EUR&quot;" selected>EUR</option>' in body
    assert 'name="out:paid"' in body and 'name="out:lines"' in body and 'name="out:extra"' in body
    assert body.count('<abbr title="required">*</abbr>') == 2
    assert "Total with tax" in body


def test_a_classify_task_shows_the_labels_with_the_models_choice_selected(acme_step, queue, rita):
    task = held_task(acme_step, output={"label": "bug"}, confidence=0.42)
    start(rita)
    body = rita.get(reverse("review-task", args=[task.pk])).content.decode()
    assert body.count('type="radio" name="out:label"') == 3
    assert 'value="bug" checked' in body
    assert "confidence 0.42" in body and 'data-testid="hold-reason"' in body


def test_rejecting_ends_the_item_rejected_and_other_needs_a_note(acme_step, queue, rita):
    task = held_task(acme_step)
    start(rita)
    response = decide(rita, task, decision="reject", reject_reason="other", note="")
    assert response.status_code == 422
    assert b'data-error-for="note"' in response.content
    response = decide(rita, task, decision="reject", reject_reason="spam")
    assert response.status_code == 200
    item = Item.objects.get(pk=task.item_id)
    assert item.status == Item.Status.REJECTED
    event = item.ledger.order_by("id").last()
    assert event.to_status == "rejected" and event.detail["reject_reason"] == "spam"


def test_releasing_gives_the_task_back_and_returns_to_the_queue(acme_step, queue, rita):
    task = held_task(acme_step)
    start(rita)
    response = rita.post(reverse("review-task-release", args=[task.pk]), **HTMX)
    assert response["HX-Redirect"] == reverse("review-queue")
    task.refresh_from_db()
    assert task.status == "open" and task.claimed_by is None


def test_skipping_gives_the_task_back_and_loads_the_next_one(
    acme_step, queue, rita, reviewer, acme
):
    first, second = held_task(acme_step), held_task(acme_step)
    start(rita)
    response = rita.post(reverse("review-task-skip", args=[first.pk]), **HTMX)
    assert response.status_code == 200
    page = response.content.decode()
    assert f'data-task="{second.pk}"' in page and "Skipped item" in page
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.status == "open" and first.claimed_by is None
    assert second.status == "claimed" and second.claimed_by == reviewer
    # The skipped task is anyone's: the next reviewer gets it.
    rob = make_user("rob", role=Role.REVIEWER, clients=[acme])
    join(acme_step, rob)
    assert task_claim_next(user=rob) == first


def test_skipping_the_only_task_shows_the_empty_state_and_keeps_it_open(acme_step, queue, rita):
    task = held_task(acme_step)
    start(rita)
    response = rita.post(reverse("review-task-skip", args=[task.pk]), **HTMX)
    assert b'data-state="empty"' in response.content
    task.refresh_from_db()
    assert task.status == "open"


def test_a_decision_on_a_task_someone_else_took_says_the_lease_was_lost(
    acme_step, queue, acme, rita
):
    task = held_task(acme_step)
    start(rita)
    other = make_user("rob", role=Role.REVIEWER, clients=[acme])
    join(acme_step, other)
    ReviewTask.objects.filter(pk=task.pk).update(claimed_by=other)
    response = decide(rita, task, decision="approve")
    assert response.status_code == 409
    assert b"Your lease on this task expired" in response.content
    assert b'data-action="next"' in response.content
    assert Item.objects.get(pk=task.item_id).status == "in_review"


def test_the_screen_renews_the_lease_and_says_when_it_was_lost(acme_step, queue, rita):
    task = held_task(acme_step)
    start(rita)
    ReviewTask.objects.filter(pk=task.pk).update(lease_expires_at=timezone.now())
    response = rita.post(reverse("review-task-renew", args=[task.pk]), **HTMX)
    assert response.status_code == 200 and b'id="lease"' in response.content
    task.refresh_from_db()
    assert task.lease_expires_at > timezone.now() + timedelta(seconds=60)
    ReviewTask.objects.filter(pk=task.pk).update(status="open", claimed_by=None)
    response = rita.post(reverse("review-task-renew", args=[task.pk]), **HTMX)
    assert response.status_code == 409
    assert response["HX-Retarget"] == "#review-screen"
    assert b"Your lease on this task expired" in response.content


def test_a_decided_task_opened_by_url_says_it_is_closed(acme_step, queue, operator, rita):
    task = held_task(acme_step)
    login(operator).post(reverse("review-task-decide", args=[task.pk]), {"decision": "approve"})
    body = rita.get(reverse("review-task", args=[task.pk])).content
    assert b"This task is closed" in body and b"decision-form" not in body


def test_a_task_held_by_another_offers_to_claim_it_once_free(acme_step, queue, rita, reviewer):
    task = held_task(acme_step)
    body = rita.get(reverse("review-task", args=[task.pk])).content
    assert b"Claim this task" in body and b"decision-form" not in body
    response = rita.post(reverse("review-task-claim", args=[task.pk]))
    assert response["Location"] == reverse("review-task", args=[task.pk])
    task.refresh_from_db()
    assert task.claimed_by == reviewer


def test_a_blind_audit_hides_the_models_answer_and_confidence(
    operator, acme_step, queue, reviewer, rita
):
    simulated_route(acme_step, operator)
    config.step_update(step=acme_step, actor=operator, confidence_threshold="0", audit_rate="1")
    submit(acme_step.pipeline, "my invoice is wrong")
    engine_run_batch(worker=WORKER)
    response = start(rita)
    task = ReviewTask.objects.get(claimed_by=reviewer)
    assert task.kind == "audit" and task.model_output is not None and task.confidence is not None
    body = rita.get(response["Location"]).content.decode()
    assert 'data-testid="blind-note"' in body
    assert " checked" not in body and "(model)" not in body
    assert 'data-testid="confidence"' not in body and f"{task.confidence:.2f}" not in body
    assert 'data-action="approve"' not in body and "Submit answer" in body
    response = decide(rita, task, decision="edit", **{"out:label": task.model_output["label"]})
    assert response.status_code == 200
    task.refresh_from_db()
    assert task.agreed is True


# --- Assigning and membership --------------------------------------------------------------------


def test_an_operator_assigns_a_task_to_a_member_with_htmx(acme_step, queue, operator, reviewer):
    task = held_task(acme_step)
    http = login(operator)
    url = reverse("review-task-assign", args=[task.pk])
    response = http.post(url, {"assignee": reviewer.pk}, **HTMX)
    assert response.status_code == 200 and b'data-testid="review-table"' in response.content
    task.refresh_from_db()
    assert task.assignee == reviewer
    assert AuditEntry.objects.filter(action="review_task.assign").exists()
    http.post(url, {"assignee": ""}, **HTMX)
    task.refresh_from_db()
    assert task.assignee is None


def test_assigning_to_someone_outside_the_queue_is_refused(
    acme_step, queue, operator, acme, client_a
):
    task = held_task(acme_step)
    outsider = make_user("ron", role=Role.REVIEWER, clients=[acme])
    http = login(operator)
    url = reverse("review-task-assign", args=[task.pk])
    response = http.post(url, {"assignee": outsider.pk}, **HTMX)
    assert response.status_code == 422 and b"is not a member of" in response.content
    assert http.post(url, {"assignee": client_a.pk}, **HTMX).status_code == 404
    task.refresh_from_db()
    assert task.assignee is None


def test_an_operator_adds_and_removes_queue_members(acme_step, operator, reviewer, acme, globex):
    queue = join(acme_step)
    outsider = make_user("gus", role=Role.REVIEWER, clients=[globex])
    http = login(operator)
    url = reverse("review-queue-members", args=[queue.pk])
    page = http.get(url).content.decode()
    assert f'<option value="{reviewer.pk}">rita</option>' in page and "gus" not in page
    assert http.post(url, {"user": reviewer.pk})["Location"] == url
    assert QueueMembership.objects.filter(queue=queue, user=reviewer).exists()
    assert "rita" in http.get(url).content.decode().split("member-table")[1]
    assert http.post(url, {"user": outsider.pk}).status_code == 404
    remove = reverse("review-queue-member-remove", args=[queue.pk, reviewer.pk])
    assert http.post(remove)["Location"] == url
    assert not QueueMembership.objects.filter(queue=queue).exists()


def test_adding_an_operator_as_member_is_refused_with_the_reason(acme_step, operator):
    queue = join(acme_step)
    other = make_user("otto", role=Role.OPERATOR)
    response = login(operator).post(
        reverse("review-queue-members", args=[queue.pk]), {"user": other.pk}
    )
    assert response.status_code == 422 and b"Only reviewers join queues" in response.content


# --- The form, without a request -----------------------------------------------------------------


def test_a_schema_without_properties_is_edited_as_one_json_object():
    [whole] = output_fields(kind="generate", labels=[], output_schema={}, output={"a": [1, 2]})
    assert whole.path == "$" and whole.widget == "json" and '"a"' in whole.value
    output, errors = output_read([whole], {"out:$": '{"b": true}'})
    assert (output, errors) == ({"b": True}, {})
    _, errors = output_read([whole], {"out:$": "{b"})
    assert list(errors) == ["$"]


def test_nested_errors_go_to_their_field_and_odd_keys_get_bracket_paths():
    fields = output_fields(
        kind="generate",
        labels=[],
        output_schema={"properties": {"lines": {"type": "array"}, "first name": {}}},
        output=None,
    )
    assert [f.path for f in fields] == ["$.lines", '$["first name"]']
    rest = errors_place(fields, {"$.lines[0].qty": ["bad"], "$": ["'x' is required"]})
    assert fields[0].errors == ["$.lines[0].qty: bad"] and rest == {"$": ["'x' is required"]}


def test_the_input_is_shown_as_rows_with_long_text_and_json():
    rows = input_rows({"title": "Hi", "body": "x" * 200, "meta": {"a": 1}, "n": 3})
    assert [(r.key, r.kind) for r in rows] == [
        ("title", "text"),
        ("body", "long"),
        ("meta", "json"),
        ("n", "text"),
    ]
