"""The Complaint Handling Report (客诉处理报告) as a PDF, in the customer's language.

Lays out a `dossier.Dossier` with the pieces of `pdf`: the facts of the complaint, then the
8D sections the complaint has (D1 ... D8; the others are left out, never filled with
placeholders), then the signatures (Quality's approval 批准, Sales' review 审核). Every
heading and label exists in Chinese and English (`LABELS`); the document uses one of them.
"""

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

from reportlab.lib.units import mm
from reportlab.platypus import Flowable, Table

from services.reporting import pdf
from services.reporting.dossier import SECTIONS, Dossier, Person, Round, UnitAnswer
from shared.units import UNIT_LABELS
from shared.vocabulary import Language
from shared.wordlists import CATEGORIES, CHANNELS, DISPOSITIONS, NO_ACTION_OUTCOMES, SEVERITIES

# key -> (zh, en)
LABELS: dict[str, tuple[str, str]] = {
    "title": ("客诉处理报告", "Complaint Handling Report"),
    "subtitle": ("8D 报告", "8D report"),
    "revision": ("第 {n} 版", "Revision {n}"),
    "draft": ("草稿 DRAFT", "DRAFT 草稿"),
    "draft_ref": ("草稿", "Draft"),
    "page": ("第 {page} 页 / 共 {pages} 页", "Page {page} of {pages}"),
    "footer": ("质量记录，按记录控制程序保存（P-5.4.2）", "Quality record, kept under the "
               "Records Control Procedure (P-5.4.2)"),
    "register_no": ("登记编号", "Register no."),
    "customer": ("客户", "Customer"),
    "contact": ("联系人", "Contact"),
    "product": ("产品", "Product"),
    "lot": ("批号", "Lot"),
    "order": ("订单 / 送货单", "Order / delivery note"),
    "category": ("类别", "Category"),
    "severity": ("严重程度", "Severity"),
    "channel": ("来源", "Channel"),
    "received": ("收到日期", "Received"),
    "form_opened": ("客诉处理单开立", "Form opened"),
    "quantity": ("不良数量", "Quantity affected"),
    "times": ("时区", "Time zone"),
    "D1": ("D1 处理小组", "D1 Team"),
    "D2": ("D2 问题描述", "D2 Problem description"),
    "D3": ("D3 临时围堵措施", "D3 Containment"),
    "D4": ("D4 根本原因", "D4 Root cause"),
    "D5": ("D5 纠正措施", "D5 Corrective actions"),
    "D6": ("D6 纠正措施验证", "D6 Verification of the corrective actions"),
    "D7": ("D7 预防措施", "D7 Preventive actions"),
    "D8": ("D8 结案", "D8 Closure"),
    "sales": ("业务部", "Sales"),
    "quality": ("质量部", "Quality"),
    "units": ("责任单位", "Responsible units"),
    "unit_people": ("责任单位人员", "Unit staff"),
    "heads": ("重大客诉召集主管", "Heads summoned (major complaint)"),
    "description": ("客户描述", "Customer's description"),
    "form_note": ("业务部说明", "Note from Sales"),
    "evidence": ("证据", "Evidence"),
    "kind": ("类型", "Kind"),
    "item": ("内容", "Item"),
    "details": ("说明", "Details"),
    "attachment": ("照片 / 文件", "Photo / document"),
    "sample": ("退回样品", "Returned samples"),
    "sample_detail": ("{quantity} 件，{received_on} 收到，存放于 {location}",
                      "{quantity} pcs, received {received_on}, kept at {location}"),
    "round": ("第 {n} 轮", "Round {n}"),
    "trigger.form": ("客诉处理单", "Complaint Handling Form"),
    "trigger.reopened": ("客户不满意，重新处理", "Reopened: the customer was not satisfied"),
    "trigger.returned": ("业务部退回补充", "Returned by Sales for more"),
    "request": ("质量部要求", "Quality's request"),
    "containment": ("围堵措施", "Containment actions"),
    "result": ("验证结果", "Result"),
    "preliminary_cause": ("初步原因分析（质量部）", "Preliminary cause (Quality)"),
    "defect": ("缺陷代码", "Defect code"),
    "root_cause": ("根本原因", "Root cause"),
    "rc_category": ("原因类别", "Cause category"),
    "cause": ("质量部结论原因", "Cause concluded by Quality"),
    "corrective": ("纠正措施", "Corrective actions"),
    "disposition": ("处置", "Disposition"),
    "disposition_detail": ("{type}，{quantity} 件", "{type}, {quantity} pcs"),
    "cost": ("费用", "Cost"),
    "verified": ("已验证有效", "Verified"),
    "rejected": ("未通过，退回责任单位", "Rejected, returned to the unit"),
    "verified_by": ("{by}，{at}", "{by}, {at}"),
    "completed": ("措施完成日期", "Actions completed"),
    "preventive": ("预防措施", "Preventive actions"),
    "capa": ("纠正与预防措施（CAPA）", "Corrective and preventive action (CAPA)"),
    "capa.open": ("进行中", "open"),
    "capa.closed": ("已关闭", "closed"),
    "capa.withdrawn": ("已撤销", "withdrawn"),
    "capa.effective": ("有效性已验证", "effectiveness verified"),
    "quality_record": ("质量记录交业务部", "Quality record handed to Sales"),
    "three_days": ("三日内", "Within 3 days"),
    "yes": ("是", "yes"),
    "no": ("否", "no"),
    "summary": ("结论", "Conclusion"),
    "outcome": ("无需纠正措施", "No corrective action"),
    "closed": ("结案日期（客户满意）", "Closed (customer satisfied)"),
    "signatures": ("签核", "Signatures"),
    "sig.meaning": ("签核", "Meaning"),
    "sig.who": ("签核人 / 角色", "Signed by / role"),
    "sig.when": ("时间", "When"),
    "sig.sha": ("所签内容 SHA-256", "SHA-256 of the content signed"),
    "approved": ("批准（质量部）", "Approved (Quality)"),
    "reviewed": ("审核（业务部）", "Reviewed (Sales)"),
    "role.quality": ("质量部", "Quality"),
    "role.sales": ("业务部", "Sales"),
    "rc.man": ("人", "Man"),
    "rc.machine": ("机", "Machine"),
    "rc.material": ("料", "Material"),
    "rc.method": ("法", "Method"),
    "rc.measurement": ("测", "Measurement"),
    "rc.environment": ("环", "Environment"),
}
WORDS = {"category": CATEGORIES, "channel": CHANNELS, "severity": SEVERITIES,
         "disposition": DISPOSITIONS, "outcome": NO_ACTION_OUTCOMES, "unit": UNIT_LABELS}


class Signed(Protocol):
    """A signature as `documents` keeps it."""

    @property
    def meaning(self) -> str: ...  # "approved" | "reviewed"

    @property
    def name(self) -> str: ...

    @property
    def role(self) -> str: ...

    @property
    def signed_at(self) -> datetime: ...

    @property
    def content_sha256(self) -> str: ...


class Words:
    """Labels, words and times in one language and the plant's time zone."""

    def __init__(self, language: Language, tz: ZoneInfo):
        self.i = 0 if language is Language.ZH else 1
        self.tz = tz
        self.defects: dict[str, str] = {}

    def __call__(self, key: str, **values: object) -> str:
        pair = LABELS.get(key)
        return (pair[self.i] if pair else key).format(**values)

    def word(self, table: str, code: str | None) -> str:
        if code is None:
            return ""
        pair = WORDS[table].get(code)
        return pair[self.i] if pair else code

    def at(self, value: datetime | None) -> str:
        return value.astimezone(self.tz).strftime("%Y-%m-%d %H:%M") if value else ""

    def day(self, value: date | datetime | None) -> str:
        if isinstance(value, datetime):
            value = value.astimezone(self.tz).date()
        return value.isoformat() if value else ""

    def people(self, people: Sequence[Person]) -> str:
        return ", ".join(f"{p.name} ({self.word('unit', p.unit)})" if p.unit else p.name
                         for p in people)


def render(d: Dossier, *, company: str, logo: Path | None, kit: pdf.PdfKit, tz: ZoneInfo,
           revision: int | None, signatures: Sequence[Signed],
           defects: Mapping[str, str] | None = None) -> bytes:
    """The report's PDF: `revision` None is a draft (stamped, not an issued record).
    `defects`: defect code -> its name in the report's language (else the event's name)."""
    w = Words(d.language, tz)
    w.defects = dict(defects or {})
    kit = kit.using(d.language.value)
    reference = f"{d.register_no or d.feedback_id} · " + (
        w("revision", n=revision) if revision is not None else w("draft_ref"))
    frame = pdf.PageFrame(
        letterhead=pdf.Letterhead(company=company, logo=logo),
        title=f"{w('title')} · {w('subtitle')}", reference=reference, footer=w("footer"),
        page_label=w("page", page="{page}", pages="{pages}"),
        stamp=w("draft") if revision is None else None)
    story: list[Flowable] = [kit.p(w("title"), kit.title), _facts(d, w, kit)]
    for section in SECTIONS:
        if d.has(section):
            story += [kit.p(w(section), kit.h1), *BUILDERS[section](d, w, kit)]
    story.append(_signatures(signatures, w, kit))
    return pdf.render(kit, frame, story, title=f"{w('title')} {d.register_no or ''}".strip(),
                      subject=d.customer_name or "", author=company,
                      language="zh-CN" if d.language is Language.ZH else "en")


def _facts(d: Dossier, w: Words, kit: pdf.PdfKit) -> Flowable:
    product = d.product
    rows: list[tuple[str, object]] = [
        (w("register_no"), d.register_no or ""),
        (w("customer"), f"{d.customer_name or ''} ({d.customer_id or ''})"),
        (w("contact"), d.contact_person or ""),
        (w("product"), f"{product.code} {product.name or ''}".strip() if product else ""),
        (w("lot"), product.lot or "" if product else ""),
        (w("order"), " / ".join(filter(None, [product.order_no, product.delivery_note]))
         if product else ""),
        (w("category"), w.word("category", d.category)),
        (w("severity"), w.word("severity", d.severity)),
        (w("channel"), w.word("channel", d.channel)),
        (w("quantity"), str(d.quantity_affected) if d.quantity_affected is not None else ""),
        (w("received"), w.at(d.received_at)),
        (w("form_opened"), w.at(d.form_opened_at)),
    ]
    rows.append((w("times"), str(w.tz)))
    return pdf.kv_table(kit, [(k, v) for k, v in rows if v], label_w=28 * mm, columns=2)


def _d1(d: Dossier, w: Words, kit: pdf.PdfKit) -> list[Flowable]:
    t = d.team
    rows = [(w("sales"), w.people(t.sales)), (w("quality"), w.people(t.quality)),
            (w("units"), ", ".join(w.word("unit", u) for u in t.units)),
            (w("unit_people"), w.people(t.unit_people)),
            (w("heads"), ", ".join(f"{h.name} ({w.word('unit', h.unit)})" for h in t.heads))]
    return [pdf.kv_table(kit, [(k, v) for k, v in rows if v])]


def _d2(d: Dossier, w: Words, kit: pdf.PdfKit) -> list[Flowable]:
    rows = [(w("description"), d.description or "")]
    if d.form_note:
        rows.append((w("form_note"), d.form_note))
    for r in d.rounds:  # the customer was not satisfied: what they said is the problem now
        if r.trigger == "reopened":
            rows.append((f"{w('round', n=r.round)} · {w.at(r.received_at)}", _trigger(r, w)))
    out: list[Flowable] = [pdf.kv_table(kit, rows)]
    if d.evidence:
        lines = []
        for e in d.evidence:
            if e.kind == "attachment":
                lines.append([w("attachment"), e.filename or "", kit.p(
                    f"{e.content_type}, {e.size} B, SHA-256 {e.sha256}", kit.small)])
            else:
                detail = w("sample_detail", quantity=e.quantity, received_on=w.day(e.received_on),
                           location=e.location)
                lines.append([w("sample"), e.note or "", detail])
        out += [kit.p(w("evidence"), kit.h2),
                pdf.grid_table(kit, [w("kind"), w("item"), w("details")], lines, (22, 28, 50))]
    return out


def _who(r: Round, a: UnitAnswer, d: Dossier, w: Words) -> str:
    """The heading of one unit's answer: the unit, and the round when there were several."""
    unit = w.word("unit", a.unit)
    return f"{w('round', n=r.round)} · {unit}" if len(d.rounds) > 1 else unit


def _per_answer(d: Dossier, w: Words, kit: pdf.PdfKit, rows_of) -> list[Flowable]:
    out: list[Flowable] = []
    for r, a in d.answers():
        rows = [(k, v) for k, v in rows_of(r, a) if v]
        if rows:
            out += [kit.p(_who(r, a, d, w), kit.h2), pdf.kv_table(kit, rows)]
    return out


def _d3(d: Dossier, w: Words, kit: pdf.PdfKit) -> list[Flowable]:
    return _per_answer(d, w, kit, lambda r, a: [(w("containment"), a.containment)])


def _d4(d: Dossier, w: Words, kit: pdf.PdfKit) -> list[Flowable]:
    out: list[Flowable] = []
    for r in d.rounds:
        rows = [(w("round", n=r.round), _trigger(r, w) if len(d.rounds) > 1 else ""),
                (w("preliminary_cause"), r.preliminary_cause),
                (w("defect"), _defect(r, w)),
                (w("cause"), r.cause)]
        if any(v for _, v in rows[1:]):
            out.append(pdf.kv_table(kit, [(k, v) for k, v in rows if v]))
    return out + _per_answer(d, w, kit, lambda r, a: [
        (w("request"), a.request), (w("root_cause"), a.root_cause),
        (w("rc_category"), w(f"rc.{a.root_cause_category}") if a.root_cause_category else "")])


def _defect(r: Round, w: Words) -> str:
    if not r.defect_code:
        return ""
    return f"{r.defect_code} {w.defects.get(r.defect_code) or r.defect_name or ''}".strip()


def _trigger(r: Round, w: Words) -> str:
    text = w(f"trigger.{r.trigger}") if r.trigger else ""
    return f"{text}: {r.reason}" if r.reason else text


def _d5(d: Dossier, w: Words, kit: pdf.PdfKit) -> list[Flowable]:
    def rows(r: Round, a: UnitAnswer) -> list[tuple[str, object]]:
        disp = a.disposition
        detail = ""
        if disp is not None:
            detail = w("disposition_detail", type=w.word("disposition", disp.type),
                       quantity=disp.quantity)
            detail += f"; {w('cost')} {disp.cost}" if disp.cost else ""
            detail += f"; {disp.note}" if disp.note else ""
        return [(w("corrective"), _list(a.corrective, kit)), (w("disposition"), detail)]
    return _per_answer(d, w, kit, rows)


def _list(lines: Sequence[str], kit: pdf.PdfKit) -> object:
    return Table([[p] for p in kit.items(lines)], style=[
        ("LEFTPADDING", (0, 0), (-1, -1), 0), ("TOPPADDING", (0, 0), (-1, -1), 0)]) \
        if lines else ""


def _d6(d: Dossier, w: Words, kit: pdf.PdfKit) -> list[Flowable]:
    def rows(r: Round, a: UnitAnswer) -> list[tuple[str, object]]:
        v = a.verification
        if v is None:
            return []
        verdict = w("verified") if v.accepted else w("rejected")
        text = f"{verdict} — {w('verified_by', by=v.by.name, at=w.at(v.at))}"
        return [(w("result"), f"{text}\n{v.note}" if v.note else text),
                (w("completed"), w.at(a.completed_at))]
    return _per_answer(d, w, kit, rows)


def _d7(d: Dossier, w: Words, kit: pdf.PdfKit) -> list[Flowable]:
    out = _per_answer(d, w, kit, lambda r, a: [(w("preventive"), _list(a.preventive, kit))])
    if d.capas:
        lines = [[c.number, c.title, w(f"capa.{c.status}")
                  + (f", {w('capa.effective')}" if c.effective else "")] for c in d.capas]
        out += [kit.p(w("capa"), kit.h2), pdf.grid_table(kit, ["CAPA", w("item"),
                                                               w("details")], lines,
                                                         (22, 50, 28))]
    return out


def _d8(d: Dossier, w: Words, kit: pdf.PdfKit) -> list[Flowable]:
    out: list[Flowable] = []
    for r in d.rounds:
        if r.resolved_at is None:
            continue
        rows = [(w("round", n=r.round), "" if len(d.rounds) == 1 else _trigger(r, w)),
                (w("quality_record"), w.at(r.resolved_at)),
                (w("three_days"), "" if r.met_deadline is None
                 else w("yes") if r.met_deadline else w("no")),
                (w("outcome"), w.word("outcome", r.outcome)), (w("summary"), r.summary)]
        out.append(pdf.kv_table(kit, [(k, v) for k, v in rows if v]))
    if d.closure is not None:
        out.append(pdf.kv_table(kit, [(w("closed"), w.at(d.closure.closed_at))]))
    return out


BUILDERS = {"D1": _d1, "D2": _d2, "D3": _d3, "D4": _d4, "D5": _d5, "D6": _d6, "D7": _d7,
            "D8": _d8}


def _signatures(signatures: Sequence[Signed], w: Words, kit: pdf.PdfKit) -> Flowable:
    by_meaning = {s.meaning: s for s in signatures}
    lines = []
    for meaning in ("approved", "reviewed"):
        s = by_meaning.get(meaning)
        lines.append(pdf.SignatureLine(meaning=w(meaning)) if s is None else pdf.SignatureLine(
            meaning=w(meaning), name=s.name, role=w(f"role.{s.role}"),
            signed_at=w.at(s.signed_at), sha256=s.content_sha256))
    return pdf.signature_block(kit, w("signatures"), [w("sig.meaning"), w("sig.who"),
                                                      w("sig.when"), w("sig.sha")], lines)
