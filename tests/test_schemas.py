from __future__ import annotations

import copy

import pytest

from pipelines.schemas import SchemaError, schema_errors, schema_problems, schema_properties

INVOICE = {
    "type": "object",
    "properties": {
        "amount": {"type": "number"},
        "email": {"type": "string", "format": "email"},
        "due": {"type": "string", "format": "date"},
        "customer": {
            "type": "object",
            "properties": {"country": {"type": "string", "minLength": 2, "maxLength": 2}},
            "required": ["country"],
        },
        "lines": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"price": {"type": "number"}},
                "required": ["price"],
            },
        },
    },
    "required": ["amount"],
}


def messages(errors: list[SchemaError]) -> list[str]:
    return [str(error) for error in errors]


# schema_problems


def test_a_well_formed_object_schema_has_no_problems():
    assert schema_problems(INVOICE) == []


@pytest.mark.parametrize("schema", [None, [], "object", True, 3])
def test_a_schema_that_is_not_a_json_object_is_refused(schema):
    assert schema_problems(schema) == ["$: the schema must be a JSON object"]


def test_a_misspelled_type_is_reported_at_its_path_in_the_schema():
    schema = {"type": "object", "properties": {"amount": {"type": "nummber"}}}
    assert schema_problems(schema) == [
        "$.properties.amount.type: 'nummber' is not valid under any of the given schemas"
    ]


def test_every_metaschema_problem_is_reported_sorted_by_path():
    schema = {
        "type": "object",
        "required": "amount",
        "minProperties": -1,
        "properties": {"iban": {"type": "string", "pattern": "[A-Z"}},
    }
    assert schema_problems(schema) == [
        "$.minProperties: -1 is less than the minimum of 0",
        "$.properties.iban.pattern: '[A-Z' is not a 'regex'",
        "$.required: 'amount' is not of type 'array'",
    ]


@pytest.mark.parametrize("top_type", ["array", "string", ["object", "null"]])
def test_a_top_level_type_other_than_object_is_refused(top_type):
    assert schema_problems({"type": top_type}) == [
        '$.type: must be "object" because items and outputs are JSON objects'
    ]


def test_a_schema_without_a_top_level_type_is_refused():
    assert schema_problems({"properties": {"a": {"type": "string"}}}) == [
        '$.type: must be "object" because items and outputs are JSON objects'
    ]


def test_an_invalid_top_level_type_is_reported_once_not_twice():
    assert schema_problems({"type": "objekt"}) == [
        "$.type: 'objekt' is not valid under any of the given schemas"
    ]


def test_a_local_reference_that_resolves_is_fine():
    schema = {
        "type": "object",
        "$defs": {"money": {"type": "number", "minimum": 0}},
        "properties": {"amount": {"$ref": "#/$defs/money"}},
    }
    assert schema_problems(schema) == []


def test_a_local_reference_to_nothing_is_reported_where_it_is_written():
    schema = {"type": "object", "properties": {"amount": {"$ref": "#/$defs/money"}}}
    assert schema_problems(schema) == [
        '$.properties.amount.$ref: reference "#/$defs/money" points to nothing'
    ]


def test_a_remote_reference_is_refused_so_the_gate_never_fetches_urls():
    schema = {"type": "object", "properties": {"a": {"$ref": "https://example.com/a.json"}}}
    assert schema_problems(schema) == [
        "$.properties.a.$ref: only local references like #/$defs/name are allowed, "
        'got "https://example.com/a.json"'
    ]


def test_a_ref_key_inside_const_data_is_not_taken_for_a_reference():
    schema = {"type": "object", "properties": {"a": {"const": {"$ref": "nowhere"}}}}
    assert schema_problems(schema) == []


# schema_errors


def test_a_valid_instance_has_no_errors():
    instance = {
        "amount": 12.5,
        "email": "ops@example.com",
        "due": "2024-02-29",
        "customer": {"country": "DE"},
        "lines": [{"price": 1}, {"price": 2.5}],
    }
    assert schema_errors(schema=INVOICE, instance=instance) == []


def test_a_wrong_type_is_reported_with_its_path_and_reads_as_a_review_reason():
    errors = schema_errors(schema=INVOICE, instance={"amount": "abc"})
    assert errors == [SchemaError(path="$.amount", message="'abc' is not of type 'number'")]
    assert str(errors[0]) == "schema error at $.amount: 'abc' is not of type 'number'"


def test_a_missing_required_property_is_reported_at_the_root():
    assert messages(schema_errors(schema=INVOICE, instance={})) == [
        "schema error at $: 'amount' is a required property"
    ]


def test_a_non_object_instance_is_reported_at_the_root():
    assert messages(schema_errors(schema=INVOICE, instance=[1])) == [
        "schema error at $: [1] is not of type 'object'"
    ]


def test_errors_inside_nested_objects_and_arrays_carry_the_full_path():
    instance = {
        "amount": 1,
        "customer": {"country": "Germany"},
        "lines": [{"price": 1}, {"price": "x"}, {}],
    }
    assert messages(schema_errors(schema=INVOICE, instance=instance)) == [
        "schema error at $.customer.country: 'Germany' is too long",
        "schema error at $.lines[1].price: 'x' is not of type 'number'",
        "schema error at $.lines[2]: 'price' is a required property",
    ]


def test_formats_are_checked():
    instance = {"amount": 1, "email": "not-an-address", "due": "2024-02-30"}
    assert messages(schema_errors(schema=INVOICE, instance=instance)) == [
        "schema error at $.due: '2024-02-30' is not a 'date'",
        "schema error at $.email: 'not-an-address' is not a 'email'",
    ]


def test_array_indexes_sort_as_numbers_not_as_text():
    instance = {"amount": 1, "lines": [{"price": "x"} for _ in range(12)]}
    paths = [error.path for error in schema_errors(schema=INVOICE, instance=instance)]
    assert paths == [f"$.lines[{index}].price" for index in range(12)]


def test_errors_at_the_same_path_sort_by_message():
    schema = {
        "type": "object",
        "properties": {"code": {"type": "string", "minLength": 5, "pattern": "^[0-9]+$"}},
    }
    assert messages(schema_errors(schema=schema, instance={"code": "ab"})) == [
        "schema error at $.code: 'ab' does not match '^[0-9]+$'",
        "schema error at $.code: 'ab' is too short",
    ]


def test_the_root_sorts_before_its_properties():
    instance = {"customer": {}, "email": "nope"}
    assert [error.path for error in schema_errors(schema=INVOICE, instance=instance)] == [
        "$",
        "$.customer",
        "$.email",
    ]


def test_limit_keeps_the_first_errors_in_sorted_order():
    instance = {"amount": 1, "lines": [{"price": "x"} for _ in range(30)]}
    assert len(schema_errors(schema=INVOICE, instance=instance)) == 20
    errors = schema_errors(schema=INVOICE, instance=instance, limit=3)
    assert [error.path for error in errors] == [
        "$.lines[0].price",
        "$.lines[1].price",
        "$.lines[2].price",
    ]


def test_keys_that_are_not_plain_names_are_quoted_so_paths_stay_unambiguous():
    schema = {
        "type": "object",
        "properties": {"a.b": {"type": "number"}, "first name": {"type": "string"}},
    }
    assert [
        error.path for error in schema_errors(schema=schema, instance={"a.b": "x", "first name": 1})
    ] == [
        '$["a.b"]',
        '$["first name"]',
    ]


def test_equal_schemas_written_in_a_different_key_order_give_the_same_errors():
    reordered = dict(reversed(list(copy.deepcopy(INVOICE).items())))
    instance = {"amount": "abc"}
    assert schema_errors(schema=reordered, instance=instance) == schema_errors(
        schema=INVOICE, instance=instance
    )


def test_an_edited_schema_is_not_served_from_a_stale_cache():
    schema = copy.deepcopy(INVOICE)
    assert schema_errors(schema=schema, instance={"amount": 5}) == []
    schema["properties"]["amount"]["maximum"] = 1
    assert messages(schema_errors(schema=schema, instance={"amount": 5})) == [
        "schema error at $.amount: 5 is greater than the maximum of 1"
    ]


def test_an_unresolvable_reference_sends_to_review_instead_of_crashing():
    schema = {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}
    [error] = schema_errors(schema=schema, instance={"a": 1})
    assert error.path == "$"
    assert error.message.startswith("the schema has an unresolvable reference")


def test_schema_errors_are_frozen():
    error = SchemaError(path="$", message="x")
    with pytest.raises(AttributeError):
        error.path = "$.y"  # type: ignore[misc]


# schema_properties


def test_schema_properties_lists_top_level_names_sorted():
    assert schema_properties(INVOICE) == ["amount", "customer", "due", "email", "lines"]


def test_schema_properties_is_empty_when_none_are_declared():
    assert schema_properties({"type": "object"}) == []
