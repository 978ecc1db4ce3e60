"""The review screen's forms: the model's output as fields generated from the step's output
contract (a classify step's labels as choices; one field per property of a generate step's
schema), read back into an output for `task_decide`; and the item's input as readable rows.
Pure: no ORM, no request."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

FIELD_PREFIX = "out:"
# Strings longer than this (or with a line break) get a text area rather than a line.
LONG_TEXT_CHARS = 80
_PLAIN_KEY = re.compile(r"[A-Za-z_$][A-Za-z0-9_$-]*")


def json_path(key: str | None) -> str:
    """The JSON path of a top-level key, written as the schema validator writes it."""
    if key is None:
        return "$"
    if _PLAIN_KEY.fullmatch(key):
        return f"$.{key}"
    return f"$[{json.dumps(key, ensure_ascii=False)}]"


@dataclass
class Choice:
    value: str
    label: str
    selected: bool = False


@dataclass
class OutputField:
    """One field of the output form. `widget` is label (radio choices), choice (select), text,
    textarea, number, integer, boolean or json; `key` None stands for the whole output."""

    key: str | None
    widget: str
    required: bool = False
    value: str = ""
    choices: list[Choice] = field(default_factory=list)
    description: str = ""
    type_name: str = ""
    errors: list[str] = field(default_factory=list)

    @property
    def path(self) -> str:
        return json_path(self.key)

    @property
    def name(self) -> str:
        return FIELD_PREFIX + (self.key if self.key is not None else "$")

    @property
    def label(self) -> str:
        return self.key if self.key is not None else "output (JSON)"

    @property
    def html_id(self) -> str:
        return "out-" + re.sub(r"[^A-Za-z0-9_-]", "_", self.key if self.key is not None else "all")


def _type_of(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "")
    return kind if isinstance(kind, str) else ""


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False)


def _field_for(key: str, schema: Mapping[str, Any], *, required: bool, value: Any) -> OutputField:
    kind = _type_of(schema)
    out = OutputField(
        key=key,
        widget="json",
        required=required,
        description=str(schema.get("description") or ""),
        type_name=kind or "JSON",
    )
    present = value is not None
    if isinstance(schema.get("enum"), list):
        out.widget, out.type_name = "choice", "one of"
        out.choices = [
            Choice(json.dumps(v), str(v), selected=present and v == value) for v in schema["enum"]
        ]
    elif kind == "string":
        text = value if isinstance(value, str) else _as_text(value)
        long = len(text) > LONG_TEXT_CHARS or "\n" in text or schema.get("maxLength", 0) > 200
        out.widget, out.value = ("textarea" if long else "text"), text
    elif kind in ("number", "integer"):
        out.widget, out.value = kind, _as_text(value)
    elif kind == "boolean":
        out.widget = "boolean"
        out.choices = [
            Choice("true", "true", selected=value is True),
            Choice("false", "false", selected=value is False),
        ]
    else:
        out.value = _as_text(value) if present else ""
    return out


def output_fields(
    *, kind: str, labels: Sequence[str], output_schema: Mapping[str, Any] | None, output: Any
) -> list[OutputField]:
    """The form of a step's output, filled with `output` (None: an empty form, as for a blind
    audit). Classify: the labels as choices. Generate: one field per schema property, with its
    type and whether it is required, then any other key of the output as JSON; a schema without
    properties gives one JSON field for the whole output."""
    values = output if isinstance(output, Mapping) else {}
    if kind == "classify":
        current = values.get("label")
        return [
            OutputField(
                key="label",
                widget="label",
                required=True,
                type_name="label",
                choices=[Choice(label, label, selected=label == current) for label in labels],
            )
        ]
    schema = output_schema or {}
    properties = schema.get("properties")
    if not isinstance(properties, Mapping) or not properties:
        whole = OutputField(key=None, widget="json", required=True, type_name="JSON object")
        whole.value = _as_text(output) if output is not None else ""
        return [whole]
    required = set(schema.get("required") or [])
    fields = [
        _field_for(
            key,
            prop if isinstance(prop, Mapping) else {},
            required=key in required,
            value=values.get(key),
        )
        for key, prop in properties.items()
    ]
    fields += [
        _field_for(key, {}, required=False, value=value)
        for key, value in values.items()
        if key not in properties
    ]
    return fields


def _number(raw: str) -> Any:
    text = raw.strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    try:
        number = float(text)
    except ValueError:
        return raw  # the schema check names the field and the type it wants
    return number if math.isfinite(number) else raw


def _parse(spec: OutputField, raw: str) -> tuple[bool, Any]:
    """(present, value) of one posted field; ValueError with a reason when it cannot be read."""
    if spec.widget in ("text", "textarea"):
        return (bool(raw) or spec.required), raw
    if not raw.strip():
        return False, None
    if spec.widget == "label":
        return True, raw
    if spec.widget in ("number", "integer"):
        return True, _number(raw)
    if spec.widget == "boolean":
        if raw not in ("true", "false"):
            raise ValueError("choose true or false")
        return True, raw == "true"
    try:
        return True, json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"is not valid JSON: {exc.msg} (line {exc.lineno})") from None


def output_read(
    fields: Sequence[OutputField], posted: Mapping[str, str], *, base: Any = None
) -> tuple[Any, dict[str, list[str]]]:
    """The output a person entered in the form, and the problems that keep it from being read
    (keyed by JSON path, like the schema check's). Also puts what they typed back in `fields`,
    so a refused form shows it again. `base`: an output whose other keys are kept."""
    errors: dict[str, list[str]] = {}
    if len(fields) == 1 and fields[0].key is None:
        spec = fields[0]
        raw = posted.get(spec.name, "")
        spec.value = raw
        try:
            present, value = _parse(spec, raw)
        except ValueError as exc:
            return None, {"$": [str(exc)]}
        return (value if present else None), errors
    output = dict(base) if isinstance(base, Mapping) else {}
    for spec in fields:
        raw = posted.get(spec.name, "")
        spec.value = raw
        for choice in spec.choices:
            choice.selected = choice.value == raw
        if spec.widget == "choice" and raw:
            try:
                raw_value = json.loads(raw)
            except json.JSONDecodeError:
                raw_value = raw
            output[spec.key] = raw_value
            continue
        try:
            present, value = _parse(spec, raw)
        except ValueError as exc:
            errors[spec.path] = [str(exc)]
            continue
        if present:
            output[spec.key] = value
        else:
            output.pop(spec.key, None)
            if spec.required:
                errors[spec.path] = ["This field is required."]
    return output, errors


def errors_place(
    fields: Sequence[OutputField], errors: Mapping[str, Sequence[str]]
) -> dict[str, list[str]]:
    """Put each error next to the field its JSON path names (nested paths go to their top-level
    field); returns the errors no field took (the form shows them above the fields)."""
    rest: dict[str, list[str]] = {}
    by_path = {spec.path: spec for spec in fields}
    for path, messages in errors.items():
        spec = by_path.get(path) or next(
            (
                s
                for s in fields
                if s.key is not None and path.startswith((s.path + ".", s.path + "["))
            ),
            None,
        )
        if spec is None:
            rest.setdefault(path, []).extend(messages)
        else:
            where = "" if path == spec.path else f"{path}: "
            spec.errors.extend(f"{where}{message}" for message in messages)
    return rest


@dataclass(frozen=True)
class InputRow:
    key: str
    text: str
    # text: a short value; long: wrapped prose; json: pretty-printed.
    kind: str


def input_rows(data: Any) -> list[InputRow]:
    """An item's input as key/value rows: long text wrapped, nested values as pretty JSON."""
    if not isinstance(data, Mapping):
        return [InputRow("input", _as_text(data), "json")]
    rows = []
    for key, value in data.items():
        if isinstance(value, str):
            long = len(value) > LONG_TEXT_CHARS or "\n" in value
            rows.append(InputRow(str(key), value, "long" if long else "text"))
        elif isinstance(value, Mapping | list):
            rows.append(InputRow(str(key), _as_text(value), "json"))
        else:
            rows.append(InputRow(str(key), json.dumps(value), "text"))
    return rows
