"""Review tasks opened by the engine's gate: the right reason for each failure, a queue per
step, the item's priority and a due time from the pipeline's SLA, and blind audits."""

from __future__ import annotations

import importlib
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from pipelines.models import Item
from pipelines.services import configuration as config
from pipelines.services.engine import engine_run_batch
from review.models import ReviewQueue, ReviewTask
from review.reasons import reason_code_of
from tests.factories import ItemFactory, PipelineFactory
from tests.test_engine import WORKER, simulated_route, submit

LOW_CONFIDENCE = {"confidence": {"alpha": 1, "beta": 50}}


def generate_step(operator, acme, *, output_schema, rules=(), slug="extract"):
    pipeline = PipelineFactory(client=acme, slug=f"p-{slug}", name=f"Pipeline {slug}")
    step = config.step_create(
        pipeline=pipeline,
        name="Extract",
        slug=slug,
        kind="generate",
        output_schema=output_schema,
        rules=list(rules),
        confidence_threshold="0",
        template="{{ text }}",
        actor=operator,
    )
    simulated_route(step, operator)
    return step


def held_task(item) -> ReviewTask:
    item.refresh_from_db()
    assert item.status == Item.Status.IN_REVIEW
    return ReviewTask.objects.get(item=item)


def test_a_low_confidence_item_opens_a_review_task_with_the_gate_reason(operator, acme_step):
    simulated_route(acme_step, operator, **LOW_CONFIDENCE)
    [item] = submit(acme_step.pipeline, "hello")
    Item.objects.filter(pk=item.pk).update(priority=7)
    engine_run_batch(worker=WORKER)
    task = held_task(item)
    assert task.kind == ReviewTask.Kind.REVIEW and task.status == ReviewTask.Status.OPEN
    assert task.reason_code == "low_confidence"
    assert task.reason == item.hold_reason and task.reason.endswith("< 0.80")
    assert task.model_output == item.outputs["topic"]["output"]
    assert task.model_output["label"] in acme_step.labels
    assert task.confidence == pytest.approx(item.confidence)
    assert task.priority == 7
    sla = acme_step.pipeline.review_sla_seconds
    assert task.due_at - task.opened_at == timedelta(seconds=sla)
    assert task.queue == ReviewQueue.objects.get(step=acme_step)
    assert task.queue.pipeline == acme_step.pipeline
    assert task.queue.name == "Ticket triage · Topic"


def test_a_schema_error_opens_a_task_that_names_the_path(operator, acme):
    schema = {
        "type": "object",
        "properties": {"summary": {"type": "string", "minLength": 20}},
        "required": ["summary"],
    }
    step = generate_step(operator, acme, output_schema=schema)
    [item] = submit(step.pipeline, "hello")
    engine_run_batch(worker=WORKER)
    task = held_task(item)
    assert task.reason_code == "schema"
    assert task.reason.startswith("schema error at $.summary")
    assert task.model_output == {"summary": "simulated"}


def test_a_broken_rule_opens_a_task_that_names_the_rule(operator, acme):
    schema = {
        "type": "object",
        "properties": {"currency": {"type": "string"}},
        "required": ["currency"],
    }
    rules = [{"kind": "allowed", "field": "currency", "values": ["EUR", "USD"]}]
    step = generate_step(operator, acme, output_schema=schema, rules=rules, slug="money")
    [item] = submit(step.pipeline, "hello")
    engine_run_batch(worker=WORKER)
    task = held_task(item)
    assert task.reason_code == "rule"
    assert task.reason == 'rule "currency in EUR, USD" broken: got "simulated"'


def test_a_processing_error_opens_a_task_without_a_model_output(operator, acme_step):
    simulated_route(acme_step, operator, failure_rates={"processing": 1.0})
    [item] = submit(acme_step.pipeline, "hello")
    engine_run_batch(worker=WORKER)
    task = held_task(item)
    assert task.reason_code == "processing_error"
    assert task.reason.startswith("processing error: Simulated processing failure")
    assert task.model_output is None and task.confidence is None


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        ("low confidence 0.62 < 0.80", "low_confidence"),
        ("no confidence from the model", "low_confidence"),
        ("schema error at $.amount: 'x' is not a 'number'; low confidence 0.1 < 0.8", "schema"),
        ('rule "currency in EUR, USD" broken: got "GBP"; low confidence 0.1 < 0.8', "rule"),
        ("processing error: The model returned no content.", "processing_error"),
        ("processing error: The model refused: I can't help with that.", "content_policy"),
        ("processing error: The provider's content filter withheld the output.", "content_policy"),
        ("something new", "other"),
    ],
)
def test_the_first_gate_reason_names_the_reason_code(reason, code):
    assert reason_code_of(reason) == code


def test_a_batch_opens_its_tasks_in_one_insert(operator, acme_step):
    simulated_route(acme_step, operator, **LOW_CONFIDENCE)
    submit(acme_step.pipeline, *[f"ticket {n}" for n in range(12)])
    with CaptureQueriesContext(connection) as queries:
        assert engine_run_batch(worker=WORKER) == {"in_review": 12}
    table = ReviewTask._meta.db_table
    inserts = [
        q["sql"] for q in queries if q["sql"].startswith("INSERT") and f'"{table}"' in q["sql"]
    ]
    assert len(inserts) == 1
    assert ReviewTask.objects.filter(status="open").count() == 12
    assert ReviewQueue.objects.count() == 1


def test_an_item_waiting_at_a_step_keeps_its_one_task(operator, acme_step, acme_pipeline):
    from tests.reviewing import hold

    item = ItemFactory(pipeline=acme_pipeline)
    first = hold(item, acme_step)
    second = hold(item, acme_step, reason="low confidence 0.10 < 0.80")
    assert first == second
    assert ReviewTask.objects.filter(item=item).count() == 1


def test_audit_rate_one_opens_a_blind_audit_and_the_item_goes_on(operator, acme_step):
    simulated_route(acme_step, operator)
    config.step_update(step=acme_step, actor=operator, confidence_threshold="0", audit_rate="1")
    [item] = submit(acme_step.pipeline, "hello")
    engine_run_batch(worker=WORKER)
    item.refresh_from_db()
    assert item.status == Item.Status.ACCEPTED
    task = ReviewTask.objects.get(item=item, opinion=1)
    assert task.kind == ReviewTask.Kind.AUDIT and task.reason_code == "audit"
    assert task.model_output == item.result
    assert task.confidence == pytest.approx(item.confidence)
    assert task.priority == 0


def test_items_held_before_review_tasks_existed_get_one(acme_step, acme_pipeline):
    migration = importlib.import_module("review.migrations.0002_open_tasks_for_held_items")
    item = ItemFactory(
        pipeline=acme_pipeline,
        status=Item.Status.IN_REVIEW,
        hold_reason="low confidence 0.40 < 0.80",
        outputs={"topic": {"output": {"label": "bug"}, "confidence": 0.4}},
    )
    from django.apps import apps

    migration.open_tasks_for_held_items(apps, None)
    migration.open_tasks_for_held_items(apps, None)  # twice: still one task
    task = ReviewTask.objects.get(item=item)
    assert task.reason_code == "low_confidence"
    assert task.model_output == {"label": "bug"} and task.confidence == 0.4
    assert task.opened_at == item.updated_at
