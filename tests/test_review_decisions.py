"""Decisions: approve, edit (validated: an invalid edit is refused with the field and nothing is
written) and reject; the item resumes to its next step, is accepted (and delivered with a
webhook) or ends rejected, with a ledger event naming the reviewer and the time spent; every
answer becomes a labeled example; blind audits leave the item alone."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from controlplane.services import client_webhook_set
from pipelines.models import Delivery, Example, Item, LatencyRollup, LedgerEvent, Rollup
from pipelines.services import configuration as config
from pipelines.services.engine import engine_run_batch
from pipelines.services.resume import item_resume
from review.models import ReviewTask
from review.services import examples_learn, task_claim_next, task_decide
from tests.factories import ItemFactory, PipelineFactory
from tests.reviewing import classify_step, hold, join
from tests.test_engine import WORKER, simulated_route, submit

INVOICE_SCHEMA = {
    "type": "object",
    "properties": {"amount": {"type": "number"}, "currency": {"type": "string"}},
    "required": ["amount", "currency"],
}


@pytest.fixture
def queue(acme_step, reviewer):
    return join(acme_step, reviewer)


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


def claimed(step, user, **hold_options):
    """A held item of `step` whose task `user` has claimed 12 seconds ago."""
    task = hold(ItemFactory(pipeline=step.pipeline), step, **hold_options)
    assert task_claim_next(user=user) == task
    ReviewTask.objects.filter(pk=task.pk).update(claimed_at=timezone.now() - timedelta(seconds=12))
    task.refresh_from_db()
    return task


def last_event(item) -> LedgerEvent:
    return item.ledger.order_by("id").last()


# --- Approve, edit, reject -------------------------------------------------------------------


def test_approving_accepts_the_item_with_the_models_output(acme_step, reviewer, queue):
    task = claimed(acme_step, reviewer, output={"label": "bug"})
    decided = task_decide(task=task, user=reviewer, decision="approve")
    assert decided.status == ReviewTask.Status.DECIDED and decided.decision == "approve"
    assert decided.decided_output == {"label": "bug"} and decided.agreed is True
    assert decided.decided_by == reviewer and 11 < decided.handling_seconds < 20
    item = Item.objects.get(pk=task.item_id)
    assert item.status == Item.Status.ACCEPTED and item.result == {"label": "bug"}
    assert item.finished_at is not None and item.hold_reason == ""
    assert item.outputs["topic"]["decided_by"] == "user:rita"
    event = last_event(item)
    assert event.actor == "user:rita"
    assert (event.from_status, event.to_status) == ("in_review", "accepted")
    assert event.detail["decision"] == "approve" and event.detail["reviewer"] == "rita"
    assert event.detail["handling_seconds"] == decided.handling_seconds
    assert event.detail["task"] == task.pk and event.detail["step"] == "topic"
    assert Rollup.objects.get(pipeline=acme_step.pipeline).accepted == 1
    assert LatencyRollup.objects.filter(pipeline=acme_step.pipeline, measure="end_to_end").exists()


def test_an_edit_replaces_the_output_and_keeps_the_models(acme_step, reviewer, queue):
    task = claimed(acme_step, reviewer, output={"label": "bug"})
    decided = task_decide(task=task, user=reviewer, decision="edit", output={"label": "billing"})
    assert decided.agreed is False
    item = Item.objects.get(pk=task.item_id)
    assert item.result == {"label": "billing"}
    assert item.outputs["topic"]["output"] == {"label": "billing"}
    assert item.outputs["topic"]["model_output"] == {"label": "bug"}
    assert last_event(item).detail["decision"] == "edit"


def test_an_approved_item_goes_on_to_its_next_step(
    acme_step, reviewer, queue, operator, django_capture_on_commit_callbacks
):
    classify_step(acme_step.pipeline, operator)
    task = claimed(acme_step, reviewer)
    Item.objects.filter(pk=task.item_id).update(attempts=3)
    with django_capture_on_commit_callbacks() as callbacks:
        task_decide(task=task, user=reviewer, decision="approve")
    item = Item.objects.get(pk=task.item_id)
    assert item.status == Item.Status.QUEUED
    assert (item.step_position, item.attempts, item.result) == (2, 0, None)
    assert last_event(item).detail["next_step"] == 2
    assert any(getattr(c, "__name__", "") == "engine_wake" for c in callbacks)
    assert not Rollup.objects.filter(pipeline=acme_step.pipeline, accepted__gt=0).exists()


def test_an_approved_item_of_a_client_with_a_webhook_is_delivered(
    acme, acme_step, reviewer, queue, operator
):
    client_webhook_set(client=acme, url="https://hooks.example.com/sluice", actor=operator)
    task = claimed(acme_step, reviewer)
    task_decide(task=task, user=reviewer, decision="approve")
    item = Item.objects.get(pk=task.item_id)
    assert item.status == Item.Status.DELIVERING
    assert Delivery.objects.get(item=item).url == "https://hooks.example.com/sluice"


def test_a_rejected_item_ends_rejected_and_is_delivered_as_such(
    acme, acme_step, reviewer, queue, operator
):
    client_webhook_set(client=acme, url="https://hooks.example.com/sluice", actor=operator)
    task = claimed(acme_step, reviewer)
    decided = task_decide(
        task=task, user=reviewer, decision="reject", reject_reason="spam", note="  junk mail "
    )
    assert decided.reject_reason == "spam" and decided.note == "junk mail"
    assert decided.agreed is False and decided.decided_output is None
    item = Item.objects.get(pk=task.item_id)
    assert item.status == Item.Status.REJECTED and item.finished_at is not None
    assert item.outputs["topic"]["rejected_reason"] == "spam"
    assert Delivery.objects.filter(item=item).exists()
    event = last_event(item)
    assert event.to_status == "rejected" and event.detail["reject_reason"] == "spam"
    assert "junk mail" not in str(event.detail)  # reviewer notes stay off the client's timeline
    assert Rollup.objects.get(pipeline=acme_step.pipeline).rejected == 1
    assert not Example.objects.exists()


def test_a_held_item_from_the_engine_resumes_after_review(operator, acme_step, reviewer, queue):
    simulated_route(acme_step, operator, confidence={"alpha": 1, "beta": 50})
    [item] = submit(acme_step.pipeline, "refund my invoice")
    engine_run_batch(worker=WORKER)
    task = task_claim_next(user=reviewer)
    assert task.item == item
    task_decide(task=task, user=reviewer, decision="edit", output={"label": "billing"})
    item.refresh_from_db()
    assert item.status == Item.Status.ACCEPTED and item.result == {"label": "billing"}
    assert [e.to_status for e in item.ledger.order_by("id")] == [
        "queued",
        "running",
        "in_review",
        "accepted",
    ]
    rollup = Rollup.objects.get(pipeline=acme_step.pipeline)
    assert (rollup.held_for_review, rollup.accepted, rollup.reviewed) == (1, 1, 1)
    assert LatencyRollup.objects.filter(pipeline=acme_step.pipeline, measure="review_wait").exists()


# --- Refused decisions ----------------------------------------------------------------------


def test_an_edit_with_a_label_the_step_does_not_have_is_refused(acme_step, reviewer, queue):
    task = claimed(acme_step, reviewer)
    events = LedgerEvent.objects.count()
    with pytest.raises(ValidationError) as raised:
        task_decide(task=task, user=reviewer, decision="edit", output={"label": "weather"})
    errors = raised.value.message_dict
    assert list(errors) == ["$.label"]
    assert "billing, bug, account" in errors["$.label"][0]
    task.refresh_from_db()
    assert task.status == ReviewTask.Status.CLAIMED and task.decision == ""
    assert Item.objects.get(pk=task.item_id).status == Item.Status.IN_REVIEW
    assert LedgerEvent.objects.count() == events and not Example.objects.exists()


def test_an_edit_that_breaks_the_output_schema_is_refused_with_the_path(invoice_step, reviewer):
    task = claimed(invoice_step, reviewer, output={"amount": 10, "currency": "EUR"}, reason="x")
    with pytest.raises(ValidationError) as raised:
        task_decide(
            task=task, user=reviewer, decision="edit", output={"amount": "ten", "currency": 3}
        )
    errors = raised.value.message_dict
    assert set(errors) == {"$.amount", "$.currency"}
    assert "'ten' is not of type 'number'" in errors["$.amount"][0]
    with pytest.raises(ValidationError) as raised:
        task_decide(task=task, user=reviewer, decision="edit", output=["not", "an", "object"])
    assert raised.value.message_dict == {"$": ["must be a JSON object"]}
    decided = task_decide(
        task=task, user=reviewer, decision="edit", output={"amount": 12.5, "currency": "EUR"}
    )
    assert Item.objects.get(pk=decided.item_id).result == {"amount": 12.5, "currency": "EUR"}


def test_approving_an_output_that_breaks_the_schema_is_refused(invoice_step, reviewer):
    task = claimed(invoice_step, reviewer, output={"amount": "n/a"}, reason="schema error at $")
    with pytest.raises(ValidationError) as raised:
        task_decide(task=task, user=reviewer, decision="approve")
    assert set(raised.value.message_dict) == {"$", "$.amount"}


def test_there_is_nothing_to_approve_after_a_processing_error(acme_step, reviewer, queue):
    item = ItemFactory(pipeline=acme_step.pipeline)
    task = hold(item, acme_step, reason="processing error: the output is not valid JSON")
    assert task.model_output is None
    task_claim_next(user=reviewer)
    with pytest.raises(ValidationError) as raised:
        task_decide(task=task, user=reviewer, decision="approve")
    assert raised.value.message_dict["decision"][0].startswith("The model gave no output")
    decided = task_decide(task=task, user=reviewer, decision="edit", output={"label": "bug"})
    assert decided.agreed is None


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"decision": "maybe"}, "decision"),
        ({"decision": "reject"}, "reject_reason"),
        ({"decision": "reject", "reject_reason": "boring"}, "reject_reason"),
        ({"decision": "reject", "reject_reason": "other"}, "note"),
        ({"decision": "reject", "reject_reason": "spam", "note": "x" * 2001}, "note"),
    ],
)
def test_a_decision_needs_a_known_choice_and_reason(acme_step, reviewer, queue, options, field):
    task = claimed(acme_step, reviewer)
    with pytest.raises(ValidationError) as raised:
        task_decide(task=task, user=reviewer, **options)
    assert list(raised.value.message_dict) == [field]


def test_only_the_claimer_or_an_operator_decides(acme_step, reviewer, queue, operator, client_a):
    [first, second] = [hold(ItemFactory(pipeline=acme_step.pipeline), acme_step) for _ in "ab"]
    with pytest.raises(ValidationError) as raised:
        task_decide(task=first, user=reviewer, decision="approve")
    assert raised.value.code == "not_claimed"
    with pytest.raises(PermissionDenied):
        task_decide(task=first, user=client_a, decision="approve")
    decided = task_decide(task=first, user=operator, decision="approve")
    assert decided.decided_by == operator and decided.handling_seconds is None
    with pytest.raises(ValidationError) as raised:
        task_decide(task=first, user=operator, decision="approve")
    assert raised.value.code == "already_decided"
    # An operator may also decide a task a reviewer holds; the reviewer then cannot.
    task_claim_next(user=reviewer)
    task_decide(task=second, user=operator, decision="reject", reject_reason="duplicate")
    with pytest.raises(ValidationError) as raised:
        task_decide(task=second, user=reviewer, decision="approve")
    assert raised.value.code == "already_decided"


def test_a_task_whose_item_moved_on_is_closed(acme_step, reviewer, queue):
    task = claimed(acme_step, reviewer)
    Item.objects.filter(pk=task.item_id).update(status=Item.Status.DEAD_LETTERED)
    with pytest.raises(ValidationError) as raised:
        task_decide(task=task, user=reviewer, decision="approve")
    assert raised.value.code == "item_moved_on"
    task.refresh_from_db()
    assert task.status == ReviewTask.Status.CANCELLED
    assert (task.decision, task.decided_by, task.learned_at) == ("", None, None)
    assert task_claim_next(user=reviewer) is None


def test_resuming_refuses_an_item_that_is_not_in_review(acme_item):
    with pytest.raises(ValidationError) as raised:
        item_resume(item_id=acme_item.pk, output={}, actor_label="user:x", detail={})
    assert raised.value.code == "not_in_review"


# --- Learning and audits ---------------------------------------------------------------------


def test_approved_and_edited_answers_become_labeled_examples_once(acme_step, reviewer, queue):
    approved = claimed(acme_step, reviewer, output={"label": "bug"})
    task_decide(task=approved, user=reviewer, decision="approve")
    edited = claimed(acme_step, reviewer, output={"label": "bug"})
    task_decide(task=edited, user=reviewer, decision="edit", output={"label": "account"})
    examples = list(Example.objects.filter(step=acme_step).order_by("id"))
    assert [(e.source, e.expected) for e in examples] == [
        ("review", {"label": "bug"}),
        ("review", {"label": "account"}),
    ]
    assert examples[0].data == Item.objects.get(pk=approved.item_id).data
    tasks = list(ReviewTask.objects.filter(pk__in=[approved.pk, edited.pk]))
    assert all(t.learned_at is not None for t in tasks)
    assert examples_learn(tasks=tasks) == 0
    assert Example.objects.count() == 2


def test_a_blind_audit_records_agreement_and_leaves_the_item_alone(
    operator, acme_step, reviewer, queue
):
    simulated_route(acme_step, operator)
    config.step_update(step=acme_step, actor=operator, confidence_threshold="0", audit_rate="1")
    items = submit(acme_step.pipeline, "first ticket", "second ticket")
    engine_run_batch(worker=WORKER)
    before = {i.pk: (i.status, i.result, i.outputs) for i in Item.objects.all()}
    agreed = task_claim_next(user=reviewer)
    assert agreed.kind == ReviewTask.Kind.AUDIT
    task_decide(task=agreed, user=reviewer, decision="edit", output=agreed.model_output)
    disagreed = task_claim_next(user=reviewer)
    other = next(label for label in acme_step.labels if label != disagreed.model_output["label"])
    task_decide(task=disagreed, user=reviewer, decision="edit", output={"label": other})
    assert {i.pk: (i.status, i.result, i.outputs) for i in Item.objects.all()} == before
    agreed.refresh_from_db()
    disagreed.refresh_from_db()
    assert (agreed.agreed, disagreed.agreed) == (True, False)
    for task in (agreed, disagreed):
        event = last_event(task.item)
        assert event.actor == "user:rita" and event.from_status == event.to_status == "accepted"
        assert event.detail["audit"] is True and event.detail["agreed"] == task.agreed
    assert Example.objects.filter(step=acme_step, source="review").count() == 2
    assert {e.expected["label"] for e in Example.objects.filter(source="review")} >= {other}
    assert Rollup.objects.get(pipeline=acme_step.pipeline).accepted == len(items)
