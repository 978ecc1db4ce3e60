"""Reading labeled examples from an uploaded CSV or JSONL file, row by row, with rejected rows.

How the file is read (streamed line by line, encoding, line numbers, over-long and broken rows)
is `pipelines.rows_io`, shared with item uploads; this module says what a row of examples is.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from pipelines.rows_io import (
    KEPT_REJECTIONS,
    MAX_ROW_BYTES,
    MAX_ROWS,
    STOPPED_PREFIX,
    CellError,
    Column,
    CsvHeader,
    ImportReport,
    RejectedRow,
    blank,
    bytes_progress,
    cells_object,
    enveloped,
    iter_rows,
    json_loads,
    json_object,
    json_problem,
    property_types,
    report_add,
    shorten,
)
from pipelines.schemas import schema_errors

__all__ = [
    "CLASSIFY",
    "GENERATE",
    "KEPT_REJECTIONS",
    "MAX_ROW_BYTES",
    "STOPPED_PREFIX",
    "ExampleFormat",
    "ImportReport",
    "ParsedExample",
    "RejectedRow",
    "bytes_progress",
    "iter_examples",
    "report_add",
]

CLASSIFY = "classify"
GENERATE = "generate"

# Enough to say how badly a row fails without validating a huge document to the last error.
_SCHEMA_ERROR_LIMIT = 100
# Classify outputs repeat a handful of labels; validating each distinct one once keeps a 100k-row
# import from spending most of its time in jsonschema.
_OUTPUT_CACHE_SIZE = 1000


@dataclass(frozen=True)
class ParsedExample:
    line: int
    data: dict
    expected: dict


@dataclass(frozen=True)
class ExampleFormat:
    """How a step's example file is read: the step's kind, its schemas and (classify) labels."""

    kind: str
    input_schema: dict
    output_schema: dict
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in (CLASSIFY, GENERATE):
            raise ValueError(f'kind must be "classify" or "generate", got {self.kind!r}')


def iter_examples(
    *, stream: IO[bytes], filename: str, fmt: ExampleFormat, max_rows: int = MAX_ROWS
) -> Iterator[ParsedExample | RejectedRow]:
    """Each row of an example file, parsed and validated, or rejected with a reason."""
    return iter_rows(stream=stream, filename=filename, reader=_Rules(fmt), max_rows=max_rows)


# --- Checking rows ----------------------------------------------------------------------------


def _schema_reason(*, schema: dict, instance: object, what: str) -> str | None:
    if not schema:
        return None
    errors = schema_errors(schema=schema, instance=instance, limit=_SCHEMA_ERROR_LIMIT)
    if not errors:
        return None
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{what}: {errors[0]}{more}"


@dataclass(frozen=True)
class _Layout:
    inputs: tuple[Column, ...]
    label: int | None  # classify: the label (or expected) column
    expected_json: int | None  # generate: one column holding the output as a JSON object
    expected_fields: tuple[Column, ...]  # generate: expected.<field> columns


class _Rules:
    """The checks every row goes through, prepared once per file from its ExampleFormat."""

    def __init__(self, fmt: ExampleFormat) -> None:
        self.fmt = fmt
        self.classify = fmt.kind == CLASSIFY
        self.input_types = property_types(fmt.input_schema)
        self.output_types = property_types(fmt.output_schema)
        self._labels = frozenset(fmt.labels)
        self._output_reasons: dict[str, str | None] = {}
        self._layout: _Layout | None = None

    def check(self, *, line: int, data: dict, expected: dict) -> ParsedExample | RejectedRow:
        if self.classify:
            label = expected.get("label")
            if label is not None and not isinstance(label, str):
                return RejectedRow(line, f"label must be text, got {json.dumps(label)}")
            label = (label or "").strip()
            if not label:
                return RejectedRow(line, "label is empty")
            if self._labels and label not in self._labels:
                choices = ", ".join(self.fmt.labels)
                return RejectedRow(line, f'label "{shorten(label)}" is not one of {choices}')
            expected = {**expected, "label": label}
        if all(map(blank, data.values())):
            return RejectedRow(line, "empty input: every input field is blank")
        reason = _schema_reason(schema=self.fmt.input_schema, instance=data, what="input")
        if reason is None:
            reason = self._output_reason(expected)
        if reason is not None:
            return RejectedRow(line, reason)
        return ParsedExample(line=line, data=data, expected=expected)

    def _output_reason(self, expected: dict) -> str | None:
        if not self.classify:
            return _schema_reason(
                schema=self.fmt.output_schema, instance=expected, what="expected output"
            )
        # The usual {"label": ...} is keyed by its label alone, which is cheaper than JSON.
        key = expected["label"] if len(expected) == 1 else json.dumps(expected, sort_keys=True)
        try:
            return self._output_reasons[key]
        except KeyError:
            pass
        if len(self._output_reasons) >= _OUTPUT_CACHE_SIZE:
            self._output_reasons.clear()
        reason = _schema_reason(
            schema=self.fmt.output_schema, instance=expected, what="expected output"
        )
        self._output_reasons[key] = reason
        return reason

    # --- JSONL --------------------------------------------------------------------------------

    def jsonl_row(self, *, line: int, text: str) -> ParsedExample | RejectedRow:
        record = json_object(line=line, text=text)
        if isinstance(record, RejectedRow):
            return record
        special = ("label", "expected") if self.classify else ("expected",)
        if enveloped(record, keys={"data", *special}, input_types=self.input_types):
            data = record["data"]
        else:
            data = {key: value for key, value in record.items() if key not in special}
        given = [key for key in special if key in record]
        if len(given) > 1:
            return RejectedRow(line, 'has both "label" and "expected"; keep one')
        if not given:
            wanted = 'a "label"' if self.classify else 'an "expected" object'
            return RejectedRow(line, f"no expected output: add {wanted}")
        output = record[given[0]]
        if self.classify and not isinstance(output, dict):
            output = {"label": output}
        if not isinstance(output, dict):
            return RejectedRow(line, f'"{given[0]}" must be a JSON object')
        return self.check(line=line, data=data, expected=output)

    # --- CSV ----------------------------------------------------------------------------------

    def csv_header(self, header: CsvHeader) -> None:
        names, found, hint = header.names, header.found, header.hint
        lowered = [name.lower() for name in names]
        label = expected_json = None
        expected_fields: list[Column] = []
        if self.classify:
            for wanted in ("label", "expected"):
                if wanted in lowered:
                    label = lowered.index(wanted)
                    break
            else:
                raise ValueError(f'no "label" column (or "expected"): the header has {found}{hint}')
            special = {label}
        else:
            if "expected" in lowered:
                expected_json = lowered.index("expected")
            for index, name in enumerate(names):
                if lowered[index].startswith("expected."):
                    key = name[len("expected.") :]
                    if not key:
                        raise ValueError(f'line {header.line}: the column "{name}" names no field')
                    expected_fields.append(Column(index, key, self.output_types.get(key, ())))
            if expected_json is not None and expected_fields:
                raise ValueError(
                    'give the expected output either in an "expected" column or in '
                    f"expected.<field> columns, not both: the header has {found}"
                )
            if expected_json is None and not expected_fields:
                raise ValueError(
                    'no "expected" column (or expected.<field> columns): '
                    f"the header has {found}{hint}"
                )
            special = {expected_json} if expected_json is not None else set()
            special.update(column.index for column in expected_fields)
        inputs = tuple(
            Column(index, name, self.input_types.get(name, ()))
            for index, name in enumerate(names)
            if name and index not in special
        )
        self._layout = _Layout(
            inputs=inputs,
            label=label,
            expected_json=expected_json,
            expected_fields=tuple(expected_fields),
        )

    def csv_row(self, *, cells: list[str], start: int, end: int) -> ParsedExample | RejectedRow:
        layout = self._layout
        assert layout is not None, "csv_header comes first"
        try:
            data = cells_object(cells, layout.inputs)
            if layout.label is not None:
                expected = {"label": cells[layout.label]}
            elif layout.expected_json is not None:
                expected = _csv_expected_json(cells[layout.expected_json])
            else:
                expected = cells_object(cells, layout.expected_fields, prefix="expected.")
        except CellError as exc:
            return RejectedRow(start, str(exc))
        return self.check(line=start, data=data, expected=expected)


def _csv_expected_json(cell: str) -> dict:
    text = cell.strip()
    if not text:
        raise CellError('column "expected" is empty')
    try:
        parsed = json_loads(text)
    except ValueError as exc:
        raise CellError(f'column "expected" is not valid JSON: {json_problem(exc)}') from None
    if not isinstance(parsed, dict):
        raise CellError('column "expected" must hold a JSON object')
    return parsed
