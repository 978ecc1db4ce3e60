"""Configuration as code: a pipeline exported to YAML and imported back, checked as a whole,
written all or nothing through the audited services."""

from __future__ import annotations

import copy
from decimal import Decimal
from io import StringIO

import pytest
import yaml
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from controlplane.models import AuditEntry
from pipelines.configfile import (
    config_load,
    config_problems,
    pipeline_export,
    pipeline_export_yaml,
    pipeline_import,
    pipeline_import_yaml,
)
from pipelines.models import AiModel, Pipeline, PromptLabel, PromptVersion, RouteEntry, Step
from pipelines.services import configuration as config

TICKET_SCHEMA = {
    "type": "object",
    "properties": {"text": {"type": "string"}, "channel": {"type": "string"}},
    "required": ["text"],
}
SUMMARY_SCHEMA = {
    "type": "object",
    "properties": {"summary": {"type": "string"}},
    "required": ["summary"],
}


@pytest.fixture
def triage(acme_pipeline, acme_step, provider, operator):
    """Acme's triage pipeline with two steps, a two-model route, a candidate and a budget."""
    config.pipeline_update(
        pipeline=acme_pipeline,
        actor=operator,
        input_schema=TICKET_SCHEMA,
        daily_budget=Decimal("25"),
        description="Sorts tickets.\nBy topic.",
    )
    gpu = config.provider_create(name="gpu", kind="local", actor=None)
    # A model name with a slash, as OpenAI-compatible servers name them.
    llama = config.aimodel_create(provider=gpu, name="meta/llama-3", actor=None)
    local = AiModel.objects.get(provider=provider, name="tfidf-logreg")
    config.route_set(
        step=acme_step,
        entries=[{"model": llama, "min_input_chars": 500}, {"model": local}],
        actor=operator,
    )
    second = config.prompt_version_create(
        step=acme_step,
        template="Classify this ticket.\n\nTicket: {{ text }}\n",
        parameters={"temperature": 0.2},
        change_note="Longer prompt",
        actor=operator,
    )
    config.prompt_label_move(step=acme_step, label="candidate", version=second, actor=operator)
    summary = config.step_create(
        pipeline=acme_pipeline,
        name="Summary",
        slug="summary",
        kind="generate",
        output_schema=SUMMARY_SCHEMA,
        rules=[{"kind": "required", "field": "summary"}],
        confidence_threshold=Decimal("0.5"),
        template="Summarise: {{ text }}",
        actor=operator,
    )
    config.route_set(step=summary, entries=[{"model": local}], actor=operator)
    return acme_pipeline


def counts() -> dict[str, int]:
    return {
        model.__name__: model.objects.count()
        for model in (Pipeline, Step, PromptVersion, PromptLabel, RouteEntry, AuditEntry)
    }


def problems_of(exc: pytest.ExceptionInfo[ValidationError]) -> list[str]:
    return exc.value.message_dict["config"]


def test_an_export_holds_settings_steps_routes_every_prompt_version_and_labels(triage):
    doc = pipeline_export(pipeline=triage)

    assert doc["version"] == 1
    assert doc["pipeline"] == {
        "client": "acme",
        "slug": "triage",
        "name": "Ticket triage",
        "description": "Sorts tickets.\nBy topic.",
        "status": "active",
        "input_schema": TICKET_SCHEMA,
        "default_priority": 5,
        "latency_target_seconds": 300,
        "daily_budget": "25.00",
        "concurrency_limit": 32,
        "review_sla_seconds": 3600,
        "dedup_window_seconds": 86400,
    }
    topic, summary = doc["steps"]
    assert list(topic) == [
        "slug",
        "name",
        "kind",
        "labels",
        "confidence_threshold",
        "rules",
        "on_gate_failure",
        "audit_rate",
        "result_cache_seconds",
        "route",
        "prompts",
        "prompt_labels",
    ]
    assert topic["labels"] == ["billing", "bug", "account"]
    assert topic["confidence_threshold"] == "0.800"
    assert topic["route"] == [
        {"model": "gpu/meta/llama-3", "min_input_chars": 500, "min_priority": None},
        {"model": "Local/tfidf-logreg", "min_input_chars": None, "min_priority": None},
    ]
    assert [p["number"] for p in topic["prompts"]] == [1, 2]
    assert topic["prompts"][1]["parameters"] == {"temperature": 0.2}
    assert topic["prompt_labels"] == {"production": 1, "candidate": 2}
    assert summary["output_schema"] == SUMMARY_SCHEMA
    assert summary["confidence_threshold"] == "0.500"
    assert summary["prompt_labels"] == {"production": 1, "candidate": None}


def test_the_yaml_export_shows_multi_line_templates_as_literal_blocks_and_parses_back(triage):
    text = pipeline_export_yaml(pipeline=triage)

    assert "template: |" in text
    assert "    Ticket: {{ text }}\n" in text
    assert config_load(text=text) == pipeline_export(pipeline=triage)


def test_an_export_imported_for_another_client_builds_the_same_pipeline(triage, globex, operator):
    doc = yaml.safe_load(pipeline_export_yaml(pipeline=triage))
    doc["pipeline"]["client"] = "globex"

    copied = pipeline_import(doc=doc, actor=operator)

    assert copied.client == globex
    assert pipeline_export(pipeline=copied) == doc
    entry = AuditEntry.objects.get(action="pipeline.import")
    assert entry.actor == operator
    assert entry.after == {
        "pipelines_created": 1,
        "settings_changed": 0,
        "steps_created": 2,
        "steps_updated": 0,
        "prompt_versions_created": 3,
        "labels_moved": 3,
        "routes_set": 2,
    }


def test_importing_a_hand_written_file_creates_the_pipeline_with_everything_in_it(acme, operator):
    provider = config.provider_create(name="office", kind="local", actor=None)
    config.aimodel_create(provider=provider, name="small", actor=None)
    text = """\
version: 1
pipeline:
  client: acme
  slug: refunds
  name: Refunds
  input_schema:
    type: object
    properties:
      text: {type: string}
steps:
  - slug: decision
    name: Decision
    kind: classify
    labels: [refund, no-refund]
    confidence_threshold: 0.9
    route:
      - model: office/small
    prompts:
      - number: 1
        template: "Refund? {{ text }}"
      - number: 2
        template: |
          Should this be refunded?
          {{ text }}
        parameters: {temperature: 0}
        change_note: Two lines
    prompt_labels:
      production: 2
"""
    pipeline = pipeline_import_yaml(text=text, actor=operator)

    assert pipeline.client == acme and pipeline.status == Pipeline.Status.DRAFT
    step = pipeline.steps.get()
    assert step.labels == ["refund", "no-refund"]
    assert step.confidence_threshold == Decimal("0.900")
    versions = {v.number: v for v in step.prompt_versions.all()}
    assert versions[2].template == "Should this be refunded?\n{{ text }}\n"
    assert versions[2].parameters == {"temperature": 0}
    assert versions[2].author == operator
    assert step.prompt_labels.get(name="production").version == versions[2]
    assert not step.prompt_labels.filter(name="candidate").exists()
    assert [str(entry.model) for entry in step.route.all()] == ["office/small"]
    actions = set(AuditEntry.objects.values_list("action", flat=True))
    assert {"pipeline.create", "step.create", "prompt.create", "prompt.publish", "route.set"} <= (
        actions
    )
    assert "pipeline.import" in actions


def test_an_invalid_file_writes_nothing_and_lists_every_problem_with_its_path(triage, operator):
    doc = pipeline_export(pipeline=triage)
    doc["pipeline"]["input_schema"]["properties"]["channel"]["type"] = "strng"
    doc["steps"][0]["rules"] = [{"kind": "between", "field": "amount"}]
    doc["steps"][0]["route"][0]["model"] = "openai/gpt-x"
    doc["steps"][1]["prompt_labels"]["production"] = 7
    doc["steps"][1]["prompts"][0]["template"] = "Summarise {{ body }}"
    doc["steps"].append(copy.deepcopy(doc["steps"][1]))
    del doc["pipeline"]["name"]
    before = counts()

    with pytest.raises(ValidationError) as exc:
        pipeline_import(doc=doc, actor=operator)

    problems = problems_of(exc)
    assert "pipeline.name: required" in problems
    assert any(p.startswith("pipeline.input_schema.properties.channel.type: ") for p in problems)
    assert any(p.startswith('steps[0].rules[0]: unknown kind "between"') for p in problems)
    assert 'steps[0].route[0].model: no model "openai/gpt-x" in the catalogue' in problems
    assert "steps[1].prompt_labels.production: no prompt number 7" in problems
    assert 'steps[2].slug: "summary" is also the slug of steps[1]' in problems
    assert counts() == before
    assert config_problems(doc) == problems


def test_a_template_variable_missing_from_the_input_schema_is_a_problem(triage, operator):
    doc = pipeline_export(pipeline=triage)
    doc["steps"][0]["prompts"].append(
        {"number": 3, "template": "{{ body }}", "parameters": {}, "change_note": ""}
    )
    doc["steps"][0]["prompt_labels"]["candidate"] = 3

    with pytest.raises(ValidationError) as exc:
        pipeline_import(doc=doc, actor=operator)

    assert problems_of(exc) == [
        'steps[0].prompts[2].template: variable "body" is not in the input schema '
        "(it has: channel, text)"
    ]


def test_unknown_keys_wrong_types_and_versions_are_named_at_every_level(triage):
    doc = pipeline_export(pipeline=triage)
    doc["version"] = 2
    doc["extra"] = True
    doc["pipeline"]["colour"] = "red"
    doc["pipeline"]["default_priority"] = "high"
    doc["steps"][0]["colour"] = "blue"
    doc["steps"][0]["route"][1]["weight"] = 3
    doc["steps"][0]["prompts"][0]["author"] = "olivia"
    doc["steps"][0]["prompt_labels"]["staging"] = 1
    doc["steps"][1]["prompts"][0]["number"] = 4

    problems = config_problems(doc)

    assert set(problems) >= {
        "version: must be 1, got 2",
        "extra: unknown key",
        "pipeline.colour: unknown key",
        'pipeline.default_priority: must be a whole number, got "high"',
        "steps[0].colour: unknown key",
        "steps[0].route[1].weight: unknown key",
        "steps[0].prompts[0].author: unknown key",
        "steps[0].prompt_labels.staging: unknown key",
        "steps[1].prompts[0].number: expected 1; versions are numbered 1, 2, 3, … in order",
    }


def test_a_yaml_syntax_error_is_reported_with_its_line_and_column(triage, operator):
    text = pipeline_export_yaml(pipeline=triage).replace("  name: Ticket triage", "  name: [oops")
    line = text.splitlines().index("  name: [oops") + 1
    before = counts()

    with pytest.raises(ValidationError) as exc:
        pipeline_import_yaml(text=text, actor=operator)

    [problem] = problems_of(exc)
    assert problem.startswith(f"line {line + 1}, column ")
    assert counts() == before


def test_an_existing_version_with_a_different_template_is_refused(triage, operator):
    doc = pipeline_export(pipeline=triage)
    doc["steps"][0]["prompts"][1]["template"] = "Something else: {{ text }}"
    before = counts()

    with pytest.raises(ValidationError) as exc:
        pipeline_import(doc=doc, actor=operator)

    assert problems_of(exc) == [
        "steps[0].prompts[1]: version 2 exists with a different template; add a new number instead"
    ]
    assert counts() == before


def test_a_step_missing_from_the_file_is_reported_not_removed(triage, operator):
    doc = pipeline_export(pipeline=triage)
    del doc["steps"][1]

    with pytest.raises(ValidationError) as exc:
        pipeline_import(doc=doc, actor=operator)

    assert problems_of(exc) == [
        'steps: step "summary" exists but is not in the file; removing steps is not supported '
        "by import"
    ]
    assert triage.steps.filter(slug="summary").exists()


def test_importing_an_unchanged_export_writes_nothing_not_even_an_audit_entry(triage, operator):
    text = pipeline_export_yaml(pipeline=triage)
    doc = config_load(text=text)
    # Equal values written differently by hand are not changes either.
    doc["steps"][0]["confidence_threshold"] = 0.8
    doc["pipeline"]["daily_budget"] = "25"
    before = counts()

    pipeline_import(doc=doc, actor=operator)
    pipeline_import_yaml(text=text, actor=operator)

    assert counts() == before
    assert pipeline_export_yaml(pipeline=triage) == text


def test_an_edited_export_changes_only_what_was_edited_through_the_services(triage, operator):
    doc = pipeline_export(pipeline=triage)
    doc["pipeline"]["name"] = "Ticket triage v2"
    topic = doc["steps"][0]
    topic["prompts"].append(
        {"number": 3, "template": "Topic of {{ text }}?", "parameters": {}, "change_note": "Short"}
    )
    topic["prompt_labels"] = {"production": 3, "candidate": None}
    topic["route"] = topic["route"][1:]
    doc["steps"].append(
        {
            "slug": "urgency",
            "name": "Urgency",
            "kind": "classify",
            "labels": ["low", "high"],
            "confidence_threshold": "0.700",
            "rules": [],
            "on_gate_failure": "reject",
            "audit_rate": "0.050",
            "result_cache_seconds": 600,
            "route": [
                {"model": "Local/tfidf-logreg", "min_input_chars": None, "min_priority": None}
            ],
            "prompts": [
                {
                    "number": 1,
                    "template": "{{ text }}",
                    "parameters": {},
                    "change_note": "First version",
                }
            ],
            "prompt_labels": {"production": 1, "candidate": None},
        }
    )
    since = AuditEntry.objects.order_by("-id").first().pk

    pipeline_import(doc=doc, actor=operator)

    assert pipeline_export(pipeline=triage) == doc
    actions = list(
        AuditEntry.objects.filter(pk__gt=since).order_by("id").values_list("action", flat=True)
    )
    assert actions == [
        "pipeline.update",
        "prompt.create",
        "prompt.publish",
        "prompt.unlabel",
        "route.set",
        "step.create",
        "prompt.create",
        "prompt.publish",
        "route.set",
        "pipeline.import",
    ]
    assert AuditEntry.objects.get(action="pipeline.import").after == {
        "pipelines_created": 0,
        "settings_changed": 1,
        "steps_created": 1,
        "steps_updated": 0,
        "prompt_versions_created": 2,
        "labels_moved": 3,
        "routes_set": 2,
    }


def test_a_new_step_placed_before_existing_ones_is_refused(triage, operator):
    doc = pipeline_export(pipeline=triage)
    new = copy.deepcopy(doc["steps"][1])
    new["slug"] = "brief"
    doc["steps"].insert(1, new)

    with pytest.raises(ValidationError) as exc:
        pipeline_import(doc=doc, actor=operator)

    assert problems_of(exc) == [
        'steps[1]: new step "brief" comes before existing step "summary"; new steps are added '
        "after the existing ones"
    ]


def test_the_export_command_writes_yaml_that_parses_back(triage, tmp_path):
    out = StringIO()
    call_command("export_pipeline", "acme/triage", stdout=out)
    assert config_load(text=out.getvalue()) == pipeline_export(pipeline=triage)

    path = tmp_path / "triage.yaml"
    call_command("export_pipeline", "acme/triage", "--output", str(path), stderr=StringIO())
    assert path.read_text(encoding="utf-8") == out.getvalue()


def test_the_export_command_names_an_unknown_pipeline(acme):
    with pytest.raises(CommandError, match='no pipeline "acme/nope"'):
        call_command("export_pipeline", "acme/nope")


def test_the_import_command_imports_and_records_the_actor(triage, globex, operator, tmp_path):
    path = tmp_path / "triage.yaml"
    path.write_text(
        pipeline_export_yaml(pipeline=triage).replace("client: acme", "client: globex"),
        encoding="utf-8",
    )
    out = StringIO()

    call_command("import_pipeline", str(path), "--actor", "olivia", stdout=out)

    assert "Imported: create globex/triage: 2 steps created" in out.getvalue()
    assert Pipeline.objects.filter(client=globex, slug="triage").exists()
    assert AuditEntry.objects.get(action="pipeline.import").actor == operator


def test_a_dry_run_says_what_would_change_and_writes_nothing(triage, globex, tmp_path):
    path = tmp_path / "triage.yaml"
    path.write_text(
        pipeline_export_yaml(pipeline=triage).replace("client: acme", "client: globex"),
        encoding="utf-8",
    )
    before = counts()
    out = StringIO()

    call_command("import_pipeline", str(path), "--dry-run", stdout=out)

    assert out.getvalue().startswith(
        "valid: would create globex/triage: 2 steps created, 3 prompt versions created"
    )
    assert counts() == before


def test_a_dry_run_of_an_unchanged_file_says_nothing_would_change(triage, tmp_path):
    path = tmp_path / "triage.yaml"
    call_command("export_pipeline", "acme/triage", "--output", str(path), stderr=StringIO())
    out = StringIO()

    call_command("import_pipeline", str(path), "--dry-run", stdout=out)

    assert out.getvalue().startswith("valid: acme/triage is up to date")


def test_the_import_command_fails_with_every_problem_one_per_line(triage, tmp_path):
    doc = pipeline_export(pipeline=triage)
    doc["steps"][0]["colour"] = "blue"
    doc["steps"][1]["on_gate_failure"] = "shrug"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    before = counts()

    for extra in ([], ["--dry-run"]):
        with pytest.raises(CommandError) as exc:
            call_command("import_pipeline", str(path), *extra)
        lines = str(exc.value).splitlines()
        assert lines[0].endswith("2 problems, nothing was written:")
        assert lines[1] == "steps[0].colour: unknown key"
        assert lines[2].startswith("steps[1].on_gate_failure: ")
    assert counts() == before


def test_a_retired_model_blocks_only_a_route_that_would_be_written(triage, operator):
    llama = AiModel.objects.get(name="meta/llama-3")
    config.aimodel_update(model=llama, actor=None, is_active=False)
    doc = pipeline_export(pipeline=triage)
    before = counts()

    pipeline_import(doc=doc, actor=operator)
    assert counts() == before

    doc["steps"][1]["route"].insert(0, {"model": "gpu/meta/llama-3", "min_priority": 8})
    with pytest.raises(ValidationError) as exc:
        pipeline_import(doc=doc, actor=operator)
    assert problems_of(exc) == ['steps[1].route[0].model: model "gpu/meta/llama-3" is not active']


def test_a_new_steps_first_version_cannot_carry_parameters(triage, globex, operator):
    doc = pipeline_export(pipeline=triage)
    doc["pipeline"]["client"] = "globex"
    doc["steps"][1]["prompts"][0]["parameters"] = {"temperature": 0}

    with pytest.raises(ValidationError) as exc:
        pipeline_import(doc=doc, actor=operator)

    assert problems_of(exc) == [
        "steps[1].prompts[0].parameters: a new step's first version is written without "
        "parameters; give them in version 2"
    ]
    assert not Pipeline.objects.filter(client=globex).exists()


def test_a_document_that_is_not_a_mapping_is_one_problem(db):
    assert config_problems(["version", 1]) == [
        'the document must be a mapping with version, pipeline and steps, got ["version", 1]'
    ]
