"""Printable documents: the PDF of an order (attached to its e-mail) and of a campaign letter.

ReportLab writes them (its wheels need no system libraries). The text is set in DejaVu Sans,
vendored in ``fonts/`` and embedded as subsets, so Cyrillic and Czech letters render on any
machine and in any viewer, and the text can be extracted again (the tests do).

Why ReportLab and not fpdf2: both embed a subset of the font, but fpdf2 subsets with
fontTools on every document, and an order's PDF took 30 ms with it against about 8 ms here;
the mailer's goal is 50 e-mails a second with their attachments on one core.
"""

from __future__ import annotations

import functools
import io
from importlib.resources import files
from pathlib import Path
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle
from reportlab.platypus.flowables import Flowable

from connectors.mail.letter import Letter

FONT, BOLD = "DejaVuSans", "DejaVuSans-Bold"
_FONTS = Path(str(files("connectors.mail") / "fonts"))
_MARGIN = 16 * mm


@functools.cache
def _register_fonts() -> None:
    for name in (FONT, BOLD):
        pdfmetrics.registerFont(TTFont(name, str(_FONTS / f"{name}.ttf")))


def _styles() -> dict[str, ParagraphStyle]:
    return {
        "title": ParagraphStyle("title", fontName=BOLD, fontSize=15, leading=19,
                                spaceAfter=4 * mm),
        "label": ParagraphStyle("label", fontName=BOLD, fontSize=9, leading=12),
        "body": ParagraphStyle("body", fontName=FONT, fontSize=9, leading=12),
        "quote": ParagraphStyle("quote", fontName=FONT, fontSize=10, leading=13,
                                leftIndent=4 * mm, spaceBefore=2 * mm, spaceAfter=3 * mm),
        "cell": ParagraphStyle("cell", fontName=FONT, fontSize=8, leading=10),
        "head": ParagraphStyle("head", fontName=BOLD, fontSize=8, leading=10),
        "small": ParagraphStyle("small", fontName=FONT, fontSize=8, leading=10,
                                textColor=colors.grey),
    }


def _text(value: str) -> str:
    """Plain text for a Paragraph (which reads a little markup): escaped, lines kept."""
    return escape(value).replace("\n", "<br/>")


_PADDING = 12  # points a table cell loses to its left and right padding


def _cell(value: str, style: ParagraphStyle, width: float | None) -> str | Paragraph:
    """A table cell: the text itself when it fits on one line (drawn directly), else a
    Paragraph that wraps it. Paragraphs cost most of a PDF's time; few cells need one."""
    if width is not None and "\n" not in value and pdfmetrics.stringWidth(
            value, style.fontName, style.fontSize) <= width - _PADDING:
        return value
    return Paragraph(_text(value), style)


# #, article, description, quantity, unit price, tax, net (millimetres; 178 fit on A4)
_ORDER_WIDTHS = (8, 24, 60, 22, 24, 14, 26)


def letter_pdf(letter: Letter, title: str, page_label: str, *, address: str | None = None
               ) -> bytes:
    """The letter as a PDF: the recipient's address block (a printed letter's), its title,
    facts, the lines with their totals, its notes; the footer (who sent it, the page) on
    every page."""
    _register_fonts()
    style = _styles()
    story: list[Flowable] = []
    if address:
        story += [Paragraph(_text(address), style["body"]), Spacer(1, 12 * mm)]
    story.append(Paragraph(_text(title), style["title"]))
    if letter.facts:
        wide = A4[0] - 2 * _MARGIN - 48 * mm
        facts = Table([[_cell(label, style["label"], 48 * mm),
                        _cell(value, style["body"], wide)]
                       for label, value in letter.facts],
                      colWidths=(48 * mm, wide), hAlign="LEFT")
        facts.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"),
                                   ("FONT", (0, 0), (0, -1), BOLD, 9),
                                   ("FONT", (1, 0), (1, -1), FONT, 9),
                                   ("LEFTPADDING", (0, 0), (-1, -1), 0),
                                   ("BOTTOMPADDING", (0, 0), (-1, -1), 1)]))
        story += [facts, Spacer(1, 4 * mm)]
    if letter.intro and not letter.table:
        story.append(Paragraph(_text(letter.intro), style["body"]))
    if letter.quote:
        story.append(Paragraph(_text(letter.quote), style["quote"]))
    table = letter.table
    if table is not None and table.rows:
        columns = len(table.header)
        widths = [w * mm for w in _ORDER_WIDTHS] if columns == len(_ORDER_WIDTHS) else None
        right = 3 if columns == len(_ORDER_WIDTHS) else columns
        room = widths or [None] * columns
        rows = [[_cell(cell, style["head"], room[n]) for n, cell in enumerate(table.header)]]
        rows += [[_cell(cell, style["cell"], room[n]) for n, cell in enumerate(row)]
                 for row in table.rows]
        grid = Table(rows, colWidths=widths, repeatRows=1, hAlign="LEFT")
        grid.setStyle(TableStyle([
            ("FONT", (0, 0), (-1, 0), BOLD, 8),
            ("FONT", (0, 1), (-1, -1), FONT, 8),
            ("BACKGROUND", (0, 0), (-1, 0), colors.Color(0.92, 0.92, 0.92)),
            ("LINEBELOW", (0, 0), (-1, -1), 0.4, colors.Color(0.75, 0.75, 0.75)),
            ("ALIGN", (right, 1), (-1, -1), "RIGHT"),
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ]))
        story += [grid, Spacer(1, 3 * mm)]
        if table.totals:
            totals = Table([[label, value] for label, value in table.totals],
                           colWidths=(None, 40 * mm), hAlign="RIGHT")
            totals.setStyle(TableStyle([
                ("FONT", (0, 0), (-1, -1), FONT, 9),
                ("FONT", (0, -1), (-1, -1), BOLD, 10),
                ("ALIGN", (0, 0), (-1, -1), "RIGHT"),
                ("LINEABOVE", (0, -1), (-1, -1), 0.6, colors.black),
            ]))
            story.append(totals)
    for note in letter.notes:
        story += [Spacer(1, 3 * mm), Paragraph(_text(note), style["small"])]

    def footer(canvas: Canvas, document: SimpleDocTemplate) -> None:
        canvas.saveState()
        canvas.setFont(FONT, 7)
        canvas.setFillColor(colors.grey)
        canvas.drawString(_MARGIN, 9 * mm, letter.footer)
        canvas.drawRightString(A4[0] - _MARGIN, 9 * mm,
                               page_label.format(page=document.page))
        canvas.restoreState()

    out = io.BytesIO()
    document = SimpleDocTemplate(out, pagesize=A4, leftMargin=_MARGIN, rightMargin=_MARGIN,
                                 topMargin=_MARGIN, bottomMargin=18 * mm, title=title,
                                 creator="boxbus", author=letter.footer)
    document.build(story, onFirstPage=footer, onLaterPages=footer)
    return out.getvalue()
