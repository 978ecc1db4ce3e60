"""JSON Schema helpers for step outputs: check an operator's schema, then validate outputs."""

from __future__ import annotations

import functools
import heapq
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

# Keys that read cleanly after a dot ("$" too, for schema keywords like $defs); anything else is
# quoted in brackets so a key such as "a.b" or "first name" cannot be mistaken for a nested path.
_PLAIN_KEY = re.compile(r"[A-Za-z_$][A-Za-z0-9_$-]*")

# Values under these keywords are data, not subschemas: a "$ref" inside them is not a reference.
_DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples"})

_BASE_URI = "urn:sluice:schema"

# Format checking on the metaschema too, so a broken "pattern" is reported when the schema is
# saved rather than crashing validation later.
_META_VALIDATOR = Draft202012Validator(
    Draft202012Validator.META_SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER
)


@dataclass(frozen=True)
class SchemaError:
    path: str
    message: str

    def __str__(self) -> str:
        return f"schema error at {self.path}: {self.message}"


def _json_path(parts: Iterable[object]) -> str:
    path = "$"
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(str(part)):
            path += f".{part}"
        else:
            path += f"[{json.dumps(str(part), ensure_ascii=False)}]"
    return path


def _sort_key(error: ValidationError) -> tuple[tuple[tuple[int, int, str], ...], str]:
    # Indexes compare as numbers so that lines[2] comes before lines[10].
    parts = tuple(
        (0, part, "") if isinstance(part, int) else (1, 0, str(part))
        for part in error.absolute_path
    )
    return parts, error.message


def _refs(node: object, parts: tuple[object, ...] = ()) -> Iterator[tuple[tuple[object, ...], str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield (*parts, key), value
            elif key not in _DATA_KEYWORDS:
                yield from _refs(value, (*parts, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _refs(value, (*parts, index))


def _ref_problems(schema: dict) -> list[str]:
    registry = Registry().with_resource(_BASE_URI, DRAFT202012.create_resource(schema))
    resolver = registry.resolver(base_uri=_BASE_URI)
    problems = []
    for parts, ref in _refs(schema):
        if not ref.startswith("#"):
            # Remote references would make the gate fetch URLs while validating outputs.
            problems.append(
                f"{_json_path(parts)}: only local references like #/$defs/name are allowed, "
                f"got {json.dumps(ref)}"
            )
            continue
        try:
            resolver.lookup(ref)
        except Unresolvable:
            problems.append(f"{_json_path(parts)}: reference {json.dumps(ref)} points to nothing")
    return problems


def schema_problems(schema: object) -> list[str]:
    """Problems with an operator-written output schema, each prefixed by its path; empty if fine."""
    if not isinstance(schema, dict):
        return ["$: the schema must be a JSON object"]
    errors = sorted(_META_VALIDATOR.iter_errors(schema), key=_sort_key)
    problems = [f"{_json_path(error.absolute_path)}: {error.message}" for error in errors]
    type_is_broken = any(list(error.absolute_path) == ["type"] for error in errors)
    if not type_is_broken and schema.get("type") != "object":
        problems.append('$.type: must be "object" because items and outputs are JSON objects')
    # References are only looked up in a well-formed schema; a malformed one fails in odd ways.
    if not errors:
        problems.extend(_ref_problems(schema))
    return problems


@functools.lru_cache(maxsize=256)
def _validator(schema_json: str) -> Draft202012Validator:
    return Draft202012Validator(
        json.loads(schema_json), format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def schema_errors(*, schema: dict, instance: object, limit: int = 20) -> list[SchemaError]:
    """Every way `instance` fails `schema`, sorted by path then message, at most `limit` of them."""
    validator = _validator(json.dumps(schema, sort_keys=True))
    try:
        errors = heapq.nsmallest(limit, validator.iter_errors(instance), key=_sort_key)
    except Unresolvable as exc:
        # A schema that never went through schema_problems must route to review, not crash.
        return [SchemaError(path="$", message=f"the schema has an unresolvable reference: {exc}")]
    return [
        SchemaError(path=_json_path(error.absolute_path), message=error.message) for error in errors
    ]


def schema_properties(schema: dict) -> list[str]:
    """The schema's top-level property names, sorted; empty when it declares none."""
    properties = schema.get("properties")
    return sorted(properties) if isinstance(properties, dict) else []
