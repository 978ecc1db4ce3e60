"""A wake-up is only a wake-up: when the broker cannot take it, the request that accepted the
work still succeeds and the work waits in the database for the minute schedule."""

from __future__ import annotations

import pytest
from django.core.cache import cache

from pipelines.models import Item
from tests.test_api import acme_key, submit  # noqa: F401 (a fixture)


@pytest.fixture
def broker_down(monkeypatch):
    def refuse(*args, **kwargs):
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr("django_q.tasks.async_task", refuse)
    cache.delete_many(["engine-wake", "delivery-wake"])


@pytest.mark.django_db(transaction=True)
def test_items_submitted_while_the_broker_is_down_are_accepted_and_kept(
    acme_key,  # noqa: F811
    broker_down,
    caplog,
):
    response = submit(acme_key, "triage", [{"data": {"text": "refund please"}}])
    assert response.status_code == 202
    [answer] = response.json()["items"]
    assert answer["status"] == "queued"
    assert Item.objects.get(pk=answer["id"]).status == Item.Status.QUEUED
    assert "wake-up engine-wake not sent" in caplog.text


@pytest.mark.django_db
def test_a_wake_up_goes_out_at_most_once_a_second(monkeypatch):
    from pipelines.wake import wake_send

    sent = []
    monkeypatch.setattr("django_q.tasks.async_task", lambda func, **kw: sent.append(func))
    cache.delete("test-wake")
    assert wake_send(key="test-wake", func="f", task_name="t", count=3) is True
    assert wake_send(key="test-wake", func="f", task_name="t", count=3) is False
    assert sent == ["f", "f", "f"]


@pytest.mark.django_db(transaction=True)
def test_work_whose_wake_up_was_folded_into_a_drains_is_still_taken_by_it(
    acme_step, operator, monkeypatch
):
    """An item submitted within a second of the last wake-up sends none of its own; the drain
    of that wake-up, finding nothing, looks once more when the second is over and takes it."""
    from pipelines.services import engine
    from pipelines.services.ingest import ENGINE_WAKE_KEY, engine_wake
    from tests.test_engine import WORKER, simulated_route
    from tests.test_engine import submit as submit_items

    simulated_route(acme_step, operator)
    sent = []
    monkeypatch.setattr("django_q.tasks.async_task", lambda func, **kw: sent.append(func))
    cache.delete(ENGINE_WAKE_KEY)
    engine_wake()
    assert len(sent) >= 1
    late = []

    def meanwhile(seconds: float) -> None:
        assert 0 < seconds <= 1.1
        late.extend(submit_items(acme_step.pipeline, "arrived while the drain was idle"))

    monkeypatch.setattr(engine.time, "sleep", meanwhile)
    before = len(sent)
    engine.engine_drain(worker=WORKER)
    assert len(late) == 1 and len(sent) == before  # its wake-up was folded into the first
    late[0].refresh_from_db()
    assert late[0].status != Item.Status.QUEUED


@pytest.mark.django_db
def test_resuming_a_pipeline_wakes_the_workers(
    acme_pipeline, operator, monkeypatch, django_capture_on_commit_callbacks
):
    from pipelines.services.configuration import pipeline_update

    sent = []
    monkeypatch.setattr("django_q.tasks.async_task", lambda func, **kw: sent.append(func))
    pipeline_update(pipeline=acme_pipeline, actor=operator, status="paused")
    cache.delete("engine-wake")
    with django_capture_on_commit_callbacks(execute=True):
        pipeline_update(pipeline=acme_pipeline, actor=operator, status="paused", name="Paused")
    assert sent == []  # nothing can run in a paused pipeline
    with django_capture_on_commit_callbacks(execute=True):
        pipeline_update(pipeline=acme_pipeline, actor=operator, status="active")
    assert sent and set(sent) == {"pipelines.tasks.engine_drain_task"}
