"""Reading the rows of an uploaded CSV or JSONL file, with line-numbered rejected rows.

The stream is read one physical line at a time (never whole), so memory stays flat on a large
upload and the stream's position is an honest progress measure. Each line is decoded on its own:
a line that is not valid UTF-8 rejects only the row it belongs to, in CSV too, where a row may
span several lines. Line numbers are physical lines of the file, as a text editor shows them.

Encoding: UTF-8, with or without a byte order mark; a UTF-16 file is refused with advice, and a
line that is not UTF-8 (Latin-1, say) rejects its row. What a row means is the caller's: a
`RowReader` is shown the CSV header, then turns each CSV row or JSONL line into a parsed row or a
`RejectedRow`. Everything else is here, the same for example files and item files.
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
from typing import IO, Protocol

# A row (all of its physical lines) longer than this is rejected. It bounds the memory one row
# can take, and a row this large would not fit a model's prompt anyway.
MAX_ROW_BYTES = 1024 * 1024
MAX_ROWS = 200_000
KEPT_REJECTIONS = 100
STOPPED_PREFIX = "stopped: "
NUL_REASON = "contains a NUL character, which cannot be stored"
# JSON nested deeper than this is rejected: it is no one's real data, and every step that walks
# the data (schema checks, hashing, templates) must stay far from Python's recursion limit.
MAX_DEPTH = 32

CSV_SUFFIXES = frozenset({".csv"})
JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})
SUFFIXES = CSV_SUFFIXES | JSONL_SUFFIXES
# Read size when skipping the rest of an over-long row: small, so skipping stays cheap in memory.
_SKIP_CHUNK = 64 * 1024

# ASCII-only so that int() never sees the other Unicode digits it would accept.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
INTEGER_LITERAL = re.compile(r"[+-]?[0-9]+", re.ASCII)
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
OMIT = object()


@dataclass(frozen=True)
class RejectedRow:
    line: int
    reason: str


@dataclass
class ImportReport:
    """Counts of one import and its first rejected rows, for display."""

    accepted: int = 0
    rejected: int = 0
    # True when the file had more rows than allowed; its stop notice is the last rejected row.
    stopped: bool = False
    rejected_rows: list[RejectedRow] = field(default_factory=list)
    kept: int = KEPT_REJECTIONS


def report_add(*, report: ImportReport, row: object) -> None:
    """Count one row read from a file in the report, keeping the first rejected rows."""
    if not isinstance(row, RejectedRow):
        report.accepted += 1
        return
    if row.reason.startswith(STOPPED_PREFIX):
        # Not a bad row but the end of reading; always shown, even past the kept rejections.
        report.stopped = True
        report.rejected_rows.append(row)
        return
    report.rejected += 1
    if len(report.rejected_rows) < report.kept:
        report.rejected_rows.append(row)


def bytes_progress(stream: IO[bytes]) -> int:
    """Bytes read so far from the stream given to iter_rows, for a progress bar."""
    try:
        return stream.tell()
    except (OSError, ValueError):
        # A pipe cannot tell its position; a progress bar is better empty than an error.
        return 0


@dataclass(frozen=True)
class CsvHeader:
    """The header row of a CSV file: its names, trimmed, and where it stands."""

    line: int
    names: tuple[str, ...]

    @property
    def found(self) -> str:
        """The named columns, for a message that says what the header has."""
        return ", ".join(name for name in self.names if name) or "no named columns"

    @property
    def hint(self) -> str:
        if len(self.names) == 1 and (";" in self.names[0] or "\t" in self.names[0]):
            return "; the file seems to use semicolons or tabs, save it with commas"
        return ""


class RowReader[Row](Protocol):
    """What a kind of file makes of its rows."""

    def csv_header(self, header: CsvHeader) -> None:
        """Prepare for the rows under this header, or raise ValueError saying what is wrong."""

    def csv_row(self, *, cells: list[str], start: int, end: int) -> Row | RejectedRow:
        """One CSV row (as many values as the header has columns), running over lines
        start to end."""

    def jsonl_row(self, *, line: int, text: str) -> Row | RejectedRow:
        """One non-blank JSONL line, decoded, without its line ending."""


def iter_rows[Row](
    *, stream: IO[bytes], filename: str, reader: RowReader[Row], max_rows: int = MAX_ROWS
) -> Iterator[Row | RejectedRow]:
    """Each row of a CSV or JSONL file as the reader makes it, or rejected with a reason.
    Raises ValueError for a file that cannot be read at all (wrong kind, UTF-16, bad header)."""
    # Checked here rather than inside the generator so a wrong file fails at the call.
    suffix = PurePath(filename).suffix.lower()
    if suffix in CSV_SUFFIXES:
        return _iter_csv(stream=stream, reader=reader, max_rows=max_rows)
    if suffix in JSONL_SUFFIXES:
        return _iter_jsonl(stream=stream, reader=reader, max_rows=max_rows)
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


# --- Values -----------------------------------------------------------------------------------


class CellError(Exception):
    """A cell that is not of its column's type; the message says why."""


def _types(schema: object) -> tuple[str, ...]:
    declared = schema.get("type") if isinstance(schema, dict) else None
    if isinstance(declared, str):
        return (declared,)
    if isinstance(declared, list):
        return tuple(kind for kind in declared if isinstance(kind, str))
    return ()


def property_types(schema: dict) -> dict[str, tuple[str, ...]]:
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return {}
    return {name: _types(sub) for name, sub in properties.items()}


def shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def cell_value(value: str, types: tuple[str, ...]) -> object:
    """A CSV cell as the JSON type its schema property declares; text when none is declared."""
    if not types:
        return value
    if not value.strip():
        if "null" in types:
            return None
        if "string" in types:
            return value
        return OMIT
    text = value.strip()
    for kind in ("integer", "number", "boolean", "object", "array"):
        if kind not in types:
            continue
        converted = _convert_as(text, kind)
        if converted is not OMIT:
            return converted
    if "string" in types:
        return value
    wanted = " or ".join(_TYPE_WORDS[kind] for kind in types if kind in _TYPE_WORDS)
    raise CellError(f'"{shorten(value)}" is not {wanted or "of the declared type"}')


def _convert_as(text: str, kind: str) -> object:
    if kind in ("integer", "number"):
        if not _NUMBER.fullmatch(text):
            return OMIT
        if INTEGER_LITERAL.fullmatch(text):
            try:
                return int(text)
            except ValueError:  # more digits than Python converts: no one's real number
                return OMIT
        number = float(text)
        if not math.isfinite(number):
            return OMIT
        if kind == "integer":
            return int(number) if number.is_integer() else OMIT
        return number
    if kind == "boolean":
        lowered = text.lower()
        if lowered in _TRUE:
            return True
        return False if lowered in _FALSE else OMIT
    try:
        parsed = json_loads(text)
    except ValueError:
        return OMIT
    wanted = dict if kind == "object" else list
    return parsed if isinstance(parsed, wanted) else OMIT


def _reject_constant(name: str) -> object:
    # Python reads NaN and Infinity, but they are not JSON and no database column stores them.
    raise ValueError(f"{name} is not allowed in JSON")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{shorten(text)} is too large a number")
    return number


def json_loads(text: str) -> object:
    """JSON as a database can store it: no NaN or infinite numbers. Nesting too deep for the
    parser is a ValueError like any other bad JSON, not a crash."""
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def json_problem(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at column {exc.colno}"
    return str(exc)


def storage_problem(value: object, *, text: str) -> str | None:
    """Why parsed JSON cannot be stored and used as it is, or None: nested deeper than
    MAX_DEPTH, a NUL character, or half of a surrogate pair (from a \\ud800-style escape), which
    is not text at all. `text` is what it was parsed from, for a quick first look."""
    # The cheap test first: deep nesting needs brackets, and the bad characters an escape.
    if "\\u" not in text and "\x00" not in text and text.count("{") + text.count("[") <= MAX_DEPTH:
        return None
    # A loop, not recursion: the value may be nested as deep as the parser allows.
    pending: list[tuple[object, int]] = [(value, 1)]
    while pending:
        node, depth = pending.pop()
        if isinstance(node, dict | list):
            if depth > MAX_DEPTH:
                return f"nested more than {MAX_DEPTH} levels deep"
            if isinstance(node, dict):
                for key in node:
                    if reason := _text_problem(key):
                        return reason
                node = node.values()
            pending.extend((inner, depth + 1) for inner in node)
        elif isinstance(node, str) and (reason := _text_problem(node)):
            return reason
    return None


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return NUL_REASON
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            return "contains half of a surrogate pair (a lone \\ud800-\\udfff escape)"
    return None


def blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def json_type(value: object) -> str:
    return type(value).__name__


def json_object(*, line: int, text: str) -> dict | RejectedRow:
    """A JSONL line as a JSON object a database can store, or rejected saying why not."""
    try:
        record = json_loads(text)
    except ValueError as exc:
        return RejectedRow(line, f"not valid JSON: {json_problem(exc)}")
    if not isinstance(record, dict):
        return RejectedRow(line, f"not a JSON object but {json_type(record)}")
    reason = storage_problem(record, text=text)
    return record if reason is None else RejectedRow(line, reason)


def enveloped(record: dict, *, keys: set[str], input_types: dict) -> bool:
    """Whether a JSONL record holds its fields in a "data" object beside the given keys (rather
    than being flat). Not when the input schema itself has a "data" property."""
    return (
        isinstance(record.get("data"), dict) and "data" not in input_types and set(record) <= keys
    )


@dataclass(frozen=True)
class Column:
    index: int
    name: str
    types: tuple[str, ...]


def cells_object(
    cells: list[str], columns: tuple[Column, ...], *, prefix: str = "", lenient: bool = False
) -> dict:
    """The named cells of a row as a JSON object, typed by their columns. A cell that does not
    convert raises CellError naming its column, or with `lenient` stays text."""
    result = {}
    for column in columns:
        try:
            value = cell_value(cells[column.index], column.types)
        except CellError as exc:
            if not lenient:
                raise CellError(f'column "{prefix}{column.name}": {exc}') from None
            value = cells[column.index]
        if value is not OMIT:
            result[column.name] = value
    return result


def span(start: int, end: int) -> str:
    # A row over many lines usually means a quote was opened and never closed.
    return f" (the row runs over lines {start}-{end}: is a quote left open?)" if end > start else ""


def _stop(line: int, max_rows: int) -> RejectedRow:
    return RejectedRow(line, f"{STOPPED_PREFIX}more than {max_rows} rows")


# --- JSONL ------------------------------------------------------------------------------------


def _iter_jsonl[Row](
    *, stream: IO[bytes], reader: RowReader[Row], max_rows: int
) -> Iterator[Row | RejectedRow]:
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
            # Without its line ending, so a JSON error's column is the line's own.
            yield reader.jsonl_row(line=line, text=text.rstrip("\r\n"))


# --- CSV --------------------------------------------------------------------------------------


def _iter_csv[Row](
    *, stream: IO[bytes], reader: RowReader[Row], max_rows: int
) -> Iterator[Row | RejectedRow]:
    # Fields may be as long as a row; csv's default limit (128 KB) would reject some we accept.
    # The limit is process-wide, so it is only ever raised, and our own row limit does the rest.
    if csv.field_size_limit() < MAX_ROW_BYTES:
        csv.field_size_limit(MAX_ROW_BYTES)
    lines = _Lines(stream, csv_quoting=True)
    records = csv.reader(lines)
    header = None
    rows = 0
    while True:
        lines.mark()
        problem = None
        try:
            cells = next(records)
        except StopIteration:
            break
        except _RowTooLong:
            problem = "the row is longer than 1 MB" + span(lines.record_start, lines.line_no)
        except csv.Error as exc:
            lines.skip_record()
            problem = _csv_problem(exc) + span(lines.record_start, lines.line_no)
        else:
            if lines.bad_utf8:
                problem = "not valid UTF-8"
            elif not "".join(cells).strip():
                # Blank lines and the ",,," rows spreadsheets leave at the end are not rows.
                continue
        start, end = lines.record_start, lines.line_no
        if header is None:
            if problem is not None:
                raise ValueError(f"line {start}: cannot read the header row: {problem}")
            header = _csv_header(cells, line=start)
            reader.csv_header(header)
            continue
        rows += 1
        if rows > max_rows:
            yield _stop(start, max_rows)
            return
        if problem is None and lines.has_nul:
            problem = NUL_REASON
        if problem is None:
            problem = _csv_shape_problem(cells, header=header, start=start, end=end)
        if problem is not None:
            yield RejectedRow(start, problem)
        else:
            yield reader.csv_row(cells=cells, start=start, end=end)
    if header is None:
        raise ValueError("the file is empty: a CSV file needs a header row")


def _csv_header(cells: list[str], *, line: int) -> CsvHeader:
    names = tuple(name.strip() for name in cells)
    seen: set[str] = set()
    for name in names:
        if name and name in seen:
            raise ValueError(f'line {line}: the column "{name}" appears twice in the header')
        seen.add(name)
    return CsvHeader(line=line, names=names)


def _csv_shape_problem(cells: list[str], *, header: CsvHeader, start: int, end: int) -> str | None:
    width = len(header.names)
    if len(cells) != width:
        return f"{len(cells)} values but the header has {width} columns" + span(start, end)
    for index, name in enumerate(header.names):
        if not name and cells[index].strip():
            return f"column {index + 1} has a value but no name in the header"
    return None


def _csv_problem(exc: csv.Error) -> str:
    # csv's own wording speaks of opening files in Python, which means nothing to an operator.
    if "new-line character" in str(exc):
        return (
            "a carriage return inside an unquoted value (quote the value, or save the file "
            "with ordinary line endings)"
        )
    return f"unreadable CSV row: {exc}"
