"""Labeled examples: uploaded with progress, imported row by row with a report, searchable."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.urls import reverse

from controlplane.models import AuditEntry
from pipelines.models import Example, ExampleImport
from pipelines.tasks import example_import_task
from tests.conftest import login

GOOD_CSV = (
    "text,label\n"
    "I was charged twice,billing\n"
    "The app crashes on start,bug\n"
    '"Please change my\nemail address",account\n'
    "Where is my parcel,shipping\n"
    ",bug\n"
)


def upload(http, step, name: str, content: bytes, **extra):
    return http.post(
        reverse("example-list", args=[step.pk]),
        {"file": SimpleUploadedFile(name, content, content_type="text/csv")},
        **extra,
    )


def test_an_upload_is_imported_by_a_worker_with_a_report_of_rejected_rows(operator, acme_step):
    http = login(operator)
    response = upload(
        http, acme_step, "tickets.csv", GOOD_CSV.encode(), headers={"HX-Request": "true"}
    )
    assert response.status_code == 200
    job = ExampleImport.objects.get()
    assert job.status == ExampleImport.Status.PENDING
    assert 'hx-trigger="every 1s"' in response.content.decode()

    assert example_import_task(job.pk).startswith("done")
    job.refresh_from_db()
    assert (job.accepted, job.rejected) == (3, 2)
    reasons = {row["line"]: row["reason"] for row in job.rejected_rows}
    # Physical line numbers: the quoted field of the third row spans lines 4 and 5.
    assert "shipping" in reasons[6]  # not one of the step's labels
    assert 7 in reasons  # empty input
    assert job.content in (b"", memoryview(b"")) or bytes(job.content) == b""
    labels = sorted(
        Example.objects.filter(step=acme_step).values_list("expected__label", flat=True)
    )
    assert labels == ["account", "billing", "bug"]
    assert AuditEntry.objects.get(action="examples.import").after == {
        "file": "tickets.csv",
        "accepted": 3,
        "rejected": 2,
    }

    status = http.get(reverse("example-import", args=[acme_step.pk, job.pk]))
    html = status.content.decode()
    assert "every 1s" not in html  # finished: polling stops
    assert 'data-status="done"' in html


def test_running_the_import_twice_imports_once(operator, acme_step):
    upload(login(operator), acme_step, "t.csv", GOOD_CSV.encode())
    job = ExampleImport.objects.get()
    example_import_task(job.pk)
    assert example_import_task(job.pk) == "already taken"
    assert Example.objects.count() == 3


def test_a_file_of_the_wrong_kind_is_refused_at_upload(operator, acme_step):
    response = upload(login(operator), acme_step, "tickets.xlsx", b"PK\x03\x04")
    assert response.status_code == 422
    assert "Upload a .csv or .jsonl file." in response.content.decode()
    assert not ExampleImport.objects.exists()


def test_a_file_without_the_label_column_fails_with_the_columns_found(operator, acme_step):
    upload(login(operator), acme_step, "t.csv", b"text,topic\nhello,bug\n")
    job = ExampleImport.objects.get()
    example_import_task(job.pk)
    job.refresh_from_db()
    assert job.status == ExampleImport.Status.FAILED
    assert "label" in job.error and "topic" in job.error
    assert not Example.objects.exists()


def test_examples_are_searched_and_deleted(operator, acme_step):
    http = login(operator)
    upload(
        http,
        acme_step,
        "t.jsonl",
        b'{"text": "refund please", "label": "billing"}\n{"text": "crash", "label": "bug"}\n',
    )
    example_import_task(ExampleImport.objects.get().pk)
    page = http.get(reverse("example-list", args=[acme_step.pk]), {"q": "refund"})
    assert [e.data["text"] for e in page.context["examples"]] == ["refund please"]
    crash = Example.objects.get(data__text="crash")
    response = http.post(reverse("example-delete", args=[acme_step.pk]), {"ids": [crash.pk]})
    assert response.status_code == 302
    assert list(Example.objects.values_list("data__text", flat=True)) == ["refund please"]


def test_examples_of_another_step_cannot_be_deleted_through_this_one(
    operator, acme_step, acme_pipeline
):
    from pipelines.services.configuration import step_create

    other = step_create(
        pipeline=acme_pipeline,
        name="O",
        slug="o",
        kind="classify",
        labels=["x"],
        template="{{ text }}",
        actor=operator,
    )
    keep = Example.objects.create(step=other, data={"text": "a"}, expected={"label": "x"})
    login(operator).post(reverse("example-delete", args=[acme_step.pk]), {"ids": [keep.pk]})
    assert Example.objects.filter(pk=keep.pk).exists()


def test_import_examples_command_reads_a_file_and_reports(operator, acme_step, tmp_path):
    path = tmp_path / "tickets.csv"
    path.write_text(GOOD_CSV)
    out = StringIO()
    call_command("import_examples", "acme/triage", "topic", str(path), stdout=out)
    assert "3 accepted, 2 rejected" in out.getvalue()
    assert 'line 6: label "shipping" is not one of billing, bug, account' in out.getvalue()
    assert Example.objects.filter(step=acme_step).count() == 3


def test_import_examples_command_names_an_unknown_step(acme_step, tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(GOOD_CSV)
    with pytest.raises(CommandError, match='no step "nope" in acme/triage'):
        call_command("import_examples", "acme/triage", "nope", str(path))


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_imports_an_upload(operator, acme_step):
    from tests.processes import WorkerCluster, wait_until

    upload(login(operator), acme_step, "t.csv", GOOD_CSV.encode())
    job = ExampleImport.objects.get()
    with WorkerCluster() as cluster:
        done = wait_until(
            lambda: ExampleImport.objects.get(pk=job.pk).status == ExampleImport.Status.DONE,
            timeout=60,
        )
    assert done, cluster.output
    assert Example.objects.filter(step=acme_step).count() == 3


def test_a_file_that_breaks_the_reader_fails_the_import_with_true_counts(operator, acme_step):
    good = "".join(json.dumps({"text": f"t{n}", "label": "bug"}) + "\n" for n in range(1500))
    content = (good + "[" * 50_000 + "\n").encode()
    upload(login(operator), acme_step, "deep.jsonl", content)
    job = ExampleImport.objects.get()
    example_import_task(job.pk)
    job.refresh_from_db()
    assert job.status in (ExampleImport.Status.FAILED, ExampleImport.Status.DONE)
    assert job.accepted == Example.objects.filter(step=acme_step).count()
    assert job.finished_at is not None
    assert AuditEntry.objects.filter(action="examples.import").exists()


def test_an_upload_error_over_htmx_goes_back_into_the_form(operator, acme_step):
    response = upload(login(operator), acme_step, "t.xlsx", b"x", headers={"HX-Request": "true"})
    assert response.status_code == 422
    assert response["HX-Retarget"] == "#upload-form"
    assert response["HX-Reswap"] == "outerHTML"
