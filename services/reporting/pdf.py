"""PDF documents with reportlab: an A4 page with the company's letterhead, tables, signatures.

The pieces any of reporting's documents use (the Complaint Handling Report, the monthly
report): `PdfKit` (fonts and paragraph styles), `kv_table` and `grid_table`,
`signature_block`, and `render`, which lays the flowables out on pages that carry the
letterhead (company name, optional logo, the document's title and reference), a footer
"page x / y", and for a draft a watermark.

Chinese text is set in Debian's WenQuanYi Micro Hei (`fonts-wqy-microhei`: a TrueType
collection, hence `subfontIndex`), embedded as a subset; its Latin glyphs serve English too,
so one font sets every document. Paragraphs wrap the CJK way (between any two Chinese
characters, English words kept whole). Rendering is invariant (`invariant=1`: fixed dates
and document id), so the same input gives the same bytes: an issued PDF's hash can be
checked against a new rendering of what was signed.
"""

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.lib.utils import ImageReader
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    Flowable,
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

log = logging.getLogger("qms.reporting")

PAGE = A4
MARGIN = 18 * mm
HEADER_H = 22 * mm
FRAME_W = PAGE[0] - 2 * MARGIN
LINE = colors.HexColor("#9aa5b1")
SHADE = colors.HexColor("#eef1f4")
INK = colors.HexColor("#1f2933")
FALLBACK_FONT = "STSong-Light"  # reportlab's built-in CID font: not embedded, shown by viewers


@cache
def font_name(path: str, index: int) -> str:
    """Register the font once per process; the name to use in styles."""
    # From the file's name (never `hash()`, which differs per process): it is in the bytes.
    name = "".join(ch for ch in f"{Path(path).stem}-{index}" if ch.isalnum() or ch == "-")
    if Path(path).is_file():
        pdfmetrics.registerFont(TTFont(name, path, subfontIndex=index))
        return name
    log.warning("font %s not found: Chinese text uses the viewer's %s (install "
                "fonts-wqy-microhei or set QMS_REPORTING_CJK_FONT)", path, FALLBACK_FONT)
    pdfmetrics.registerFont(UnicodeCIDFont(FALLBACK_FONT))
    return FALLBACK_FONT


class PdfKit:
    """The font and the paragraph styles of every document in one language: Chinese wraps
    between any two characters (English words kept whole), other text at spaces only."""

    def __init__(self, font_path: Path, font_index: int = 0, language: str = "zh"):
        self.font = font_name(str(font_path), font_index)
        self.font_path, self.font_index, self.language = font_path, font_index, language
        base = ParagraphStyle("body", fontName=self.font, fontSize=9.5, leading=13.5,
                              textColor=INK, wordWrap="CJK" if language == "zh" else None)
        self.body = base
        self.small = ParagraphStyle("small", parent=base, fontSize=7.5, leading=10)
        self.label = ParagraphStyle("label", parent=base, fontSize=8.5, leading=12,
                                    textColor=colors.HexColor("#52606d"))
        self.title = ParagraphStyle("title", parent=base, fontSize=16, leading=21,
                                    spaceAfter=2 * mm)
        self.h1 = ParagraphStyle("h1", parent=base, fontSize=11.5, leading=15,
                                 spaceBefore=4 * mm, spaceAfter=1.5 * mm,
                                 textColor=colors.HexColor("#102a43"))
        self.h2 = ParagraphStyle("h2", parent=base, fontSize=10, leading=13.5,
                                 spaceBefore=2 * mm, spaceAfter=1 * mm)

    def using(self, language: str) -> "PdfKit":
        """The same font and styles, wrapping as `language` wants."""
        if language == self.language:
            return self
        return PdfKit(self.font_path, self.font_index, language)

    def p(self, text: str | None, style: ParagraphStyle | None = None) -> Paragraph:
        """A paragraph of plain text (escaped; line breaks kept)."""
        return Paragraph(text_markup(text or ""), style or self.body)

    def items(self, lines: Sequence[str], style: ParagraphStyle | None = None) -> list[Flowable]:
        """A numbered list, one paragraph per item."""
        return [Paragraph(f"{i}. {text_markup(line)}", style or self.body)
                for i, line in enumerate(lines, 1)]


def text_markup(text: str) -> str:
    return escape(text).replace("\n", "<br/>")


def kv_table(kit: PdfKit, rows: Sequence[tuple[str, Any]], label_w: float = 38 * mm,
             columns: int = 1) -> Table:
    """Label/value pairs, `columns` pairs to a line (values: text or a flowable)."""
    cells = [[kit.p(label, kit.label), value if isinstance(value, Flowable) else kit.p(value)]
             for label, value in rows]
    lines = [sum(cells[i:i + columns], []) for i in range(0, len(cells), columns)]
    while len(lines[-1]) < 2 * columns:
        lines[-1].append("")
    value_w = FRAME_W / columns - label_w
    table = Table(lines, colWidths=[label_w, value_w] * columns)
    style = [("VALIGN", (0, 0), (-1, -1), "TOP"), ("GRID", (0, 0), (-1, -1), 0.4, LINE),
             ("TOPPADDING", (0, 0), (-1, -1), 2), ("BOTTOMPADDING", (0, 0), (-1, -1), 3)]
    style += [("BACKGROUND", (2 * c, 0), (2 * c, -1), SHADE) for c in range(columns)]
    table.setStyle(TableStyle(style))
    return table


def grid_table(kit: PdfKit, header: Sequence[str], rows: Sequence[Sequence[Any]],
               widths: Sequence[float]) -> Table:
    """A table with a shaded header row; `widths` are shares of the frame's width."""
    total = sum(widths)
    data = [[kit.p(h, kit.label) for h in header]]
    data += [[v if isinstance(v, Flowable) else kit.p(str(v) if v is not None else "")
              for v in row] for row in rows]
    table = Table(data, colWidths=[FRAME_W * w / total for w in widths], repeatRows=1)
    table.setStyle(TableStyle([
        ("VALIGN", (0, 0), (-1, -1), "TOP"), ("GRID", (0, 0), (-1, -1), 0.4, LINE),
        ("BACKGROUND", (0, 0), (-1, 0), SHADE),
        ("TOPPADDING", (0, 0), (-1, -1), 2), ("BOTTOMPADDING", (0, 0), (-1, -1), 3)]))
    return table


@dataclass(frozen=True)
class SignatureLine:
    """One electronic signature as a document shows it (or an empty line to sign)."""

    meaning: str          # e.g. "批准 / approved", in the document's language
    name: str = ""
    role: str = ""
    signed_at: str = ""
    sha256: str = ""      # of exactly what was signed


def signature_block(kit: PdfKit, heading: str, columns: Sequence[str],
                    lines: Sequence[SignatureLine]) -> Flowable:
    """The signatures, kept on one page: meaning, who (role), when, sha256 signed."""
    rows = [[kit.p(s.meaning), kit.p(f"{s.name}\n{s.role}" if s.name else "—"),
             kit.p(s.signed_at or "—"), kit.p(s.sha256 or "—", kit.small)] for s in lines]
    return KeepTogether([kit.p(heading, kit.h1),
                         grid_table(kit, columns, rows, (20, 22, 18, 40))])


@dataclass(frozen=True)
class Letterhead:
    company: str
    logo: Path | None = None


@dataclass(frozen=True)
class PageFrame:
    """What every page of one document carries."""

    letterhead: Letterhead
    title: str            # e.g. "客诉处理报告"
    reference: str        # e.g. "CF-2026-000123 · 第 1 版"
    footer: str = ""      # e.g. what the document is, where it is kept
    page_label: str = "{page} / {pages}"
    stamp: str | None = None  # e.g. "草稿 DRAFT": in red in every page's letterhead


def _numbered_canvas(frame: PageFrame, font: str) -> type[Canvas]:
    """A canvas that draws each page's footer once the number of pages is known."""

    class Numbered(Canvas):
        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self._pages: list[dict[str, Any]] = []

        def showPage(self) -> None:  # noqa: N802 - reportlab's name
            self._pages.append(dict(self.__dict__))
            self._startPage()

        def save(self) -> None:
            total = len(self._pages)
            for number, state in enumerate(self._pages, 1):
                self.__dict__.update(state)
                self.setFont(font, 7.5)
                self.setFillColor(colors.HexColor("#52606d"))
                self.drawString(MARGIN, 10 * mm, frame.footer)
                self.drawRightString(PAGE[0] - MARGIN, 10 * mm,
                                     frame.page_label.format(page=number, pages=total))
                super().showPage()
            super().save()

    return Numbered


def _draw_page(frame: PageFrame, font: str, canvas: Canvas) -> None:
    """The letterhead on top of every page, with a draft's stamp."""
    canvas.saveState()
    top = PAGE[1] - MARGIN
    x = MARGIN
    logo = frame.letterhead.logo
    if logo is not None and logo.is_file():
        image = ImageReader(str(logo))
        w, h = image.getSize()
        height = 12 * mm
        width = min(40 * mm, height * w / h)
        canvas.drawImage(image, x, top - height, width=width, height=height,
                         preserveAspectRatio=True, mask="auto")
        x += width + 4 * mm
    canvas.setFillColor(INK)
    canvas.setFont(font, 12)
    canvas.drawString(x, top - 5 * mm, frame.letterhead.company)
    canvas.setFont(font, 9)
    canvas.drawString(x, top - 10.5 * mm, frame.title)
    canvas.drawRightString(PAGE[0] - MARGIN, top - 10.5 * mm, frame.reference)
    canvas.setStrokeColor(LINE)
    canvas.setLineWidth(0.6)
    canvas.line(MARGIN, top - HEADER_H + 6 * mm, PAGE[0] - MARGIN, top - HEADER_H + 6 * mm)
    if frame.stamp:  # upright and in the letterhead: the text stays readable (pdftotext)
        canvas.setFillColor(colors.HexColor("#c62828"))
        canvas.setFont(font, 14)
        canvas.drawRightString(PAGE[0] - MARGIN, top - 5 * mm, frame.stamp)
    canvas.restoreState()


def render(kit: PdfKit, frame: PageFrame, flowables: Sequence[Flowable], *, title: str,
           subject: str = "", author: str = "", language: str = "zh") -> bytes:
    """The document's bytes: the same arguments always give the same bytes."""
    buffer = io.BytesIO()
    doc = SimpleDocTemplate(
        buffer, pagesize=PAGE, leftMargin=MARGIN, rightMargin=MARGIN,
        topMargin=MARGIN + HEADER_H - 4 * mm, bottomMargin=MARGIN + 2 * mm, invariant=1,
        title=title, subject=subject, author=author, creator="QMS complaints (reporting)",
        producer="QMS complaints", lang=language)

    def on_page(canvas: Canvas, _: Any) -> None:
        _draw_page(frame, kit.font, canvas)

    doc.build([*flowables, Spacer(1, 1)], onFirstPage=on_page, onLaterPages=on_page,
              canvasmaker=_numbered_canvas(frame, kit.font))
    return buffer.getvalue()
