"""The public REST API through HTTP: shapes, errors as JSON with code and field, isolation."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client as HttpClient

from controlplane.models import ApiKey, AuditEntry
from controlplane.services import api_key_create, api_key_revoke
from pipelines.models import Item, LedgerEvent
from pipelines.services import configuration as config

SCHEMA = {
    "type": "object",
    "properties": {"text": {"type": "string", "minLength": 1}},
    "required": ["text"],
}


@pytest.fixture
def acme_key(acme, acme_pipeline, operator):
    config.pipeline_update(pipeline=acme_pipeline, actor=operator, input_schema=SCHEMA)
    return api_key_create(client=acme, name="helpdesk", actor=operator)[1]


@pytest.fixture
def globex_key(globex, globex_pipeline, operator):
    return api_key_create(client=globex, name="crm", actor=operator)[1]


def api(key: str | None = None) -> HttpClient:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return HttpClient(headers=headers)


def submit(key, slug, items, **headers):
    return api(key).post(
        f"/api/v1/pipelines/{slug}/items",
        data=json.dumps({"items": items}),
        content_type="application/json",
        headers=headers,
    )


def test_items_are_queued_quarantined_or_deduplicated_in_order(acme_key):
    response = submit(
        acme_key,
        "triage",
        [
            {"data": {"text": "refund please"}, "external_id": "t-1", "priority": 7},
            {"data": {"text": ""}},
            {"data": {"text": "refund please"}, "external_id": "t-1"},
            {"data": {"text": "something else"}},
            {"data": {"text": "something else"}},
        ],
    )
    assert response.status_code == 202
    answer = response.json()["items"]
    assert [a["status"] for a in answer] == [
        "queued",
        "quarantined",
        "deduplicated",
        "queued",
        "deduplicated",
    ]
    first, bad, dup, other, same_content = answer
    assert dup["original_id"] == first["id"] and dup["reason"] == "same external id"
    assert same_content["original_id"] == other["id"]
    assert "$.text" in bad["reason"]
    assert Item.objects.get(pk=first["id"]).priority == 7
    assert Item.objects.get(pk=other["id"]).priority == 5  # the pipeline's default
    # One row and one ledger event per new item; duplicates create nothing.
    assert Item.objects.count() == 3
    assert LedgerEvent.objects.count() == 3
    quarantined = Item.objects.get(pk=bad["id"])
    assert quarantined.error_class == "input"


def test_an_item_sent_again_later_is_a_duplicate_of_the_first(acme_key):
    first = submit(acme_key, "triage", [{"data": {"text": "a"}, "external_id": "x"}]).json()
    again = submit(acme_key, "triage", [{"data": {"text": "b"}, "external_id": "x"}]).json()
    assert again["items"][0] == {
        "id": first["items"][0]["id"],
        "external_id": "x",
        "status": "deduplicated",
        "original_id": first["items"][0]["id"],
        "reason": "same external id",
    }


def test_content_deduplication_can_be_turned_off(acme_key, acme_pipeline, operator):
    config.pipeline_update(pipeline=acme_pipeline, actor=operator, dedup_window_seconds=0)
    answer = submit(acme_key, "triage", [{"data": {"text": "a"}}, {"data": {"text": "a"}}])
    assert [i["status"] for i in answer.json()["items"]] == ["queued", "queued"]


def test_an_idempotency_key_makes_a_request_safe_to_repeat(acme_key):
    items = [{"data": {"text": "one"}}, {"data": {"text": "two"}}]
    first = submit(acme_key, "triage", items, **{"Idempotency-Key": "req-1"})
    second = submit(acme_key, "triage", items, **{"Idempotency-Key": "req-1"})
    assert second.status_code == 202
    assert second.json() == first.json()
    assert Item.objects.count() == 2
    reused = submit(
        acme_key, "triage", [{"data": {"text": "three"}}], **{"Idempotency-Key": "req-1"}
    )
    assert reused.status_code == 422
    assert reused.json()["code"] == "idempotency_key_reused"
    assert Item.objects.count() == 2


def test_a_paused_pipeline_holds_items_and_a_draft_refuses_them(acme_key, acme_pipeline, operator):
    config.pipeline_update(pipeline=acme_pipeline, actor=operator, status="paused")
    assert submit(acme_key, "triage", [{"data": {"text": "a"}}]).json()["items"][0]["status"] == (
        "queued"
    )
    config.pipeline_update(pipeline=acme_pipeline, actor=operator, status="draft")
    response = submit(acme_key, "triage", [{"data": {"text": "b"}}])
    assert response.status_code == 409
    assert response.json()["code"] == "pipeline_not_active"
    assert Item.objects.count() == 1


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ("{not json", 400, "malformed", None),
        (b"\xff\xfe{}", 400, "malformed", None),
        ('{"items": []}', 422, "invalid", "items"),
        ('{"items": [{"data": "text"}]}', 422, "invalid", "items[0].data"),
        ('{"items": [{"data": {}, "priority": 10}]}', 422, "invalid", "items[0].priority"),
        ('{"items": [{"data": {}, "colour": "red"}]}', 422, "invalid", "items[0].colour"),
        ('{"items": [{"data": {}}], "extra": 1}', 422, "invalid", "extra"),
        ("[" * 5000 + "]" * 5000, 400, "malformed", None),
        ('{"items": [{"data": {"a": "x\\u0000y"}}]}', 422, "invalid", "items[0].data"),
        ('{"items": [{"data": {"a": NaN}}]}', 422, "invalid", "items[0].data"),
        (
            '{"items": [{"data": {}, "external_id": "e\\u0000"}]}',
            422,
            "invalid",
            "items[0].external_id",
        ),
    ],
)
def test_bad_input_gets_a_clear_4xx_and_changes_nothing(acme_key, body, status, code, field):
    response = api(acme_key).post(
        "/api/v1/pipelines/triage/items", data=body, content_type="application/json"
    )
    assert response.status_code == status, response.content
    payload = response.json()
    assert payload["code"] == code
    assert payload["field"] == field
    assert payload["message"]
    assert not Item.objects.exists()


def test_more_than_1000_items_are_refused(acme_key):
    response = submit(acme_key, "triage", [{"data": {"text": "x"}}] * 1001)
    assert response.status_code == 422
    assert response.json()["field"] == "items"


def test_a_body_over_the_size_limit_is_413(acme_key, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    response = submit(acme_key, "triage", [{"data": {"text": "x" * 4000}}])
    assert response.status_code == 413
    assert response.json()["code"] == "too_large"


def test_a_client_over_its_ingest_rate_gets_429_with_retry_after(acme_key, acme):
    acme.ingest_limit_per_minute = 3
    acme.save()
    assert (
        submit(acme_key, "triage", [{"data": {"text": f"{n}"}} for n in range(3)]).status_code
        == 202
    )
    response = submit(acme_key, "triage", [{"data": {"text": "one more"}}])
    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= 60
    assert response.json()["code"] == "rate_limited"
    assert Item.objects.count() == 3


def test_no_key_a_wrong_key_and_a_revoked_key_are_401(acme_key):
    for key in (None, "sk_sluice_wrongwrongwrong", "not-even-a-sluice-key"):
        response = api(key).get("/api/v1/pipelines")
        assert response.status_code == 401
        assert response.json()["code"] == "unauthorized"
        assert response["WWW-Authenticate"] == "Bearer"
    api_key_revoke(api_key=ApiKey.objects.get(), actor=None)
    assert api(acme_key).get("/api/v1/pipelines").status_code == 401


def test_a_key_reaches_only_its_own_clients_pipelines_and_items(acme_key, globex_key):
    mine = submit(acme_key, "triage", [{"data": {"text": "mine"}}]).json()["items"][0]["id"]
    assert [p["slug"] for p in api(globex_key).get("/api/v1/pipelines").json()] == ["contracts"]
    assert submit(globex_key, "triage", [{"data": {"text": "x"}}]).status_code == 404
    assert api(globex_key).get(f"/api/v1/items/{mine}").status_code == 404
    assert api(globex_key).get("/api/v1/items").json()["items"] == []
    assert api(acme_key).get(f"/api/v1/items/{mine}").status_code == 200


def test_pipelines_list_shows_schema_and_steps(acme_key, acme_step):
    pipelines = api(acme_key).get("/api/v1/pipelines").json()
    assert pipelines[0]["slug"] == "triage"
    assert pipelines[0]["input_schema"] == SCHEMA
    assert pipelines[0]["steps"][0]["labels"] == ["billing", "bug", "account"]


def test_an_item_reads_back_with_its_status_and_error(acme_key):
    answer = submit(acme_key, "triage", [{"data": {"text": ""}, "external_id": "e-1"}]).json()
    item = api(acme_key).get(f"/api/v1/items/{answer['items'][0]['id']}").json()
    assert item["status"] == "quarantined"
    assert item["external_id"] == "e-1"
    assert item["error"]["error_class"] == "input"
    assert item["pipeline"] == "triage"


def test_items_page_by_cursor_and_filter(acme_key):
    submit(acme_key, "triage", [{"data": {"text": f"t{n}"}} for n in range(5)])
    submit(acme_key, "triage", [{"data": {"text": ""}}])
    client = api(acme_key)
    first = client.get("/api/v1/items", {"limit": 2}).json()
    second = client.get("/api/v1/items", {"limit": 2, "cursor": first["next_cursor"]}).json()
    ids = [i["id"] for i in first["items"] + second["items"]]
    assert ids == sorted(ids) and len(set(ids)) == 4
    quarantined = client.get("/api/v1/items", {"status": "quarantined"}).json()["items"]
    assert len(quarantined) == 1
    assert client.get("/api/v1/items", {"status": "bogus"}).status_code == 422
    assert client.get("/api/v1/items", {"cursor": "%%%"}).json()["field"] == "cursor"
    assert client.get("/api/v1/items", {"since": "yesterday"}).status_code == 422


def test_the_openapi_document_and_docs_are_served_without_a_cdn(db):
    document = HttpClient().get("/api/openapi.json")
    assert document.status_code == 200
    paths = document.json()["paths"]
    assert "/api/v1/pipelines/{slug}/items" in paths
    docs = HttpClient().get("/api/docs").content.decode()
    assert "/static/ninja/swagger-ui-bundle.js" in docs
    assert "cdn" not in docs.lower()


def test_create_api_key_command_prints_the_key_once_and_stores_a_hash(acme):
    out, err = StringIO(), StringIO()
    call_command("create_api_key", "--client", "acme", "--name", "etl", stdout=out, stderr=err)
    key = out.getvalue().strip()
    stored = ApiKey.objects.get(name="etl")
    assert key.startswith("sk_sluice_") and key not in (stored.key_hash, stored.prefix)
    assert "will not be shown again" in err.getvalue()
    assert AuditEntry.objects.filter(action="api_key.create").exists()


def test_an_operator_creates_and_revokes_a_key_in_the_browser(operator, acme):
    from tests.conftest import login

    http = login(operator)
    response = http.post("/clients/acme/keys/", {"name": "zapier"}, follow=True)
    key = response.context["new_key"]
    assert key and key in response.content.decode()
    assert "no-store" in response["Cache-Control"]
    # Shown once: a reload has only the prefix and creates nothing.
    listing = http.get("/clients/acme/keys/").content.decode()
    assert key not in listing and key[:16] in listing
    assert ApiKey.objects.filter(name="zapier").count() == 1
    api_key = ApiKey.objects.get(name="zapier")
    http.post("/clients/acme/keys/", {"revoke": api_key.pk})
    api_key.refresh_from_db()
    assert api_key.revoked_at is not None


def test_revoking_another_clients_key_through_this_client_is_404(operator, acme, globex):
    from tests.conftest import login

    other, _ = api_key_create(client=globex, name="crm", actor=None)
    response = login(operator).post("/clients/acme/keys/", {"revoke": other.pk})
    assert response.status_code == 404
    other.refresh_from_db()
    assert other.revoked_at is None
