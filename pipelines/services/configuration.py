"""Configuration writes: pipelines, steps, prompt versions and labels, providers, models, routes.

Every change is one transaction with its audit entry (who, what, the fields before and after);
an invalid change raises ValidationError naming the field and writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.db.models import Max

from controlplane.models import Client
from controlplane.services import audit_record
from pipelines.models import (
    AiModel,
    Pipeline,
    PromptLabel,
    PromptVersion,
    Provider,
    RouteEntry,
    Step,
)
from pipelines.rules import rules_problems
from pipelines.schemas import schema_problems
from pipelines.services.ingest import engine_wake
from pipelines.signals import step_created
from pipelines.templating import template_check

PIPELINE_FIELDS = (
    "name",
    "slug",
    "description",
    "status",
    "input_schema",
    "default_priority",
    "latency_target_seconds",
    "daily_budget",
    "concurrency_limit",
    "review_sla_seconds",
    "dedup_window_seconds",
)
STEP_FIELDS = (
    "name",
    "slug",
    "kind",
    "labels",
    "output_schema",
    "confidence_threshold",
    "rules",
    "on_gate_failure",
    "audit_rate",
    "result_cache_seconds",
    "cascade",
)
PROVIDER_FIELDS = (
    "name",
    "kind",
    "base_url",
    "api_key_env",
    "timeout_seconds",
    "max_concurrency",
    "rate_limit_per_minute",
    "breaker_failure_threshold",
    "breaker_reset_seconds",
    "simulation",
)
AIMODEL_FIELDS = (
    "name",
    "input_price_per_mtok",
    "output_price_per_mtok",
    "context_window",
    "is_active",
)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, models.Model):
        return str(value)
    return value


def snapshot(obj: models.Model, fields: Iterable[str]) -> dict[str, Any]:
    """The named fields of `obj` as JSON-friendly values, for audit entries and exports."""
    return {name: _jsonable(getattr(obj, name)) for name in fields}


def _changed(before: Mapping[str, Any], after: Mapping[str, Any]) -> tuple[dict, dict]:
    keys = [k for k in after if before.get(k) != after[k]]
    return {k: before.get(k) for k in keys}, {k: after[k] for k in keys}


def _apply(obj: models.Model, changes: Mapping[str, Any], allowed: Sequence[str]) -> None:
    unknown = set(changes) - set(allowed)
    if unknown:
        raise TypeError(f"cannot change {', '.join(sorted(unknown))}")
    for name, value in changes.items():
        setattr(obj, name, value)


# --- Pipelines ------------------------------------------------------------------------------


def _clean_into(errors: dict[str, list[str]], obj: models.Model, **options: Any) -> None:
    """Run the model's own validation, adding its messages to `errors` by field."""
    try:
        obj.full_clean(**options)
    except ValidationError as exc:
        for field, messages in exc.message_dict.items():
            errors.setdefault(field, []).extend(messages)


def _pipeline_validate(pipeline: Pipeline) -> None:
    problems = schema_problems(pipeline.input_schema) if pipeline.input_schema else []
    errors: dict[str, list[str]] = {}
    if pipeline.daily_budget is not None:
        try:
            pipeline.daily_budget = Decimal(str(pipeline.daily_budget)).quantize(Decimal("0.01"))
        except ArithmeticError:
            errors["daily_budget"] = ["Enter an amount such as 25.00."]
    if problems:
        errors["input_schema"] = problems
    _clean_into(errors, pipeline)
    if errors:
        raise ValidationError(errors)


@transaction.atomic
def pipeline_create(
    *,
    client: Client,
    name: str,
    slug: str,
    actor: AbstractBaseUser | None = None,
    actor_label: str | None = None,
    **fields: Any,
) -> Pipeline:
    """Create a pipeline for a client; the slug is unique within the client."""
    pipeline = Pipeline(client=client, name=name, slug=slug)
    _apply(pipeline, fields, PIPELINE_FIELDS)
    _pipeline_validate(pipeline)
    pipeline.save()
    audit_record(
        actor=actor,
        actor_label=actor_label,
        action="pipeline.create",
        obj=pipeline,
        client=client,
        after=snapshot(pipeline, PIPELINE_FIELDS),
    )
    return pipeline


@transaction.atomic
def pipeline_update(
    *,
    pipeline: Pipeline,
    actor: AbstractBaseUser | None,
    actor_label: str | None = None,
    **changes: Any,
) -> Pipeline:
    """Change a pipeline's settings (status included); audited with the fields that changed."""
    pipeline = Pipeline.objects.select_for_update().get(pk=pipeline.pk)
    before = snapshot(pipeline, PIPELINE_FIELDS)
    _apply(pipeline, changes, PIPELINE_FIELDS)
    _pipeline_validate(pipeline)
    after = snapshot(pipeline, PIPELINE_FIELDS)
    old, new = _changed(before, after)
    if not new:
        return pipeline
    pipeline.save()
    action = "pipeline.update"
    if set(new) == {"status"}:
        action = {"paused": "pipeline.pause", "active": "pipeline.activate"}.get(
            new["status"], action
        )
    audit_record(
        actor=actor,
        actor_label=actor_label,
        action=action,
        obj=pipeline,
        client=pipeline.client,
        before=old,
        after=new,
    )
    if pipeline.status == Pipeline.Status.ACTIVE:
        # A resumed pipeline, or a raised limit or budget, may have work that can run now.
        transaction.on_commit(engine_wake)
    return pipeline


# --- Steps ----------------------------------------------------------------------------------


def classify_output_schema(labels: Sequence[str]) -> dict:
    """The output schema of a classify step: one `label` among its labels."""
    return {
        "type": "object",
        "properties": {"label": {"type": "string", "enum": list(labels)}},
        "required": ["label"],
    }


def _step_validate(step: Step) -> None:
    errors: dict[str, list[str]] = {}
    # Stored with three places; normalising here keeps audit diffs free of "0.8" vs "0.800".
    try:
        step.confidence_threshold = Decimal(str(step.confidence_threshold)).quantize(
            Decimal("0.001")
        )
    except ArithmeticError:
        errors["confidence_threshold"] = ["Enter a number between 0 and 1."]
    if step.kind == Step.Kind.CLASSIFY:
        labels = step.labels
        if (
            not isinstance(labels, list)
            or not labels
            or not all(isinstance(label, str) and label.strip() for label in labels)
        ):
            errors["labels"] = ["A classify step needs at least one label."]
        elif len(set(labels)) != len(labels):
            errors["labels"] = ["Labels must be different from each other."]
        else:
            step.output_schema = classify_output_schema(labels)
    elif step.labels:
        errors["labels"] = ["Only classify steps have labels."]
    if step.kind == Step.Kind.GENERATE:
        problems = schema_problems(step.output_schema)
        if problems:
            errors["output_schema"] = problems
    problems = rules_problems(step.rules)
    if problems:
        errors["rules"] = problems
    _clean_into(errors, step, exclude=["position"])
    if errors:
        raise ValidationError(errors)


@transaction.atomic
def step_create(
    *,
    pipeline: Pipeline,
    name: str,
    slug: str,
    template: str,
    actor: AbstractBaseUser | None,
    actor_label: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    change_note: str = "First version",
    **fields: Any,
) -> Step:
    """Add a step at the end of the pipeline with its first prompt version, in production."""
    Pipeline.objects.select_for_update().get(pk=pipeline.pk)
    last = pipeline.steps.aggregate(last=Max("position"))["last"]
    step = Step(pipeline=pipeline, name=name, slug=slug, position=(last or 0) + 1)
    _apply(step, fields, STEP_FIELDS)
    _step_validate(step)
    step.save()
    audit_record(
        actor=actor,
        actor_label=actor_label,
        action="step.create",
        obj=step,
        client=pipeline.client,
        after=snapshot(step, STEP_FIELDS),
    )
    version = prompt_version_create(
        step=step,
        template=template,
        change_note="First version",
        actor=actor,
        actor_label=actor_label,
    )
    prompt_label_move(
        step=step,
        label=PromptLabel.Name.PRODUCTION,
        version=version,
        actor=actor,
        actor_label=actor_label,
    )
    step_created.send(sender=Step, step=step)
    return step


@transaction.atomic
def step_update(
    *,
    step: Step,
    actor: AbstractBaseUser | None,
    actor_label: str | None = None,
    **changes: Any,
) -> Step:
    """Change a step's gate or output settings; audited with the fields that changed."""
    step = Step.objects.select_for_update().select_related("pipeline__client").get(pk=step.pk)
    before = snapshot(step, STEP_FIELDS)
    _apply(step, changes, STEP_FIELDS)
    _step_validate(step)
    old, new = _changed(before, snapshot(step, STEP_FIELDS))
    if not new:
        return step
    step.save()
    audit_record(
        actor=actor,
        actor_label=actor_label,
        action="step.update",
        obj=step,
        client=step.pipeline.client,
        before=old,
        after=new,
    )
    return step


# --- Prompt versions and labels -----------------------------------------------------------


@transaction.atomic
def prompt_version_create(
    *,
    step: Step,
    template: str,
    parameters: Mapping[str, Any] | None = None,
    change_note: str = "",
    actor: AbstractBaseUser | None,
    actor_label: str | None = None,
) -> PromptVersion:
    """Write the next immutable version of a step's prompt. It runs only once a label points at
    it; a template using a variable the input schema does not have is refused."""
    step = Step.objects.select_for_update().select_related("pipeline__client").get(pk=step.pk)
    problems = template_check(template=template, input_schema=step.pipeline.input_schema or None)
    if problems:
        raise ValidationError({"template": problems})
    if parameters is not None and not isinstance(parameters, Mapping):
        raise ValidationError({"parameters": ["Parameters must be a JSON object."]})
    last = step.prompt_versions.aggregate(last=Max("number"))["last"]
    version = PromptVersion.objects.create(
        step=step,
        number=(last or 0) + 1,
        template=template,
        parameters=dict(parameters or {}),
        change_note=change_note[:300],
        author=actor,
    )
    audit_record(
        actor=actor,
        actor_label=actor_label,
        action="prompt.create",
        obj=version,
        client=step.pipeline.client,
        after={
            "number": version.number,
            "change_note": version.change_note,
            "template": template,
            "parameters": version.parameters,
        },
    )
    return version


@transaction.atomic
def prompt_label_move(
    *,
    step: Step,
    label: str,
    version: PromptVersion,
    actor: AbstractBaseUser | None,
    actor_label: str | None = None,
) -> PromptLabel:
    """Point a label at a version of the same step: publishing a newer version, or rolling back
    to an older one. Audited as publish or rollback with both version numbers."""
    if version.step_id != step.pk:
        raise ValidationError({"version": ["That version belongs to another step."]})
    if label not in PromptLabel.Name.values:
        raise ValidationError({"label": [f"Unknown label {label!r}."]})
    current = (
        PromptLabel.objects.select_for_update()
        .select_related("version")
        .filter(step=step, name=label)
        .first()
    )
    before = current.version.number if current else None
    if current and current.version_id == version.pk:
        return current
    if current:
        current.version = version
        current.save(update_fields=["version", "moved_at"])
    else:
        current = PromptLabel.objects.create(step=step, name=label, version=version)
    rollback = before is not None and version.number < before
    audit_record(
        actor=actor,
        actor_label=actor_label,
        action=f"prompt.{'rollback' if rollback else 'publish'}",
        obj=version,
        client=step.pipeline.client,
        before={label: before},
        after={label: version.number},
    )
    return current


@transaction.atomic
def prompt_label_remove(*, step: Step, label: str, actor: AbstractBaseUser | None) -> None:
    """Take a label off (the candidate, typically); production can only be moved."""
    if label == PromptLabel.Name.PRODUCTION:
        raise ValidationError({"label": ["Production always points at a version; move it."]})
    current = PromptLabel.objects.filter(step=step, name=label).select_related("version").first()
    if current is None:
        return
    number = current.version.number
    current.delete()
    audit_record(
        actor=actor,
        action="prompt.unlabel",
        obj=step,
        client=step.pipeline.client,
        before={label: number},
        after={label: None},
    )


# --- Providers, models, routes --------------------------------------------------------------


def _provider_validate(provider: Provider) -> None:
    provider.full_clean()


@transaction.atomic
def provider_create(
    *,
    name: str,
    kind: str,
    actor: AbstractBaseUser | None,
    actor_label: str | None = None,
    **fields: Any,
) -> Provider:
    """Add a provider to the catalogue."""
    provider = Provider(name=name, kind=kind)
    _apply(provider, fields, PROVIDER_FIELDS)
    _provider_validate(provider)
    provider.save()
    audit_record(
        actor=actor,
        actor_label=actor_label,
        action="provider.create",
        obj=provider,
        after=snapshot(provider, PROVIDER_FIELDS),
    )
    return provider


@transaction.atomic
def provider_update(
    *, provider: Provider, actor: AbstractBaseUser | None, **changes: Any
) -> Provider:
    """Change a provider's connection, limits or breaker settings."""
    provider = Provider.objects.select_for_update().get(pk=provider.pk)
    before = snapshot(provider, PROVIDER_FIELDS)
    _apply(provider, changes, PROVIDER_FIELDS)
    _provider_validate(provider)
    old, new = _changed(before, snapshot(provider, PROVIDER_FIELDS))
    if new:
        provider.save()
        audit_record(actor=actor, action="provider.update", obj=provider, before=old, after=new)
    return provider


@transaction.atomic
def aimodel_create(
    *,
    provider: Provider,
    name: str,
    actor: AbstractBaseUser | None,
    actor_label: str | None = None,
    **fields: Any,
) -> AiModel:
    """Add a model of a provider, with its prices per million tokens."""
    model = AiModel(provider=provider, name=name)
    _apply(model, fields, AIMODEL_FIELDS)
    model.full_clean()
    model.save()
    audit_record(
        actor=actor,
        actor_label=actor_label,
        action="model.create",
        obj=model,
        after=snapshot(model, AIMODEL_FIELDS),
    )
    return model


@transaction.atomic
def aimodel_update(*, model: AiModel, actor: AbstractBaseUser | None, **changes: Any) -> AiModel:
    """Change a model's prices, context window or availability."""
    model = AiModel.objects.select_for_update().get(pk=model.pk)
    before = snapshot(model, AIMODEL_FIELDS)
    _apply(model, changes, AIMODEL_FIELDS)
    model.full_clean()
    old, new = _changed(before, snapshot(model, AIMODEL_FIELDS))
    if new:
        model.save()
        audit_record(actor=actor, action="model.update", obj=model, before=old, after=new)
    return model


def route_describe(entries: Iterable[RouteEntry]) -> list[dict[str, Any]]:
    """A route as plain data: what the audit log and exports record."""
    return [
        {
            "model": str(entry.model),
            "min_input_chars": entry.min_input_chars,
            "min_priority": entry.min_priority,
        }
        for entry in entries
    ]


@transaction.atomic
def route_set(
    *,
    step: Step,
    entries: Sequence[Mapping[str, Any]],
    actor: AbstractBaseUser | None,
    actor_label: str | None = None,
) -> list[RouteEntry]:
    """Replace a step's route with `entries` (model, min_input_chars, min_priority), in order."""
    step = Step.objects.select_for_update().select_related("pipeline__client").get(pk=step.pk)
    if not entries:
        raise ValidationError({"route": ["A step needs at least one model."]})
    rows = []
    for position, entry in enumerate(entries, start=1):
        row = RouteEntry(
            step=step,
            position=position,
            model=entry["model"],
            min_input_chars=entry.get("min_input_chars"),
            min_priority=entry.get("min_priority"),
        )
        try:
            row.full_clean(exclude=["step"])
        except ValidationError as exc:
            raise ValidationError(
                {"route": [f"entry {position}: {m}" for m in exc.messages]}
            ) from None
        if not row.model.is_active:
            raise ValidationError({"route": [f"entry {position}: {row.model} is not active."]})
        rows.append(row)
    # The last entry is the catch-all: without it some items would have no model at all.
    last = rows[-1]
    if last.min_input_chars is not None or last.min_priority is not None:
        raise ValidationError(
            {"route": ["The last entry must have no conditions, so every item has a model."]}
        )
    before = route_describe(step.route.select_related("model__provider"))
    step.route.all().delete()
    RouteEntry.objects.bulk_create(rows)
    after = route_describe(rows)
    if before != after:
        audit_record(
            actor=actor,
            actor_label=actor_label,
            action="route.set",
            obj=step,
            client=step.pipeline.client,
            before={"route": before},
            after={"route": after},
        )
    return rows
