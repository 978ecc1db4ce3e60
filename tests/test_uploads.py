"""Item uploads: a CSV or JSONL file of items goes through the same ingest as the API, read in
the background with live progress; rows that cannot be items are rejected by line number."""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client as HttpClient
from django.urls import reverse

from controlplane.models import AuditEntry
from pipelines.models import Item, ItemUpload, LedgerEvent
from pipelines.services import configuration as config
from pipelines.services import uploads as upload_service
from pipelines.services.uploads import item_upload_run, item_upload_start
from pipelines.tasks import item_upload_task
from tests.conftest import login
from tests.factories import ItemFactory

SCHEMA = {
    "type": "object",
    "properties": {"text": {"type": "string", "minLength": 1}},
    "required": ["text"],
}


def run_upload(pipeline, filename: str, content: bytes | str, actor=None) -> ItemUpload:
    raw = content.encode() if isinstance(content, str) else content
    upload = item_upload_start(pipeline=pipeline, filename=filename, content=raw, actor=actor)
    item_upload_task(upload.pk)
    upload.refresh_from_db()
    return upload


def rejected(upload: ItemUpload) -> dict[int, str]:
    return {row["line"]: row["reason"] for row in upload.rejected_rows}


def jsonl(*records) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


# Reading files into items


def test_a_csv_row_becomes_an_item_with_its_external_id_priority_and_text_data(
    acme_pipeline, operator
):
    upload = run_upload(
        acme_pipeline,
        "tickets.csv",
        "external_id,text,customer,Priority\n"
        "T-1,I was charged twice,ACME-7,7\n"
        '  T-2  ,"The app crashes\non start",42,\n',
        actor=operator,
    )
    assert upload.status == ItemUpload.Status.DONE
    assert (upload.accepted, upload.deduplicated, upload.quarantined, upload.rejected) == (
        2,
        0,
        0,
        0,
    )
    first, second = Item.objects.filter(pipeline=acme_pipeline).order_by("id")
    assert (first.external_id, first.priority, first.status) == ("T-1", 7, Item.Status.QUEUED)
    assert first.data == {"text": "I was charged twice", "customer": "ACME-7"}
    # Every data column is text; a blank priority is the pipeline's default.
    assert second.data == {"text": "The app crashes\non start", "customer": "42"}
    assert (second.external_id, second.priority) == ("T-2", acme_pipeline.default_priority)
    assert upload.bytes_done == upload.size and upload.percent == 100
    assert bytes(upload.content) == b""
    assert upload.finished_at is not None


def test_a_jsonl_line_is_either_data_with_external_id_and_priority_or_the_data_itself(
    acme_pipeline,
):
    upload = run_upload(
        acme_pipeline,
        "items.jsonl",
        jsonl(
            {"data": {"text": "wrapped", "n": 1}, "external_id": "J-1", "priority": 2},
            {"text": "bare", "tags": ["a", "b"]},
            {"data": {"text": "id as a number"}, "external_id": 1234},
        ),
    )
    assert (upload.status, upload.accepted, upload.rejected) == ("done", 3, 0)
    items = Item.objects.filter(pipeline=acme_pipeline).order_by("id")
    assert [(i.data, i.external_id, i.priority) for i in items] == [
        ({"text": "wrapped", "n": 1}, "J-1", 2),
        ({"text": "bare", "tags": ["a", "b"]}, "", acme_pipeline.default_priority),
        ({"text": "id as a number"}, "1234", acme_pipeline.default_priority),
    ]


def test_a_utf8_byte_order_mark_is_tolerated_in_csv_and_jsonl(acme_pipeline):
    run_upload(acme_pipeline, "a.csv", "\ufefftext,external_id\nhéllo,B-1\n".encode())
    run_upload(acme_pipeline, "b.jsonl", '\ufeff{"text": "wörld"}\n'.encode())
    assert sorted(Item.objects.values_list("data", flat=True), key=str) == [
        {"text": "héllo"},
        {"text": "wörld"},
    ]
    assert Item.objects.get(data__text="héllo").external_id == "B-1"


def test_a_file_that_is_not_utf8_text_fails_with_advice_or_rejects_its_rows(acme_pipeline):
    utf16 = run_upload(acme_pipeline, "a.csv", "text\nhello\n".encode("utf-16"))
    assert utf16.status == ItemUpload.Status.FAILED
    assert "UTF-16; save it as UTF-8" in utf16.error
    latin1 = run_upload(acme_pipeline, "b.csv", "text\ncafé\nplain\n".encode("latin-1"))
    assert (latin1.status, latin1.accepted) == ("done", 1)
    assert rejected(latin1) == {2: "not valid UTF-8"}


def test_duplicates_by_external_id_or_content_are_counted_and_create_nothing(acme_pipeline):
    ItemFactory(pipeline=acme_pipeline, external_id="acme-1", data={"text": "old"})
    upload = run_upload(
        acme_pipeline,
        "d.csv",
        "external_id,text\nacme-1,new text\nX-1,first\nX-1,again\n,same\n,same\n",
    )
    assert (upload.accepted, upload.deduplicated) == (2, 3)
    assert Item.objects.filter(pipeline=acme_pipeline).count() == 3


def test_items_failing_the_input_schema_are_quarantined_with_their_ledger(acme_pipeline, operator):
    config.pipeline_update(pipeline=acme_pipeline, actor=operator, input_schema=SCHEMA)
    upload = run_upload(acme_pipeline, "q.jsonl", jsonl({"text": "fine"}, {"text": ""}, {"x": 1}))
    assert (upload.accepted, upload.quarantined, upload.rejected) == (1, 2, 0)
    quarantined = Item.objects.filter(status=Item.Status.QUARANTINED)
    assert quarantined.count() == 2
    assert all(item.error_class == "input" for item in quarantined)
    # The same ledger as an API call, naming the upload.
    assert set(LedgerEvent.objects.values_list("actor", flat=True)) == {f"upload:{upload.pk}"}
    assert LedgerEvent.objects.count() == 3


def test_csv_columns_the_schema_types_are_converted_and_a_bad_cell_is_quarantined(
    acme_pipeline, operator
):
    schema = {
        "type": "object",
        "properties": {"text": {"type": "string"}, "amount": {"type": "number"}},
        "required": ["text", "amount"],
    }
    config.pipeline_update(pipeline=acme_pipeline, actor=operator, input_schema=schema)
    upload = run_upload(acme_pipeline, "t.csv", "text,amount\na,12.5\nb,twelve\nc,\n")
    assert (upload.accepted, upload.quarantined, upload.rejected) == (1, 2, 0)
    assert Item.objects.get(data__text="a").data == {"text": "a", "amount": 12.5}
    assert Item.objects.get(data__text="b").status == Item.Status.QUARANTINED


def test_rows_that_cannot_be_items_are_rejected_by_line_and_the_rest_go_in(acme_pipeline):
    deep = "[" * 40 + "]" * 40
    upload = run_upload(
        acme_pipeline,
        "mixed.jsonl",
        jsonl(
            {"text": "one"},
            '{"text": "broken",',
            '["a", "list"]',
            {"data": {"text": "p"}, "priority": 12},
            {"data": {"text": "p"}, "priority": "high"},
            {"data": {"text": "long id"}, "external_id": "x" * 201},
            {"data": {"text": "id object"}, "external_id": {"a": 1}},
            '{"text": "nul \\u0000 here"}',
            '{"text": "lone \\ud800 surrogate"}',
            {},
            f'{{"text": {deep}}}',
            '{"text": 1e400}',
            "",
            {"text": "last"},
        ),
    )
    assert upload.status == ItemUpload.Status.DONE
    assert upload.accepted == 2
    assert rejected(upload) == {
        2: "not valid JSON: Expecting property name enclosed in double quotes at column 19",
        3: "not a JSON object but list",
        4: "priority must be a whole number from 0 to 9, got 12",
        5: 'priority must be a whole number from 0 to 9, got "high"',
        6: "external_id is 201 characters long; at most 200 are allowed",
        7: "external_id must be text, got dict",
        8: "contains a NUL character, which cannot be stored",
        9: "contains half of a surrogate pair (a lone \\ud800-\\udfff escape)",
        10: "no data: the object is empty",
        11: "nested more than 32 levels deep",
        12: "not valid JSON: 1e400 is too large a number",
    }
    assert upload.rejected == 11
    assert sorted(Item.objects.values_list("data__text", flat=True)) == ["last", "one"]


def test_csv_rows_that_cannot_be_items_are_rejected_by_physical_line(acme_pipeline):
    upload = run_upload(
        acme_pipeline,
        "mixed.csv",
        b'text,priority\n"two\nlines",1\nnul \x00,2\nshort\na,b,c\n,3\nok,x\n\n,,\nfine,9\n',
    )
    assert rejected(upload) == {
        4: "contains a NUL character, which cannot be stored",
        5: "1 values but the header has 2 columns",
        6: "3 values but the header has 2 columns",
        7: "no data: every data column is blank",
        8: 'priority must be a whole number from 0 to 9, got "x"',
    }
    assert upload.accepted == 2


def test_only_the_first_fifty_rejected_rows_are_kept_but_all_are_counted(acme_pipeline):
    upload = run_upload(acme_pipeline, "bad.jsonl", "[1]\n" * 60 + '{"text": "ok"}\n')
    assert (upload.accepted, upload.rejected, len(upload.rejected_rows)) == (1, 60, 50)
    assert upload.rejected_rows[0] == {"line": 1, "reason": "not a JSON object but list"}


# Refused at upload


def test_a_draft_pipeline_refuses_an_upload_with_a_clear_message(acme_pipeline, operator):
    draft = config.pipeline_update(pipeline=acme_pipeline, actor=operator, status="draft")
    with pytest.raises(ValidationError, match="draft and does not accept items"):
        item_upload_start(pipeline=draft, filename="a.csv", content=b"text\na\n", actor=operator)
    assert not ItemUpload.objects.exists()


@pytest.mark.parametrize(
    ("filename", "content", "message"),
    [
        ("items.xlsx", b"PK\x03\x04", "Upload a .csv or .jsonl file."),
        ("items.csv", b"", "The file is empty."),
        ("items.jsonl", b"x" * (50 * 1024 * 1024 + 1), "The file is larger than 50 MB."),
    ],
)
def test_a_file_of_another_kind_empty_or_too_large_is_refused_on_the_file_field(
    acme_pipeline, operator, filename, content, message
):
    with pytest.raises(ValidationError) as caught:
        item_upload_start(pipeline=acme_pipeline, filename=filename, content=content, actor=None)
    assert caught.value.message_dict == {"file": [message]}
    assert not ItemUpload.objects.exists()


# Hostile files end, with rejections or failed: never stuck running


def test_a_line_over_one_megabyte_is_rejected_and_the_lines_after_it_go_in(acme_pipeline):
    huge = '{"text": "' + "x" * (1024 * 1024 + 10) + '"}'
    upload = run_upload(acme_pipeline, "h.jsonl", jsonl({"text": "a"}, huge, {"text": "b"}))
    assert upload.status == ItemUpload.Status.DONE
    assert rejected(upload) == {2: "the line is longer than 1 MB"}
    assert upload.accepted == 2


def test_nesting_too_deep_for_the_parser_is_a_rejected_line(acme_pipeline):
    upload = run_upload(acme_pipeline, "deep.jsonl", "[" * 100_000 + "\n" + '{"text": "a"}\n')
    assert upload.status == ItemUpload.Status.DONE
    assert rejected(upload) == {1: "not valid JSON: nested too deeply"}
    assert upload.accepted == 1


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (",".join(f"c{n}" for n in range(1001)) + "\n" + "x," * 1000 + "x\n", "at most 1000"),
        (",".join(f"column{n}" for n in range(200_000)) + "\n", "longer than 1 MB"),
        ("external_id,priority\nT-1,3\n", "no data columns"),
        ("\n\n", "needs a header row"),
        ("text,text\na,b\n", 'the column "text" appears twice'),
    ],
    ids=["too-many-columns", "header-over-1mb", "no-data-columns", "blank", "twice"],
)
def test_a_csv_whose_header_cannot_be_used_fails_with_the_reason(acme_pipeline, content, error):
    upload = run_upload(acme_pipeline, "wide.csv", content)
    assert upload.status == ItemUpload.Status.FAILED
    assert error in upload.error
    assert upload.finished_at is not None and bytes(upload.content) == b""
    assert not Item.objects.exists()
    assert AuditEntry.objects.get(action="items.upload").after["failed"]


def test_binary_garbage_ends_the_upload_without_items(acme_pipeline):
    garbage = bytes(range(256)) * 64
    for name in ("g.csv", "g.jsonl"):
        upload = run_upload(acme_pipeline, name, garbage)
        assert upload.status in (ItemUpload.Status.DONE, ItemUpload.Status.FAILED)
        assert upload.finished_at is not None
    assert not Item.objects.exists()


def test_an_upload_out_of_time_stops_failed_saying_where_with_what_went_in(
    acme_pipeline, monkeypatch
):
    monkeypatch.setattr("pipelines.services.file_imports._time_budget", lambda: 0)
    content = "text\n" + "".join(f"t{n}\n" for n in range(1500))
    upload = run_upload(acme_pipeline, "slow.csv", content)
    assert upload.status == ItemUpload.Status.FAILED
    assert upload.error.startswith("Stopped after line 1001:")
    assert upload.accepted == Item.objects.count() == 1000


# Running


def test_running_an_upload_twice_submits_once(acme_pipeline):
    upload = item_upload_start(
        pipeline=acme_pipeline, filename="a.csv", content=b"text\na\nb\n", actor=None
    )
    assert item_upload_task(upload.pk).startswith("done: 2 queued")
    assert item_upload_task(upload.pk) == "already taken"
    assert item_upload_run(upload_id=upload.pk) is None
    assert Item.objects.count() == 2


def test_items_go_in_batches_of_at_most_1000_and_progress_is_saved_after_each(
    acme_pipeline, monkeypatch
):
    seen = []
    submit = upload_service.items_submit

    def watching(*, pipeline, entries, actor):
        row = ItemUpload.objects.get()
        seen.append((len(entries), row.status, row.accepted, row.bytes_done))
        return submit(pipeline=pipeline, entries=entries, actor=actor)

    monkeypatch.setattr(upload_service, "items_submit", watching)
    content = "text\n" + "".join(f"row {n}\n" for n in range(2500))
    upload = run_upload(acme_pipeline, "big.csv", content)
    assert [size for size, *_ in seen] == [1000, 1000, 500]
    # What a poll sees while it runs: running, with the items of the batches before.
    assert [(status, accepted) for _, status, accepted, _ in seen] == [
        ("running", 0),
        ("running", 1000),
        ("running", 2000),
    ]
    assert 0 < seen[1][3] < seen[2][3] < upload.size
    assert (upload.status, upload.accepted) == ("done", 2500)


def test_a_pipeline_turned_draft_before_the_run_fails_the_upload(acme_pipeline, operator):
    upload = item_upload_start(
        pipeline=acme_pipeline, filename="a.csv", content=b"text\na\n", actor=operator
    )
    config.pipeline_update(pipeline=acme_pipeline, actor=operator, status="draft")
    item_upload_task(upload.pk)
    upload.refresh_from_db()
    assert upload.status == ItemUpload.Status.FAILED
    assert "draft" in upload.error
    assert not Item.objects.exists()


def test_the_end_of_an_upload_is_in_the_audit_log(acme_pipeline, operator):
    run_upload(acme_pipeline, "a.csv", "text\na\na\n[1]\n", actor=operator)
    entry = AuditEntry.objects.get(action="items.upload")
    assert entry.after == {
        "file": "a.csv",
        "accepted": 2,
        "deduplicated": 1,
        "quarantined": 0,
        "rejected": 0,
    }


# Pages


def post_file(http, name: str, content: bytes, *, slug=("acme", "triage"), **extra):
    return http.post(
        reverse("pipeline-upload", args=slug),
        {"file": SimpleUploadedFile(name, content, content_type="text/csv")},
        **extra,
    )


def test_an_htmx_upload_answers_a_polling_progress_partial_until_the_summary(
    operator, acme_pipeline
):
    http = login(operator)
    response = post_file(http, "t.csv", b"text\nhello\nhello\n", headers={"HX-Request": "true"})
    assert response.status_code == 200
    upload = ItemUpload.objects.get()
    html = response.content.decode()
    assert 'hx-trigger="every 1s"' in html and "waiting for a worker" in html
    item_upload_task(upload.pk)
    status_url = reverse("pipeline-upload-status", args=["acme", "triage", upload.pk])
    html = http.get(status_url).content.decode()
    assert "every 1s" not in html
    assert 'data-status="done"' in html
    assert "2 rows read; 1 item queued, 1 duplicate, 0 quarantined" in html


def test_the_page_lists_the_last_five_uploads_and_the_pipeline_page_links_to_it(
    operator, acme_pipeline
):
    for n in range(6):
        ItemUpload.objects.create(pipeline=acme_pipeline, filename=f"f{n}.csv", content=b"", size=0)
    http = login(operator)
    page = http.get(reverse("pipeline-upload", args=["acme", "triage"])).content.decode()
    assert "f5.csv" in page and "f1.csv" in page and "f0.csv" not in page
    detail = http.get(reverse("pipeline-detail", args=["acme", "triage"])).content.decode()
    assert reverse("pipeline-upload", args=["acme", "triage"]) in detail


def test_an_upload_error_over_htmx_goes_back_into_the_form_with_422(operator, acme_pipeline):
    response = post_file(login(operator), "t.xlsx", b"x", headers={"HX-Request": "true"})
    assert response.status_code == 422
    assert response["HX-Retarget"] == "#upload-form"
    assert response["HX-Reswap"] == "outerHTML"
    assert "Upload a .csv or .jsonl file." in response.content.decode()
    assert not ItemUpload.objects.exists()


def test_without_htmx_an_error_is_the_page_with_422_and_success_redirects(operator, acme_pipeline):
    http = login(operator)
    missing = http.post(reverse("pipeline-upload", args=["acme", "triage"]), {})
    assert missing.status_code == 422
    assert "This field is required." in missing.content.decode()
    done = post_file(http, "t.jsonl", b'{"text": "a"}\n')
    assert done.status_code == 302
    assert done["Location"] == reverse("pipeline-upload", args=["acme", "triage"])


def test_an_upload_to_a_draft_pipeline_shows_why_in_the_form(operator, acme_pipeline):
    config.pipeline_update(pipeline=acme_pipeline, actor=operator, status="draft")
    response = post_file(login(operator), "t.csv", b"text\na\n", headers={"HX-Request": "true"})
    assert response.status_code == 422
    assert "draft and does not accept items yet" in response.content.decode()


def test_a_file_over_the_limit_is_refused_before_it_is_read(operator, acme_pipeline, monkeypatch):
    monkeypatch.setattr("pipelines.services.file_imports.MAX_UPLOAD_BYTES", 10)
    response = post_file(login(operator), "t.csv", b"text\n" + b"a\n" * 10)
    assert response.status_code == 422
    assert "The file is larger than" in response.content.decode()


@pytest.mark.parametrize(
    ("persona", "expected"),
    [
        ("anonymous", 302),
        ("operator", 200),
        ("client_a", 200),
        ("client_b", 404),
        ("reviewer", 403),
        ("no_role", 403),
    ],
)
def test_who_may_upload_to_acmes_pipeline(world, persona, expected):
    http = HttpClient() if persona == "anonymous" else login(world[persona])
    before = ItemUpload.objects.count()
    response = post_file(http, "t.csv", b"text\nhello\n", headers={"HX-Request": "true"})
    assert response.status_code == expected
    assert ItemUpload.objects.count() == before + (1 if expected == 200 else 0)


def test_an_operator_uploads_to_any_clients_pipeline(operator, globex_pipeline):
    response = post_file(login(operator), "t.csv", b"text\nhi\n", slug=("globex", "contracts"))
    assert response.status_code == 302
    assert ItemUpload.objects.get().pipeline == globex_pipeline


def test_another_pipelines_upload_is_not_found_through_this_one(
    operator, acme_pipeline, globex_pipeline
):
    theirs = ItemUpload.objects.create(
        pipeline=globex_pipeline, filename="g.csv", content=b"", size=0
    )
    url = reverse("pipeline-upload-status", args=["acme", "triage", theirs.pk])
    assert login(operator).get(url).status_code == 404


def test_a_client_user_follows_the_progress_of_its_own_upload(client_a, acme_pipeline):
    http = login(client_a)
    post_file(http, "t.csv", b"text\nmine\n", headers={"HX-Request": "true"})
    upload = ItemUpload.objects.get()
    assert upload.created_by == client_a
    item_upload_task(upload.pk)
    url = reverse("pipeline-upload-status", args=["acme", "triage", upload.pk])
    response = http.get(url)
    assert response.status_code == 200
    assert "1 item queued" in response.content.decode()


def test_an_upload_whose_worker_stopped_ends_failed_and_keeps_what_went_in(acme_pipeline):
    from datetime import timedelta

    from django.utils import timezone

    from pipelines.models import ExampleImport
    from pipelines.services.file_imports import file_imports_sweep

    upload = item_upload_start(
        pipeline=acme_pipeline, filename="a.csv", content=b"text\nx\n", actor=None
    )
    # A worker took it, wrote a batch, and was killed: the row says running, with old progress.
    long_ago = timezone.now() - timedelta(hours=1)
    ItemUpload.objects.filter(pk=upload.pk).update(
        status=ItemUpload.Status.RUNNING, progress_at=long_ago, accepted=1
    )
    fresh = item_upload_start(
        pipeline=acme_pipeline, filename="b.csv", content=b"text\ny\n", actor=None
    )
    ItemUpload.objects.filter(pk=fresh.pk).update(
        status=ItemUpload.Status.RUNNING, progress_at=timezone.now()
    )
    assert file_imports_sweep(models=(ExampleImport, ItemUpload)) == 1
    upload.refresh_from_db()
    fresh.refresh_from_db()
    assert upload.status == ItemUpload.Status.FAILED and upload.accepted == 1
    assert "stopped before the end" in upload.error and upload.finished_at is not None
    assert fresh.status == ItemUpload.Status.RUNNING  # still making progress: left alone
