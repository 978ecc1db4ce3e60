from __future__ import annotations

import json
from types import MappingProxyType

import pytest

from pipelines.templating import (
    MAX_RENDERED_CHARS,
    MAX_TEMPLATE_CHARS,
    PromptTemplateError,
    _compile,
    render_prompt,
    template_check,
    template_variables,
)

SCHEMA = {
    "type": "object",
    "properties": {"text": {"type": "string"}, "currency": {"type": "string"}},
}


# Rendering


def test_it_renders_variables_and_filters():
    out = render_prompt(
        template="{{ text | upper }} / {{ nickname | default('n/a') }} / {{ tags | join(', ') }}",
        data={"text": "refund please", "tags": ["a", "b"]},
    )
    assert out == "REFUND PLEASE / n/a / a, b"


def test_it_renders_a_nested_dict_as_json_without_html_escaping():
    data = {"order": {"id": 7, "lines": [{"sku": "A&B", "qty": 2}], "note": "x < y"}}
    out = render_prompt(template="Order: {{ order | tojson }}", data=data)
    assert out.startswith("Order: ")
    assert json.loads(out.removeprefix("Order: ")) == data["order"]
    assert "x < y" in out and "A&B" in out


def test_it_loops_over_a_list_field_with_the_loop_variable():
    out = render_prompt(
        template="{% for line in lines %}{{ loop.index }}. {{ line.sku }}\n{% endfor %}",
        data={"lines": [{"sku": "A"}, {"sku": "B"}]},
    )
    assert out == "1. A\n2. B\n"


def test_it_keeps_the_trailing_newline_and_does_not_html_escape():
    out = render_prompt(template="Say: {{ text }}\n", data={"text": "<b>Tom & Jerry</b>"})
    assert out == "Say: <b>Tom & Jerry</b>\n"


def test_it_accepts_any_mapping_as_data():
    assert render_prompt(template="{{ a }}", data=MappingProxyType({"a": 1})) == "1"


def test_it_raises_naming_the_undefined_variable_and_its_line():
    with pytest.raises(PromptTemplateError) as caught:
        render_prompt(template="Dear {{ name }},\n\nYou owe {{ amount }}.", data={"name": "Ann"})
    assert caught.value.message == '"amount" is undefined'
    assert caught.value.line == 3
    assert str(caught.value) == 'line 3: "amount" is undefined'


def test_it_raises_on_a_missing_key_of_a_nested_value():
    with pytest.raises(PromptTemplateError, match="has no attribute 'city'"):
        render_prompt(template="{{ customer.city }}", data={"customer": {"name": "Ann"}})


def test_it_reports_the_line_of_a_syntax_error():
    with pytest.raises(PromptTemplateError) as caught:
        render_prompt(template="Hello {{ name }}\n{{ name }\n", data={"name": "Ann"})
    assert caught.value.line == 2
    assert str(caught.value) == f"line 2: {caught.value.message}"
    assert "}" in caught.value.message


def test_it_turns_runtime_errors_in_expressions_into_template_errors():
    with pytest.raises(PromptTemplateError, match="ZeroDivisionError"):
        render_prompt(template="{{ n / 0 }}", data={"n": 1})


def test_an_error_without_a_line_prints_just_its_message():
    assert str(PromptTemplateError("boom")) == "boom"
    assert str(PromptTemplateError("boom", 4)) == "line 4: boom"


# The sandbox


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ text.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ joiner.__init__.__globals__ }}",
        "{{ self.__init__.__globals__ }}",
        "{{ lipsum.__globals__ }}",
        "{{ namespace.__init__.__globals__ }}",
        "{{ '{0.__class__}'.format(text) }}",
        "{{ text | attr('__class__') }}",
        "{{ config }}{{ settings }}{{ request }}",
    ],
)
def test_it_refuses_sandbox_escapes(template):
    with pytest.raises(PromptTemplateError) as caught:
        render_prompt(template=template, data={"text": "hi"})
    message = caught.value.message
    assert message.startswith("not allowed in a template: ") or message.endswith(" is undefined")
    # The refusal must come from the template, not from a crash in our own code.
    assert caught.value.line == 1


def test_it_refuses_attribute_access_by_dunder_name_with_a_clear_message():
    with pytest.raises(PromptTemplateError) as caught:
        render_prompt(template="{{ ''.__class__ }}", data={})
    assert caught.value.message == (
        "not allowed in a template: access to attribute '__class__' of 'str' object is unsafe"
    )


def test_it_exposes_no_jinja_globals_to_templates():
    for name in ("range", "dict", "lipsum", "cycler", "joiner", "namespace"):
        with pytest.raises(PromptTemplateError, match=f'"{name}" is undefined'):
            render_prompt(template=f"{{{{ {name} }}}}", data={})


def test_it_refuses_a_mutating_method_and_leaves_the_callers_list_unchanged():
    items = [1, 2]
    with pytest.raises(PromptTemplateError, match=r"not allowed in a template: .*'append'"):
        render_prompt(template="{{ items.append(3) }}", data={"items": items})
    assert items == [1, 2]


def test_it_refuses_mutating_a_nested_dict_from_a_set_tag():
    data = {"order": {"id": 1}}
    with pytest.raises(PromptTemplateError, match="not allowed in a template"):
        render_prompt(template="{% set _ = order.update({'id': 2}) %}", data=data)
    assert data == {"order": {"id": 1}}


def test_a_set_tag_does_not_leak_into_the_callers_mapping():
    data = {"text": "a"}
    assert render_prompt(template="{% set text = 'b' %}{{ text }}", data=data) == "b"
    assert data == {"text": "a"}


@pytest.mark.parametrize("template", ["{{ 'x' * 1000000 }}", "{{ [0] * 1000000 }}"])
def test_it_refuses_repetition_that_would_exceed_the_output_cap(template):
    with pytest.raises(PromptTemplateError, match="not allowed in a template: repeating"):
        render_prompt(template=template, data={})


def test_it_refuses_huge_integer_powers_but_allows_small_ones():
    assert render_prompt(template="{{ 'ab' * 3 }} {{ 2 ** 10 }}", data={}) == "ababab 1024"
    with pytest.raises(PromptTemplateError, match="exponent"):
        render_prompt(template="{{ 2 ** 100000 }}", data={})


# Size caps


def test_it_refuses_a_rendered_prompt_over_the_cap():
    with pytest.raises(PromptTemplateError) as caught:
        render_prompt(
            template="{% for _ in rows %}{{ chunk }}{% endfor %}",
            data={"rows": range(300), "chunk": "x" * 1_000},
        )
    assert str(caught.value) == f"rendered prompt is longer than {MAX_RENDERED_CHARS} characters"
    assert caught.value.line is None


def test_it_renders_a_prompt_exactly_at_the_cap():
    out = render_prompt(template="{{ text }}", data={"text": "x" * MAX_RENDERED_CHARS})
    assert len(out) == MAX_RENDERED_CHARS


def test_it_refuses_a_template_over_the_length_cap_everywhere():
    template = "x" * (MAX_TEMPLATE_CHARS + 1)
    with pytest.raises(PromptTemplateError, match=f"longer than {MAX_TEMPLATE_CHARS} characters"):
        render_prompt(template=template, data={})
    with pytest.raises(PromptTemplateError, match="longer than"):
        template_variables(template)
    [problem] = template_check(template=template, input_schema=None)
    assert f"template is longer than {MAX_TEMPLATE_CHARS} characters" in problem


def test_it_accepts_a_template_exactly_at_the_length_cap():
    template = "x" * MAX_TEMPLATE_CHARS
    assert render_prompt(template=template, data={}) == template
    assert template_check(template=template, input_schema=SCHEMA) == []


# Static checks


def test_it_lists_the_top_level_variables_a_template_reads():
    template = (
        "{{ customer.name }} {{ text | upper }}"
        "{% for line in lines %}{{ line.sku }}{{ loop.index }}{% endfor %}"
        "{% set total = 3 %}{{ total }}"
    )
    assert template_variables(template) == {"customer", "text", "lines"}


def test_it_raises_with_the_line_when_listing_variables_of_a_broken_template():
    with pytest.raises(PromptTemplateError) as caught:
        template_variables("ok\n{% if %}")
    assert caught.value.line == 2


def test_it_lists_variables_missing_from_the_schema_sorted_by_name():
    problems = template_check(
        template="{{ text }} {{ zone }} {{ amount }} {{ amount }}", input_schema=SCHEMA
    )
    assert problems == [
        'variable "amount" is not in the input schema (it has: currency, text)',
        'variable "zone" is not in the input schema (it has: currency, text)',
    ]


def test_it_accepts_a_template_using_only_declared_variables():
    assert template_check(template="{{ text }} in {{ currency }}", input_schema=SCHEMA) == []


def test_it_ignores_loop_variables_and_set_variables():
    template = (
        "{% set greeting = 'hi' %}{{ greeting }}"
        "{% for ch in text %}{{ ch }}{{ loop.index }}{% endfor %}"
    )
    assert template_check(template=template, input_schema=SCHEMA) == []


def test_it_reports_a_schema_without_any_properties_declared():
    assert template_check(template="{{ text }}", input_schema={"properties": {}}) == [
        'variable "text" is not in the input schema (it has: no properties)'
    ]


@pytest.mark.parametrize("schema", [None, {}, {"type": "object"}])
def test_it_only_checks_syntax_without_schema_properties(schema):
    assert template_check(template="{{ anything }}", input_schema=schema) == []


def test_it_reports_a_syntax_error_with_its_line():
    [problem] = template_check(template="Hello\n{{ text }\n", input_schema=SCHEMA)
    assert problem.startswith("line 2: ")


# Compiled-template cache


def test_it_reuses_the_compiled_template_for_the_same_source():
    source = "cache probe {{ text }} 5f1c"
    first = _compile(source)
    hits = _compile.cache_info().hits
    assert _compile(source) is first
    assert _compile.cache_info().hits == hits + 1
    render_prompt(template=source, data={"text": "a"})
    assert _compile.cache_info().hits == hits + 2


def test_the_compiled_template_cache_is_bounded():
    assert _compile.cache_info().maxsize == 512
