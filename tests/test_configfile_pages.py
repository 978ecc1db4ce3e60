"""Configuration as code through the browser pages: export, check, import."""

from __future__ import annotations

import yaml
from django.urls import reverse

from controlplane.models import AuditEntry
from pipelines.models import Pipeline, Step
from tests.conftest import login


def test_an_operator_downloads_a_pipeline_as_yaml(operator, acme_step):
    response = login(operator).get(reverse("pipeline-export", args=["acme", "triage"]))
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="acme-triage.yaml"'
    doc = yaml.safe_load(response.content)
    assert doc["pipeline"]["slug"] == "triage"
    assert [s["slug"] for s in doc["steps"]] == ["topic"]


def test_a_client_cannot_export_another_clients_pipeline(client_b, acme_step):
    response = login(client_b).get(reverse("pipeline-export", args=["acme", "triage"]))
    assert response.status_code == 403


def test_checking_an_edited_file_shows_the_plan_and_writes_nothing(operator, acme_step):
    http = login(operator)
    text = http.get(reverse("pipeline-export", args=["acme", "triage"])).content.decode()
    edited = text.replace("slug: triage", "slug: triage-copy", 1)
    before = AuditEntry.objects.count()
    response = http.post(reverse("pipeline-import"), {"text": edited, "check": "1"})
    assert response.status_code == 200
    assert "Importing will" in response.content.decode()
    assert not Pipeline.objects.filter(slug="triage-copy").exists()
    assert AuditEntry.objects.count() == before


def test_importing_creates_the_pipeline_with_its_steps(operator, acme_step):
    http = login(operator)
    text = http.get(reverse("pipeline-export", args=["acme", "triage"])).content.decode()
    edited = text.replace("slug: triage", "slug: triage-copy", 1)
    response = http.post(reverse("pipeline-import"), {"text": edited, "apply": "1"})
    assert response.status_code == 302
    copy = Pipeline.objects.get(slug="triage-copy")
    assert Step.objects.get(pipeline=copy).prompt_versions.count() == 1


def test_an_invalid_file_lists_every_problem_with_its_path_and_changes_nothing(operator):
    bad = "version: 1\npipeline:\n  client: acme\n  slug: x\n  name: X\n  colour: red\nsteps: []\n"
    response = login(operator).post(reverse("pipeline-import"), {"text": bad, "apply": "1"})
    assert response.status_code == 422
    html = response.content.decode()
    assert "pipeline.colour" in html and "nothing was written" in html
    assert not Pipeline.objects.filter(slug="x").exists()


def test_a_yaml_syntax_error_names_the_line(operator):
    response = login(operator).post(
        reverse("pipeline-import"), {"text": "version: 1\npipeline: [\n", "check": "1"}
    )
    assert response.status_code == 422
    assert "line 3" in response.content.decode() or "line 2" in response.content.decode()


def test_yaml_aliases_are_refused_before_they_expand(operator):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    response = login(operator).post(reverse("pipeline-import"), {"text": bomb, "check": "1"})
    assert response.status_code == 422
    assert "aliases" in response.content.decode()
    loop = "steps: &s [*s]\n"
    assert (
        login(operator).post(reverse("pipeline-import"), {"text": loop, "check": "1"}).status_code
        == 422
    )
