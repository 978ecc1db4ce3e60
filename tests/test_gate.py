from __future__ import annotations

from decimal import Decimal

from pipelines.gate import gate_evaluate, input_text

SCHEMA = {
    "type": "object",
    "properties": {"total": {"type": "number"}, "currency": {"type": "string"}},
    "required": ["total", "currency"],
}
RULES = [{"kind": "allowed", "field": "currency", "values": ["EUR", "USD"]}]


def test_valid_confident_output_is_accepted():
    verdict = gate_evaluate(
        output={"total": 12.5, "currency": "EUR"},
        confidence=0.93,
        threshold=Decimal("0.80"),
        output_schema=SCHEMA,
        rules=RULES,
    )
    assert verdict.accepted and verdict.summary == "accepted"


def test_low_confidence_is_held_with_both_numbers():
    verdict = gate_evaluate(
        output={"total": 1, "currency": "USD"},
        confidence=0.62,
        threshold=Decimal("0.80"),
        output_schema=SCHEMA,
        rules=RULES,
    )
    assert not verdict.accepted
    assert verdict.reasons == ("low confidence 0.62 < 0.80",)


def test_confidence_exactly_at_the_threshold_is_accepted():
    verdict = gate_evaluate(
        output={"total": 1, "currency": "USD"},
        confidence=0.8,
        threshold=Decimal("0.800"),
        output_schema=SCHEMA,
        rules=RULES,
    )
    assert verdict.accepted


def test_schema_errors_and_broken_rules_are_each_reasons_in_order():
    verdict = gate_evaluate(
        output={"total": "abc", "currency": "GBP"},
        confidence=0.99,
        threshold=0.5,
        output_schema=SCHEMA,
        rules=RULES,
    )
    assert not verdict.accepted
    assert verdict.reasons[0].startswith("schema error at $.total")
    assert verdict.reasons[1] == 'rule "currency in EUR, USD" broken: got "GBP"'


def test_missing_confidence_is_held_unless_the_threshold_is_zero():
    args = {"output": {"total": 1, "currency": "EUR"}, "output_schema": SCHEMA, "rules": RULES}
    assert not gate_evaluate(confidence=None, threshold=0.5, **args).accepted
    assert gate_evaluate(confidence=None, threshold=0, **args).accepted


def test_input_text_reads_string_fields_in_key_order_and_json_for_the_rest():
    assert input_text({"subject": "Refund", "body": "Charged twice", "n": 2}) == (
        "Charged twice\n2\nRefund"
    )


def test_a_near_miss_is_shown_with_enough_places_to_see_it():
    verdict = gate_evaluate(
        output={"total": 1, "currency": "EUR"},
        confidence=0.799,
        threshold=Decimal("0.800"),
        output_schema=SCHEMA,
        rules=RULES,
    )
    assert verdict.reasons == ("low confidence 0.799 < 0.800",)
