"""Hostile input to the REST API: generated requests from the OpenAPI document (schemathesis),
generated bodies for the ingest validator (hypothesis), and the classic attacks by hand
(oversized, deep, wrong types, invalid UTF-8, huge batches, duplicate floods). Each gets the right
4xx with a JSON error, never a 5xx, and changes nothing."""

from __future__ import annotations

import json
import os
import threading

import pytest
import schemathesis
from django.core import signals
from django.core.handlers.wsgi import WSGIHandler
from django.db import close_old_connections, connection
from django.test import Client as HttpClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance

from controlplane.models import AuditEntry
from controlplane.services import api_key_create
from pipelines.models import IdempotencyKey, Item, LedgerEvent
from pipelines.rows_io import MAX_DEPTH
from pipelines.services import configuration as config

SCHEMA = {
    "type": "object",
    "properties": {"text": {"type": "string", "minLength": 1}},
    "required": ["text"],
}
SUBMIT = "/api/v1/pipelines/triage/items"
# Examples per generated test: small in CI; SLUICE_FUZZ_EXAMPLES=1000 for the long run
# (docs/resilience.md).
EXAMPLES = int(os.environ.get("SLUICE_FUZZ_EXAMPLES", "25"))
BOUNDED = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None
)


@pytest.fixture
def acme_key(acme, acme_pipeline, operator):
    acme.ingest_limit_per_minute = 1_000_000
    acme.save()
    config.pipeline_update(pipeline=acme_pipeline, actor=operator, input_schema=SCHEMA)
    return api_key_create(client=acme, name="fuzz", actor=operator)[1]


def api(key: str) -> HttpClient:
    return HttpClient(headers={"Authorization": f"Bearer {key}"}, raise_request_exception=False)


def footprint() -> tuple[int, ...]:
    """What a request could have written: items, ledger events, idempotency keys, audit."""
    return (
        Item.objects.count(),
        LedgerEvent.objects.count(),
        IdempotencyKey.objects.count(),
        AuditEntry.objects.count(),
    )


def assert_refused(response, status: int, field: str | None = "unset") -> dict:
    assert response.status_code == status, response.content[:500]
    body = response.json()
    assert body["code"] and body["message"]
    if field != "unset":
        assert body["field"] == field, body
    return body


# --- schemathesis: every operation of the OpenAPI document -------------------------------------

openapi = schemathesis.openapi.from_wsgi("/api/openapi.json", WSGIHandler())
# Unknown query parameters are ignored, as HTTP APIs commonly do; the document does not forbid
# them, so sending them proves nothing.
openapi.config.generation.update(allow_extra_parameters=False)


@pytest.fixture
def in_process_app(acme_key):
    """Let the WSGI handler share the test's database connection, as Django's test client does:
    the handler's request signals would otherwise close it mid-test."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield acme_key
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@openapi.parametrize()
@BOUNDED
def test_generated_requests_get_no_5xx_and_answers_that_match_the_document(in_process_app, case):
    # Every built-in check (no server error, status codes, content types and bodies as
    # documented, refused schema-violating input, ignored auth) except the one that expects any
    # schema-valid body to succeed: a random pipeline slug is rightly a 404, and text with half
    # a surrogate pair is valid JSON Schema but rightly refused.
    case.call_and_validate(
        headers={"Authorization": f"Bearer {in_process_app}"},
        excluded_checks=[positive_data_acceptance],
    )


# --- hypothesis: the ingest validator ------------------------------------------------------------

json_leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
entry = st.fixed_dictionaries(
    {},
    optional={
        "data": json_value | st.dictionaries(st.sampled_from(["text", "x"]), json_value),
        "external_id": st.none() | st.text(max_size=210) | st.integers(),
        "priority": st.none() | st.integers(-3, 12) | st.floats() | st.text(max_size=2),
        "colour": json_value,
    },
)
body = st.one_of(
    st.fixed_dictionaries({"items": st.lists(entry, max_size=5)}),
    st.fixed_dictionaries({"items": json_value}),
    json_value,
)


@BOUNDED
@given(payload=body)
def test_any_submitted_json_is_answered_202_or_a_clear_4xx_and_a_4xx_writes_nothing(
    acme_key, payload
):
    before = footprint()
    text = json.dumps(payload, allow_nan=True)
    response = api(acme_key).post(SUBMIT, data=text, content_type="application/json")
    assert response.status_code in (202, 400, 422), (response.status_code, response.content)
    if response.status_code != 202:
        assert_refused(response, response.status_code)
        assert footprint() == before
        return
    answers = response.json()["items"]
    assert len(answers) == len(payload["items"])
    assert {a["status"] for a in answers} <= {"queued", "quarantined", "deduplicated"}
    created = sum(a["status"] != "deduplicated" for a in answers)
    assert Item.objects.count() == before[0] + created
    assert LedgerEvent.objects.count() == before[1] + created
    for answer in answers:
        if answer["status"] == "deduplicated":
            assert Item.objects.filter(pk=answer["original_id"]).exists()


# --- by hand: each attack, its status, and nothing changed ---------------------------------------


def nested(depth: int) -> str:
    """`data` whose innermost value sits `depth` containers deep, counting `data` itself."""
    return "[" * (depth - 1) + "1" + "]" * (depth - 1)


@pytest.mark.parametrize(
    ("raw", "status", "field"),
    [
        # Not text at all: half of a surrogate pair, as a value and as a key.
        (r'{"items": [{"data": {"text": "a\ud800b"}}]}', 422, "items[0].data"),
        (r'{"items": [{"data": {"\udc00": "x"}}]}', 422, "items[0].data"),
        (r'{"items": [{"data": {}, "external_id": "\ud800"}]}', 422, "items[0].external_id"),
        # Invalid UTF-8 bytes inside a string.
        (b'{"items": [{"data": {"text": "\xc3\x28"}}]}', 400, None),
        # Deep JSON inside data: refused beyond the depth uploads take.
        (f'{{"items": [{{"data": {{"a": {nested(MAX_DEPTH + 1)}}}}}]}}', 422, "items[0].data"),
        (f'{{"items": [{{"data": {{"a": {nested(900)}}}}}]}}', 422, "items[0].data"),
        # Numbers no one can store: infinite, and more digits than Python will read.
        ('{"items": [{"data": {"text": "x", "n": 1e400}}]}', 422, "items[0].data"),
        ('{"items": [{"data": {"n": ' + "7" * 5000 + "}}]}", 400, None),
        # Wrong shapes at the top.
        ("null", 422, None),
        ("[]", 422, None),
        ('"items"', 422, None),
        ("", 422, None),
        ('{"items": {"data": {}}}', 422, "items"),
        ('{"items": [{"data": {"text": "x"}, "priority": "high"}]}', 422, "items[0].priority"),
        ('{"items": [{"data": {"text": "x"}, "external_id": 7}]}', 422, "items[0].external_id"),
        (
            '{"items": [{"data": {"text": "x"}, "external_id": "' + "e" * 201 + '"}]}',
            422,
            "items[0].external_id",
        ),
    ],
)
def test_hostile_bodies_get_the_right_4xx_and_change_nothing(acme_key, raw, status, field):
    before = footprint()
    response = api(acme_key).post(SUBMIT, data=raw, content_type="application/json")
    assert_refused(response, status, field)
    assert footprint() == before


def test_data_as_deep_as_uploads_take_is_accepted(acme_key):
    raw = f'{{"items": [{{"data": {{"text": "deep", "a": {nested(MAX_DEPTH)}}}}}]}}'
    response = api(acme_key).post(SUBMIT, data=raw, content_type="application/json")
    assert response.status_code == 202, response.content
    assert response.json()["items"][0]["status"] == "queued"


def test_an_oversized_body_is_413_before_it_is_parsed(acme_key, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024
    before = footprint()
    items = [{"data": {"text": "x" * 1000}} for _ in range(100)]
    response = api(acme_key).post(
        SUBMIT, data=json.dumps({"items": items}), content_type="application/json"
    )
    assert assert_refused(response, 413)["code"] == "too_large"
    assert footprint() == before


def test_a_huge_batch_is_refused_whole_and_the_largest_allowed_goes_in(acme_key):
    http = api(acme_key)
    before = footprint()
    too_many = {"items": [{"data": {"text": f"t{n}"}} for n in range(1001)]}
    response = http.post(SUBMIT, data=json.dumps(too_many), content_type="application/json")
    assert_refused(response, 422, "items")
    assert footprint() == before
    most = {"items": [{"data": {"text": f"t{n}"}} for n in range(1000)]}
    response = http.post(SUBMIT, data=json.dumps(most), content_type="application/json")
    assert response.status_code == 202
    assert Item.objects.count() == 1000


def test_a_flood_of_one_duplicate_creates_one_item(acme_key):
    http = api(acme_key)
    flood = {"items": [{"data": {"text": "same"}, "external_id": "dup"}] * 1000}
    for _ in range(3):
        response = http.post(SUBMIT, data=json.dumps(flood), content_type="application/json")
        assert response.status_code == 202
        answers = response.json()["items"]
        original = Item.objects.get().pk
        assert {a["original_id"] for a in answers if a["status"] == "deduplicated"} == {original}
    assert Item.objects.count() == 1
    assert LedgerEvent.objects.count() == 1


def test_the_ingest_rate_limit_refuses_a_flood_with_429_and_writes_nothing(acme_key, acme):
    acme.ingest_limit_per_minute = 50
    acme.save()
    http = api(acme_key)
    statuses = []
    for n in range(10):
        items = {"items": [{"data": {"text": f"burst {n}-{k}"}} for k in range(10)]}
        response = http.post(SUBMIT, data=json.dumps(items), content_type="application/json")
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert 1 <= int(response["Retry-After"]) <= 60
    assert statuses[:5] == [202] * 5 and set(statuses[5:]) == {429}
    assert Item.objects.count() == 50


@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicates_and_a_repeated_idempotency_key_create_one_item_each(
    acme, acme_pipeline, operator
):
    if connection.vendor == "sqlite" and connection.settings_dict["NAME"] == ":memory:":
        pytest.skip("needs a database file shared by threads")
    config.pipeline_update(pipeline=acme_pipeline, actor=operator, input_schema=SCHEMA)
    key = api_key_create(client=acme, name="flood", actor=operator)[1]
    answers: list[tuple[int, dict]] = []
    lock = threading.Lock()

    def send(n: int) -> None:
        try:
            response = api(key).post(
                SUBMIT,
                data=json.dumps({"items": [{"data": {"text": "race"}, "external_id": "r-1"}]}),
                content_type="application/json",
                headers={"Idempotency-Key": f"k-{n % 2}"},
            )
            with lock:
                answers.append((response.status_code, response.json()))
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert [status for status, _ in answers] == [202] * 8, answers
    assert Item.objects.count() == 1
    only = Item.objects.get().pk
    assert {body["items"][0]["id"] for _, body in answers} == {only}
    assert IdempotencyKey.objects.count() == 2
