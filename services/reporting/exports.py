"""CSV and XLSX of the register (P-5.4.1) and of the monthly statistics table (P-F.6).

Customer-supplied text never becomes a formula: text cells that start with
`= + - @` get a leading apostrophe in CSV and are typed as strings in XLSX, and
characters XLSX cannot hold are dropped.
"""

import csv
import io
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.styles import Font

from services.reporting.statistics import LossRow, MonthlyTable
from shared.vocabulary import Language

XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
CSV_MEDIA_TYPE = "text/csv; charset=utf-8"
PDF_MEDIA_TYPE = "application/pdf"  # the forms as PDF: `paper_forms`
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_text(value: str) -> str:
    """A text value a spreadsheet will not run as a formula."""
    return "'" + value if value.startswith(_FORMULA_START) else value


def _xlsx_text(value: str) -> str:
    return ILLEGAL_CHARACTERS_RE.sub("", value)


# ------------------------------------------------------------------ the register

Getter = Callable[[dict[str, Any]], Any]


def register_columns(tz: ZoneInfo) -> list[tuple[str, str, Getter]]:
    """(header, kind, getter) of each register column; kind: text|date|number|raw."""
    def dt(field: str) -> Getter:
        return lambda r: r.get(field)

    def money(field: str) -> Getter:
        def get(r: dict[str, Any]) -> str:
            value = r.get(field)
            items = value if isinstance(value, list) else [value] if value else []
            return "; ".join(f"{m['amount']} {m['currency']}" for m in items)
        return get

    zone = str(tz)
    return [
        ("Register no.", "raw", lambda r: r.get("register_no")),
        ("Feedback id", "raw", lambda r: r.get("feedback_id")),
        ("Status", "raw", lambda r: r.get("status")),
        ("Complaint", "raw", lambda r: {True: "yes", False: "no"}.get(r.get("is_complaint"))),
        ("Category", "raw", lambda r: r.get("category")),
        ("Channel", "raw", lambda r: r.get("channel")),
        ("Severity", "raw", lambda r: r.get("severity")),
        ("Customer id", "text", lambda r: r.get("customer_id")),
        ("Customer", "text", lambda r: r.get("customer_name")),
        ("Product", "text", lambda r: r.get("product_code")),
        ("Product name", "text", lambda r: r.get("product_name")),
        (f"Received ({zone})", "date", dt("received_at")),
        (f"Form opened ({zone})", "date", dt("form_opened_at")),
        (f"Quality record ({zone})", "date", dt("quality_record_at")),
        (f"Customer reply ({zone})", "date", dt("customer_reply_at")),
        (f"Closed ({zone})", "date", dt("closed_at")),
        ("Responsible units", "text", lambda r: ", ".join(r.get("responsible_units") or [])),
        ("Defect code", "text", lambda r: r.get("defect_code")),
        ("Loss", "raw", money("loss")),
        ("Estimated loss", "raw", money("estimated_loss")),
        ("Reopens", "number", lambda r: r.get("reopen_count")),
        ("3-day breaches", "number", lambda r: r.get("breaches")),
        ("Description", "text", lambda r: r.get("description")),
    ]


def _local(value: Any, tz: ZoneInfo) -> datetime | None:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone(tz).replace(tzinfo=None) if isinstance(value, datetime) else None


CSV_ROWS_PER_CHUNK = 200  # a month's export is thousands of rows: one send per row is slow


def register_csv(rows: Iterable[dict[str, Any]], tz: ZoneInfo) -> Iterator[str]:
    """The register as CSV, streamed in chunks of `CSV_ROWS_PER_CHUNK` rows."""
    columns = register_columns(tz)
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow([h for h, _, _ in columns])
    yield "\ufeff" + flush()  # BOM: Excel opens UTF-8 (Chinese names) correctly
    for n, row in enumerate(rows, 1):
        writer.writerow([_csv_cell(get(row), kind, tz) for _, kind, get in columns])
        if n % CSV_ROWS_PER_CHUNK == 0:
            yield flush()
    if buffer.tell():
        yield flush()


def _csv_cell(value: Any, kind: str, tz: ZoneInfo) -> Any:
    if value is None:
        return ""
    if kind == "date":
        local = _local(value, tz)
        return local.isoformat(sep=" ", timespec="seconds") if local else ""
    if kind == "text":
        return safe_text(str(value))
    return value


def register_xlsx(rows: Iterable[dict[str, Any]], tz: ZoneInfo) -> bytes:
    columns = register_columns(tz)
    wb = Workbook(write_only=True)
    ws = wb.create_sheet("Register")
    ws.append([_bold(ws, h) for h, _, _ in columns])
    for row in rows:
        ws.append([_xlsx_cell(ws, get(row), kind, tz) for _, kind, get in columns])
    return _save(wb)


def _bold(ws: Any, text: str) -> WriteOnlyCell:
    cell = WriteOnlyCell(ws, value=text)
    cell.font = Font(bold=True)
    return cell


def _xlsx_cell(ws: Any, value: Any, kind: str, tz: ZoneInfo) -> Any:
    if value is None:
        return None
    if kind == "date":
        local = _local(value, tz)
        if local is None:
            return None
        cell = WriteOnlyCell(ws, value=local)
        cell.number_format = "yyyy-mm-dd hh:mm"
        return cell
    if isinstance(value, str):
        cell = WriteOnlyCell(ws, value=_xlsx_text(value))
        cell.data_type = "s"  # never a formula
        return cell
    return value


def _save(wb: Workbook) -> bytes:
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


# ------------------------------------------------------------------ the monthly table

# The headings of the table's exports in Chinese, by their English text ("{}": a currency).
# Section, dimension and measure codes in the CSV stay codes, as the JSON's field names.
TABLE_ZH: dict[str, str] = {
    "Period from": "期间起", "Period to": "期间止", "Time zone": "时区",
    "Feedbacks": "客户意见数", "Complaints": "客诉数", "Suggestions": "建议数",
    "Answered directly": "直接答复数",
    "Complaints answered directly": "直接答复的客诉数",
    "Forms opened": "开具客诉处理单数", "Quality records": "质量记录数",
    "Forms due (3-day deadline in period)": "到期处理单数（3日期限在本期）",
    "Met 3-day rule": "3日内完成数", "Share met 3-day rule": "3日内完成率",
    "Form to quality record: count": "处理单至质量记录：件数",
    "Form to quality record: mean hours": "处理单至质量记录：平均小时",
    "Form to quality record: p90 hours": "处理单至质量记录：第90百分位小时",
    "Registration to reply: count": "登记至答复客户：件数",
    "Registration to reply: mean hours": "登记至答复客户：平均小时",
    "Registration to reply: p90 hours": "登记至答复客户：第90百分位小时",
    "3-day breaches": "超3日期限数", "Open cases": "未结案件数",
    "Open cases as of": "未结案件截至", "Closures": "结案数", "Reopens": "重新打开数",
    "Satisfaction answers": "满意度回复数", "Satisfied": "满意数",
    "Satisfaction rate": "满意率", "Recurrences": "重复发生数",
    "CAPAs opened": "开启的CAPA数", "CAPAs closed": "关闭的CAPA数",
    "CAPAs withdrawn": "撤销的CAPA数",
    "Feedbacks counted before the estimated/actual split (rebuild to recount)":
        "拆分估计/实际损失前计入的客户意见数（重建后重新计数）",
    "Loss total ({})": "损失合计（{}）",
    "Loss total estimated ({})": "估计损失合计（{}）",
    "Loss total actual ({})": "实际损失合计（{}）",
    # sheets and columns
    "Summary": "汇总", "Counts": "计数", "Breaches": "超期", "Losses": "损失",
    "Change": "环比", "Measure": "项目", "Value": "数值", "Dimension": "维度", "Key": "键",
    "Name": "名称", "Age": "账龄", "Cases": "件数", "Severity": "严重程度", "Count": "数量",
    "Currency": "币种", "Amount": "金额", "Estimated": "其中估计", "Actual": "其中实际",
    "Defect code": "缺陷代码", "Current": "本期", "Previous": "上期",
    "section": "部分", "dimension": "维度", "key": "键", "name": "名称", "measure": "项目",
    "value": "数值",
}


def heading(text: str, lang: Language, *args: str) -> str:
    """A heading of the table's exports in `lang` (the English text is the key)."""
    template = TABLE_ZH.get(text, text) if lang is Language.ZH else text
    return template.format(*args)


def summary_rows(t: MonthlyTable, lang: Language = Language.EN) -> list[tuple[str, Any]]:
    """The headline figures, as the XLSX Summary sheet and the CSV `summary` section show them."""
    tl, fu = t.timeliness, t.follow_up
    rows: list[tuple[str, Any]] = [
        ("Period from", t.period_from), ("Period to", t.period_to), ("Time zone", t.timezone),
        ("Feedbacks", t.counts.feedbacks), ("Complaints", t.counts.complaints),
        ("Suggestions", t.counts.suggestions),
        ("Answered directly", t.counts.answered_directly),
        ("Complaints answered directly", t.counts.complaints_answered_directly),
        ("Forms opened", tl.forms_opened), ("Quality records", tl.quality_records),
        ("Forms due (3-day deadline in period)", tl.forms_due),
        ("Met 3-day rule", tl.met_3_day_rule),
        ("Share met 3-day rule", tl.share_met_3_day_rule),
        ("Form to quality record: count", tl.form_to_quality_record.count),
        ("Form to quality record: mean hours", tl.form_to_quality_record.mean_hours),
        ("Form to quality record: p90 hours", tl.form_to_quality_record.p90_hours),
        ("Registration to reply: count", tl.registration_to_reply.count),
        ("Registration to reply: mean hours", tl.registration_to_reply.mean_hours),
        ("Registration to reply: p90 hours", tl.registration_to_reply.p90_hours),
        ("3-day breaches", t.breaches.count),
        ("Open cases", t.open_cases.total), ("Open cases as of", t.open_cases.as_of.isoformat()),
        ("Closures", fu.closures), ("Reopens", fu.reopens),
        ("Satisfaction answers", fu.satisfaction_answers), ("Satisfied", fu.satisfied),
        ("Satisfaction rate", fu.satisfaction_rate), ("Recurrences", fu.recurrences),
        ("CAPAs opened", fu.capas_opened), ("CAPAs closed", fu.capas_closed),
        ("CAPAs withdrawn", fu.capas_withdrawn),
    ]
    if t.feedbacks_not_split:
        rows.append(("Feedbacks counted before the estimated/actual split (rebuild to "
                     "recount)", t.feedbacks_not_split))
    out = [(heading(label, lang), value) for label, value in rows]
    for r in t.losses.total:
        out.append((heading("Loss total ({})", lang, r.currency), Decimal(r.amount)))
        for label, part in (("Loss total estimated ({})", r.estimated),
                            ("Loss total actual ({})", r.actual)):
            if part is not None:
                out.append((heading(label, lang, r.currency), Decimal(part)))
    return out


def _count_sections(t: MonthlyTable) -> Iterator[tuple[str, str, str | None, int, int]]:
    """(dimension, key, name, feedbacks, complaints); a name for customers only."""
    for dim in ("category", "channel", "customer", "product", "defect_code", "unit",
                "severity"):
        for r in getattr(t.counts, f"by_{dim}"):
            yield dim, r.key, getattr(r, "name", None), r.feedbacks, r.complaints


def _loss_sections(t: MonthlyTable) -> Iterator[tuple[str, LossRow]]:
    """(dimension, row) of every loss row, total first."""
    for dim in ("total", "by_category", "by_unit", "by_customer", "by_defect_code"):
        for r in getattr(t.losses, dim):
            yield dim.removeprefix("by_"), r


# The sections as the XLSX sheets list them, for the PDF form (`paper_forms.table_pdf`).
def count_rows(t: MonthlyTable) -> Iterator[tuple[str, str, str | None, int, int]]:
    return _count_sections(t)


def loss_rows(t: MonthlyTable) -> Iterator[tuple[str, LossRow]]:
    return _loss_sections(t)


def _text(value: str | None) -> str:
    return "" if value is None else safe_text(value)


def table_csv(t: MonthlyTable, lang: Language = Language.EN) -> str:
    """Long format: section, dimension, key, name, measure, value (`name`: the customer's
    latest known name next to its id; empty for the other dimensions). A loss row is the
    currency and its amount (`losses`), and of it the estimated and the actual part
    (`losses_estimated`, `losses_actual`; absent while the period is not split)."""
    buffer = io.StringIO()
    w = csv.writer(buffer)
    w.writerow([heading(h, lang) for h in ("section", "dimension", "key", "name", "measure",
                                           "value")])
    for label, value in summary_rows(t, lang):
        w.writerow(["summary", "", "", "", label, "" if value is None else value])
    for dim, key, name, feedbacks, complaints in _count_sections(t):
        w.writerow(["counts", dim, safe_text(key), _text(name), "feedbacks", feedbacks])
        w.writerow(["counts", dim, safe_text(key), _text(name), "complaints", complaints])
    for band in t.open_cases.by_age:
        w.writerow(["open_cases", "age", band.age, "", "cases", band.cases])
    for severity in t.breaches.by_severity:
        w.writerow(["breaches", "severity", severity.key, "", "count", severity.count])
    for dim, r in _loss_sections(t):
        who = [dim, safe_text(r.key), _text(getattr(r, "name", None)), r.currency]
        w.writerow(["losses", *who, r.amount])
        for section, part in (("losses_estimated", r.estimated), ("losses_actual", r.actual)):
            if part is not None:
                w.writerow([section, *who, part])
    for defect in t.follow_up.recurrences_by_defect_code:
        w.writerow(["recurrences", "defect_code", safe_text(defect.key), "", "count",
                    defect.count])
    for change in t.change:
        for measure in ("current", "previous", "change"):
            value = getattr(change, measure)
            w.writerow(["change", "", change.measure, "", measure,
                        "" if value is None else value])
    return "\ufeff" + buffer.getvalue()


def table_xlsx(t: MonthlyTable, lang: Language = Language.EN) -> bytes:
    def h(*texts: str) -> list[str]:
        return [heading(text, lang) for text in texts]

    wb = Workbook()
    ws = wb.active
    ws.title = heading("Summary", lang)
    _sheet(ws, h("Measure", "Value"), summary_rows(t, lang))
    _sheet(wb.create_sheet(heading("Counts", lang)),
           h("Dimension", "Key", "Name", "Feedbacks", "Complaints"), list(_count_sections(t)))
    _sheet(wb.create_sheet(heading("Open cases", lang)), h("Age", "Cases"),
           [(r.age, r.cases) for r in t.open_cases.by_age])
    _sheet(wb.create_sheet(heading("Breaches", lang)), h("Severity", "Count"),
           [(r.key, r.count) for r in t.breaches.by_severity])
    _sheet(wb.create_sheet(heading("Losses", lang)),
           h("Dimension", "Key", "Name", "Currency", "Amount", "Estimated", "Actual"),
           [(d, r.key, getattr(r, "name", None), r.currency,
             *(_number(v) for v in (r.amount, r.estimated, r.actual)))
            for d, r in _loss_sections(t)])
    _sheet(wb.create_sheet(heading("Recurrences", lang)), h("Defect code", "Count"),
           [(r.key, r.count) for r in t.follow_up.recurrences_by_defect_code])
    _sheet(wb.create_sheet(heading("Change", lang)), h("Measure", "Current", "Previous", "Change"),
           [(r.measure, *(_number(v) for v in (r.current, r.previous, r.change)))
            for r in t.change])
    return _save(wb)


def _number(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return Decimal(value)
        except ArithmeticError:
            return value
    return value


def _sheet(ws: Any, header: list[str], rows: Iterable[Iterable[Any]]) -> None:
    ws.append(header)
    for cell in ws[1]:
        cell.font = Font(bold=True)
    for row in rows:
        ws.append(list(row))
        for cell in ws[ws.max_row]:
            if isinstance(cell.value, str):
                cell.value = _xlsx_text(cell.value)
                cell.data_type = "s"
            elif isinstance(cell.value, Decimal):
                cell.number_format = "#,##0.00"
    for column in ws.columns:
        width = max(len(str(c.value or "")) for c in column)
        ws.column_dimensions[column[0].column_letter].width = min(60, max(10, width + 2))
