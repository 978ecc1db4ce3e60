"""Checking a person's answer against a step's output contract. Pure: no ORM."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pipelines.schemas import schema_errors


def output_problems(
    *,
    kind: str,
    labels: Sequence[str],
    output_schema: Mapping[str, Any] | None,
    output: Any,
) -> dict[str, list[str]]:
    """Every way `output` breaks the step's contract, keyed by JSON path ("$.amount"); empty
    when it is valid. A classify step's label must be one of its labels."""
    if not isinstance(output, Mapping):
        return {"$": ["must be a JSON object"]}
    problems: dict[str, list[str]] = {}
    if kind == "classify":
        label = output.get("label")
        if label not in labels:
            problems["$.label"] = [
                "must be one of the step's labels: " + ", ".join(str(x) for x in labels)
            ]
    if output_schema:
        for error in schema_errors(schema=dict(output_schema), instance=dict(output)):
            if error.path == "$.label" and "$.label" in problems:
                continue  # the schema's enum says the same as the labels, less clearly
            problems.setdefault(error.path, []).append(error.message)
    return problems


def outputs_agree(person: Any, model: Any) -> bool | None:
    """Whether a person's answer is the model's (None when the model gave none). JSON objects
    compare by value, whatever their key order."""
    if model is None:
        return None
    return person == model
