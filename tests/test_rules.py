from __future__ import annotations

import pytest

from pipelines.rules import RuleViolation, rule_describe, rules_check, rules_problems

REQUIRED = {"kind": "required", "field": "customer.country"}
ALLOWED = {"kind": "allowed", "field": "currency", "values": ["EUR", "USD"]}
RANGE = {"kind": "range", "field": "amount", "min": 0, "max": 10000}
REGEX = {"kind": "regex", "field": "iban", "pattern": "[A-Z]{2}[0-9]{2}[A-Z0-9]{10,30}"}

GOOD_OUTPUT = {
    "customer": {"country": "DE"},
    "currency": "EUR",
    "amount": 120.5,
    "iban": "DE89370400440532013000",
}


def broken(rules: list[dict], output: dict) -> list[str]:
    return [str(violation) for violation in rules_check(rules=rules, output=output)]


# rules_problems


def test_every_rule_kind_written_correctly_has_no_problems():
    rules = [
        REQUIRED,
        ALLOWED,
        RANGE,
        REGEX,
        {"kind": "range", "field": "amount", "min": 0},
        {"kind": "range", "field": "amount", "max": 9.5},
        {"kind": "range", "field": "amount", "min": 3, "max": 3},
        {"kind": "allowed", "field": "flag", "values": [True, None, 1, "x"]},
    ]
    assert rules_problems(rules) == []


def test_an_empty_rule_list_is_fine():
    assert rules_problems([]) == []


@pytest.mark.parametrize("rules", [None, {"kind": "required", "field": "a"}, "required a"])
def test_rules_that_are_not_a_list_are_refused(rules):
    assert rules_problems(rules) == ["rules must be a list"]


def test_a_rule_that_is_not_an_object_is_named_by_position():
    assert rules_problems([REQUIRED, "amount required"]) == [
        'rule 2: must be an object like {"kind": "required", "field": "amount"}'
    ]


def test_an_unknown_kind_lists_the_kinds_to_use():
    assert rules_problems([REQUIRED, {"kind": "between", "field": "amount"}]) == [
        'rule 2: unknown kind "between" (use required, allowed, range, regex)'
    ]


def test_a_missing_kind_is_an_unknown_kind():
    assert rules_problems([{"field": "amount"}]) == [
        "rule 1: unknown kind null (use required, allowed, range, regex)"
    ]


@pytest.mark.parametrize("field", [None, "", 5, "customer..country", ".a", "a.", "a b", "1st"])
def test_a_field_that_is_not_a_dotted_path_is_refused(field):
    assert rules_problems([{"kind": "required", "field": field}]) == [
        'rule 1: "field" must be a dotted path like customer.country'
    ]


def test_a_rule_without_a_field_is_refused():
    assert rules_problems([{"kind": "required"}]) == [
        'rule 1: "field" must be a dotted path like customer.country'
    ]


def test_unknown_keys_are_refused_with_the_keys_that_kind_takes():
    assert rules_problems([{"kind": "required", "field": "a", "values": ["x"]}]) == [
        'rule 1: unknown key "values" for a required rule (use kind, field)'
    ]


@pytest.mark.parametrize("values", [None, [], "EUR", {"EUR": 1}])
def test_allowed_needs_a_non_empty_list_of_values(values):
    rules = [REQUIRED, REQUIRED, {"kind": "allowed", "field": "currency", "values": values}]
    assert rules_problems(rules) == ['rule 3: "values" must be a non-empty list']


def test_allowed_values_must_be_scalars():
    assert rules_problems([{"kind": "allowed", "field": "a", "values": ["x", ["y"]]}]) == [
        'rule 1: "values" may only hold strings, numbers, booleans or null'
    ]


def test_range_needs_at_least_one_bound():
    assert rules_problems([{"kind": "range", "field": "amount"}]) == [
        'rule 1: give "min", "max" or both'
    ]


def test_range_with_min_greater_than_max_is_refused():
    assert rules_problems([{"kind": "range", "field": "amount", "min": 5, "max": 1}]) == [
        "rule 1: min 5 is greater than max 1"
    ]


@pytest.mark.parametrize(
    ("bound", "shown"), [("5", '"5"'), (True, "true"), (None, "null"), (float("nan"), "NaN")]
)
def test_range_bounds_must_be_finite_numbers(bound, shown):
    assert rules_problems([{"kind": "range", "field": "amount", "max": bound}]) == [
        f'rule 1: "max" must be a finite number, got {shown}'
    ]


def test_an_invalid_regular_expression_is_refused_with_the_reason():
    [problem] = rules_problems([{"kind": "regex", "field": "iban", "pattern": "[A-Z"}])
    assert problem.startswith("rule 1: invalid regular expression: ")
    assert "unterminated character set" in problem


@pytest.mark.parametrize("pattern", [None, "", 7])
def test_a_regex_rule_needs_a_non_empty_pattern_string(pattern):
    assert rules_problems([{"kind": "regex", "field": "iban", "pattern": pattern}]) == [
        'rule 1: "pattern" must be a non-empty string'
    ]


def test_a_regex_pattern_longer_than_500_characters_is_refused():
    assert rules_problems([{"kind": "regex", "field": "a", "pattern": "a" * 500}]) == []
    assert rules_problems([{"kind": "regex", "field": "a", "pattern": "a" * 501}]) == [
        'rule 1: "pattern" is 501 characters; keep it to 500'
    ]


def test_several_problems_in_one_rule_are_all_reported():
    assert rules_problems([{"kind": "range", "field": "a b", "min": 2, "max": 1, "step": 1}]) == [
        'rule 1: unknown key "step" for a range rule (use kind, field, min, max)',
        'rule 1: "field" must be a dotted path like customer.country',
        "rule 1: min 2 is greater than max 1",
    ]


# rule_describe


@pytest.mark.parametrize(
    ("rule", "label"),
    [
        ({"kind": "required", "field": "currency"}, "currency required"),
        (ALLOWED, "currency in EUR, USD"),
        ({"kind": "allowed", "field": "paid", "values": [True, None, 3]}, "paid in true, null, 3"),
        (RANGE, "amount between 0 and 10000"),
        ({"kind": "range", "field": "amount", "min": 0}, "amount ≥ 0"),
        ({"kind": "range", "field": "amount", "max": 10000}, "amount ≤ 10000"),
        ({"kind": "range", "field": "rate", "min": 0.5, "max": 1.5}, "rate between 0.5 and 1.5"),
        (REGEX, "iban matches /[A-Z]{2}[0-9]{2}[A-Z0-9]{10,30}/"),
    ],
)
def test_describe_gives_the_human_label(rule, label):
    assert rule_describe(rule) == label


# rules_check


def test_an_output_that_passes_every_kind_has_no_violations():
    assert rules_check(rules=[REQUIRED, ALLOWED, RANGE, REGEX], output=GOOD_OUTPUT) == []


def test_no_rules_means_no_violations():
    assert rules_check(rules=[], output={}) == []


def test_a_missing_nested_field_breaks_required():
    violations = rules_check(rules=[REQUIRED], output={"customer": {}})
    assert violations == [
        RuleViolation(
            rule="customer.country required", field="customer.country", message="field is missing"
        )
    ]
    assert str(violations[0]) == 'rule "customer.country required" broken: field is missing'


def test_a_path_through_a_non_object_counts_as_missing():
    assert broken([REQUIRED], {"customer": "DE"}) == [
        'rule "customer.country required" broken: field is missing'
    ]


def test_required_is_broken_by_null():
    assert broken([REQUIRED], {"customer": {"country": None}}) == [
        'rule "customer.country required" broken: got null'
    ]


@pytest.mark.parametrize("value", ["", 0, False, [], {}])
def test_required_accepts_any_present_non_null_value(value):
    assert broken([REQUIRED], {"customer": {"country": value}}) == []


def test_a_value_outside_allowed_is_quoted_as_json():
    assert broken([ALLOWED], {"currency": "GBP"}) == [
        'rule "currency in EUR, USD" broken: got "GBP"'
    ]


def test_allowed_does_not_confuse_booleans_with_numbers():
    rule = {"kind": "allowed", "field": "n", "values": [0, 1]}
    assert broken([rule], {"n": 1.0}) == []
    assert broken([rule], {"n": True}) == ['rule "n in 0, 1" broken: got true']
    flag = {"kind": "allowed", "field": "f", "values": [True]}
    assert broken([flag], {"f": 1}) == ['rule "f in true" broken: got 1']


def test_allowed_can_list_null():
    rule = {"kind": "allowed", "field": "note", "values": ["ok", None]}
    assert broken([rule], {"note": None}) == []


@pytest.mark.parametrize("amount", [0, 10000, 5.5])
def test_range_accepts_values_within_inclusive_bounds(amount):
    assert broken([RANGE], {"amount": amount}) == []


@pytest.mark.parametrize(("amount", "shown"), [(-1, "-1"), (10000.01, "10000.01")])
def test_range_rejects_values_outside_the_bounds(amount, shown):
    assert broken([RANGE], {"amount": amount}) == [
        f'rule "amount between 0 and 10000" broken: got {shown}'
    ]


def test_a_one_sided_range_checks_only_its_bound():
    at_least = {"kind": "range", "field": "amount", "min": 0}
    at_most = {"kind": "range", "field": "amount", "max": 10}
    assert broken([at_least], {"amount": 10**9}) == []
    assert broken([at_least], {"amount": -0.5}) == ['rule "amount ≥ 0" broken: got -0.5']
    assert broken([at_most], {"amount": -(10**9)}) == []
    assert broken([at_most], {"amount": 11}) == ['rule "amount ≤ 10" broken: got 11']


@pytest.mark.parametrize(
    ("amount", "shown"), [("abc", '"abc"'), ("5", '"5"'), (True, "true"), (None, "null")]
)
def test_range_on_something_that_is_not_a_number_says_so(amount, shown):
    assert broken([RANGE], {"amount": amount}) == [
        f'rule "amount between 0 and 10000" broken: got {shown}, not a number'
    ]


def test_range_rejects_nan():
    assert broken([RANGE], {"amount": float("nan")}) == [
        'rule "amount between 0 and 10000" broken: got NaN'
    ]


def test_regex_must_match_the_whole_value():
    assert broken([REGEX], {"iban": "DE89370400440532013000"}) == []
    label = "iban matches /[A-Z]{2}[0-9]{2}[A-Z0-9]{10,30}/"
    assert broken([REGEX], {"iban": "xx DE89370400440532013000"}) == [
        f'rule "{label}" broken: got "xx DE89370400440532013000"'
    ]
    assert broken([REGEX], {"iban": "DE89370400440532013000 "}) == [
        f'rule "{label}" broken: got "DE89370400440532013000 "'
    ]


def test_regex_on_something_that_is_not_a_string_says_so():
    rule = {"kind": "regex", "field": "zip", "pattern": "[0-9]{5}"}
    assert broken([rule], {"zip": 12345}) == [
        'rule "zip matches /[0-9]{5}/" broken: got 12345, not a string'
    ]


def test_a_missing_field_breaks_every_rule_that_names_it():
    assert broken([REQUIRED, ALLOWED, RANGE, REGEX], {}) == [
        'rule "customer.country required" broken: field is missing',
        'rule "currency in EUR, USD" broken: field is missing',
        'rule "amount between 0 and 10000" broken: field is missing',
        f'rule "{rule_describe(REGEX)}" broken: field is missing',
    ]


def test_violations_come_back_in_rule_order_with_their_fields():
    output = {**GOOD_OUTPUT, "currency": "GBP", "amount": 20000}
    violations = rules_check(rules=[RANGE, REQUIRED, ALLOWED], output=output)
    assert [violation.field for violation in violations] == ["amount", "currency"]


def test_dotted_paths_reach_deeply_nested_values():
    rule = {"kind": "allowed", "field": "a.b.c", "values": ["yes"]}
    assert broken([rule], {"a": {"b": {"c": "yes"}}}) == []
    assert broken([rule], {"a": {"b": {"c": "no"}}}) == ['rule "a.b.c in yes" broken: got "no"']


def test_a_dotted_key_is_not_read_as_a_flat_key():
    assert broken([REQUIRED], {"customer.country": "DE"}) == [
        'rule "customer.country required" broken: field is missing'
    ]


def test_a_huge_got_value_is_shortened_in_the_message():
    [violation] = rules_check(rules=[ALLOWED], output={"currency": "X" * 1000})
    assert violation.message.startswith('got "XXX')
    assert violation.message.endswith("…")
    assert len(violation.message) < 220


def test_violations_are_frozen():
    violation = RuleViolation(rule="a required", field="a", message="field is missing")
    with pytest.raises(AttributeError):
        violation.message = "x"  # type: ignore[misc]
