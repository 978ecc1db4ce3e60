"""Reading items from an uploaded CSV or JSONL file: each row an entry for `items_submit`, or a
rejected row with its line number and the reason.

CSV: a header row. The columns `external_id` and `priority` (in any case) are the item's; every
other named column is a key of its data, as text. Where the pipeline's input schema declares a
property's type (integer, number, boolean, object, array), that column's cells are converted as
in example files, and a cell that does not convert stays text, for the schema to quarantine.

JSONL: one JSON object a line, either `{"data": {...}, "external_id": "...", "priority": 5}` or
any other object, which is taken whole as the data.

A row that cannot be an item at all is rejected: not JSON, not an object, no data, a priority
that is not 0 to 9, an external id longer than 200 characters, NUL characters, nesting deeper
than rows_io.MAX_DEPTH. How the file is read (UTF-8 with or without BOM, line numbers,
over-long rows) is `pipelines.rows_io`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from pipelines.rows_io import (
    INTEGER_LITERAL,
    MAX_ROWS,
    Column,
    CsvHeader,
    RejectedRow,
    blank,
    cells_object,
    enveloped,
    iter_rows,
    json_object,
    json_type,
    property_types,
    shorten,
    storage_problem,
)

# The columns (and JSONL keys) that are the item's own rather than its data.
EXTERNAL_ID = "external_id"
PRIORITY = "priority"
# Item.external_id's length.
MAX_EXTERNAL_ID = 200
# More columns than anyone's item has: it bounds what one row can make the reader hold.
MAX_COLUMNS = 1000


@dataclass(frozen=True)
class ParsedItem:
    line: int
    data: dict
    external_id: str = ""
    priority: int | None = None

    def entry(self) -> dict[str, Any]:
        """As `items_submit` takes it (and the API sends it)."""
        return {"data": self.data, "external_id": self.external_id, "priority": self.priority}


def iter_items(
    *, stream: IO[bytes], filename: str, input_schema: dict, max_rows: int = MAX_ROWS
) -> Iterator[ParsedItem | RejectedRow]:
    """Each row of an item file, read as an item, or rejected with a reason. Raises
    ValueError for a file that cannot be read at all (its kind, UTF-16, a bad header)."""
    return iter_rows(
        stream=stream, filename=filename, reader=_ItemRows(input_schema), max_rows=max_rows
    )


class _BadField(Exception):
    pass


def _external_id(value: object) -> str:
    if value is None:
        return ""
    # Ids exported from a database are often numbers; they mean the same as their digits.
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise _BadField(f"external_id must be text, got {json_type(value)}")
    value = value.strip()
    if len(value) > MAX_EXTERNAL_ID:
        raise _BadField(
            f"external_id is {len(value)} characters long; at most {MAX_EXTERNAL_ID} are allowed"
        )
    return value


def _priority(value: object) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    number = None
    if isinstance(value, bool):
        pass
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and INTEGER_LITERAL.fullmatch(text := value.strip()):
        # Any long run of digits is out of range; int() would refuse it past 4300 digits.
        number = int(text) if len(text) <= 3 else 10
    if number is None or not 0 <= number <= 9:
        shown = shorten(json.dumps(value, ensure_ascii=False))
        raise _BadField(f"priority must be a whole number from 0 to 9, got {shown}")
    return number


class _ItemRows:
    """What a row of an item file is; one per file."""

    def __init__(self, input_schema: dict) -> None:
        self.input_types = property_types(input_schema or {})
        self._columns: tuple[Column, ...] = ()
        self._external_id: int | None = None
        self._priority: int | None = None

    def _item(
        self, *, line: int, data: dict, external_id: object, priority: object
    ) -> ParsedItem | RejectedRow:
        try:
            return ParsedItem(
                line=line,
                data=data,
                external_id=_external_id(external_id),
                priority=_priority(priority),
            )
        except _BadField as exc:
            return RejectedRow(line, str(exc))

    # --- JSONL --------------------------------------------------------------------------------

    def jsonl_row(self, *, line: int, text: str) -> ParsedItem | RejectedRow:
        record = json_object(line=line, text=text)
        if isinstance(record, RejectedRow):
            return record
        keys = {"data", EXTERNAL_ID, PRIORITY}
        if not enveloped(record, keys=keys, input_types=self.input_types):
            record = {"data": record}
        if not record["data"]:
            return RejectedRow(line, "no data: the object is empty")
        return self._item(
            line=line,
            data=record["data"],
            external_id=record.get(EXTERNAL_ID),
            priority=record.get(PRIORITY),
        )

    # --- CSV ----------------------------------------------------------------------------------

    def csv_header(self, header: CsvHeader) -> None:
        if len(header.names) > MAX_COLUMNS:
            raise ValueError(
                f"line {header.line}: the header has {len(header.names)} columns; "
                f"a file of items may have at most {MAX_COLUMNS}"
            )
        lowered = [name.lower() for name in header.names]
        self._external_id = lowered.index(EXTERNAL_ID) if EXTERNAL_ID in lowered else None
        self._priority = lowered.index(PRIORITY) if PRIORITY in lowered else None
        self._columns = tuple(
            Column(index, name, self.input_types.get(name, ()))
            for index, name in enumerate(header.names)
            if name and index not in (self._external_id, self._priority)
        )
        if not self._columns:
            raise ValueError(f"no data columns: the header has {header.found}{header.hint}")

    def csv_row(self, *, cells: list[str], start: int, end: int) -> ParsedItem | RejectedRow:
        data = cells_object(cells, self._columns, lenient=True)
        if all(map(blank, data.values())):
            return RejectedRow(start, "no data: every data column is blank")
        # Only a column typed as an object or array holds JSON that might nest or hold escapes.
        reason = storage_problem(data, text=",".join(cells))
        if reason is not None:
            return RejectedRow(start, reason)
        return self._item(
            line=start,
            data=data,
            external_id=None if self._external_id is None else cells[self._external_id],
            priority=None if self._priority is None else cells[self._priority],
        )
