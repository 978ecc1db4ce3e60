"""Operator-written prompt templates: checked against a pipeline's input schema, rendered in a
sandbox that sees only the item's data."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

from jinja2 import StrictUndefined, Template, meta
from jinja2.exceptions import SecurityError, TemplateError, TemplateSyntaxError
from jinja2.runtime import missing
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_TEMPLATE_CHARS = 100_000
MAX_RENDERED_CHARS = 200_000
# Integer powers grow without bound (2 ** 10 ** 9 pins a worker for minutes); no prompt needs more.
_MAX_EXPONENT = 1_000
# Jinja's frames are rewritten to point at the template; this is their filename for from_string().
_TEMPLATE_FILENAME = "<template>"


class PromptTemplateError(Exception):
    """A template that cannot be parsed or rendered, with the template line when known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message, line)
        self.message = message
        self.line = line

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line is not None else self.message


class _Undefined(StrictUndefined):
    # Jinja says 'amount' is undefined; operators read messages in the UI, where double quotes
    # match how every other Sluice message names a field.
    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        if self._undefined_hint is None and self._undefined_obj is missing:
            return f'"{self._undefined_name}" is undefined'
        return super()._undefined_message


class _PromptEnvironment(ImmutableSandboxedEnvironment):
    # The sandbox stops escapes but not allocation: 'x' * 10 ** 9 would build a gigabyte before
    # the output cap could see it, so repetition and integer powers are bounded up front.
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for sequence, count in ((left, right), (right, left)):
                if (
                    isinstance(sequence, str | list | tuple)
                    and isinstance(count, int)
                    and len(sequence) * count > MAX_RENDERED_CHARS
                ):
                    raise SecurityError("repeating a value that many times")
        elif (
            operator == "**"
            and isinstance(left, int)
            and isinstance(right, int)
            and abs(right) > _MAX_EXPONENT
        ):
            raise SecurityError(f"an exponent above {_MAX_EXPONENT}")
        return super().call_binop(context, operator, left, right)


def _tojson(value: Any, indent: int | None = None) -> str:
    # Jinja's tojson escapes <, >, & and ' for HTML; prompts are not HTML and a model should see
    # "a < b" as written, not "a \u003c b".
    return json.dumps(value, ensure_ascii=False, sort_keys=True, indent=indent)


_ENV = _PromptEnvironment(
    undefined=_Undefined,
    autoescape=False,
    keep_trailing_newline=True,
)
# Templates see the item's data and nothing else; also keeps template_variables() honest, since a
# global such as range would otherwise be usable yet reported as missing from the schema.
_ENV.globals.clear()
_ENV.filters["tojson"] = _tojson


def _refuse_oversized(template: str) -> None:
    if len(template) > MAX_TEMPLATE_CHARS:
        raise PromptTemplateError(
            f"template is longer than {MAX_TEMPLATE_CHARS} characters ({len(template)})"
        )


def _syntax_error(exc: TemplateSyntaxError) -> PromptTemplateError:
    return PromptTemplateError(exc.message or str(exc), exc.lineno)


def _template_line(exc: BaseException) -> int | None:
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == _TEMPLATE_FILENAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


@functools.lru_cache(maxsize=512)
def _compile(template: str) -> Template:
    try:
        return _ENV.from_string(template)
    except TemplateSyntaxError as exc:
        raise _syntax_error(exc) from exc


def template_variables(template: str) -> set[str]:
    """Return the top-level variable names the template reads; PromptTemplateError if invalid."""
    _refuse_oversized(template)
    try:
        ast = _ENV.parse(template)
    except TemplateSyntaxError as exc:
        raise _syntax_error(exc) from exc
    return set(meta.find_undeclared_variables(ast))


def template_check(*, template: str, input_schema: dict | None) -> list[str]:
    """Return the template's problems (syntax, variables the schema lacks); empty when fine."""
    try:
        used = template_variables(template)
    except PromptTemplateError as exc:
        return [str(exc)]
    properties = (input_schema or {}).get("properties")
    if not isinstance(properties, Mapping):
        return []
    declared = sorted(properties)
    has = ", ".join(declared) if declared else "no properties"
    return [
        f'variable "{name}" is not in the input schema (it has: {has})'
        for name in sorted(used)
        if name not in properties
    ]


def render_prompt(*, template: str, data: Mapping[str, Any]) -> str:
    """Render the template with only the item's data as variables; PromptTemplateError if not."""
    _refuse_oversized(template)
    compiled = _compile(template)
    parts: list[str] = []
    size = 0
    try:
        # Streamed so a runaway loop stops at the cap instead of building the whole output.
        for chunk in compiled.generate(dict(data)):
            size += len(chunk)
            if size > MAX_RENDERED_CHARS:
                raise PromptTemplateError(
                    f"rendered prompt is longer than {MAX_RENDERED_CHARS} characters"
                )
            parts.append(chunk)
    except SecurityError as exc:
        message = str(exc).rstrip(".")
        raise PromptTemplateError(
            f"not allowed in a template: {message}", _template_line(exc)
        ) from exc
    except TemplateError as exc:
        raise PromptTemplateError(exc.message or str(exc), _template_line(exc)) from exc
    except (ArithmeticError, LookupError, TypeError, ValueError, RecursionError) as exc:
        # Mistakes in the template's own expressions ({{ 1 / 0 }}, {{ text + 1 }}); the caller
        # needs one exception type to mark the item failed with a readable reason.
        raise PromptTemplateError(f"{type(exc).__name__}: {exc}", _template_line(exc)) from exc
    return "".join(parts)
