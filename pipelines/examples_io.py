"""Reading labeled examples from an uploaded CSV or JSONL file, row by row, with rejected rows.

The stream is read one physical line at a time (never whole), so memory stays flat on a large
upload and the stream's position is an honest progress measure. Each line is decoded on its own:
a line that is not valid UTF-8 rejects only the row it belongs to, in CSV too, where a row may
span several lines. Line numbers are physical lines of the file, as a text editor shows them.
"""

from __future__ import annotations

import codecs
import csv
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import IO

from pipelines.schemas import schema_errors

CLASSIFY = "classify"
GENERATE = "generate"

# A row (all of its physical lines) longer than this is rejected. It bounds the memory one row
# can take, and an example this large would not fit a model's prompt anyway.
MAX_ROW_BYTES = 1024 * 1024
KEPT_REJECTIONS = 100
STOPPED_PREFIX = "stopped: "

_CSV_SUFFIXES = frozenset({".csv"})
_JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})
# Read size when skipping the rest of an over-long row: small, so skipping stays cheap in memory.
_SKIP_CHUNK = 64 * 1024
# Enough to say how badly a row fails without validating a huge document to the last error.
_SCHEMA_ERROR_LIMIT = 100
# Classify outputs repeat a handful of labels; validating each distinct one once keeps a 100k-row
# import from spending most of its time in jsonschema.
_OUTPUT_CACHE_SIZE = 1000

# ASCII-only so that int() never sees the other Unicode digits it would accept.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_INTEGER_LITERAL = re.compile(r"[+-]?[0-9]+", re.ASCII)
# Spreadsheets write TRUE/FALSE, people write yes/no, and 1/0 comes out of databases.
_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})
_TYPE_WORDS = {
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "object": "a JSON object",
    "array": "a JSON array",
}
# A blank cell of a typed column: its key is left out, so the schema's "required" decides.
_OMIT = object()


@dataclass(frozen=True)
class ParsedExample:
    line: int
    data: dict
    expected: dict


@dataclass(frozen=True)
class RejectedRow:
    line: int
    reason: str


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


@dataclass
class ImportReport:
    """Counts of one import and its first rejected rows, for display."""

    accepted: int = 0
    rejected: int = 0
    # True when the file had more rows than allowed; its stop notice is the last rejected row.
    stopped: bool = False
    rejected_rows: list[RejectedRow] = field(default_factory=list)


def report_add(*, report: ImportReport, row: ParsedExample | RejectedRow) -> None:
    """Count one row from iter_examples in the report, keeping the first rejected rows."""
    if isinstance(row, ParsedExample):
        report.accepted += 1
        return
    if row.reason.startswith(STOPPED_PREFIX):
        # Not a bad row but the end of reading; always shown, even past the kept rejections.
        report.stopped = True
        report.rejected_rows.append(row)
        return
    report.rejected += 1
    if len(report.rejected_rows) < KEPT_REJECTIONS:
        report.rejected_rows.append(row)


def bytes_progress(stream: IO[bytes]) -> int:
    """Bytes read so far from the stream given to iter_examples, for a progress bar."""
    try:
        return stream.tell()
    except (OSError, ValueError):
        # A pipe cannot tell its position; a progress bar is better empty than an error.
        return 0


def iter_examples(
    *, stream: IO[bytes], filename: str, fmt: ExampleFormat, max_rows: int = 200_000
) -> Iterator[ParsedExample | RejectedRow]:
    """Each row of an example file, parsed and validated, or rejected with a reason."""
    # Checked here rather than inside the generator so a wrong file fails at the call.
    suffix = PurePath(filename).suffix.lower()
    if suffix in _CSV_SUFFIXES:
        return _iter_csv(stream=stream, rules=_Rules(fmt), max_rows=max_rows)
    if suffix in _JSONL_SUFFIXES:
        return _iter_jsonl(stream=stream, rules=_Rules(fmt), max_rows=max_rows)
    raise ValueError("upload a .csv or .jsonl file")


# --- Reading lines ----------------------------------------------------------------------------


class _RowTooLong(Exception):
    """Raised from inside csv.reader's input: the row is skipped, reading goes on after it."""


class _QuoteTracker:
    """Follows the excel dialect's quoting over raw bytes, to find where a broken row ends.

    Only used after a row went wrong, so that the rest of a quoted field is not read as new
    rows. Works on bytes because '"', ',' and newline never occur inside a UTF-8 sequence."""

    _FIELD_START, _UNQUOTED, _QUOTED, _QUOTE_IN_QUOTED = range(4)
    _DELIMITER_OR_EOL = re.compile(rb"[,\n]")

    def __init__(self) -> None:
        self.state = self._FIELD_START

    @property
    def open(self) -> bool:
        return self.state in (self._QUOTED, self._QUOTE_IN_QUOTED)

    def feed(self, chunk: bytes) -> None:
        state, pos, end = self.state, 0, len(chunk)
        while pos < end:
            if state == self._QUOTED:
                quote = chunk.find(b'"', pos)
                if quote < 0:
                    break
                state, pos = self._QUOTE_IN_QUOTED, quote + 1
            elif state == self._QUOTE_IN_QUOTED:
                # '""' is an escaped quote; anything else closes the field, and csv (not strict)
                # keeps any text up to the next delimiter as part of it.
                if chunk[pos] == ord('"'):
                    state, pos = self._QUOTED, pos + 1
                else:
                    state = self._UNQUOTED
            elif state == self._FIELD_START:
                if chunk[pos] == ord('"'):
                    state, pos = self._QUOTED, pos + 1
                else:
                    state = self._UNQUOTED
            else:
                match = self._DELIMITER_OR_EOL.search(chunk, pos)
                if match is None:
                    break
                state, pos = self._FIELD_START, match.end()
        self.state = state


class _Lines:
    """The decoded physical lines of a binary stream, grouped into records (rows) by the
    reader, with the record's first line number and whether any of its lines was bad."""

    def __init__(self, stream: IO[bytes], *, csv_quoting: bool) -> None:
        self._stream = stream
        self._csv_quoting = csv_quoting
        self._mid_line = False
        self._raw: list[bytes] = []  # raw lines of the current record, to find its end on error
        self._size = 0
        self.line_no = 0
        self.record_start = 1
        self.bad_utf8 = False
        self.has_nul = False

    def mark(self) -> None:
        """Start a new record at the next line."""
        self._raw.clear()
        self._size = 0
        self.record_start = self.line_no + 1
        self.bad_utf8 = False
        self.has_nul = False

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        raw = self._read(MAX_ROW_BYTES - self._size + 1)
        if not raw:
            raise StopIteration
        if self.line_no == 1 and not self._raw:
            if raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            elif raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
                raise ValueError('the file is UTF-16; save it as UTF-8 (Excel: "CSV UTF-8")')
        self._size += len(raw)
        if self._size > MAX_ROW_BYTES:
            self._raw.append(raw)
            self.skip_record()
            raise _RowTooLong
        self._raw.append(raw)
        if b"\x00" in raw:
            self.has_nul = True
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self.bad_utf8 = True
            return raw.decode("utf-8", "replace")

    def skip_record(self) -> None:
        """Read past the rest of the current record: the rest of its last line and, in a CSV
        file, of a quoted field still open there."""
        tracker = _QuoteTracker()
        if self._csv_quoting:
            for raw in self._raw:
                tracker.feed(raw)
        while self._mid_line or tracker.open:
            chunk = self._read(_SKIP_CHUNK)
            if not chunk:
                break
            if self._csv_quoting:
                tracker.feed(chunk)

    def _read(self, limit: int) -> bytes:
        chunk = self._stream.readline(limit)
        if chunk and not self._mid_line:
            self.line_no += 1
        self._mid_line = bool(chunk) and not chunk.endswith(b"\n")
        return chunk


# --- Checking rows ----------------------------------------------------------------------------


class _CellError(Exception):
    pass


def _types(schema: object) -> tuple[str, ...]:
    declared = schema.get("type") if isinstance(schema, dict) else None
    if isinstance(declared, str):
        return (declared,)
    if isinstance(declared, list):
        return tuple(kind for kind in declared if isinstance(kind, str))
    return ()


def _property_types(schema: dict) -> dict[str, tuple[str, ...]]:
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return {}
    return {name: _types(sub) for name, sub in properties.items()}


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _convert(value: str, types: tuple[str, ...]) -> object:
    """A CSV cell as the JSON type its schema property declares; text when none is declared."""
    if not types:
        return value
    if not value.strip():
        if "null" in types:
            return None
        if "string" in types:
            return value
        return _OMIT
    text = value.strip()
    for kind in ("integer", "number", "boolean", "object", "array"):
        if kind not in types:
            continue
        converted = _convert_as(text, kind)
        if converted is not _OMIT:
            return converted
    if "string" in types:
        return value
    wanted = " or ".join(_TYPE_WORDS[kind] for kind in types if kind in _TYPE_WORDS)
    raise _CellError(f'"{_shorten(value)}" is not {wanted or "of the declared type"}')


def _convert_as(text: str, kind: str) -> object:
    if kind in ("integer", "number"):
        if not _NUMBER.fullmatch(text):
            return _OMIT
        if _INTEGER_LITERAL.fullmatch(text):
            return int(text)
        number = float(text)
        if not math.isfinite(number):
            return _OMIT
        if kind == "integer":
            return int(number) if number.is_integer() else _OMIT
        return number
    if kind == "boolean":
        lowered = text.lower()
        if lowered in _TRUE:
            return True
        return False if lowered in _FALSE else _OMIT
    try:
        parsed = _json_loads(text)
    except ValueError:
        return _OMIT
    wanted = dict if kind == "object" else list
    return parsed if isinstance(parsed, wanted) else _OMIT


def _reject_constant(name: str) -> object:
    # Python reads NaN and Infinity, but they are not JSON and no database column stores them.
    raise ValueError(f"{name} is not allowed in JSON")


def _json_loads(text: str) -> object:
    return json.loads(text, parse_constant=_reject_constant)


def _json_problem(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at column {exc.colno}"
    return str(exc)


def _has_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(key) or _has_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _schema_reason(*, schema: dict, instance: object, what: str) -> str | None:
    if not schema:
        return None
    errors = schema_errors(schema=schema, instance=instance, limit=_SCHEMA_ERROR_LIMIT)
    if not errors:
        return None
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{what}: {errors[0]}{more}"


def _span(start: int, end: int) -> str:
    # A row over many lines usually means a quote was opened and never closed.
    return f" (the row runs over lines {start}-{end}: is a quote left open?)" if end > start else ""


class _Rules:
    """The checks every row goes through, prepared once per file from its ExampleFormat."""

    def __init__(self, fmt: ExampleFormat) -> None:
        self.fmt = fmt
        self.classify = fmt.kind == CLASSIFY
        self.input_types = _property_types(fmt.input_schema)
        self.output_types = _property_types(fmt.output_schema)
        self._labels = frozenset(fmt.labels)
        self._output_reasons: dict[str, str | None] = {}

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
                return RejectedRow(line, f'label "{_shorten(label)}" is not one of {choices}')
            expected = {**expected, "label": label}
        if all(map(_blank, data.values())):
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


def _stop(line: int, max_rows: int) -> RejectedRow:
    return RejectedRow(line, f"{STOPPED_PREFIX}more than {max_rows} rows")


# --- JSONL ------------------------------------------------------------------------------------


def _iter_jsonl(
    *, stream: IO[bytes], rules: _Rules, max_rows: int
) -> Iterator[ParsedExample | RejectedRow]:
    lines = _Lines(stream, csv_quoting=False)
    rows = 0
    while True:
        lines.mark()
        try:
            text = next(lines)
        except StopIteration:
            return
        except _RowTooLong:
            text = None
        if text is not None and not text.strip():
            continue
        line = lines.record_start
        rows += 1
        if rows > max_rows:
            yield _stop(line, max_rows)
            return
        if text is None:
            yield RejectedRow(line, "the line is longer than 1 MB")
        elif lines.bad_utf8:
            yield RejectedRow(line, "not valid UTF-8")
        else:
            yield _jsonl_row(line=line, text=text, rules=rules)


def _jsonl_row(*, line: int, text: str, rules: _Rules) -> ParsedExample | RejectedRow:
    try:
        record = _json_loads(text)
    except ValueError as exc:
        return RejectedRow(line, f"not valid JSON: {_json_problem(exc)}")
    if not isinstance(record, dict):
        return RejectedRow(line, f"not a JSON object but {type(record).__name__}")
    # The cheap test first: a NUL can only come from a raw one or a \u0000 escape.
    if ("\x00" in text or "\\u0000" in text) and _has_nul(record):
        return RejectedRow(line, "contains a NUL character, which cannot be stored")
    special = ("label", "expected") if rules.classify else ("expected",)
    nested = (
        isinstance(record.get("data"), dict)
        and "data" not in rules.input_types
        and set(record) <= {"data", *special}
    )
    if nested:
        data = record["data"]
    else:
        data = {key: value for key, value in record.items() if key not in special}
    given = [key for key in special if key in record]
    if len(given) > 1:
        return RejectedRow(line, 'has both "label" and "expected"; keep one')
    if not given:
        wanted = 'a "label"' if rules.classify else 'an "expected" object'
        return RejectedRow(line, f"no expected output: add {wanted}")
    output = record[given[0]]
    if rules.classify and not isinstance(output, dict):
        output = {"label": output}
    if not isinstance(output, dict):
        return RejectedRow(line, f'"{given[0]}" must be a JSON object')
    return rules.check(line=line, data=data, expected=output)


# --- CSV --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Column:
    index: int
    name: str
    types: tuple[str, ...]


@dataclass(frozen=True)
class _Layout:
    width: int
    inputs: tuple[_Column, ...]
    unnamed: tuple[int, ...]
    label: int | None  # classify: the label (or expected) column
    expected_json: int | None  # generate: one column holding the output as a JSON object
    expected_fields: tuple[_Column, ...]  # generate: expected.<field> columns


def _layout(*, header: list[str], line: int, rules: _Rules) -> _Layout:
    names = [name.strip() for name in header]
    found = ", ".join(name for name in names if name) or "no named columns"
    seen: set[str] = set()
    for name in names:
        if name and name in seen:
            raise ValueError(f'line {line}: the column "{name}" appears twice in the header')
        seen.add(name)
    lowered = [name.lower() for name in names]
    hint = ""
    if len(names) == 1 and (";" in names[0] or "\t" in names[0]):
        hint = "; the file seems to use semicolons or tabs, save it with commas"
    label = expected_json = None
    expected_fields: list[_Column] = []
    if rules.classify:
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
                    raise ValueError(f'line {line}: the column "{name}" names no field')
                expected_fields.append(_Column(index, key, rules.output_types.get(key, ())))
        if expected_json is not None and expected_fields:
            raise ValueError(
                'give the expected output either in an "expected" column or in expected.<field> '
                f"columns, not both: the header has {found}"
            )
        if expected_json is None and not expected_fields:
            raise ValueError(
                f'no "expected" column (or expected.<field> columns): the header has {found}{hint}'
            )
        special = {expected_json} if expected_json is not None else set()
        special.update(column.index for column in expected_fields)
    inputs = tuple(
        _Column(index, name, rules.input_types.get(name, ()))
        for index, name in enumerate(names)
        if name and index not in special
    )
    unnamed = tuple(index for index, name in enumerate(names) if not name)
    return _Layout(
        width=len(names),
        inputs=inputs,
        unnamed=unnamed,
        label=label,
        expected_json=expected_json,
        expected_fields=tuple(expected_fields),
    )


def _iter_csv(
    *, stream: IO[bytes], rules: _Rules, max_rows: int
) -> Iterator[ParsedExample | RejectedRow]:
    # Fields may be as long as a row; csv's default limit (128 KB) would reject some we accept.
    # The limit is process-wide, so it is only ever raised, and our own row limit does the rest.
    if csv.field_size_limit() < MAX_ROW_BYTES:
        csv.field_size_limit(MAX_ROW_BYTES)
    lines = _Lines(stream, csv_quoting=True)
    reader = csv.reader(lines)
    layout = None
    rows = 0
    while True:
        lines.mark()
        problem = None
        try:
            cells = next(reader)
        except StopIteration:
            break
        except _RowTooLong:
            problem = "the row is longer than 1 MB" + _span(lines.record_start, lines.line_no)
        except csv.Error as exc:
            lines.skip_record()
            problem = _csv_problem(exc) + _span(lines.record_start, lines.line_no)
        else:
            if lines.bad_utf8:
                problem = "not valid UTF-8"
            elif not "".join(cells).strip():
                # Blank lines and the ",,," rows spreadsheets leave at the end are not rows.
                continue
        start, end = lines.record_start, lines.line_no
        if layout is None:
            if problem is not None:
                raise ValueError(f"line {start}: cannot read the header row: {problem}")
            layout = _layout(header=cells, line=start, rules=rules)
            continue
        rows += 1
        if rows > max_rows:
            yield _stop(start, max_rows)
            return
        if problem is not None:
            yield RejectedRow(start, problem)
        elif lines.has_nul:
            yield RejectedRow(start, "contains a NUL character, which cannot be stored")
        else:
            yield _csv_row(cells=cells, start=start, end=end, layout=layout, rules=rules)
    if layout is None:
        raise ValueError("the file is empty: a CSV file needs a header row")


def _csv_problem(exc: csv.Error) -> str:
    # csv's own wording speaks of opening files in Python, which means nothing to an operator.
    if "new-line character" in str(exc):
        return (
            "a carriage return inside an unquoted value (quote the value, or save the file "
            "with ordinary line endings)"
        )
    return f"unreadable CSV row: {exc}"


def _csv_row(
    *, cells: list[str], start: int, end: int, layout: _Layout, rules: _Rules
) -> ParsedExample | RejectedRow:
    if len(cells) != layout.width:
        return RejectedRow(
            start,
            f"{len(cells)} values but the header has {layout.width} columns" + _span(start, end),
        )
    for index in layout.unnamed:
        if cells[index].strip():
            return RejectedRow(start, f"column {index + 1} has a value but no name in the header")
    try:
        data = _cells_object(cells, layout.inputs, prefix="")
        if layout.label is not None:
            expected = {"label": cells[layout.label]}
        elif layout.expected_json is not None:
            expected = _csv_expected_json(cells[layout.expected_json])
        else:
            expected = _cells_object(cells, layout.expected_fields, prefix="expected.")
    except _CellError as exc:
        return RejectedRow(start, str(exc))
    return rules.check(line=start, data=data, expected=expected)


def _cells_object(cells: list[str], columns: tuple[_Column, ...], *, prefix: str) -> dict:
    result = {}
    for column in columns:
        try:
            value = _convert(cells[column.index], column.types)
        except _CellError as exc:
            raise _CellError(f'column "{prefix}{column.name}": {exc}') from None
        if value is not _OMIT:
            result[column.name] = value
    return result


def _csv_expected_json(cell: str) -> dict:
    text = cell.strip()
    if not text:
        raise _CellError('column "expected" is empty')
    try:
        parsed = _json_loads(text)
    except ValueError as exc:
        raise _CellError(f'column "expected" is not valid JSON: {_json_problem(exc)}') from None
    if not isinstance(parsed, dict):
        raise _CellError('column "expected" must hold a JSON object')
    return parsed
