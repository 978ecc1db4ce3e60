"""A report's tables: typed columns, raw values, and how each value is shown on the page and in
the PDF (the CSV export writes the raw values). No ORM."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from controlplane.monitoring.figures import _duration
from review.figures import duration_text

# Column kinds: how a raw value is shown. ROW: the kind is the row's own (`Table.row_kinds`).
TEXT, INT, MONEY, RATE, PERCENT, SECONDS, CHANGE, ROW = (
    "text",
    "int",
    "money",
    "rate",
    "percent",
    "seconds",
    "change",
    "row",
)


@dataclass(frozen=True)
class Column:
    label: str
    kind: str = TEXT


@dataclass
class Table:
    """One table of a report, exportable as CSV under its `name`."""

    name: str
    title: str
    columns: list[Column]
    rows: list[list[Any]] = field(default_factory=list)
    note: str = ""
    # Per row, the kind of its ROW columns (a summary mixes money, counts and shares).
    row_kinds: list[str] = field(default_factory=list)

    @property
    def display_rows(self) -> list[list[str]]:
        shown = []
        for index, row in enumerate(self.rows):
            kinds = [
                self.row_kinds[index] if column.kind == ROW else column.kind
                for column in self.columns
            ]
            shown.append([show(value, kind) for value, kind in zip(row, kinds, strict=True)])
        return shown

    def csv_text(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([column.label for column in self.columns])
        for row in self.rows:
            writer.writerow([raw(value) for value in row])
        return out.getvalue()


def raw(value: Any) -> str:
    """A value as the CSV writes it: numbers in full, nothing for missing values, and a text
    that a spreadsheet would run as a formula quoted with an apostrophe."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}" if abs(value) < 1e6 else f"{value:.0f}"
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value else "0"
    text = str(value)
    if text[:1] in ("=", "+", "-", "@") and not _is_number(text):
        return "'" + text
    return text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def show(value: Any, kind: str) -> str:
    """A value as a person reads it."""
    if value is None:
        return "—"
    if kind == INT:
        return f"{int(value):,}"
    if kind == MONEY:
        return money(Decimal(value))
    if kind == RATE:
        number = float(value)
        return f"{number:,.1f}" if abs(number) >= 10 or number == 0 else f"{number:,.3g}"
    if kind == PERCENT:
        return f"{float(value):.1%}"
    if kind == CHANGE:
        return f"{float(value):+.1%}"
    if kind == SECONDS:
        return duration(float(value)) if value else "0 s"
    return str(value)


def money(amount: Decimal) -> str:
    """Dollars to the cent; under a dollar (a cost per item) to four or six decimals."""
    if abs(amount) >= 1 or amount == 0:
        return f"${amount:,.2f}"
    return f"${amount:.4f}" if abs(amount) >= Decimal("0.01") else f"${amount:.6f}"


def duration(seconds: float) -> str:
    """Under a minute as the dashboards show it (ms, s), longer as the review backlog does."""
    return _duration(seconds) if seconds < 60 else duration_text(seconds)
