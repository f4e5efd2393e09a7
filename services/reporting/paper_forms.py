"""The register (客户意见登记表, P-5.4.1) and the statistics table (客诉处理统计表, P-F.6) as
PDF, with the headings of the paper forms (procedure section 7), beside their CSV/XLSX.

The register is wide: A4 landscape, one line per feedback, the description cut to what a
line holds (the CSV/XLSX and the register's JSON keep it whole). The table is A4 portrait,
laid out as its XLSX sheets (summary, counts, open cases, breaches, losses, recurrences).
Both carry the letterhead and "page n" on every page; the same rows give the same bytes.
"""

import io
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.units import mm
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import Flowable, SimpleDocTemplate, Table, TableStyle

from services.reporting import exports, pdf
from services.reporting.monthly_report_pdf import Words
from services.reporting.statistics import MonthlyTable
from services.reporting.wordlists import REGISTER_STATUSES
from shared.vocabulary import Language

LANDSCAPE = landscape(A4)
DESCRIPTION_CHARS = 160
REGISTER_PDF_MAX_ROWS = 2000  # about 15 s to lay out here; beyond it the CSV/XLSX serve

# key -> (zh, en): the forms' titles and the register's columns.
LABELS: dict[str, tuple[str, str]] = {
    "register": ("客户意见登记表", "Customer Feedback Register"),
    "table": ("客诉处理统计表", "Complaint Handling Statistics Table"),
    "period": ("期间", "Period"),
    "rows": ("共 {n} 条", "{n} entries"),
    "page": ("第 {n} 页", "Page {n}"),
    "footer": ("质量记录（P-5.4.2）", "Quality record (P-5.4.2)"),
    "register_no": ("登记编号", "Register no."),
    "received": ("收到日期", "Received"),
    "customer": ("客户", "Customer"),
    "channel": ("来源", "Channel"),
    "category": ("类别", "Category"),
    "severity": ("严重程度", "Severity"),
    "product": ("产品 / 批号", "Product / lot"),
    "description": ("客户意见内容", "Customer's feedback"),
    "handling": ("处理方式", "Handling"),
    "direct": ("直接答复", "Answered directly"),
    "form": ("开立客诉处理单\n{at}", "Complaint Handling Form\n{at}"),
    "units": ("责任单位", "Responsible units"),
    "replied": ("答复客户", "Replied"),
    "closed": ("结案", "Closed"),
    "status": ("状态", "Status"),
}
# (label key, share of the width) of the register's columns, in the form's order; a
# register number (CF-2026-000123) fits its column on one line, to be read out on the phone
REGISTER_COLUMNS = (("register_no", 11), ("received", 8), ("customer", 11), ("channel", 5),
                    ("category", 7), ("severity", 5), ("product", 9), ("description", 15),
                    ("handling", 10), ("units", 7), ("replied", 8), ("closed", 8),
                    ("status", 6))


def _t(key: str, lang: Language, **values: object) -> str:
    zh, en = LABELS[key]
    return (zh if lang is Language.ZH else en).format(**values)


def _grid(kit: pdf.PdfKit, header: Sequence[str], rows: Sequence[Sequence[Any]],
          widths: Sequence[float], frame_w: float) -> Table:
    """A table with a shaded header row repeated on every page; widths are shares."""
    total = sum(widths)
    data = [[kit.p(h, kit.label) for h in header]]
    data += [[kit.p("" if v is None else str(v), kit.small) for v in row] for row in rows]
    table = Table(data, colWidths=[frame_w * w / total for w in widths], repeatRows=1)
    table.setStyle(TableStyle([
        ("VALIGN", (0, 0), (-1, -1), "TOP"), ("GRID", (0, 0), (-1, -1), 0.4, pdf.LINE),
        ("BACKGROUND", (0, 0), (-1, 0), pdf.SHADE),
        ("TOPPADDING", (0, 0), (-1, -1), 1.5), ("BOTTOMPADDING", (0, 0), (-1, -1), 2)]))
    return table


def _build(kit: pdf.PdfKit, story: list[Flowable], *, size: tuple[float, float], company: str,
           title: str, reference: str, lang: Language) -> bytes:
    """The form's bytes: letterhead (company, form title, period) and "page n" on each page."""
    buffer = io.BytesIO()
    doc = SimpleDocTemplate(buffer, pagesize=size, leftMargin=pdf.MARGIN,
                            rightMargin=pdf.MARGIN, topMargin=pdf.MARGIN + 14 * mm,
                            bottomMargin=pdf.MARGIN, invariant=1, title=title, author=company,
                            creator="QMS complaints (reporting)", producer="QMS complaints",
                            lang="zh-CN" if lang is Language.ZH else "en")

    def on_page(canvas: Canvas, _: Any) -> None:
        width, height = size
        top = height - pdf.MARGIN
        canvas.saveState()
        canvas.setFillColor(pdf.INK)
        canvas.setFont(kit.font, 11)
        canvas.drawString(pdf.MARGIN, top - 4 * mm, company)
        canvas.setFont(kit.font, 9)
        canvas.drawString(pdf.MARGIN, top - 9 * mm, title)
        canvas.drawRightString(width - pdf.MARGIN, top - 9 * mm, reference)
        canvas.setStrokeColor(pdf.LINE)
        canvas.line(pdf.MARGIN, top - 11 * mm, width - pdf.MARGIN, top - 11 * mm)
        canvas.setFont(kit.font, 7.5)
        canvas.drawString(pdf.MARGIN, 9 * mm, _t("footer", lang))
        canvas.drawRightString(width - pdf.MARGIN, 9 * mm,
                               _t("page", lang, n=canvas.getPageNumber()))
        canvas.restoreState()

    doc.build(story, onFirstPage=on_page, onLaterPages=on_page)
    return buffer.getvalue()


# ------------------------------------------------------------------ the register


def _day(value: Any, tz: ZoneInfo) -> str:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone(tz).strftime("%Y-%m-%d") if isinstance(value, datetime) else ""


def _cut(text: str | None) -> str:
    text = (text or "").replace("\n", " ")
    return text if len(text) <= DESCRIPTION_CHARS else text[:DESCRIPTION_CHARS - 1] + "…"


def register_line(r: dict[str, Any], tz: ZoneInfo, lang: Language, words: Words
                  ) -> list[str]:
    """One register row (`api.RegisterRow` dumped) as the paper form's line."""
    if r.get("form_opened_at"):
        handling = _t("form", lang, at=_day(r["form_opened_at"], tz))
    elif r.get("status") in ("replied_directly", "closed") and r.get("customer_reply_at"):
        handling = _t("direct", lang)
    else:
        handling = ""
    product = " / ".join(filter(None, [r.get("product_code"), r.get("product_lot")]))
    return [r.get("register_no") or "", _day(r.get("received_at"), tz),
            f"{r.get('customer_name') or ''} ({r.get('customer_id') or ''})",
            words.word("channel", r.get("channel")), words.word("category", r.get("category")),
            words.word("severity", r.get("severity")), product, _cut(r.get("description")),
            handling, ", ".join(words.word("unit", u) for u in r.get("responsible_units") or []),
            _day(r.get("customer_reply_at"), tz), _day(r.get("closed_at"), tz),
            _status(r.get("status"), lang)]


def _status(code: str | None, lang: Language) -> str:
    pair = REGISTER_STATUSES.get(code or "")
    return (pair[0] if lang is Language.ZH else pair[1]) if pair else code or ""


def register_pdf(rows: Sequence[dict[str, Any]], *, tz: ZoneInfo, lang: Language,
                 period: str, company: str, kit: pdf.PdfKit) -> bytes:
    words = Words(lang, tz)
    kit = kit.using(lang.value)
    frame_w = LANDSCAPE[0] - 2 * pdf.MARGIN
    title = _t("register", lang)
    story: list[Flowable] = [
        kit.p(title, kit.title),
        kit.p(f"{_t('period', lang)}: {period} ({tz}) · {_t('rows', lang, n=len(rows))}",
              kit.label),
        _grid(kit, [_t(k, lang) for k, _ in REGISTER_COLUMNS],
              [register_line(r, tz, lang, words) for r in rows],
              [w for _, w in REGISTER_COLUMNS], frame_w)]
    return _build(kit, story, size=LANDSCAPE, company=company, title=title, reference=period,
                  lang=lang)


# ------------------------------------------------------------------ the statistics table


def table_pdf(t: MonthlyTable, *, lang: Language, company: str, kit: pdf.PdfKit) -> bytes:
    """The table as its XLSX shows it, one section per sheet, with the Chinese or English
    headings of the exports (`exports.TABLE_ZH`)."""
    kit = kit.using(lang.value)
    frame_w = A4[0] - 2 * pdf.MARGIN

    def h(*texts: str) -> list[str]:
        return [exports.heading(text, lang) for text in texts]

    period = t.period_from if t.period_from == t.period_to else \
        f"{t.period_from} – {t.period_to}"
    title = _t("table", lang)
    sections: list[tuple[str, list[str], Sequence[Sequence[Any]], Sequence[float]]] = [
        ("Summary", h("Measure", "Value"), exports.summary_rows(t, lang), (70, 30)),
        ("Counts", h("Dimension", "Key", "Name", "Feedbacks", "Complaints"),
         list(exports.count_rows(t)), (18, 22, 30, 15, 15)),
        ("Open cases", h("Age", "Cases"), [(r.age, r.cases) for r in t.open_cases.by_age],
         (70, 30)),
        ("Breaches", h("Severity", "Count"), [(r.key, r.count) for r in t.breaches.by_severity],
         (70, 30)),
        ("Losses", h("Dimension", "Key", "Name", "Currency", "Amount", "Estimated", "Actual"),
         [(d, r.key, getattr(r, "name", None), r.currency, r.amount, r.estimated, r.actual)
          for d, r in exports.loss_rows(t)], (14, 16, 20, 10, 14, 13, 13)),
        ("Recurrences", h("Defect code", "Count"),
         [(r.key, r.count) for r in t.follow_up.recurrences_by_defect_code], (70, 30)),
    ]
    story: list[Flowable] = [kit.p(title, kit.title),
                             kit.p(f"{_t('period', lang)}: {period} ({t.timezone})", kit.label)]
    for name, header, rows, widths in sections:
        if rows:
            story += [kit.p(exports.heading(name, lang), kit.h1),
                      _grid(kit, header, [["" if v is None else v for v in row]
                                          for row in rows], widths, frame_w)]
    return _build(kit, story, size=A4, company=company, title=title, reference=period,
                  lang=lang)
