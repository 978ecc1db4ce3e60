"""Declarative business rules that a step's output must pass before it leaves the gate.

A rule is a plain dict (stored as JSON, exported to YAML), one of:
    {"kind": "required", "field": "customer.country"}
    {"kind": "allowed", "field": "currency", "values": ["EUR", "USD"]}
    {"kind": "range", "field": "amount", "min": 0, "max": 10000}   (min or max may be omitted)
    {"kind": "regex", "field": "iban", "pattern": "[A-Z]{2}[0-9]{2}[A-Z0-9]{10,30}"}
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

KINDS = ("required", "allowed", "range", "regex")

_KEYS = {
    "required": ("kind", "field"),
    "allowed": ("kind", "field", "values"),
    "range": ("kind", "field", "min", "max"),
    "regex": ("kind", "field", "pattern"),
}

_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*")

# Long patterns are where catastrophic backtracking hides; a cap keeps rules readable and simple.
MAX_PATTERN_LENGTH = 500

# A got-value is quoted in a review reason; a whole nested object there would drown the point.
_MAX_SHOWN = 200

_MISSING = object()


@dataclass(frozen=True)
class RuleViolation:
    rule: str
    field: str
    message: str

    def __str__(self) -> str:
        return f'rule "{self.rule}" broken: {self.message}'


def _show(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False, default=repr)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 1] + "…"


def _is_number(value: object) -> bool:
    # JSON true/false are not amounts, even though Python treats bool as an int.
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_scalar(value: object) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _same(left: object, right: object) -> bool:
    # Python says True == 1; an allowed list of [0, 1] must not accept false/true.
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    return left == right


def _rule_problems(rule: object) -> list[str]:
    if not isinstance(rule, dict):
        return ['must be an object like {"kind": "required", "field": "amount"}']
    kind = rule.get("kind")
    if kind not in KINDS:
        return [f"unknown kind {_show(kind)} (use {', '.join(KINDS)})"]
    problems = [
        f"unknown key {_show(key)} for a {kind} rule (use {', '.join(_KEYS[kind])})"
        for key in rule
        if key not in _KEYS[kind]
    ]
    field = rule.get("field")
    if not isinstance(field, str) or not _FIELD.fullmatch(field):
        problems.append('"field" must be a dotted path like customer.country')
    if kind == "allowed":
        values = rule.get("values")
        if not isinstance(values, list) or not values:
            problems.append('"values" must be a non-empty list')
        elif not all(_is_scalar(value) for value in values):
            problems.append('"values" may only hold strings, numbers, booleans or null')
    elif kind == "range":
        problems.extend(_range_problems(rule))
    elif kind == "regex":
        problems.extend(_pattern_problems(rule.get("pattern")))
    return problems


def _range_problems(rule: dict) -> list[str]:
    if "min" not in rule and "max" not in rule:
        return ['give "min", "max" or both']
    problems = [
        f'"{bound}" must be a finite number, got {_show(rule[bound])}'
        for bound in ("min", "max")
        if bound in rule and not (_is_number(rule[bound]) and math.isfinite(rule[bound]))
    ]
    if not problems and "min" in rule and "max" in rule and rule["min"] > rule["max"]:
        problems.append(f"min {_show(rule['min'])} is greater than max {_show(rule['max'])}")
    return problems


def _pattern_problems(pattern: object) -> list[str]:
    if not isinstance(pattern, str) or not pattern:
        return ['"pattern" must be a non-empty string']
    if len(pattern) > MAX_PATTERN_LENGTH:
        return [f'"pattern" is {len(pattern)} characters; keep it to {MAX_PATTERN_LENGTH}']
    try:
        re.compile(pattern)
    except re.error as exc:
        return [f"invalid regular expression: {exc}"]
    return []


def rules_problems(rules: object) -> list[str]:
    """Configuration problems in a rule list, each naming its rule by 1-based position."""
    if not isinstance(rules, list):
        return ["rules must be a list"]
    return [
        f"rule {position}: {problem}"
        for position, rule in enumerate(rules, start=1)
        for problem in _rule_problems(rule)
    ]


def rule_describe(rule: dict) -> str:
    """The human label of a valid rule, such as `currency in EUR, USD`."""
    field, kind = rule["field"], rule["kind"]
    if kind == "required":
        return f"{field} required"
    if kind == "allowed":
        shown = (value if isinstance(value, str) else _show(value) for value in rule["values"])
        return f"{field} in {', '.join(shown)}"
    if kind == "range":
        if "min" in rule and "max" in rule:
            return f"{field} between {_show(rule['min'])} and {_show(rule['max'])}"
        if "min" in rule:
            return f"{field} ≥ {_show(rule['min'])}"
        return f"{field} ≤ {_show(rule['max'])}"
    return f"{field} matches /{rule['pattern']}/"


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _lookup(output: Mapping, field: str) -> object:
    value: object = output
    for part in field.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _broken(rule: dict, value: object) -> str | None:
    kind = rule["kind"]
    if value is _MISSING:
        return "field is missing"
    if kind == "required":
        # A model that answers null has not supplied the field, whatever the key says.
        return "got null" if value is None else None
    if kind == "allowed":
        return (
            None
            if any(_same(value, allowed) for allowed in rule["values"])
            else f"got {_show(value)}"
        )
    if kind == "range":
        if not _is_number(value):
            return f"got {_show(value)}, not a number"
        # Written as negations so that NaN, which compares false with everything, fails.
        too_low = "min" in rule and not value >= rule["min"]
        too_high = "max" in rule and not value <= rule["max"]
        return f"got {_show(value)}" if too_low or too_high else None
    if not isinstance(value, str):
        return f"got {_show(value)}, not a string"
    return None if _compiled(rule["pattern"]).fullmatch(value) else f"got {_show(value)}"


def rules_check(*, rules: list[dict], output: Mapping) -> list[RuleViolation]:
    """Every rule the output breaks, in rule order; rules must already pass rules_problems."""
    violations = []
    for rule in rules:
        message = _broken(rule, _lookup(output, rule["field"]))
        if message is not None:
            violations.append(
                RuleViolation(rule=rule_describe(rule), field=rule["field"], message=message)
            )
    return violations
