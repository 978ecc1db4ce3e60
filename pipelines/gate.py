"""The gate a step's output must pass: valid against the output schema, every business rule
kept, confidence at or above the threshold. Pure: the engine and the "try it" panel share it."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pipelines.rules import rules_check
from pipelines.schemas import schema_errors


@dataclass(frozen=True)
class GateVerdict:
    accepted: bool
    # Why it was held, most fundamental first: schema, then rules, then confidence.
    reasons: tuple[str, ...] = field(default_factory=tuple)

    @property
    def summary(self) -> str:
        return "accepted" if self.accepted else "; ".join(self.reasons)


def gate_evaluate(
    *,
    output: Mapping[str, Any],
    confidence: float | None,
    threshold: Decimal | float,
    output_schema: Mapping[str, Any] | None,
    rules: Sequence[Mapping[str, Any]],
) -> GateVerdict:
    """Decide whether an output is accepted, and if not, every reason it is held."""
    reasons: list[str] = []
    if output_schema:
        reasons.extend(
            str(error)
            for error in schema_errors(schema=dict(output_schema), instance=output, limit=5)
        )
    if rules and isinstance(output, Mapping):
        reasons.extend(
            str(violation) for violation in rules_check(rules=list(rules), output=output)
        )
    limit = float(threshold)
    if confidence is None:
        if limit > 0:
            reasons.append("no confidence from the model")
    elif confidence < limit:
        # Two places read best; a third when two would print "0.80 < 0.80".
        places = 2 if f"{confidence:.2f}" != f"{limit:.2f}" else 3
        reasons.append(f"low confidence {confidence:.{places}f} < {limit:.{places}f}")
    return GateVerdict(accepted=not reasons, reasons=tuple(reasons))


def input_text(data: Mapping[str, Any]) -> str:
    """The text a local classifier reads from an item: its string fields in key order, and any
    other field as JSON, one per line."""
    parts = []
    for key in sorted(data):
        value = data[key]
        parts.append(value if isinstance(value, str) else json.dumps(value, sort_keys=True))
    return "\n".join(parts)


# What a client (or an integrator over the API) reads about an error: the class and what it
# means for the item, never a provider's raw text, host names or internal addresses.
PUBLIC_ERROR_MESSAGES = {
    "input": "The item's data does not fit this pipeline's input; it will not be retried.",
    "transient": "The model provider did not answer in time; the item is retried automatically.",
    "provider_limit": "The model provider's limit was reached; the item waits and resumes.",
    "processing": "The model's answer could not be used; a person will review the item.",
    "system": "The pipeline needs attention from its operator; the item is kept and resumes.",
}


def public_error_message(error_class: str, message: str) -> str:
    """The error as a client may see it. Input errors stay precise (they are about the
    client's own data); the others say what happens next."""
    if error_class == "input":
        return message
    return PUBLIC_ERROR_MESSAGES.get(error_class, "The item could not be processed.")
