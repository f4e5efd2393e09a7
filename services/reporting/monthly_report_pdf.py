"""The monthly report (客诉处理月报, P-F.6) as a PDF, in one language.

Each section shows the month's figures, its chart, then Quality's explanation and review of
it: counts (with the Pareto of defects), timeliness (the 3-day rule, the trend), losses
(estimated and actual, by unit), recurrences, CAPAs, the open cases by age, the overall
review, and the signature (批准 / approved). Rendered from a `monthly_report.Content` alone:
the same content gives the same bytes.
"""

import io
from collections.abc import Sequence
from pathlib import Path
from zoneinfo import ZoneInfo

from reportlab.lib.units import mm
from reportlab.lib.utils import ImageReader
from reportlab.platypus import Flowable, Image

from services.reporting import complaint_report, pdf
from services.reporting.charts import ChartKit, period_text
from services.reporting.documents import Signature
from services.reporting.exports import heading
from services.reporting.monthly_report import Content
from services.reporting.statistics import MonthlyTable
from shared.vocabulary import Language

# key -> (zh, en)
LABELS: dict[str, tuple[str, str]] = {
    "title": ("客诉处理月报", "Monthly Complaint Handling Report"),
    "subtitle": ("客诉处理统计表及说明与检讨（P-F.6）",
                 "Complaint Handling Statistics Table with explanation and review (P-F.6)"),
    "month": ("月份", "Month"),
    "as_of": ("数据截至", "Figures as of"),
    "tz": ("时区", "Time zone"),
    "rev_of": ("版本", "Revision"),
    "corrects": ("本版更正第 {n} 版", "This revision corrects revision {n}"),
    "footer": ("质量记录，按记录控制程序保存（P-5.4.2）",
               "Quality record, kept under the Records Control Procedure (P-5.4.2)"),
    "s.counts": ("一、客诉件数", "1. Complaint cases and counts"),
    "s.timeliness": ("二、回复时效（3日规则，P-F.5）", "2. Reply timeliness (3-day rule, P-F.5)"),
    "s.losses": ("三、损失金额", "3. Loss amounts"),
    "s.recurrences": ("四、重复发生", "4. Recurrences"),
    "s.capas": ("五、纠正与预防措施（CAPA）", "5. Corrective and preventive actions (CAPA)"),
    "s.open": ("六、未结案件账龄", "6. Open cases by age"),
    "s.overall": ("七、总体说明与检讨", "7. Overall explanation and review"),
    "review": ("质量部说明与检讨", "Quality's explanation and review"),
    "no_review": ("（无说明）", "(no comment)"),
    "by_category": ("按类别", "By category"),
    "by_defect": ("按缺陷", "By defect"),
    "by_customer": ("按客户（前 10）", "By customer (top 10)"),
    "by_unit": ("按责任单位", "By responsible unit"),
    "by_severity": ("按严重程度", "By severity"),
    "key": ("项目", "Item"),
    "feedbacks": ("客户意见", "Feedbacks"),
    "complaints": ("客诉", "Complaints"),
    "previous": ("上月", "Previous month"),
    "hours": ("{h} 小时", "{h} h"),
    "amount": ("金额", "Amount"),
    "estimated": ("其中估计", "Of which estimated"),
    "actual": ("其中实际", "Of which actual"),
    "currency": ("币种", "Currency"),
    "loss_note": ("估计：登记时的估计损失，尚无处置费用；实际：质量记录中的处置费用。",
                  "Estimated: the loss estimated at registration, no disposition cost yet; "
                  "actual: disposition costs in the quality records."),
    "no_losses": ("本月无损失记录。", "No loss recorded this month."),
    "count": ("件数", "Count"),
    "age": ("账龄", "Age"),
    "cases": ("件数", "Cases"),
    "total": ("合计", "Total"),
    "unassigned": ("（未指定）", "(unassigned)"),
    "0-3 days": ("0-3 天", "0-3 days"),
    "4-7 days": ("4-7 天", "4-7 days"),
    "8-30 days": ("8-30 天", "8-30 days"),
    "over 30 days": ("30 天以上", "over 30 days"),
    "signature": ("签核", "Signature"),
}
SIGNATURE_COLUMNS = ("sig.meaning", "sig.who", "sig.when", "sig.sha")


class Words(complaint_report.Words):
    """The report's words in one language (the Complaint Handling Report's as fallback)."""

    def __init__(self, language: Language, tz: ZoneInfo):
        super().__init__(language, tz)
        self.lang = language

    def __call__(self, key: str, **values: object) -> str:
        pair = LABELS.get(key)
        return pair[self.i].format(**values) if pair else super().__call__(key, **values)

    def h(self, text: str, *args: str) -> str:
        """A heading of the statistics table's exports (`exports.TABLE_ZH`)."""
        return heading(text, Language.ZH if self.i == 0 else Language.EN, *args)


def _number(value: object) -> str:
    return "—" if value is None else str(value)


def _share(value: object) -> str:
    return f"{100 * value:.1f}%" if isinstance(value, int | float) else "—"


def _image(png: bytes, width: float = pdf.FRAME_W) -> Image:
    w, h = ImageReader(io.BytesIO(png)).getSize()
    return Image(io.BytesIO(png), width=width, height=width * h / w)


def _boxed(title: str, text: str, kit: pdf.PdfKit) -> Flowable:
    """A titled box of free text (a review, what a revision corrects)."""
    return pdf.grid_table(kit, [title], [[kit.p(text)]], (1,))


def _review(text: str, w: Words, kit: pdf.PdfKit) -> Flowable:
    return _boxed(w("review"), text or w("no_review"), kit)


def _previous(t: MonthlyTable) -> dict[str, object]:
    return {c.measure: c.previous for c in t.change}


def _counts(c: Content, w: Words, kit: pdf.PdfKit, charts: ChartKit) -> list[Flowable]:
    t, names = c.figures.table, c.figures.defect_names[w.lang.value]
    before = _previous(t)
    rows = [(w.h("Feedbacks"), t.counts.feedbacks, before.get("feedbacks")),
            (w.h("Complaints"), t.counts.complaints, before.get("complaints")),
            (w.h("Suggestions"), t.counts.suggestions, None),
            (w.h("Answered directly"), t.counts.answered_directly,
             before.get("answered_directly")),
            (w.h("Forms opened"), t.timeliness.forms_opened, before.get("forms_opened"))]
    out: list[Flowable] = [pdf.grid_table(
        kit, [w("key"), w.h("Current"), w("previous")],
        [(k, _number(v), _number(b)) for k, v, b in rows], (50, 25, 25))]
    dims = [("by_category", [(w.word("category", r.key), r.feedbacks, r.complaints)
                             for r in t.counts.by_category]),
            ("by_defect", [(f"{r.key} {names.get(r.key, '')}".strip(), r.feedbacks,
                            r.complaints) for r in t.counts.by_defect_code]),
            ("by_customer", [(f"{r.name or ''} ({r.key})".strip(), r.feedbacks, r.complaints)
                             for r in t.counts.by_customer[:10]]),
            ("by_severity", [(w.word("severity", r.key), r.feedbacks, r.complaints)
                             for r in t.counts.by_severity])]
    for key, lines in dims:
        if lines:
            out += [kit.p(w(key), kit.h2), pdf.grid_table(
                kit, [w("key"), w("feedbacks"), w("complaints")], lines, (60, 20, 20))]
    counts = [(r.key, r.complaints) for r in t.counts.by_defect_code if r.complaints]
    out.append(_image(charts.pareto_count(counts, c.month)))
    return out


def _timeliness(c: Content, w: Words, kit: pdf.PdfKit, charts: ChartKit) -> list[Flowable]:
    t = c.figures.table
    tl, before = t.timeliness, _previous(t)

    def hours(value: float | None) -> str:
        return "—" if value is None else w("hours", h=value)

    rows = [
        (w.h("Quality records"), _number(tl.quality_records),
         _number(before.get("quality_records"))),
        (w.h("Forms due (3-day deadline in period)"), _number(tl.forms_due),
         _number(before.get("forms_due"))),
        (w.h("Met 3-day rule"), _number(tl.met_3_day_rule), ""),
        (w.h("Share met 3-day rule"), _share(tl.share_met_3_day_rule),
         _share(before.get("share_met_3_day_rule"))),
        (w.h("Form to quality record: mean hours"), hours(tl.form_to_quality_record.mean_hours),
         ""),
        (w.h("Form to quality record: p90 hours"), hours(tl.form_to_quality_record.p90_hours),
         ""),
        (w.h("Registration to reply: mean hours"), hours(tl.registration_to_reply.mean_hours),
         ""),
        (w.h("3-day breaches"), _number(t.breaches.count),
         _number(before.get("breaches"))),
    ]
    out: list[Flowable] = [pdf.grid_table(kit, [w("key"), w.h("Current"), w("previous")], rows,
                                          (50, 25, 25))]
    if t.breaches.by_severity:
        out += [kit.p(w("by_severity"), kit.h2), pdf.grid_table(
            kit, [w.h("Severity"), w("count")],
            [(w.word("severity", r.key), r.count) for r in t.breaches.by_severity], (60, 40))]
    minutes = {int(m): n for m, n in c.figures.record_minutes.items()}
    out.append(_image(charts.timeliness(c.figures.trend, minutes, c.month)))
    out.append(_image(charts.trend(c.figures.trend), 0.8 * pdf.FRAME_W))
    return out


def _losses(c: Content, w: Words, kit: pdf.PdfKit, charts: ChartKit) -> list[Flowable]:
    t, names = c.figures.table, c.figures.defect_names[w.lang.value]
    if not t.losses.total:
        return [kit.p(w("no_losses"))]
    header = [w("key"), w("currency"), w("amount"), w("estimated"), w("actual")]
    widths = (40, 12, 16, 16, 16)

    def lines(rows: Sequence, label) -> list[tuple]:  # noqa: ANN001 - loss rows, a namer
        return [(label(r), r.currency, r.amount, r.estimated or "—", r.actual or "—")
                for r in rows]

    out: list[Flowable] = [pdf.grid_table(kit, header, lines(t.losses.total,
                                                             lambda r: w("total")), widths)]
    for key, rows, label in (
            ("by_unit", t.losses.by_unit,
             lambda r: w("unassigned") if r.key == "(unassigned)" else w.word("unit", r.key)),
            ("by_defect", t.losses.by_defect_code,
             lambda r: f"{r.key} {names.get(r.key, '')}".strip()),
            ("by_category", t.losses.by_category, lambda r: w.word("category", r.key))):
        if rows:
            out += [kit.p(w(key), kit.h2), pdf.grid_table(kit, header, lines(rows, label),
                                                          widths)]
    out.append(kit.p(w("loss_note"), kit.small))
    biggest = max(t.losses.total, key=lambda r: (float(r.amount), r.currency))
    cents = [(r.key, round(float(r.amount) * 100)) for r in t.losses.by_defect_code
             if r.currency == biggest.currency]
    out.append(_image(charts.pareto_loss(cents, biggest.currency, c.month)))
    return out


def _recurrences(c: Content, w: Words, kit: pdf.PdfKit, charts: ChartKit) -> list[Flowable]:
    fu, names = c.figures.table.follow_up, c.figures.defect_names[w.lang.value]
    out: list[Flowable] = [pdf.kv_table(kit, [(w.h("Recurrences"), str(fu.recurrences)),
                                              (w.h("Reopens"), str(fu.reopens))])]
    if fu.recurrences_by_defect_code:
        out += [kit.p(w("by_defect"), kit.h2), pdf.grid_table(
            kit, [w.h("Defect code"), w("count")],
            [(f"{r.key} {names.get(r.key, '')}".strip(), r.count)
             for r in fu.recurrences_by_defect_code], (60, 40))]
    return out


def _capas(c: Content, w: Words, kit: pdf.PdfKit, charts: ChartKit) -> list[Flowable]:
    fu = c.figures.table.follow_up
    return [pdf.kv_table(kit, [(w.h("CAPAs opened"), str(fu.capas_opened)),
                               (w.h("CAPAs closed"), str(fu.capas_closed)),
                               (w.h("CAPAs withdrawn"), str(fu.capas_withdrawn)),
                               (w.h("Closures"), str(fu.closures)),
                               (w.h("Satisfaction rate"), _share(fu.satisfaction_rate))],
                         label_w=60 * mm)]


def _open_cases(c: Content, w: Words, kit: pdf.PdfKit) -> list[Flowable]:
    oc = c.figures.table.open_cases
    rows = [(w(r.age), r.cases) for r in oc.by_age] + [(w("total"), oc.total)]
    return [kit.p(f"{w('as_of')} {oc.as_of.isoformat()}", kit.label),
            pdf.grid_table(kit, [w("age"), w("cases")], rows, (60, 40))]


SECTION_BODIES = {"counts": _counts, "timeliness": _timeliness, "losses": _losses,
                  "recurrences": _recurrences, "capas": _capas}


def render(c: Content, lang: Language, *, company: str, logo: Path | None, kit: pdf.PdfKit,
           charts: ChartKit, tz: ZoneInfo, signature: Signature | None) -> bytes:
    """The report's PDF in `lang`; without a signature it is a draft (stamped)."""
    w = Words(lang, tz)
    kit = kit.using(lang.value)
    rev = w("revision", n=c.revision)
    frame = pdf.PageFrame(
        letterhead=pdf.Letterhead(company=company, logo=logo), title=w("title"),
        reference=f"{c.month} · {rev if signature else w('draft_ref')}", footer=w("footer"),
        page_label=w("page", page="{page}", pages="{pages}"),
        stamp=None if signature else w("draft"))
    t = c.figures.table
    story: list[Flowable] = [
        kit.p(f"{w('title')} {c.month}", kit.title), kit.p(w("subtitle"), kit.label),
        pdf.kv_table(kit, [(w("month"), period_text(t.period_from, t.period_to, lang)),
                           (w("rev_of"), rev),
                           (w("as_of"), t.open_cases.as_of.isoformat()),
                           (w("tz"), t.timezone)], label_w=28 * mm, columns=2)]
    if c.corrects:
        story.append(_boxed(w("corrects", n=c.revision - 1), c.corrects, kit))
    for section in SECTIONS_WITH_FIGURES:
        story += [kit.p(w(f"s.{section}"), kit.h1),
                  *SECTION_BODIES[section](c, w, kit, charts),
                  _review(getattr(c.review, section), w, kit)]
    story += [kit.p(w("s.open"), kit.h1), *_open_cases(c, w, kit),
              kit.p(w("s.overall"), kit.h1), _review(c.review.overall, w, kit),
              _signature(signature, w, kit)]
    return pdf.render(kit, frame, story, title=f"{w('title')} {c.month}", author=company,
                      subject=rev, language="zh-CN" if lang is Language.ZH else "en")


SECTIONS_WITH_FIGURES = ("counts", "timeliness", "losses", "recurrences", "capas")


def _signature(s: Signature | None, w: Words, kit: pdf.PdfKit) -> Flowable:
    line = pdf.SignatureLine(meaning=w("approved")) if s is None else pdf.SignatureLine(
        meaning=w("approved"), name=s.name, role=w(f"role.{s.role}"),
        signed_at=w.at(s.signed_at), sha256=s.content_sha256)
    return pdf.signature_block(kit, w("signature"), [w(k) for k in SIGNATURE_COLUMNS], [line])
