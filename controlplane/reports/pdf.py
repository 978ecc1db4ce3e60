"""A report as a PDF a client can forward: reportlab's platypus for the pages and
reportlab.graphics for the charts (vector, drawn from the same days as the page's plotly charts).

Pages, in order: 1 summary (headline numbers, the comparison with the previous period, budgets),
2 capacity, 3 cost, 4 SLA and quality, then the per-day appendix (one page for a month)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any
from xml.sax.saxutils import escape

from reportlab.graphics.charts.barcharts import VerticalBarChart
from reportlab.graphics.charts.legends import Legend
from reportlab.graphics.charts.linecharts import HorizontalLineChart
from reportlab.graphics.shapes import Drawing, String
from reportlab.graphics.widgets.markers import makeMarker
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import (
    KeepTogether,
    PageBreak,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    TableStyle,
)
from reportlab.platypus import Table as PdfTable

from controlplane.reports.narrative import capacity_text, cost_text, quality_text
from controlplane.reports.tables import Table

PAGE = landscape(A4)
MARGIN = 14 * mm
WIDTH = PAGE[0] - 2 * MARGIN
INK = colors.HexColor("#1f2937")
MUTED = colors.HexColor("#6b7280")
ACCENT = colors.HexColor("#2563eb")
SERIES = [colors.HexColor(c) for c in ("#2563eb", "#16a34a", "#d97706", "#dc2626")]

_styles = getSampleStyleSheet()
TITLE = ParagraphStyle("title", parent=_styles["Title"], alignment=0, textColor=INK, fontSize=22)
H1 = ParagraphStyle("h1", parent=_styles["Heading1"], textColor=INK, fontSize=16, spaceAfter=4)
H2 = ParagraphStyle("h2", parent=_styles["Heading2"], textColor=INK, fontSize=11, spaceAfter=2)
BODY = ParagraphStyle("body", parent=_styles["BodyText"], fontSize=9, leading=11, textColor=INK)
SMALL = ParagraphStyle("small", parent=BODY, fontSize=7.5, leading=9, textColor=INK)
NOTE = ParagraphStyle("note", parent=BODY, fontSize=8, textColor=MUTED)


def report_pdf(report, *, tables: dict[str, Table]) -> bytes:
    """The report as PDF bytes."""
    out = io.BytesIO()
    title = f"{report.client.name}: capacity, cost and quality report"
    doc = SimpleDocTemplate(
        out,
        pagesize=PAGE,
        leftMargin=MARGIN,
        rightMargin=MARGIN,
        topMargin=MARGIN,
        bottomMargin=MARGIN,
        title=title,
        author="Sluice",
        subject=report.period.label,
    )

    def footer(canvas, document) -> None:
        canvas.saveState()
        canvas.setFont("Helvetica", 7.5)
        canvas.setFillColor(MUTED)
        canvas.drawString(MARGIN, 8 * mm, f"{report.client.name} · {report.period.label} (UTC)")
        canvas.drawRightString(PAGE[0] - MARGIN, 8 * mm, f"Page {document.page}")
        canvas.restoreState()

    story: list[Any] = [
        Paragraph(escape(title), TITLE),
        Paragraph(
            escape(
                f"{report.period.label} (UTC), compared with {report.period.previous.label}. "
                f"Generated {report.generated_at:%d %b %Y %H:%M} UTC."
            ),
            NOTE,
        ),
        Spacer(1, 6 * mm),
        _kpi_strip(report.kpis),
        Spacer(1, 6 * mm),
        *_section_table(tables["summary"]),
        *_section_table(tables["budget"], empty="No budget is set."),
        PageBreak(),
        Paragraph("Capacity", H1),
        Paragraph(escape(capacity_text(report)), BODY),
        Spacer(1, 3 * mm),
        _bar_line_chart(
            report.days,
            bars=[("finished", "items finished")],
            lines=[("ingested", "items received")],
        ),
        *_section_table(tables["capacity"], small=True),
        PageBreak(),
        Paragraph("Cost", H1),
        Paragraph(escape(cost_text(report)), BODY),
        Spacer(1, 3 * mm),
        _bar_line_chart(
            report.days,
            bars=[("cost", "model cost"), ("review_cost", "review cost")],
            lines=[("cache_saved", "saved by the cache"), ("routing_saved", "saved by routing")],
            height=48 * mm,
        ),
        *_section_table(tables["cost_pipeline"]),
        *_section_table(tables["cost_step"], empty="No step ran in this period."),
        *_section_table(tables["cost_model"], empty="No model was called in this period."),
        PageBreak(),
        Paragraph("SLA and quality", H1),
        Paragraph(escape(quality_text(report)), BODY),
        Spacer(1, 3 * mm),
        _bar_line_chart(
            report.days,
            bars=[],
            lines=[("within_sla", "within the latency target"), ("review_rate", "review rate")],
            percent=True,
        ),
        *_section_table(tables["sla"], small=True),
        PageBreak(),
        Paragraph("Per day", H1),
        *_section_table(tables["cost_day"], small=True, title=False),
    ]
    doc.build(story, onFirstPage=footer, onLaterPages=footer)
    return out.getvalue()


def _kpi_strip(kpis: Sequence[dict[str, str]]) -> PdfTable:
    cells = [
        [
            Paragraph(
                f"<font size=7.5 color='#6b7280'>{escape(k['label'])}</font><br/>"
                f"<font size=14><b>{escape(k['value'])}</b></font><br/>"
                f"<font size=7 color='#6b7280'>{escape(_before(k))}</font>",
                BODY,
            )
            for k in kpis
        ]
    ]
    table = PdfTable(cells, colWidths=[WIDTH / len(kpis)] * len(kpis))
    table.setStyle(
        TableStyle(
            [
                ("BOX", (0, 0), (-1, -1), 0.5, colors.HexColor("#d1d5db")),
                ("INNERGRID", (0, 0), (-1, -1), 0.5, colors.HexColor("#d1d5db")),
                ("BACKGROUND", (0, 0), (-1, -1), colors.HexColor("#f9fafb")),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("TOPPADDING", (0, 0), (-1, -1), 6),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 6),
            ]
        )
    )
    return table


def _before(kpi: dict[str, str]) -> str:
    if not kpi["previous"]:
        return " "
    change = f" ({kpi['change']})" if kpi["change"] else ""
    return f"before: {kpi['previous']}{change}"


def _section_table(
    table: Table, *, small: bool = False, empty: str = "Nothing in this period.", title=True
) -> list[Any]:
    style = SMALL if small else BODY
    parts: list[Any] = [Paragraph(escape(table.title), H2)] if title else []
    rows = table.display_rows
    if not rows:
        return [*parts, Paragraph(escape(empty), NOTE), Spacer(1, 3 * mm)]
    head = [Paragraph(f"<b>{escape(c.label)}</b>", style) for c in table.columns]
    body = [[Paragraph(escape(value), style) for value in row] for row in rows]
    pdf_table = PdfTable([head, *body], repeatRows=1, colWidths=_widths(table))
    pdf_table.setStyle(
        TableStyle(
            [
                ("LINEBELOW", (0, 0), (-1, 0), 0.8, INK),
                ("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, colors.HexColor("#f3f4f6")]),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("TOPPADDING", (0, 0), (-1, -1), 1.5),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
            ]
        )
    )
    if table.note:
        parts.append(Paragraph(escape(table.note), NOTE))
    return [KeepTogether([*parts, pdf_table]), Spacer(1, 3 * mm)]


def _widths(table: Table) -> list[float]:
    """Text columns share what the number columns leave."""
    numbers = [c for c in table.columns if c.kind != "text"]
    texts = len(table.columns) - len(numbers)
    number_width = min(30 * mm, WIDTH / len(table.columns))
    text_width = (WIDTH - number_width * len(numbers)) / texts if texts else 0
    return [number_width if c.kind != "text" else text_width for c in table.columns]


def _bar_line_chart(
    days: Sequence[dict[str, Any]],
    *,
    bars: Sequence[tuple[str, str]],
    lines: Sequence[tuple[str, str]],
    percent: bool = False,
    height: float = 52 * mm,
) -> Drawing:
    """Bars (stacked) and lines over the days, on one value axis, with a legend."""
    drawing = Drawing(WIDTH, height)
    names = [day["day"].strftime("%d %b") for day in days]
    step = max(1, len(names) // 15)
    labels = [name if i % step == 0 else "" for i, name in enumerate(names)]
    values = {key: [_number(day[key], percent) for day in days] for key, _ in [*bars, *lines]}
    peak = max([0.0] + [sum(values[k][i] or 0 for k, _ in bars) for i in range(len(days))])
    peak = max([peak] + [v for k, _ in lines for v in values[k] if v is not None])
    top = 100.0 if percent else (peak * 1.1 or 1.0)
    plot = {"x": 40, "y": 22, "width": WIDTH - 190, "height": height - 32}
    if bars:
        chart = VerticalBarChart()
        for name, value in plot.items():
            setattr(chart, name, value)
        chart.data = [[v or 0 for v in values[key]] for key, _ in bars]
        chart.categoryAxis.style = "stacked"
        chart.categoryAxis.categoryNames = labels
        chart.categoryAxis.labels.fontSize = 6
        chart.valueAxis.valueMin, chart.valueAxis.valueMax = 0, top
        chart.valueAxis.labels.fontSize = 7
        chart.barSpacing = 0.5
        for index in range(len(bars)):
            chart.bars[index].fillColor = SERIES[index]
            chart.bars[index].strokeColor = None
        drawing.add(chart)
    # A line without a single measurement has nothing to draw (reportlab refuses it).
    drawn = [(key, label) for key, label in lines if any(v is not None for v in values[key])]
    if drawn:
        line = HorizontalLineChart()
        for name, value in plot.items():
            setattr(line, name, value)
        line.data = [values[key] for key, _ in drawn]
        line.categoryAxis.categoryNames = labels
        line.categoryAxis.visible = not bars
        line.categoryAxis.labels.fontSize = 6
        line.valueAxis.valueMin, line.valueAxis.valueMax = 0, top
        line.valueAxis.visible = not bars
        line.valueAxis.labels.fontSize = 7
        line.joinedLines = 1
        for index, (key, _) in enumerate(drawn):
            colour = SERIES[(len(bars) + [k for k, _ in lines].index(key)) % len(SERIES)]
            line.lines[index].strokeColor = colour
            line.lines[index].strokeWidth = 1.5
            # A lone day between days without a measurement still shows.
            line.lines[index].symbol = makeMarker("FilledCircle", size=4)
            line.lines[index].symbol.fillColor = line.lines[index].strokeColor
        drawing.add(line)
    if not bars and not drawn:
        drawing.add(
            String(
                plot["x"] + plot["width"] / 2,
                plot["y"] + plot["height"] / 2,
                "No measurement in this period",
                fontSize=9,
                fillColor=MUTED,
                textAnchor="middle",
            )
        )
    legend = Legend()
    legend.x, legend.y = WIDTH - 140, height - 12
    legend.fontSize = 7
    legend.alignment = "right"
    legend.colorNamePairs = [
        (SERIES[i % len(SERIES)], label) for i, (_, label) in enumerate([*bars, *lines])
    ]
    drawing.add(legend)
    return drawing


def _number(value: Any, percent: bool) -> float | None:
    """A chart value; None (a day without a measurement) leaves a gap in a line."""
    if value is None:
        return None
    return float(value) * 100 if percent else float(value)
