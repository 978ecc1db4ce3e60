"""Configuring pipelines in the browser: every change validated, audited, never half-saved."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from controlplane.models import AuditEntry
from pipelines.models import Pipeline, PromptLabel, PromptVersion, RouteEntry, Step
from pipelines.services import configuration as config
from tests.conftest import login

TICKET_SCHEMA = {
    "type": "object",
    "properties": {"text": {"type": "string"}, "channel": {"type": "string"}},
    "required": ["text"],
}


def test_an_operator_creates_a_pipeline_as_a_draft(operator, acme):
    response = login(operator).post(
        reverse("pipeline-create"),
        {
            "client": acme.pk,
            "name": "Refunds",
            "slug": "refunds",
            "description": "",
            "input_schema": '{"type": "object", "properties": {"text": {"type": "string"}}}',
            "default_priority": 5,
            "latency_target_seconds": 120,
            "daily_budget": "25.00",
            "concurrency_limit": 8,
            "review_sla_seconds": 1800,
            "dedup_window_seconds": 3600,
        },
    )
    assert response.status_code == 302
    pipeline = Pipeline.objects.get(client=acme, slug="refunds")
    assert pipeline.status == Pipeline.Status.DRAFT
    assert pipeline.input_schema["properties"]["text"] == {"type": "string"}
    entry = AuditEntry.objects.get(action="pipeline.create")
    assert entry.after["daily_budget"] == "25.00"
    assert entry.actor == operator


def test_an_invalid_input_schema_is_refused_with_its_path(operator, acme):
    response = login(operator).post(
        reverse("pipeline-create"),
        {
            "client": acme.pk,
            "name": "Bad",
            "slug": "bad",
            "input_schema": '{"type": "object", "properties": {"n": {"type": "nummber"}}}',
            "default_priority": 5,
            "latency_target_seconds": 60,
            "concurrency_limit": 1,
            "review_sla_seconds": 3600,
            "dedup_window_seconds": 0,
        },
    )
    assert response.status_code == 422
    assert "$.properties.n.type" in response.content.decode()
    assert not Pipeline.objects.filter(slug="bad").exists()


def test_the_same_slug_is_allowed_for_two_clients_but_not_twice_for_one(operator, acme, globex):
    config.pipeline_create(client=acme, name="Inv", slug="invoices", actor=operator)
    config.pipeline_create(client=globex, name="Inv", slug="invoices", actor=operator)
    with pytest.raises(ValidationError):
        config.pipeline_create(client=acme, name="Inv 2", slug="invoices", actor=operator)


def test_pausing_a_pipeline_is_one_click_and_audited(operator, acme_pipeline):
    url = reverse("pipeline-settings", args=["acme", "triage"])
    response = login(operator).post(url, {"status": "paused"})
    assert response.status_code == 302
    acme_pipeline.refresh_from_db()
    assert acme_pipeline.status == Pipeline.Status.PAUSED
    entry = AuditEntry.objects.get(action="pipeline.pause")
    assert entry.before == {"status": "active"} and entry.after == {"status": "paused"}


def test_settings_changes_record_only_the_fields_that_changed(operator, acme_pipeline):
    config.pipeline_update(pipeline=acme_pipeline, actor=operator, latency_target_seconds=90)
    entry = AuditEntry.objects.get(action="pipeline.update")
    assert entry.before == {"latency_target_seconds": 300}
    assert entry.after == {"latency_target_seconds": 90}
    # No change, no entry.
    config.pipeline_update(pipeline=acme_pipeline, actor=operator, latency_target_seconds=90)
    assert AuditEntry.objects.filter(action="pipeline.update").count() == 1


def test_a_classify_step_starts_with_version_one_in_production(acme_step):
    assert acme_step.output_schema["properties"]["label"]["enum"] == ["billing", "bug", "account"]
    label = PromptLabel.objects.get(step=acme_step, name="production")
    assert label.version.number == 1
    assert list(
        AuditEntry.objects.filter(object_type__in=["step", "promptversion"])
        .order_by("id")
        .values_list("action", flat=True)
    ) == ["step.create", "prompt.create", "prompt.publish"]


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"kind": "classify", "labels": []}, "labels", "at least one label"),
        ({"kind": "classify", "labels": ["a", "a"]}, "labels", "different from each other"),
        (
            {"kind": "classify", "labels": ["a"], "rules": [{"kind": "between"}]},
            "rules",
            'unknown kind "between"',
        ),
        ({"kind": "generate", "output_schema": {"type": "array"}}, "output_schema", "object"),
        (
            {"kind": "classify", "labels": ["a"], "confidence_threshold": "1.5"},
            "confidence_threshold",
            "less than or equal to 1",
        ),
    ],
)
def test_a_step_with_bad_settings_is_refused_and_nothing_is_written(
    operator, acme_pipeline, fields, field, message
):
    with pytest.raises(ValidationError) as caught:
        config.step_create(
            pipeline=acme_pipeline,
            name="S",
            slug="s",
            template="{{ text }}",
            actor=operator,
            **fields,
        )
    assert field in caught.value.message_dict
    assert any(message in m for m in caught.value.message_dict[field])
    assert not Step.objects.exists()
    assert not PromptVersion.objects.exists()


def test_a_template_using_a_variable_the_input_schema_lacks_is_a_form_error(operator, acme_step):
    config.pipeline_update(pipeline=acme_step.pipeline, actor=operator, input_schema=TICKET_SCHEMA)
    response = login(operator).post(
        reverse("prompt-editor", args=[acme_step.pk]),
        {"template": "{{ text }} from {{ customer }}", "parameters": "", "change_note": "x"},
    )
    assert response.status_code == 422
    html = response.content.decode()
    assert "customer" in html and "is not in the input schema" in html
    assert acme_step.prompt_versions.count() == 1


def test_a_template_that_tries_to_escape_the_sandbox_is_refused(operator, acme_step):
    with pytest.raises(ValidationError):
        config.prompt_version_create(
            step=acme_step, template="{{ text.__class__.__mro__ }", actor=operator
        )


def test_publish_and_rollback_move_the_production_label_and_are_audited(operator, acme_step):
    http = login(operator)
    response = http.post(
        reverse("prompt-editor", args=[acme_step.pk]),
        {
            "template": "Topic of: {{ text }}",
            "parameters": '{"temperature": 0}',
            "change_note": "shorter",
        },
    )
    assert response.status_code == 302
    v2 = acme_step.prompt_versions.get(number=2)
    assert v2.author == operator and v2.parameters == {"temperature": 0}
    # Saving does not publish.
    assert PromptLabel.objects.get(step=acme_step, name="production").version.number == 1

    label_url = reverse("prompt-label", args=[acme_step.pk, 2])
    assert http.post(label_url, {"label": "production", "action": "move"}).status_code == 302
    assert PromptLabel.objects.get(step=acme_step, name="production").version.number == 2
    http.post(
        reverse("prompt-label", args=[acme_step.pk, 1]), {"label": "production", "action": "move"}
    )
    assert PromptLabel.objects.get(step=acme_step, name="production").version.number == 1

    publish = AuditEntry.objects.filter(action="prompt.publish").order_by("-id").first()
    rollback = AuditEntry.objects.get(action="prompt.rollback")
    assert publish.before == {"production": 1} and publish.after == {"production": 2}
    assert rollback.before == {"production": 2} and rollback.after == {"production": 1}
    assert rollback.actor == operator


def test_prompt_versions_cannot_be_changed_after_saving(operator, acme_step):
    v1 = acme_step.prompt_versions.get(number=1)
    before = v1.template
    login(operator).post(
        reverse("prompt-editor", args=[acme_step.pk]),
        {"template": "changed {{ text }}", "parameters": "", "change_note": ""},
    )
    v1.refresh_from_db()
    assert v1.template == before
    assert acme_step.prompt_versions.count() == 2


def test_a_candidate_label_can_be_set_and_dropped_but_production_cannot_be_dropped(
    operator, acme_step
):
    v2 = config.prompt_version_create(step=acme_step, template="v2 {{ text }}", actor=operator)
    config.prompt_label_move(step=acme_step, label="candidate", version=v2, actor=operator)
    assert PromptLabel.objects.get(step=acme_step, name="candidate").version == v2
    config.prompt_label_remove(step=acme_step, label="candidate", actor=operator)
    assert not PromptLabel.objects.filter(step=acme_step, name="candidate").exists()
    with pytest.raises(ValidationError):
        config.prompt_label_remove(step=acme_step, label="production", actor=operator)


def test_a_label_cannot_point_at_another_steps_version(operator, acme_step, acme_pipeline):
    other = config.step_create(
        pipeline=acme_pipeline,
        name="Other",
        slug="other",
        kind="classify",
        labels=["x"],
        template="{{ text }}",
        actor=operator,
    )
    foreign = other.prompt_versions.get(number=1)
    with pytest.raises(ValidationError):
        config.prompt_label_move(
            step=acme_step, label="production", version=foreign, actor=operator
        )


def test_the_diff_page_shows_both_versions_side_by_side(operator, acme_step):
    config.prompt_version_create(
        step=acme_step, template="Classify this support ticket: {{ text }}", actor=operator
    )
    response = login(operator).get(reverse("prompt-diff", args=[acme_step.pk]), {"a": 1, "b": 2})
    html = response.content.decode()
    assert response.status_code == 200
    assert "version 1" in html and "version 2" in html
    assert 'class="diff_add"' in html or 'class="diff_chg"' in html


def test_the_diff_page_escapes_templates(operator, acme_step):
    config.prompt_version_create(
        step=acme_step, template="<script>alert(1)</script> {{ text }}", actor=operator
    )
    html = login(operator).get(reverse("prompt-diff", args=[acme_step.pk])).content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;" in html


def test_a_route_is_ordered_and_its_last_entry_is_a_catch_all(operator, acme_step, provider):
    small = provider.models.get()
    big = config.aimodel_create(provider=provider, name="big", actor=operator)
    url = reverse("step-detail", args=[acme_step.pk])
    form = {
        "section": "route",
        "route-TOTAL_FORMS": 2,
        "route-INITIAL_FORMS": 0,
        "route-0-model": big.pk,
        "route-0-min_input_chars": 2000,
        "route-1-model": small.pk,
    }
    assert login(operator).post(url, form).status_code == 302
    route = list(RouteEntry.objects.filter(step=acme_step).order_by("position"))
    assert [(r.model_id, r.min_input_chars) for r in route] == [(big.pk, 2000), (small.pk, None)]
    assert AuditEntry.objects.filter(action="route.set").exists()

    bad = {**form, "route-1-min_priority": 5}
    response = login(operator).post(url, bad)
    assert response.status_code == 422
    assert "The last entry must have no conditions" in response.content.decode()
    assert RouteEntry.objects.filter(step=acme_step).count() == 2


def test_an_openai_provider_needs_a_base_url_and_stores_only_the_key_variable_name(operator):
    http = login(operator)
    response = http.post(
        reverse("provider-list"),
        {
            "name": "OpenAI",
            "kind": "openai",
            "base_url": "",
            "api_key_env": "sk-live-123",
            "timeout_seconds": "30",
            "max_concurrency": 8,
            "rate_limit_per_minute": 0,
            "breaker_failure_threshold": 5,
            "breaker_reset_seconds": 30,
            "simulation": "",
        },
    )
    assert response.status_code == 422
    html = response.content.decode()
    assert "An OpenAI-compatible provider needs a base URL." in html
    assert "An environment variable name" in html
    response = http.post(
        reverse("provider-list"),
        {
            "name": "OpenAI",
            "kind": "openai",
            "base_url": "https://api.example.com/v1",
            "api_key_env": "OPENAI_API_KEY",
            "timeout_seconds": "30",
            "max_concurrency": 8,
            "rate_limit_per_minute": 600,
            "breaker_failure_threshold": 5,
            "breaker_reset_seconds": 30,
            "simulation": "",
        },
    )
    assert response.status_code == 302


def test_a_model_is_added_to_a_provider_with_its_prices(operator, provider):
    response = login(operator).post(
        reverse("provider-detail", args=[provider.pk]),
        {
            "section": "model",
            "model-name": "mini",
            "model-input_price_per_mtok": "0.15",
            "model-output_price_per_mtok": "0.60",
            "model-context_window": 128000,
            "model-is_active": "on",
        },
    )
    assert response.status_code == 302
    mini = provider.models.get(name="mini")
    assert str(mini.output_price_per_mtok) == "0.6000"


def test_the_audit_log_filters_by_action_and_client(operator, acme_step, globex):
    config.pipeline_create(client=globex, name="Leads", slug="leads", actor=operator)
    http = login(operator)

    def table(params) -> str:
        html = http.get(reverse("audit-list"), params).content.decode()
        return html[html.index('data-testid="audit-table"') :]

    rows = table({"action": "prompt."})
    assert "<code>prompt.publish</code>" in rows and "<code>step.create</code>" not in rows
    rows = table({"client": "globex"})
    assert "<code>pipeline.create</code>" in rows and "Leads" in rows
    assert "<code>prompt.publish</code>" not in rows


def test_reviewers_and_clients_cannot_change_configuration(reviewer, client_a, acme_step):
    for user in (reviewer, client_a):
        http = login(user)
        assert (
            http.post(
                reverse("pipeline-settings", args=["acme", "triage"]), {"status": "paused"}
            ).status_code
            == 403
        )
        assert (
            http.post(
                reverse("prompt-label", args=[acme_step.pk, 1]),
                {"label": "production", "action": "move"},
            ).status_code
            == 403
        )
    acme_step.pipeline.refresh_from_db()
    assert acme_step.pipeline.status == Pipeline.Status.ACTIVE


@pytest.mark.parametrize("name", ["SECRET_KEY", "DATABASE_URL", "REDIS_URL", "EMAIL_HOST_PASSWORD"])
def test_a_provider_cannot_read_this_servers_own_secrets_as_its_key(operator, name):
    with pytest.raises(ValidationError) as caught:
        config.provider_create(
            name="Exfil",
            kind="openai",
            base_url="https://collector.example/v1",
            api_key_env=name,
            actor=operator,
        )
    assert "_API_KEY or _TOKEN" in str(caught.value)


def test_bad_simulation_settings_are_refused_when_saved(operator):
    with pytest.raises(ValidationError) as caught:
        config.provider_create(
            name="Sim",
            kind="simulated",
            actor=operator,
            simulation={"failure_rates": {"transient": 2}},
        )
    assert "simulation" in caught.value.message_dict


def test_long_templates_are_compared_with_a_unified_diff(operator, acme_step):
    long_template = "\n".join(f"line {n} {{{{ text }}}}" for n in range(600))
    config.prompt_version_create(step=acme_step, template=long_template, actor=operator)
    response = login(operator).get(reverse("prompt-diff", args=[acme_step.pk]))
    assert response.status_code == 200
    assert "+line 599" in response.content.decode()
