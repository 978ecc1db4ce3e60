"""Configuration as code: a pipeline as a plain YAML document, exported and imported back.

The document holds the pipeline's settings, its steps in order with their gates and routes, every
prompt version of each step (oldest first) and where the production and candidate labels point.

An import checks the whole document, then how it fits what already exists, and lists every
problem with its path before anything is written. The changes are then made in one transaction
through the configuration services, so each one is audited as if made in the UI, and the import
adds one "pipeline.import" entry with the counts. Importing a document that matches the database
writes nothing at all, not even that entry, so re-applying a file is free and leaves no noise.

Keys left out of `pipeline` or of a step keep their current values (the model defaults when
creating). Steps and prompt versions are never removed or rewritten by an import: a missing step,
a missing version or an existing version with another template is a problem, not a deletion.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import yaml
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.db.models import Q

from controlplane.models import Client
from controlplane.services import audit_record
from pipelines.models import AiModel, Pipeline, PromptLabel, PromptVersion, RouteEntry, Step
from pipelines.rules import rules_problems
from pipelines.schemas import schema_problems
from pipelines.services.configuration import (
    PIPELINE_FIELDS,
    STEP_FIELDS,
    pipeline_create,
    pipeline_update,
    prompt_label_move,
    prompt_label_remove,
    prompt_version_create,
    route_describe,
    route_set,
    snapshot,
    step_create,
    step_update,
)
from pipelines.templating import template_check

FORMAT_VERSION = 1

# --- Export ---------------------------------------------------------------------------------


def _decimal_text(obj: models.Model, name: str) -> str | None:
    # Quantized to the column's places so an in-memory Decimal("0.8") exports as "0.800", the
    # same text the database gives back: the export must not depend on where the object came from.
    value = getattr(obj, name)
    if value is None:
        return None
    places = obj._meta.get_field(name).decimal_places
    return str(Decimal(value).quantize(Decimal(1).scaleb(-places)))


def _step_export(step: Step) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "slug": step.slug,
        "name": step.name,
        "kind": step.kind,
        "labels": step.labels,
    }
    if step.kind != Step.Kind.CLASSIFY:
        doc["output_schema"] = step.output_schema
    labels = {label.name: label.version.number for label in step.prompt_labels.all()}
    versions = sorted(step.prompt_versions.all(), key=lambda version: version.number)
    doc |= {
        "confidence_threshold": _decimal_text(step, "confidence_threshold"),
        "rules": step.rules,
        "on_gate_failure": step.on_gate_failure,
        "audit_rate": _decimal_text(step, "audit_rate"),
        "result_cache_seconds": step.result_cache_seconds,
        # Written only when on, so files from before cascade routing read the same.
        **({"cascade": True} if step.cascade else {}),
        "route": route_describe(step.route.all()),
        "prompts": [
            {
                "number": version.number,
                "template": version.template,
                "parameters": version.parameters,
                "change_note": version.change_note,
            }
            for version in versions
        ],
        "prompt_labels": {
            "production": labels.get(PromptLabel.Name.PRODUCTION),
            "candidate": labels.get(PromptLabel.Name.CANDIDATE),
        },
    }
    return doc


def pipeline_export(*, pipeline: Pipeline) -> dict:
    """The pipeline as a plain document: settings, steps in order, routes, every prompt version
    oldest first and the labels; read fresh from the database, so the same state exports alike."""
    pipeline = Pipeline.objects.select_related("client").get(pk=pipeline.pk)
    steps = pipeline.steps.order_by("position").prefetch_related(
        "route__model__provider", "prompt_versions", "prompt_labels__version"
    )
    return {
        "version": FORMAT_VERSION,
        "pipeline": {
            "client": pipeline.client.slug,
            "slug": pipeline.slug,
            "name": pipeline.name,
            "description": pipeline.description,
            "status": pipeline.status,
            "input_schema": pipeline.input_schema,
            "default_priority": pipeline.default_priority,
            "latency_target_seconds": pipeline.latency_target_seconds,
            "daily_budget": _decimal_text(pipeline, "daily_budget"),
            "concurrency_limit": pipeline.concurrency_limit,
            "review_sla_seconds": pipeline.review_sla_seconds,
            "dedup_window_seconds": pipeline.dedup_window_seconds,
        },
        "steps": [_step_export(step) for step in steps],
    }


class _Dumper(yaml.SafeDumper):
    # Lists indented under their key read better in a file people edit by hand.
    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        return super().increase_indent(flow, False)


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    # Prompt templates are multi-line; a literal block shows them as written instead of one
    # quoted line full of \n. PyYAML falls back to quoting when a block cannot hold the text,
    # except for the rarer line breaks YAML knows: written raw they would read back as \n, so
    # only double quotes, which escape them, are safe.
    style = None
    if any(ch in data for ch in "\x85\u2028\u2029"):
        style = '"'
    elif "\n" in data and "\r" not in data:
        style = "|"
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _represent_str)


def pipeline_export_yaml(*, pipeline: Pipeline) -> str:
    """The export as YAML, keys in document order, multi-line text as literal blocks."""
    return yaml.dump(
        pipeline_export(pipeline=pipeline),
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        width=100,
    )


# --- Reading and checking a document --------------------------------------------------------


class _NoAliasLoader(yaml.SafeLoader):
    """The safe loader without anchors and aliases: an export never writes them, and a few
    nested aliases expand a small file into millions of nodes (or a loop)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None,
                None,
                "aliases (*name) are not accepted; write the value out",
                event.start_mark,
            )
        return super().compose_node(parent, index)


def config_load(*, text: str) -> Any:
    """Parse a YAML document with the safe loader (no aliases); ValidationError with line and
    column if the text is not YAML."""
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 -- a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = ", ".join(part for part in (exc.context, exc.problem) if part)
        raise ValidationError({"config": [f"{where}not valid YAML: {what}"]}) from None
    except yaml.YAMLError as exc:
        raise ValidationError({"config": [f"not valid YAML: {exc}"]}) from None


@dataclass(frozen=True)
class _Key:
    kind: str  # text, integer, decimal, mapping, list
    required: bool = False
    nullable: bool = False


_TOP_KEYS = {
    "version": _Key("integer", required=True),
    "pipeline": _Key("mapping", required=True),
    "steps": _Key("list", required=True),
}
_PIPELINE_KEYS = {
    "client": _Key("text", required=True),
    "slug": _Key("text", required=True),
    "name": _Key("text", required=True),
    "description": _Key("text"),
    "status": _Key("text"),
    "input_schema": _Key("mapping"),
    "default_priority": _Key("integer"),
    "latency_target_seconds": _Key("integer"),
    "daily_budget": _Key("decimal", nullable=True),
    "concurrency_limit": _Key("integer"),
    "review_sla_seconds": _Key("integer"),
    "dedup_window_seconds": _Key("integer"),
}
_STEP_KEYS = {
    "slug": _Key("text", required=True),
    "name": _Key("text", required=True),
    "kind": _Key("text", required=True),
    "labels": _Key("list"),
    "output_schema": _Key("mapping"),
    "confidence_threshold": _Key("decimal"),
    "rules": _Key("list"),
    "on_gate_failure": _Key("text"),
    "audit_rate": _Key("decimal"),
    "result_cache_seconds": _Key("integer"),
    "cascade": _Key("boolean"),
    "route": _Key("list"),
    "prompts": _Key("list", required=True),
    "prompt_labels": _Key("mapping", required=True),
}
_ROUTE_KEYS = {
    "model": _Key("text", required=True),
    "min_input_chars": _Key("integer", nullable=True),
    "min_priority": _Key("integer", nullable=True),
}
_PROMPT_KEYS = {
    "number": _Key("integer", required=True),
    "template": _Key("text", required=True),
    "parameters": _Key("mapping"),
    "change_note": _Key("text"),
}
_LABEL_KEYS = {
    "production": _Key("integer", required=True),
    "candidate": _Key("integer", nullable=True),
}
_KIND_NAMES = {
    "text": "text",
    "integer": "a whole number",
    "decimal": 'a decimal number such as "0.800"',
    "mapping": "a mapping",
    "list": "a list",
    "boolean": "true or false",
}
_JSON_VALUES = ("input_schema", "output_schema", "labels", "rules", "parameters")


def _show(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:59] + "…"


def _at(path: str, key: object) -> str:
    name = key if isinstance(key, str) else _show(key)
    return f"{path}.{name}" if path else str(name)


def _decimal(value: object) -> Decimal | None:
    if isinstance(value, bool):
        return None
    try:
        number = Decimal(value.strip() if isinstance(value, str) else str(value))
    except (InvalidOperation, ValueError, TypeError):
        return None
    return number if number.is_finite() else None


def _typed(value: object, kind: str) -> tuple[bool, object]:
    if kind == "text":
        return isinstance(value, str), value
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool), value
    if kind == "decimal":
        number = _decimal(value) if isinstance(value, str | int | float) else None
        return number is not None, number
    if kind == "mapping":
        return isinstance(value, dict), value
    if kind == "boolean":
        return isinstance(value, bool), value
    return isinstance(value, list), value


def _fields(
    value: object, path: str, keys: Mapping[str, _Key], problems: list[str]
) -> dict[str, Any] | None:
    """The keys of a mapping that have the right type (decimals parsed); the rest are problems."""
    if not isinstance(value, dict):
        problems.append(f"{path}: must be a mapping, got {_show(value)}")
        return None
    found: dict[str, Any] = {}
    for key, item in value.items():
        spec = keys.get(key) if isinstance(key, str) else None
        if spec is None:
            problems.append(f"{_at(path, key)}: unknown key")
        elif item is None and spec.nullable:
            found[key] = None
        else:
            ok, typed = _typed(item, spec.kind)
            if ok:
                found[key] = typed
            else:
                problems.append(
                    f"{_at(path, key)}: must be {_KIND_NAMES[spec.kind]}, got {_show(item)}"
                )
    problems.extend(
        f"{_at(path, key)}: required"
        for key, spec in keys.items()
        if spec.required and key not in value
    )
    return found


def _json_problems(value: object, path: str) -> Iterator[str]:
    # YAML knows dates, non-text keys and .nan; a JSON column does not, and would either fail to
    # save or come back different from the file.
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                yield f"{path}: key {_show(key)} must be text (quote it)"
            else:
                yield from _json_problems(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _json_problems(item, f"{path}[{index}]")
    elif isinstance(value, float) and not math.isfinite(value):
        yield f"{path}: {value} is not a number JSON can hold"
    elif value is not None and not isinstance(value, str | int | float | bool):
        yield f"{path}: {_show(value)} is not JSON text, number or boolean (quote it)"


def _model_problems(
    instance: models.Model, path: str, given: Mapping[str, Any], problems: list[str]
) -> None:
    # The model's own validators (lengths, slugs, choices, ranges) say what a field accepts;
    # fields the document left out or typed wrongly are excluded, they are reported already.
    names = [f.name for f in instance._meta.fields]
    try:
        instance.full_clean(
            exclude=[name for name in names if name not in given],
            validate_unique=False,
            validate_constraints=False,
        )
    except ValidationError as exc:
        for name, messages in exc.message_dict.items():
            problems.extend(f"{_at(path, name)}: {message}" for message in messages)


def _model_values(section: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    # JSON values are checked by _json_problems and the schema and rule checks; the model's
    # "Value must be valid JSON." would only repeat them without a path.
    return {k: v for k, v in section.items() if k in names and k not in _JSON_VALUES}


def _prefixed(path: str, messages: list[str]) -> list[str]:
    # schema_problems paths start with "$"; hung off the document path they read as one path.
    out = []
    for message in messages:
        if message.startswith("$:"):
            out.append(f"{path}:{message[2:]}")
        elif message.startswith("$"):
            out.append(f"{path}{message[1:]}")
        else:
            out.append(f"{path}: {message}")
    return out


@dataclass
class _Checked:
    problems: list[str] = field(default_factory=list)
    client: Client | None = None
    models: dict[str, AiModel] = field(default_factory=dict)


def _pipeline_problems(section: dict[str, Any], problems: list[str]) -> None:
    for name in _JSON_VALUES:
        if name in section:
            problems.extend(_json_problems(section[name], f"pipeline.{name}"))
    if section.get("input_schema"):
        problems.extend(
            _prefixed("pipeline.input_schema", schema_problems(section["input_schema"]))
        )
    given = _model_values(section, PIPELINE_FIELDS)
    _model_problems(Pipeline(**given), "pipeline", given, problems)


def _labels_problems(labels: object, path: str) -> list[str]:
    if not labels or not all(isinstance(label, str) and label.strip() for label in labels):
        return [f"{path}: a classify step needs at least one label, each non-empty text"]
    if len(set(labels)) != len(labels):
        return [f"{path}: labels must be different from each other"]
    return []


def _step_problems(
    step: dict[str, Any],
    path: str,
    input_schema: dict | None,
    routes: dict[str, str],
    problems: list[str],
) -> None:
    for name in _JSON_VALUES:
        if name in step:
            problems.extend(_json_problems(step[name], f"{path}.{name}"))
    kind = step.get("kind")
    if kind == Step.Kind.CLASSIFY:
        if "labels" not in step:
            problems.append(f"{path}.labels: required for a classify step")
        else:
            problems.extend(_labels_problems(step["labels"], f"{path}.labels"))
        if "output_schema" in step:
            problems.append(
                f"{path}.output_schema: a classify step's schema is derived from its labels; "
                "leave it out"
            )
    elif kind == Step.Kind.GENERATE:
        if step.get("labels"):
            problems.append(f"{path}.labels: only classify steps have labels")
        if "output_schema" not in step:
            problems.append(f"{path}.output_schema: required for a generate step")
        else:
            problems.extend(
                _prefixed(f"{path}.output_schema", schema_problems(step["output_schema"]))
            )
    for index, rule in enumerate(step.get("rules", [])):
        # rules_problems numbers rules from 1 for the UI; here the path already names the rule.
        problems.extend(
            f"{path}.rules[{index}]: {message.removeprefix('rule 1: ')}"
            for message in rules_problems([rule])
        )
    given = _model_values(step, STEP_FIELDS)
    _model_problems(Step(**given), path, given, problems)
    _route_problems(step.get("route", []), f"{path}.route", routes, problems)
    labels = None
    if "prompt_labels" in step:
        labels = _fields(step["prompt_labels"], f"{path}.prompt_labels", _LABEL_KEYS, problems)
    _prompts_problems(step, path, input_schema, labels or {}, problems)


def _route_problems(route: list, path: str, routes: dict[str, str], problems: list[str]) -> None:
    for index, raw in enumerate(route):
        entry = _fields(raw, f"{path}[{index}]", _ROUTE_KEYS, problems)
        if entry is None:
            continue
        if "model" in entry:
            routes[f"{path}[{index}].model"] = entry["model"]
        conditions = {k: v for k, v in entry.items() if k != "model"}
        _model_problems(RouteEntry(**conditions), f"{path}[{index}]", conditions, problems)
        if index == len(route) - 1 and any(v is not None for v in conditions.values()):
            problems.append(
                f"{path}[{index}]: the last entry must have no conditions, so every item has a "
                "model"
            )


def _prompts_problems(
    step: dict[str, Any],
    path: str,
    input_schema: dict | None,
    labels: dict[str, Any],
    problems: list[str],
) -> None:
    prompts = step.get("prompts")
    if prompts == []:
        problems.append(f"{path}.prompts: a step needs at least one prompt version")
    numbers = set()
    for index, raw in enumerate(prompts or []):
        where = f"{path}.prompts[{index}]"
        prompt = _fields(raw, where, _PROMPT_KEYS, problems)
        if prompt is None:
            continue
        number = prompt.get("number")
        numbers.add(number)
        if number is not None and number != index + 1:
            problems.append(
                f"{where}.number: expected {index + 1}; versions are numbered 1, 2, 3, … in order"
            )
        if "parameters" in prompt:
            problems.extend(_json_problems(prompt["parameters"], f"{where}.parameters"))
        if "template" in prompt:
            # Only versions a label points at must fit the schema here: older versions may use
            # variables the schema has since dropped. New versions are checked at import.
            runs = number is not None and number in labels.values()
            problems.extend(
                f"{where}.template: {message}"
                for message in template_check(
                    template=prompt["template"], input_schema=input_schema if runs else None
                )
            )
        given = {k: v for k, v in prompt.items() if k in ("template", "change_note")}
        _model_problems(PromptVersion(**given), where, given, problems)
    if prompts is None:
        return
    for name, number in labels.items():
        if number is not None and number not in numbers:
            problems.append(f"{path}.prompt_labels.{name}: no prompt number {number}")


def _catalogue(client_slug: str | None, routes: Mapping[str, str], checked: _Checked) -> None:
    """The document's only database reads: its client, and the catalogue models its routes name."""
    if client_slug is not None:
        checked.client = Client.objects.filter(slug=client_slug).first()
        if checked.client is None:
            checked.problems.append(f'pipeline.client: no client "{client_slug}"')
    # Provider and model names may both contain "/", so every split of a reference is a
    # candidate and the full "provider/model" text decides.
    wanted = Q(pk__in=[])
    for reference in set(routes.values()):
        for cut in range(1, len(reference)):
            if reference[cut] == "/":
                wanted |= Q(provider__name=reference[:cut], name=reference[cut + 1 :])
    found: dict[str, list[AiModel]] = {}
    for model in AiModel.objects.select_related("provider").filter(wanted):
        found.setdefault(str(model), []).append(model)
    for path, reference in routes.items():
        matches = found.get(reference, [])
        if not matches:
            checked.problems.append(f'{path}: no model "{reference}" in the catalogue')
        elif len(matches) > 1:
            checked.problems.append(f'{path}: "{reference}" names more than one model')
        else:
            checked.models[reference] = matches[0]


def _check(doc: object) -> _Checked:
    checked = _Checked()
    problems = checked.problems
    if not isinstance(doc, dict):
        problems.append(
            f"the document must be a mapping with version, pipeline and steps, got {_show(doc)}"
        )
        return checked
    top = _fields(doc, "", _TOP_KEYS, problems) or {}
    if "version" in top and top["version"] != FORMAT_VERSION:
        problems.append(f"version: must be {FORMAT_VERSION}, got {_show(top['version'])}")
    section = None
    if "pipeline" in top:
        section = _fields(top["pipeline"], "pipeline", _PIPELINE_KEYS, problems)
    if section is not None:
        _pipeline_problems(section, problems)
    input_schema = section.get("input_schema") if section else None
    routes: dict[str, str] = {}
    seen: dict[str, int] = {}
    for index, raw in enumerate(top.get("steps", [])):
        path = f"steps[{index}]"
        step = _fields(raw, path, _STEP_KEYS, problems)
        if step is None:
            continue
        slug = step.get("slug")
        if slug in seen:
            problems.append(f'{path}.slug: "{slug}" is also the slug of steps[{seen[slug]}]')
        elif slug is not None:
            seen[slug] = index
        _step_problems(step, path, input_schema, routes, problems)
    _catalogue(section.get("client") if section else None, routes, checked)
    return checked


def config_problems(doc: object) -> list[str]:
    """Every problem of a configuration document, each prefixed by its path; empty if it is
    valid. Reads the database only to find its client and the models its routes name."""
    return _check(doc).problems


# --- Importing ------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, Decimal) else value


def _same_json(left: Any, right: Any) -> bool:
    # Stricter than ==, which takes true for 1 and 1 for 1.0; a prompt version is immutable, so
    # "the same" must mean the same JSON.
    return json.dumps(left, sort_keys=True) == json.dumps(right, sort_keys=True)


def _settings(
    section: Mapping[str, Any], model: type[models.Model], names: tuple[str, ...]
) -> dict[str, Any]:
    # Decimals go to the column's places, so "0.8" in a file compares equal to the stored 0.800
    # and an unchanged file is not mistaken for a change.
    values = {}
    for name in names:
        if name not in section:
            continue
        value = section[name]
        column = model._meta.get_field(name)
        if isinstance(column, models.DecimalField) and value is not None:
            # Already checked, so the text or number parses; a float passed on would be
            # widened to binary noise by the field.
            value = _decimal(value).quantize(Decimal(1).scaleb(-column.decimal_places))
        values[name] = value
    return values


@dataclass
class StepChange:
    """What an import does to one step; empty fields, versions and labels mean untouched."""

    path: str
    slug: str
    step: Step | None
    fields: dict[str, Any]
    versions: list[dict[str, Any]]
    labels: dict[str, int | None]
    route: list[dict[str, Any]] | None


@dataclass
class ImportPlan:
    """What importing a document would change, found without writing anything."""

    client: Client
    slug: str
    pipeline: Pipeline | None
    pipeline_fields: dict[str, Any]
    steps: list[StepChange]

    @property
    def label(self) -> str:
        return f"{self.client.slug}/{self.slug}"

    @property
    def counts(self) -> dict[str, int]:
        return {
            "pipelines_created": int(self.pipeline is None),
            "settings_changed": len(self.pipeline_fields) if self.pipeline else 0,
            "steps_created": sum(change.step is None for change in self.steps),
            "steps_updated": sum(
                change.step is not None and bool(change.fields) for change in self.steps
            ),
            "prompt_versions_created": sum(len(change.versions) for change in self.steps),
            "labels_moved": sum(len(change.labels) for change in self.steps),
            "routes_set": sum(change.route is not None for change in self.steps),
        }

    @property
    def changed(self) -> bool:
        return any(self.counts.values())

    def describe(self) -> str:
        """One line such as `update acme/triage: settings (name), 1 step created`."""
        if not self.changed:
            return f"{self.label} is up to date"
        counts = self.counts
        parts = []
        if counts["settings_changed"]:
            parts.append(f"settings ({', '.join(self.pipeline_fields)})")
        for key, one, many in (
            ("steps_created", "step created", "steps created"),
            ("steps_updated", "step updated", "steps updated"),
            ("prompt_versions_created", "prompt version created", "prompt versions created"),
            ("labels_moved", "label moved", "labels moved"),
            ("routes_set", "route set", "routes set"),
        ):
            if counts[key]:
                parts.append(f"{counts[key]} {one if counts[key] == 1 else many}")
        action = "create" if self.pipeline is None else "update"
        return f"{action} {self.label}" + (f": {', '.join(parts)}" if parts else "")


def _step_order_problems(listed: list[str], existing: dict[str, Step], problems: list[str]) -> None:
    # step_create appends and nothing moves a step, so the file can only keep the existing order
    # and add steps after it.
    problems.extend(
        f'steps: step "{slug}" exists but is not in the file; removing steps is not supported '
        "by import"
        for slug in existing
        if slug not in listed
    )
    kept = [slug for slug in listed if slug in existing]
    if kept != [slug for slug in existing if slug in kept]:
        problems.append(
            f"steps: existing steps must stay in their order ({', '.join(existing)}); "
            "reordering steps is not supported by import"
        )
    new = [index for index, slug in enumerate(listed) if slug not in existing]
    later = [slug for slug in listed[new[0] :] if slug in existing] if new else []
    if later:
        problems.append(
            f'steps[{new[0]}]: new step "{listed[new[0]]}" comes before existing step '
            f'"{later[0]}"; new steps are added after the existing ones'
        )


def _versions_compare(
    step: Step, prompts: list[dict[str, Any]], path: str, problems: list[str]
) -> int:
    """The step's last version number; versions the file changes or leaves out are problems."""
    existing = {version.number: version for version in step.prompt_versions.all()}
    top = max(existing, default=0)
    if len(prompts) < top:
        problems.append(
            f"{path}.prompts: versions {len(prompts) + 1} to {top} exist but are not in the "
            "file; prompt versions cannot be removed"
        )
    for index, prompt in enumerate(prompts):
        version = existing.get(prompt["number"])
        if version is None:
            continue
        if version.template != prompt["template"]:
            problems.append(
                f"{path}.prompts[{index}]: version {version.number} exists with a different "
                "template; add a new number instead"
            )
        elif not _same_json(version.parameters, prompt.get("parameters", {})):
            problems.append(
                f"{path}.prompts[{index}]: version {version.number} exists with different "
                "parameters; add a new number instead"
            )
    return top


def _step_plan(
    doc_step: dict[str, Any],
    path: str,
    step: Step | None,
    input_schema: dict | None,
    checked: _Checked,
    problems: list[str],
) -> StepChange:
    values = _settings(doc_step, Step, STEP_FIELDS)
    values.pop("slug")
    if values["kind"] == Step.Kind.CLASSIFY:
        values.pop("output_schema", None)
    else:
        values["labels"] = []
    prompts = doc_step["prompts"]
    labels_wanted = {
        PromptLabel.Name.PRODUCTION: doc_step["prompt_labels"]["production"],
        PromptLabel.Name.CANDIDATE: doc_step["prompt_labels"].get("candidate"),
    }
    route = [
        {
            "model": checked.models[entry["model"]],
            "min_input_chars": entry.get("min_input_chars"),
            "min_priority": entry.get("min_priority"),
        }
        for entry in doc_step.get("route", [])
    ]
    if step is None:
        if prompts[0].get("parameters"):
            # step_create writes the first version without parameters and cannot be told more.
            problems.append(
                f"{path}.prompts[0].parameters: a new step's first version is written without "
                "parameters; give them in version 2"
            )
        fields, top = values, 0
        labels = {name: number for name, number in labels_wanted.items() if number is not None}
        versions = list(prompts)
        route_change = route or None
    else:
        before = snapshot(step, STEP_FIELDS)
        fields = {k: v for k, v in values.items() if before[k] != _plain(v)}
        top = _versions_compare(step, prompts, path, problems)
        versions = [prompt for prompt in prompts if prompt["number"] > top]
        current = {label.name: label.version.number for label in step.prompt_labels.all()}
        labels = {
            name: number for name, number in labels_wanted.items() if current.get(name) != number
        }
        route_change = None
        wanted_route = [{**entry, "model": str(entry["model"])} for entry in route]
        if "route" in doc_step and wanted_route != route_describe(step.route.all()):
            route_change = route
            if not route:
                problems.append(
                    f"{path}.route: the step has a route and a route cannot be emptied; "
                    "list at least one model"
                )
    # Only a route being written must use active models: a model retired after it was routed
    # must not stop an unchanged file from importing.
    problems.extend(
        f'{path}.route[{index}].model: model "{entry["model"]}" is not active'
        for index, entry in enumerate(route_change or [])
        if not entry["model"].is_active
    )
    runs = set(labels_wanted.values())
    for index, prompt in enumerate(prompts):
        if prompt["number"] > top or prompt["number"] in runs:
            problems.extend(
                f"{path}.prompts[{index}].template: {message}"
                for message in template_check(
                    template=prompt["template"], input_schema=input_schema or None
                )
            )
    return StepChange(
        path=path,
        slug=doc_step["slug"],
        step=step,
        fields=fields,
        versions=versions,
        labels=labels,
        route=route_change,
    )


def _plan(doc: object, *, lock: bool) -> ImportPlan:
    checked = _check(doc)
    if checked.problems:
        raise ValidationError({"config": checked.problems})
    assert isinstance(doc, dict) and checked.client is not None
    section = doc["pipeline"]
    found = Pipeline.objects.filter(client=checked.client, slug=section["slug"])
    pipeline = (found.select_for_update() if lock else found).first()
    wanted = _settings(section, Pipeline, PIPELINE_FIELDS)
    wanted.pop("slug")
    if pipeline is None:
        fields, existing = wanted, {}
        input_schema = wanted.get("input_schema")
    else:
        before = snapshot(pipeline, PIPELINE_FIELDS)
        fields = {k: v for k, v in wanted.items() if before[k] != _plain(v)}
        input_schema = wanted.get("input_schema", pipeline.input_schema)
        existing = {
            step.slug: step
            for step in pipeline.steps.order_by("position").prefetch_related(
                "prompt_versions", "prompt_labels__version", "route__model__provider"
            )
        }
    problems: list[str] = []
    _step_order_problems([step["slug"] for step in doc["steps"]], existing, problems)
    steps = [
        _step_plan(
            doc_step,
            f"steps[{index}]",
            existing.get(doc_step["slug"]),
            input_schema,
            checked,
            problems,
        )
        for index, doc_step in enumerate(doc["steps"])
    ]
    if problems:
        raise ValidationError({"config": problems})
    return ImportPlan(
        client=checked.client,
        slug=section["slug"],
        pipeline=pipeline,
        pipeline_fields=fields,
        steps=steps,
    )


def pipeline_import_plan(*, doc: object) -> ImportPlan:
    """What importing `doc` would change, writing nothing; ValidationError({"config": [...]})
    with every problem of the document and of how it fits the existing pipeline."""
    return _plan(doc, lock=False)


@contextmanager
def _problems_at(path: str) -> Iterator[None]:
    # The plan checks what the services check, so this is a backstop: should a service still
    # refuse, the import fails as a whole with the path, like any other problem.
    try:
        yield
    except ValidationError as exc:
        if hasattr(exc, "error_dict"):
            messages = [f"{name}: {m}" for name, ms in exc.message_dict.items() for m in ms]
        else:
            messages = exc.messages
        raise ValidationError({"config": [f"{path}: {m}" for m in messages]}) from None


def _step_apply(*, pipeline: Pipeline, change: StepChange, actor: AbstractBaseUser | None) -> None:
    versions = change.versions
    if change.step is None:
        first, *versions = versions
        fields = dict(change.fields)
        step = step_create(
            pipeline=pipeline,
            name=fields.pop("name"),
            slug=change.slug,
            template=first["template"],
            actor=actor,
            **fields,
        )
    else:
        step = change.step
        if change.fields:
            step = step_update(step=step, actor=actor, **change.fields)
    for prompt in versions:
        version = prompt_version_create(
            step=step,
            template=prompt["template"],
            parameters=prompt.get("parameters", {}),
            change_note=prompt.get("change_note", ""),
            actor=actor,
        )
        if version.number != prompt["number"]:
            raise ValidationError(
                {"prompts": [f"version {prompt['number']} was written as {version.number}"]}
            )
    for label, number in change.labels.items():
        if number is None:
            prompt_label_remove(step=step, label=label, actor=actor)
        else:
            version = step.prompt_versions.get(number=number)
            prompt_label_move(step=step, label=label, version=version, actor=actor)
    if change.route is not None:
        route_set(step=step, entries=change.route, actor=actor)


@transaction.atomic
def pipeline_import(*, doc: dict, actor: AbstractBaseUser | None) -> Pipeline:
    """Create or update the pipeline `doc` describes, all or nothing, through the audited
    services; ValidationError({"config": [...]}) with every problem and nothing written if it
    cannot. An unchanged document writes nothing, not even an audit entry."""
    plan = _plan(doc, lock=True)
    if not plan.changed:
        assert plan.pipeline is not None
        return plan.pipeline
    with _problems_at("pipeline"):
        if plan.pipeline is None:
            pipeline = pipeline_create(
                client=plan.client, slug=plan.slug, actor=actor, **plan.pipeline_fields
            )
        elif plan.pipeline_fields:
            pipeline = pipeline_update(pipeline=plan.pipeline, actor=actor, **plan.pipeline_fields)
        else:
            pipeline = plan.pipeline
    for change in plan.steps:
        with _problems_at(change.path):
            _step_apply(pipeline=pipeline, change=change, actor=actor)
    audit_record(
        actor=actor,
        action="pipeline.import",
        obj=pipeline,
        client=pipeline.client,
        after=plan.counts,
    )
    return pipeline


def pipeline_import_yaml(*, text: str, actor: AbstractBaseUser | None) -> Pipeline:
    """pipeline_import of a YAML text, parsed safely; a syntax error is a ValidationError with
    its line and column."""
    return pipeline_import(doc=config_load(text=text), actor=actor)
