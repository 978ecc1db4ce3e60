"""System errors: configuration that breaks at run time (a bad deploy, an edit in the database)
pauses the pipeline with an audit entry and an alert, keeps every item in the queue without
using an attempt, and once the operator fixes it and resumes the pipeline the items run."""

from __future__ import annotations

import pytest

from controlplane.models import AuditEntry
from controlplane.monitoring.alert_services import alert_rules_ensure
from controlplane.monitoring.models import Alert
from pipelines.models import AiModel, Item, LedgerEvent, Pipeline, PromptVersion, Provider, Step
from pipelines.services import configuration as config
from pipelines.services.engine import engine_run_batch
from pipelines.signals import pipeline_paused
from tests.test_engine import simulated_route, submit

WORKER = "worker:test"


def _template(step, operator):
    PromptVersion.objects.filter(step=step).update(template="Classify {{ text ")


def _output_schema(step, operator):
    Step.objects.filter(pk=step.pk).update(output_schema={"type": "nonsense"})


def _rules(step, operator):
    Step.objects.filter(pk=step.pk).update(rules=[{"kind": "bogus", "field": "label"}])


def _parameters(step, operator):
    PromptVersion.objects.filter(step=step).update(parameters="temperature=0")


def _labels(step, operator):
    Step.objects.filter(pk=step.pk).update(labels={"billing": 1})


def _model_switched_off(step, operator):
    config.aimodel_update(model=step.route.get().model, actor=operator, is_active=False)


def _simulation(step, operator):
    Provider.objects.filter(pk=step.route.get().model.provider_id).update(
        simulation={"latency_ms": "fast"}
    )


def _provider_kind(step, operator):
    Provider.objects.filter(pk=step.route.get().model.provider_id).update(kind="gpt")


CORRUPTIONS = {
    "a template that no longer parses": (_template, "cannot be parsed"),
    "an output schema that is not JSON Schema": (_output_schema, "output schema"),
    "business rules that are not valid": (_rules, "business rules"),
    "prompt parameters that are not an object": (_parameters, "parameters"),
    "labels that are not a list": (_labels, "labels"),
    "a route whose only model is switched off": (_model_switched_off, "switched off"),
    "simulation settings that are not valid": (_simulation, "Simulation settings"),
    "an unknown provider kind": (_provider_kind, "Unknown provider kind"),
}


def _snapshot(step) -> dict:
    """The configuration values a corruption may touch, to put back as the fix."""
    provider = step.route.get().model.provider
    return {
        "versions": list(PromptVersion.objects.filter(step=step).values("pk", "template")),
        "parameters": list(PromptVersion.objects.filter(step=step).values("pk", "parameters")),
        "step": Step.objects.filter(pk=step.pk).values("output_schema", "rules", "labels").get(),
        "provider": Provider.objects.filter(pk=provider.pk).values("simulation", "kind").get(),
        "models": list(AiModel.objects.filter(provider=provider).values("pk", "is_active")),
    }


def _restore(step, saved: dict) -> None:
    for row in saved["versions"] + saved["parameters"]:
        PromptVersion.objects.filter(pk=row.pop("pk")).update(**row)
    Step.objects.filter(pk=step.pk).update(**saved["step"])
    Provider.objects.filter(pk=step.route.get().model.provider_id).update(**saved["provider"])
    for row in saved["models"]:
        AiModel.objects.filter(pk=row.pop("pk")).update(**row)


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_broken_configuration_pauses_alerts_keeps_the_items_and_they_run_once_resumed(
    operator, acme_step, corruption, django_capture_on_commit_callbacks
):
    alert_rules_ensure()
    simulated_route(acme_step, operator, confidence={"alpha": 1000, "beta": 1})
    pipeline = acme_step.pipeline
    saved = _snapshot(acme_step)
    corrupt, cause = CORRUPTIONS[corruption]
    corrupt(acme_step, operator)
    items = submit(pipeline, "my invoice is wrong", "the app crashes", "reset my password")

    with django_capture_on_commit_callbacks(execute=True):
        engine_run_batch(worker=WORKER)

    pipeline.refresh_from_db()
    assert pipeline.status == Pipeline.Status.PAUSED
    entry = AuditEntry.objects.get(action="pipeline.pause", actor_label="engine")
    assert cause in entry.after["reason"]
    for item in items:
        item.refresh_from_db()
        assert (item.status, item.attempts, item.error_class) == (Item.Status.QUEUED, 0, "system")
    assert not Item.objects.filter(
        status__in=[Item.Status.DEAD_LETTERED, Item.Status.QUARANTINED]
    ).exists()
    alert = Alert.objects.get(rule__kind="pipeline_paused", pipeline=pipeline)
    assert alert.state == Alert.State.FIRING and cause in alert.summary
    # Paused: nothing is claimed, however often the workers look.
    assert engine_run_batch(worker=WORKER) == {}

    _restore(acme_step, saved)
    config.pipeline_update(pipeline=pipeline, actor=operator, status=Pipeline.Status.ACTIVE)
    alert.refresh_from_db()
    assert alert.state == Alert.State.RESOLVED
    engine_run_batch(worker=WORKER)
    assert set(Item.objects.filter(pipeline=pipeline).values_list("status", flat=True)) == {
        Item.Status.ACCEPTED
    }


def test_a_missing_api_key_variable_is_a_system_error(operator, acme_step, monkeypatch):
    monkeypatch.delenv("SLUICE_TEST_ABSENT_API_KEY", raising=False)
    provider = config.provider_create(
        name="Remote",
        kind="openai",
        base_url="http://127.0.0.1:9/v1",
        api_key_env="SLUICE_TEST_ABSENT_API_KEY",
        actor=operator,
    )
    model = config.aimodel_create(provider=provider, name="gpt-x", actor=operator)
    config.route_set(step=acme_step, entries=[{"model": model}], actor=operator)
    [item] = submit(acme_step.pipeline, "hello")
    engine_run_batch(worker=WORKER)
    item.refresh_from_db()
    acme_step.pipeline.refresh_from_db()
    assert (item.status, item.attempts, item.error_class) == (Item.Status.QUEUED, 0, "system")
    assert acme_step.pipeline.status == Pipeline.Status.PAUSED
    entry = AuditEntry.objects.get(action="pipeline.pause", actor_label="engine")
    assert "SLUICE_TEST_ABSENT_API_KEY" in entry.after["reason"]


def test_a_model_switched_off_is_skipped_for_the_next_model_of_the_route(operator, acme_step):
    first = simulated_route(acme_step, operator, confidence={"alpha": 1000, "beta": 1})
    provider = config.provider_create(
        name="Backup",
        kind="simulated",
        actor=operator,
        simulation={"latency_ms": {"p50": 1, "p95": 2}, "confidence": {"alpha": 1000, "beta": 1}},
    )
    backup = config.aimodel_create(provider=provider, name="sim", actor=operator)
    config.route_set(step=acme_step, entries=[{"model": first}, {"model": backup}], actor=operator)
    config.aimodel_update(model=first, actor=operator, is_active=False)
    [item] = submit(acme_step.pipeline, "hello")
    engine_run_batch(worker=WORKER)
    item.refresh_from_db()
    assert item.status == Item.Status.ACCEPTED
    assert item.outputs["topic"]["model"] == str(backup)


def test_an_item_whose_own_data_does_not_render_is_still_quarantined_alone(operator, acme_step):
    simulated_route(acme_step, operator, confidence={"alpha": 1000, "beta": 1})
    v2 = config.prompt_version_create(
        step=acme_step, template="{{ text }} {{ extra }}", actor=operator
    )
    config.prompt_label_move(step=acme_step, label="production", version=v2, actor=operator)
    outcomes = config_free_submit(acme_step.pipeline, [{"text": "a"}, {"text": "b", "extra": 1}])
    engine_run_batch(worker=WORKER)
    statuses = {o.pk: Item.objects.get(pk=o.pk).status for o in outcomes}
    assert list(statuses.values()) == [Item.Status.QUARANTINED, Item.Status.ACCEPTED]
    acme_step.pipeline.refresh_from_db()
    assert acme_step.pipeline.status == Pipeline.Status.ACTIVE


def config_free_submit(pipeline, datas):
    from pipelines.services.ingest import items_submit

    outcomes = items_submit(pipeline=pipeline, entries=[{"data": d} for d in datas], actor="test")
    return [Item.objects.get(pk=o.id) for o in outcomes]


def test_the_pause_is_announced_once_after_commit(
    operator, acme_step, django_capture_on_commit_callbacks
):
    heard = []

    def listen(sender, pipeline, reason, error_class, **kwargs):
        heard.append((pipeline.pk, error_class, reason))

    pipeline_paused.connect(listen, dispatch_uid="test-listen")
    try:
        submit(acme_step.pipeline, "a", "b")  # no route: a system error
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            engine_run_batch(worker=WORKER)
        assert heard == []
        for callback in callbacks:
            callback()
    finally:
        pipeline_paused.disconnect(dispatch_uid="test-listen")
    assert heard == [(acme_step.pipeline.pk, "system", 'Step "Topic" has no model: set its route.')]
    assert LedgerEvent.objects.filter(to_status=Item.Status.QUEUED, actor=WORKER).count() == 2


# --- The database unreachable: a clear 503, never an HTML 500 -------------------------------


def test_ingest_answers_503_with_retry_after_while_the_database_is_unreachable(
    acme, acme_pipeline, operator, monkeypatch
):
    from django.db import OperationalError
    from django.test import Client as HttpClient

    from controlplane.services import api_key_create

    key = api_key_create(client=acme, name="helpdesk", actor=operator)[1]

    def unreachable(**kwargs):
        raise OperationalError("terminating connection due to administrator command")

    monkeypatch.setattr("pipelines.api.items_submit", unreachable)
    response = HttpClient(headers={"Authorization": f"Bearer {key}"}).post(
        f"/api/v1/pipelines/{acme_pipeline.slug}/items",
        data='{"items": [{"data": {"text": "hello"}}]}',
        content_type="application/json",
    )
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response["Content-Type"] == "application/json"
    assert response.json()["code"] == "unavailable"
    assert not Item.objects.filter(pipeline=acme_pipeline).exists()


def test_a_page_answers_503_when_its_connection_was_closed_and_other_errors_stay_500(rf):
    from django.db import InterfaceError, ProgrammingError

    from controlplane.middleware import DatabaseUnavailableMiddleware

    guard = DatabaseUnavailableMiddleware(lambda request: None)
    request = rf.get("/pipelines/")
    response = guard.process_exception(request, InterfaceError("connection already closed"))
    assert response.status_code == 503 and response["Retry-After"] == "5"
    assert b"cannot be reached" in response.content
    assert guard.process_exception(request, ProgrammingError("no such column")) is None
