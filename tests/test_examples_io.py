"""Reading example files: CSV and JSONL rows parsed, typed, validated, or rejected with a reason."""

from __future__ import annotations

import io
import json

import pytest

from pipelines.examples_io import (
    KEPT_REJECTIONS,
    MAX_ROW_BYTES,
    ExampleFormat,
    ImportReport,
    ParsedExample,
    RejectedRow,
    bytes_progress,
    iter_examples,
    report_add,
)

LABELS = ("billing", "bug", "account")

CLASSIFY_OUTPUT = {
    "type": "object",
    "properties": {"label": {"type": "string", "enum": list(LABELS)}},
    "required": ["label"],
}

TICKET_INPUT = {
    "type": "object",
    "properties": {
        "text": {"type": "string", "minLength": 1},
        "priority": {"type": "integer", "minimum": 1},
        "amount": {"type": "number"},
        "vip": {"type": "boolean"},
        "meta": {"type": "object"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["text"],
}

INVOICE_OUTPUT = {
    "type": "object",
    "properties": {
        "amount": {"type": "number"},
        "currency": {"type": "string", "minLength": 3, "maxLength": 3},
        "lines": {"type": "integer"},
        "paid": {"type": "boolean"},
    },
    "required": ["amount", "currency"],
}

CLASSIFY = ExampleFormat(
    kind="classify", input_schema={}, output_schema=CLASSIFY_OUTPUT, labels=LABELS
)
TICKETS = ExampleFormat(
    kind="classify", input_schema=TICKET_INPUT, output_schema=CLASSIFY_OUTPUT, labels=LABELS
)
INVOICES = ExampleFormat(kind="generate", input_schema={}, output_schema=INVOICE_OUTPUT, labels=())


def read(content: bytes | str, *, filename: str = "examples.csv", fmt=CLASSIFY, **options):
    raw = content.encode() if isinstance(content, str) else content
    return list(iter_examples(stream=io.BytesIO(raw), filename=filename, fmt=fmt, **options))


def rejected(rows) -> dict[int, str]:
    return {row.line: row.reason for row in rows if isinstance(row, RejectedRow)}


def accepted(rows) -> list[ParsedExample]:
    return [row for row in rows if isinstance(row, ParsedExample)]


# Choosing the format


def test_a_txt_file_is_refused_before_anything_is_read():
    stream = io.BytesIO(b"text,label\nhello,bug\n")
    with pytest.raises(ValueError, match=r"upload a \.csv or \.jsonl file"):
        iter_examples(stream=stream, filename="tickets.txt", fmt=CLASSIFY)
    assert bytes_progress(stream) == 0


def test_the_extension_is_matched_without_regard_to_case_and_ndjson_counts_as_jsonl():
    assert accepted(read("text,label\nhi,bug\n", filename="T.CSV"))
    assert accepted(read('{"text": "hi", "label": "bug"}\n', filename="t.ndjson"))


def test_a_format_of_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match='kind must be "classify" or "generate"'):
        ExampleFormat(kind="summarise", input_schema={}, output_schema={}, labels=())


# CSV, classify


def test_a_classify_csv_is_read_with_cells_typed_by_the_input_schema():
    rows = read(
        "text,priority,amount,vip,meta,tags,label\n"
        'Charged twice,2,12.50,TRUE,"{""plan"": ""pro""}","[""refund""]",billing\n'
        "App crashes,1,3,no,,,bug\n",
        fmt=TICKETS,
    )
    assert rows == [
        ParsedExample(
            line=2,
            data={
                "text": "Charged twice",
                "priority": 2,
                "amount": 12.5,
                "vip": True,
                "meta": {"plan": "pro"},
                "tags": ["refund"],
            },
            expected={"label": "billing"},
        ),
        # Blank typed cells are left out rather than failing, so "required" decides.
        ParsedExample(
            line=3,
            data={"text": "App crashes", "priority": 1, "amount": 3, "vip": False},
            expected={"label": "bug"},
        ),
    ]


def test_an_integer_column_accepts_a_whole_decimal_but_not_a_fraction():
    rows = read("text,priority,label\na,3.0,bug\nb,2.5,bug\n", fmt=TICKETS)
    assert accepted(rows)[0].data["priority"] == 3
    assert rejected(rows) == {3: 'column "priority": "2.5" is not an integer'}


def test_a_cell_that_does_not_convert_rejects_the_row_naming_the_column():
    rows = read(
        "text,amount,vip,meta,label\n"
        "a,1.000.000,yes,,bug\n"
        "b,1,maybe,,bug\n"
        "c,1,yes,[1],bug\n"
        "d,NaN,yes,,bug\n",
        fmt=TICKETS,
    )
    assert rejected(rows) == {
        2: 'column "amount": "1.000.000" is not a number',
        3: 'column "vip": "maybe" is not true or false',
        4: 'column "meta": "[1]" is not a JSON object',
        5: 'column "amount": "NaN" is not a number',
    }


def test_columns_the_input_schema_does_not_type_stay_text():
    [row] = read("text,zip,label\nhello,00123,bug\n")
    assert row.data == {"text": "hello", "zip": "00123"}


def test_the_label_may_be_in_an_expected_column_and_is_trimmed():
    [row] = read("text,Expected\nhello, bug \n")
    assert row.expected == {"label": "bug"}


def test_a_label_that_is_not_one_of_the_steps_labels_is_rejected_with_the_choices():
    rows = read("text,label\nWhere is my parcel,shipping\nok,bug\n")
    assert rejected(rows) == {2: 'label "shipping" is not one of billing, bug, account'}
    assert len(accepted(rows)) == 1


def test_an_empty_label_and_an_empty_input_are_rejected():
    rows = read("text,label\nhello,\n,bug\n   ,bug\n")
    assert rejected(rows) == {
        2: "label is empty",
        3: "empty input: every input field is blank",
        4: "empty input: every input field is blank",
    }


def test_a_file_without_a_label_column_fails_naming_the_columns_found():
    with pytest.raises(ValueError, match=r'no "label" column.*the header has text, topic$'):
        read("text,topic\nhello,bug\n")


def test_a_semicolon_file_gets_a_hint_about_its_delimiter():
    with pytest.raises(ValueError, match="semicolons or tabs"):
        read("text;label\nhello;bug\n")


def test_an_empty_csv_file_fails_for_want_of_a_header():
    with pytest.raises(ValueError, match="needs a header row"):
        read("\n\n")


def test_a_header_naming_a_column_twice_fails():
    with pytest.raises(ValueError, match='"text" appears twice'):
        read("text,text,label\na,b,bug\n")


def test_a_row_with_the_wrong_number_of_values_is_rejected():
    rows = read("text,label\na,bug,extra\nb\n")
    assert rejected(rows) == {
        2: "3 values but the header has 2 columns",
        3: "1 values but the header has 2 columns",
    }


def test_blank_lines_and_spreadsheet_filler_rows_are_skipped_not_rejected():
    rows = read("text,label\n\nhello,bug\n,\n,\n")
    assert rows == [ParsedExample(line=3, data={"text": "hello"}, expected={"label": "bug"})]


def test_an_unnamed_trailing_column_is_ignored_unless_it_holds_a_value():
    rows = read("text,label,\na,bug,\nb,bug,oops\n")
    assert accepted(rows)[0].data == {"text": "a"}
    assert rejected(rows) == {3: "column 3 has a value but no name in the header"}


# CSV, generate


def test_a_generate_csv_builds_the_expected_output_from_expected_dot_columns_with_types():
    rows = read(
        "document,expected.amount,expected.currency,expected.lines,expected.paid\n"
        "Invoice 1,12.5,EUR,3,true\n"
        "Invoice 2,40,USD,,\n",
        fmt=INVOICES,
    )
    assert rows == [
        ParsedExample(
            line=2,
            data={"document": "Invoice 1"},
            expected={"amount": 12.5, "currency": "EUR", "lines": 3, "paid": True},
        ),
        ParsedExample(
            line=3, data={"document": "Invoice 2"}, expected={"amount": 40, "currency": "USD"}
        ),
    ]


def test_an_expected_dot_cell_that_does_not_convert_names_its_field():
    rows = read("document,expected.amount,expected.currency\nInvoice,twelve,EUR\n", fmt=INVOICES)
    assert rejected(rows) == {2: 'column "expected.amount": "twelve" is not a number'}


def test_a_generate_csv_may_hold_the_expected_output_as_json_in_one_column():
    rows = read(
        "document,expected\n"
        'Invoice 1,"{""amount"": 12.5, ""currency"": ""EUR""}"\n'
        'Invoice 2,"{""amount"": 1,"\n'
        'Invoice 3,"[1, 2]"\n'
        "Invoice 4,\n",
        fmt=INVOICES,
    )
    assert accepted(rows)[0].expected == {"amount": 12.5, "currency": "EUR"}
    reasons = rejected(rows)
    assert reasons[3].startswith('column "expected" is not valid JSON: ')
    assert "at column 14" in reasons[3]
    assert reasons[4] == 'column "expected" must hold a JSON object'
    assert reasons[5] == 'column "expected" is empty'


def test_a_generate_csv_without_expected_columns_fails_naming_the_columns_found():
    with pytest.raises(ValueError, match=r'no "expected" column.*the header has document, amount'):
        read("document,amount\nInvoice,12\n", fmt=INVOICES)


def test_a_generate_csv_with_both_kinds_of_expected_columns_fails():
    with pytest.raises(ValueError, match="not both"):
        read("document,expected,expected.amount\nx,{},1\n", fmt=INVOICES)


# Schemas


def test_an_input_schema_failure_is_rejected_with_its_path_and_how_many_more():
    rows = read("text,priority,label\n,0,bug\n", fmt=TICKETS)
    assert rejected(rows) == {
        2: "input: schema error at $.priority: 0 is less than the minimum of 1 (and 1 more)"
    }


def test_an_output_schema_failure_is_rejected_with_its_path():
    rows = read(
        "document,expected.amount,expected.currency\nInvoice,12,EURO\nOther,,EUR\n", fmt=INVOICES
    )
    assert rejected(rows) == {
        2: "expected output: schema error at $.currency: 'EURO' is too long",
        3: "expected output: schema error at $: 'amount' is a required property",
    }


# JSONL


def test_jsonl_rows_may_be_flat_or_nested_with_data_and_expected():
    rows = read(
        '{"text": "Charged twice", "priority": 2, "label": "billing"}\n'
        '{"data": {"text": "App crashes"}, "expected": {"label": "bug"}}\n'
        '{"data": {"text": "New email"}, "label": "account"}\n'
        '{"text": "Locked out", "expected": "account"}\n',
        filename="tickets.jsonl",
        fmt=TICKETS,
    )
    assert rows == [
        ParsedExample(
            line=1, data={"text": "Charged twice", "priority": 2}, expected={"label": "billing"}
        ),
        ParsedExample(line=2, data={"text": "App crashes"}, expected={"label": "bug"}),
        ParsedExample(line=3, data={"text": "New email"}, expected={"label": "account"}),
        ParsedExample(line=4, data={"text": "Locked out"}, expected={"label": "account"}),
    ]


def test_a_generate_jsonl_row_needs_an_expected_object():
    rows = read(
        '{"document": "Invoice", "expected": {"amount": 1, "currency": "EUR"}}\n'
        '{"document": "Invoice", "label": "x"}\n'
        '{"document": "Invoice", "expected": "12 EUR"}\n',
        filename="invoices.jsonl",
        fmt=INVOICES,
    )
    assert accepted(rows)[0].data == {"document": "Invoice"}
    assert rejected(rows) == {
        2: 'no expected output: add an "expected" object',
        3: '"expected" must be a JSON object',
    }


def test_a_jsonl_line_that_is_not_a_json_object_is_rejected_with_the_position():
    rows = read(
        '{"text": "ok", "label": "bug"}\n'
        '{"text": "broken", "label": }\n'
        '["text", "bug"]\n'
        '{"text": NaN, "label": "bug"}\n'
        "\n"
        '{"text": "no label"}\n'
        '{"text": "both", "label": "bug", "expected": "bug"}\n',
        filename="t.jsonl",
    )
    assert rejected(rows) == {
        2: "not valid JSON: Expecting value at column 29",
        3: "not a JSON object but list",
        4: "not valid JSON: NaN is not allowed in JSON",
        6: 'no expected output: add a "label"',
        7: 'has both "label" and "expected"; keep one',
    }


def test_a_jsonl_label_that_is_not_text_is_rejected():
    rows = read('{"text": "a", "label": 3}\n', filename="t.jsonl")
    assert rejected(rows) == {1: "label must be text, got 3"}


def test_a_nul_character_is_rejected_because_the_database_cannot_store_it():
    rows = read('{"text": "a\\u0000b", "label": "bug"}\n', filename="t.jsonl")
    assert rejected(rows) == {1: "contains a NUL character, which cannot be stored"}
    assert rejected(read(b"text,label\na\x00b,bug\n")) == {
        2: "contains a NUL character, which cannot be stored"
    }


# Encoding


def test_a_utf8_byte_order_mark_is_tolerated_in_csv_and_jsonl():
    [row] = read("\ufefftext,label\nhéllo,bug\n".encode())
    assert row.data == {"text": "héllo"}
    [row] = read('\ufeff{"text": "a", "label": "bug"}\n'.encode(), filename="t.jsonl")
    assert row.data == {"text": "a"}


def test_a_row_that_is_not_valid_utf8_is_rejected_and_reading_goes_on():
    rows = read(b'text,label\nbad \xff,bug\n"two\nlines \xc3",bug\ngood,bug\n')
    assert rejected(rows) == {2: "not valid UTF-8", 3: "not valid UTF-8"}
    assert [row.line for row in accepted(rows)] == [5]
    rows = read(
        b'{"text": "\xff", "label": "bug"}\n{"text": "a", "label": "bug"}\n', filename="t.jsonl"
    )
    assert rejected(rows) == {1: "not valid UTF-8"}
    assert len(accepted(rows)) == 1


def test_a_header_that_is_not_valid_utf8_fails_the_file():
    with pytest.raises(ValueError, match="line 1: cannot read the header row: not valid UTF-8"):
        read(b"t\xe9xt,label\nhello,bug\n")


def test_a_utf16_file_is_refused_with_advice():
    with pytest.raises(ValueError, match="UTF-16; save it as UTF-8"):
        read("text,label\nhello,bug\n".encode("utf-16"))


# Line numbers


def test_line_numbers_are_physical_lines_counting_every_line_of_a_quoted_field():
    rows = read(
        "text,label\n"
        "one,bug\n"
        '"two\nspans\nthree lines",bug\n'
        "\n"
        "four,shipping\n"
        '"five ""quoted""\r\nagain",nope\r\n'
        "six,bug"
    )
    assert [row.line for row in rows] == [2, 3, 7, 8, 10]
    assert rows[1].data == {"text": "two\nspans\nthree lines"}
    assert rejected(rows) == {
        7: 'label "shipping" is not one of billing, bug, account',
        8: 'label "nope" is not one of billing, bug, account',
    }


# Limits


def test_reading_stops_with_a_notice_after_max_rows():
    rows = read("text,label\n" + "".join(f"row {n},bug\n" for n in range(5)), max_rows=3)
    assert [row.line for row in accepted(rows)] == [2, 3, 4]
    assert rows[-1] == RejectedRow(5, "stopped: more than 3 rows")
    rows = read(
        "".join('{"text": "a", "label": "bug"}\n' for _ in range(3)), filename="t.jsonl", max_rows=2
    )
    assert rows[-1] == RejectedRow(3, "stopped: more than 2 rows")


def test_an_over_long_row_is_rejected_and_the_rows_after_it_are_read():
    huge = "x" * (MAX_ROW_BYTES + 10)
    rows = read(f"text,label\nbefore,bug\n{huge},bug\nafter,bug\n")
    assert rejected(rows) == {3: "the row is longer than 1 MB"}
    assert [row.data["text"] for row in accepted(rows)] == ["before", "after"]
    rows = read(
        f'{{"text": "{huge}", "label": "bug"}}\n{{"text": "after", "label": "bug"}}\n',
        filename="t.jsonl",
    )
    assert rejected(rows) == {1: "the line is longer than 1 MB"}
    assert len(accepted(rows)) == 1


def test_an_over_long_quoted_field_is_skipped_to_its_closing_quote():
    # Without following the quote, "still, inside" would come back as a row of its own.
    long_line = "y" * (MAX_ROW_BYTES // 2)
    rows = read(f'text,label\n"{long_line}\n{long_line}\n""still, inside""\nend",bug\nafter,bug\n')
    assert rejected(rows) == {
        2: "the row is longer than 1 MB (the row runs over lines 2-5: is a quote left open?)"
    }
    assert [row.line for row in accepted(rows)] == [6]


def test_a_row_csv_cannot_parse_is_rejected_and_a_quote_it_opened_is_skipped():
    rows = read('text,label\nx\ry,"open\nstill",bug\nok,bug\n')
    assert rejected(rows) == {
        2: "a carriage return inside an unquoted value (quote the value, or save the file with "
        "ordinary line endings) (the row runs over lines 2-3: is a quote left open?)"
    }
    assert [row.line for row in accepted(rows)] == [4]


def test_a_file_with_old_mac_line_endings_fails_at_its_header():
    with pytest.raises(ValueError, match="line 1: cannot read the header row: a carriage return"):
        read("text,label\rhello,bug\r")


def test_an_unclosed_quote_is_reported_with_the_lines_it_swallowed():
    rows = read('text,label\n"never closed,bug\nmore,bug\n')
    assert rejected(rows) == {
        2: "1 values but the header has 2 columns (the row runs over lines 2-3: "
        "is a quote left open?)"
    }


# Streaming


def test_a_100k_row_csv_is_streamed_line_by_line():
    content = b"text,label\n" + b"".join(
        b"ticket %d,%s\n" % (n, LABELS[n % 3].encode()) for n in range(100_000)
    )
    stream = io.BytesIO(content)
    rows = iter_examples(stream=stream, filename="big.csv", fmt=CLASSIFY)
    first = next(rows)
    assert first == ParsedExample(line=2, data={"text": "ticket 0"}, expected={"label": "billing"})
    # Only the header and the first row have been read: the file is not slurped.
    assert bytes_progress(stream) == len(b"text,label\nticket 0,billing\n")
    count = 1 + sum(1 for row in rows if isinstance(row, ParsedExample))
    assert count == 100_000
    assert bytes_progress(stream) == len(content)


def test_bytes_progress_is_zero_for_a_stream_that_cannot_tell():
    class Pipe(io.RawIOBase):
        def tell(self) -> int:
            raise io.UnsupportedOperation("not seekable")

    assert bytes_progress(Pipe()) == 0


# Report


def test_a_report_counts_rows_and_keeps_the_first_rejections_and_the_stop_notice():
    report = ImportReport()
    report_add(report=report, row=ParsedExample(line=2, data={"text": "a"}, expected={}))
    for line in range(3, 3 + KEPT_REJECTIONS + 5):
        report_add(report=report, row=RejectedRow(line, "label is empty"))
    stop = RejectedRow(200, "stopped: more than 106 rows")
    report_add(report=report, row=stop)
    assert (report.accepted, report.rejected, report.stopped) == (1, KEPT_REJECTIONS + 5, True)
    assert len(report.rejected_rows) == KEPT_REJECTIONS + 1
    assert report.rejected_rows[0].line == 3
    assert report.rejected_rows[-1] == stop


def test_a_report_built_from_a_file_matches_what_was_read():
    report = ImportReport()
    for row in read("text,label\na,bug\nb,shipping\n,bug\n"):
        report_add(report=report, row=row)
    assert (report.accepted, report.rejected, report.stopped) == (1, 2, False)
    assert json.dumps([row.line for row in report.rejected_rows]) == "[3, 4]"
