"""Dead letters over the REST API: listed and filtered, each item's ledger, re-driven in bulk
(optionally against another prompt version) after a dry run; one client's key never reaches
another client's items."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.test import Client as HttpClient
from django.utils import timezone

from controlplane.models import ApiKey, AuditEntry
from controlplane.services import api_key_create
from pipelines.models import Item, LedgerEvent
from pipelines.services import configuration as config
from pipelines.services.engine import engine_run_batch
from tests.test_dead_letters import dead_letter, healthy
from tests.test_engine import submit


@pytest.fixture
def acme_key(acme, operator):
    return api_key_create(client=acme, name="helpdesk", actor=operator)[1]


@pytest.fixture
def globex_key(globex, globex_pipeline, operator):
    return api_key_create(client=globex, name="crm", actor=operator)[1]


def api(key: str) -> HttpClient:
    return HttpClient(headers={"Authorization": f"Bearer {key}"})


def redrive(key: str, body) -> object:
    data = body if isinstance(body, str) else json.dumps(body)
    return api(key).post("/api/v1/dead-letters/redrive", data=data, content_type="application/json")


def written() -> tuple:
    """Everything a re-drive would write, to show a dry run writes none of it."""
    return (
        list(Item.objects.order_by("id").values_list("status", "attempts", "prompt_pins")),
        LedgerEvent.objects.count(),
        AuditEntry.objects.count(),
    )


def test_dead_letters_are_listed_with_their_step_and_a_public_error(acme_key, operator, acme_step):
    items = dead_letter(acme_step, operator)
    submit(acme_step.pipeline, "still queued")
    answer = api(acme_key).get("/api/v1/dead-letters").json()
    assert [i["id"] for i in answer["items"]] == [i.pk for i in items]
    first = answer["items"][0]
    assert (first["status"], first["step"], first["step_slug"]) == ("dead_lettered", 1, "topic")
    assert first["error"]["error_class"] == "transient"
    # The provider's raw text stays with the operator.
    assert first["error"]["message"].startswith("The model provider did not answer")
    assert answer["next_cursor"] is None


def test_dead_letters_filter_by_pipeline_step_error_class_and_time(acme_key, operator, acme_step):
    old, new = dead_letter(acme_step, operator)
    Item.objects.filter(pk=old.pk).update(finished_at=timezone.now() - timedelta(days=3))
    client = api(acme_key)

    def ids(**query):
        response = client.get("/api/v1/dead-letters", query)
        assert response.status_code == 200, response.content
        return [i["id"] for i in response.json()["items"]]

    assert ids(pipeline="triage") == [old.pk, new.pk]
    assert ids(pipeline="nope") == []
    assert ids(step="1") == ids(step="topic") == [old.pk, new.pk]
    assert ids(step="2") == ids(step="reply") == []
    assert ids(error_class="transient") == [old.pk, new.pk]
    assert ids(error_class="system") == []
    since = (timezone.now() - timedelta(days=1)).isoformat()
    assert ids(since=since) == [new.pk]
    assert ids(until=since) == [old.pk]
    assert ids(status="rejected") == []


def test_dead_letters_page_by_cursor(acme_key, operator, acme_step):
    items = dead_letter(acme_step, operator, n=3)
    client = api(acme_key)
    first = client.get("/api/v1/dead-letters", {"limit": 2}).json()
    assert [i["id"] for i in first["items"]] == [i.pk for i in items[:2]]
    rest = client.get("/api/v1/dead-letters", {"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [i["id"] for i in rest["items"]] == [items[2].pk]
    assert rest["next_cursor"] is None


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"error_class": "bogus"}, "error_class"),
        ({"status": "queued"}, "status"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2030-01-02T00:00:00Z", "until": "2030-01-01T00:00:00Z"}, "until"),
        ({"cursor": "%%%"}, "cursor"),
        ({"step": "0"}, "step"),
        ({"limit": "1001"}, "limit"),
    ],
)
def test_bad_filters_get_a_422_with_the_field(acme_key, query, field):
    response = api(acme_key).get("/api/v1/dead-letters", query)
    assert response.status_code == 422
    assert response.json()["field"] == field
    assert response.json()["message"]


def test_an_items_ledger_shows_each_attempt_without_internal_details(acme_key, operator, acme_step):
    [item, _] = dead_letter(acme_step, operator)
    response = api(acme_key).get(f"/api/v1/items/{item.pk}/ledger")
    assert response.status_code == 200
    events = response.json()["events"]
    assert events[0]["from_status"] is None and events[0]["to_status"] == "queued"
    assert events[-1]["to_status"] == "dead_lettered"
    failures = [e for e in events if e["from_status"] == "running"]
    assert len(failures) == 5
    assert {e["detail"]["error_class"] for e in failures} == {"transient"}
    assert failures[0]["detail"]["prompt_version"] == 1
    # Worker host names are not the client's business.
    assert {e["by"] for e in events} == {"sluice"}
    assert all("worker" not in json.dumps(e) for e in events)


def test_a_key_cannot_see_or_re_drive_another_clients_dead_letters(
    acme_key, globex_key, operator, acme_step
):
    items = dead_letter(acme_step, operator)
    other = api(globex_key)
    assert other.get("/api/v1/dead-letters").json()["items"] == []
    assert other.get(f"/api/v1/items/{items[0].pk}/ledger").status_code == 404
    before = written()
    response = redrive(globex_key, {"ids": [i.pk for i in items], "dry_run": False})
    assert response.status_code == 202
    answer = response.json()
    assert answer["queued"] == 0 and answer["ids"] == []
    assert answer["skipped"] == [{"id": i.pk, "reason": "not_found", "status": None} for i in items]
    assert written() == before
    dry = redrive(globex_key, {"ids": [items[0].pk], "dry_run": True}).json()
    assert dry["sample"] == [] and dry["skipped"][0]["reason"] == "not_found"


def test_a_dry_run_answers_what_would_happen_and_writes_nothing(acme_key, operator, acme_step):
    items = dead_letter(acme_step, operator)
    healthy(acme_step, operator)
    before = written()
    response = redrive(acme_key, {"ids": [i.pk for i in items], "dry_run": True})
    assert response.status_code == 200
    answer = response.json()
    assert answer["dry_run"] is True and answer["redrivable"] == 2
    assert [s["id"] for s in answer["sample"]] == [i.pk for i in items]
    assert {s["outcome"] for s in answer["sample"]} == {"accepted"}
    assert answer["sample"][0]["prompt_version"] == 1
    assert answer["sample"][0]["simulated"] is True
    assert written() == before


def test_a_re_drive_queues_them_and_the_engine_accepts_them(acme_key, acme, operator, acme_step):
    items = dead_letter(acme_step, operator)
    [queued] = submit(acme_step.pipeline, "not dead")
    healthy(acme_step, operator)
    ids = [i.pk for i in items]
    response = redrive(acme_key, {"ids": [*ids, queued.pk, ids[0]], "dry_run": False})
    assert response.status_code == 202
    answer = response.json()
    assert answer == {
        "queued": 2,
        "ids": ids,
        "prompt_version": None,
        "skipped": [{"id": queued.pk, "reason": "not_redrivable", "status": "queued"}],
    }
    prefix = ApiKey.objects.get(name="helpdesk").prefix
    for item in items:
        item.refresh_from_db()
        assert (item.status, item.attempts, item.error_class) == ("queued", 0, "")
        assert item.ledger.order_by("id").last().actor == f"api:{prefix}"
    entry = AuditEntry.objects.get(action="items.redrive")
    assert entry.actor is None and entry.actor_label == f"api:{prefix}"
    assert entry.client == acme and entry.after["ids"] == ids
    engine_run_batch(worker="w")
    assert set(Item.objects.filter(pk__in=ids).values_list("status", flat=True)) == {"accepted"}


def test_a_re_drive_against_another_version_pins_it_and_the_engine_runs_it(
    acme_key, operator, acme_step
):
    items = dead_letter(acme_step, operator)
    healthy(acme_step, operator)
    config.prompt_version_create(
        step=acme_step, template="Topic of: {{ text }}", change_note="shorter", actor=operator
    )
    ids = [i.pk for i in items]
    dry = redrive(acme_key, {"ids": ids, "prompt_version": 2, "dry_run": True}).json()
    assert {s["prompt_version"] for s in dry["sample"]} == {2}
    response = redrive(acme_key, {"ids": ids, "prompt_version": 2, "dry_run": False})
    assert response.status_code == 202
    assert response.json()["prompt_version"] == 2
    assert AuditEntry.objects.get(action="items.redrive").after["prompt_version"] == 2
    engine_run_batch(worker="w")
    for item in items:
        item.refresh_from_db()
        assert item.prompt_pins == {"topic": 2}
        assert item.status == "accepted"
        assert item.outputs["topic"]["prompt_version"] == 2
        assert item.ledger.order_by("id").last().detail["prompt_version"] == 2
    # The production label did not move: new items still run version 1.
    [fresh] = submit(acme_step.pipeline, "a new one")
    engine_run_batch(worker="w")
    fresh.refresh_from_db()
    assert fresh.outputs["topic"]["prompt_version"] == 1


def test_an_unknown_prompt_version_is_a_422_on_that_field(acme_key, operator, acme_step):
    items = dead_letter(acme_step, operator)
    before = written()
    for dry_run in (True, False):
        body = {"ids": [i.pk for i in items], "prompt_version": 7, "dry_run": dry_run}
        response = redrive(acme_key, body)
        assert response.status_code == 422
        payload = response.json()
        assert payload["field"] == "prompt_version"
        assert payload["code"] == "unknown_version"
        assert "no prompt version 7" in payload["message"]
    assert written() == before


def test_items_at_different_steps_refuse_a_prompt_version(acme_key, operator, acme_step):
    items = dead_letter(acme_step, operator)
    config.step_create(
        pipeline=acme_step.pipeline,
        name="Urgency",
        slug="urgency",
        kind="classify",
        labels=["low", "high"],
        template="How urgent: {{ text }}",
        actor=operator,
    )
    Item.objects.filter(pk=items[1].pk).update(step_position=2)
    before = written()
    ids = [i.pk for i in items]
    response = redrive(acme_key, {"ids": ids, "prompt_version": 1, "dry_run": False})
    assert response.status_code == 422
    payload = response.json()
    assert (payload["field"], payload["code"]) == ("prompt_version", "mixed_steps")
    assert "different steps" in payload["message"]
    assert written() == before
    # Without a version each item simply runs its own step's production prompt again.
    assert redrive(acme_key, {"ids": ids, "dry_run": False}).json()["queued"] == 2


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ('{"ids": [1], "dry_run": tru', 400, None),
        ({"ids": [], "dry_run": True}, 422, "ids"),
        ({"ids": list(range(1, 1002)), "dry_run": True}, 422, "ids"),
        ({"ids": "1,2", "dry_run": True}, 422, "ids"),
        ({"ids": ["x"], "dry_run": True}, 422, "ids[0]"),
        ({"ids": [1, 0], "dry_run": True}, 422, "ids[1]"),
        ({"ids": [2**63], "dry_run": True}, 422, "ids[0]"),
        ({"ids": [1.5], "dry_run": True}, 422, "ids[0]"),
        ({"ids": [1]}, 422, "dry_run"),
        ({"ids": [1], "dry_run": "yes"}, 422, "dry_run"),
        ({"ids": [1], "dry_run": True, "prompt_version": "2"}, 422, "prompt_version"),
        ({"ids": [1], "dry_run": True, "prompt_version": 0}, 422, "prompt_version"),
        ({"ids": [1], "dry_run": True, "prompt_version": True}, 422, "prompt_version"),
        ({"ids": [1], "dry_run": True, "colour": "red"}, 422, "colour"),
        ([1, 2], 422, None),
    ],
)
def test_bad_re_drive_requests_get_a_4xx_with_the_field(acme_key, body, status, field):
    response = redrive(acme_key, body)
    assert response.status_code == status, response.content
    payload = response.json()
    assert payload["code"] in ("invalid", "malformed")
    assert payload["message"]
    if field is not None:
        assert payload["field"] == field


def test_the_ledger_of_an_unknown_item_is_404_and_a_bad_id_422(acme_key):
    assert api(acme_key).get("/api/v1/items/999999/ledger").status_code == 404
    response = api(acme_key).get("/api/v1/items/abc/ledger")
    assert response.status_code == 422 and response.json()["field"] == "item_id"


def test_dead_letter_endpoints_need_a_key(db):
    assert HttpClient().get("/api/v1/dead-letters").status_code == 401
    response = HttpClient().post(
        "/api/v1/dead-letters/redrive",
        data='{"ids": [1], "dry_run": false}',
        content_type="application/json",
    )
    assert response.status_code == 401


def test_the_openapi_document_describes_the_dead_letter_endpoints(db):
    paths = HttpClient().get("/api/openapi.json").json()["paths"]
    assert paths["/api/v1/dead-letters"]["get"]["summary"] == "List dead letters"
    assert paths["/api/v1/items/{item_id}/ledger"]["get"]["summary"] == "An item's ledger"
    redrive_op = paths["/api/v1/dead-letters/redrive"]["post"]
    assert redrive_op["summary"].startswith("Re-drive dead letters")
    assert {"200", "202", "422"} <= set(redrive_op["responses"])


def test_a_filter_given_twice_is_refused_with_its_name(acme_key):
    for path in ("/api/v1/dead-letters?step=a&step=b", "/api/v1/items?status=queued&status=x"):
        response = api(acme_key).get(path)
        assert response.status_code == 422
        assert response.json()["field"] in ("step", "status")


def test_a_moment_before_year_one_in_utc_is_refused_not_a_500(acme_key):
    response = api(acme_key).get("/api/v1/items?since=0001-01-01T00:00:00%2B20:52")
    assert response.status_code == 422
    late_offset = api(acme_key).get("/api/v1/items?since=2026-03-27T19:24:59-20:52")
    assert late_offset.status_code == 200
