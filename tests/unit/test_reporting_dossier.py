"""The Complaint Handling Report (P-5.3.1, P-5.4.2): its content folded from a complaint's
events, and its PDF as a reader sees it (`pdftotext`): the right sections and values in the
customer's language, the sections a complaint lacks left out, the same input in the same
bytes."""

import shutil
import subprocess
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from services.reporting import complaint_report, dossier, pdf
from services.reporting.documents import ComplaintReport, IssuedPdf, Signature
from services.reporting.domain import FeedbackRow, apply, apply_link, fold, linked_feedback
from services.reporting.settings import Settings
from shared import contracts as c
from shared.auth import Principal
from shared.errors import Conflict
from shared.events import Actor, Contract, Envelope, make_event
from shared.vocabulary import (
    AttachmentMeta,
    Category,
    Channel,
    Customer,
    DispositionType,
    Head,
    Money,
    Product,
    ReturnedSample,
    Severity,
)

pytestmark = pytest.mark.skipif(shutil.which("pdftotext") is None,
                                reason="pdftotext (poppler-utils) is installed by make up")
SHANGHAI = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)
SALES = Actor(sub="wang.fang", name="王芳", roles=("sales",))
QUALITY = Actor(sub="li.wei", name="李伟", roles=("quality",))
UNIT = Actor(sub="liu.gang", name="刘刚", roles=("unit",), unit="production")
KIT = pdf.PdfKit(Settings().cjk_font, Settings().cjk_font_index)


@dataclass
class Sig:
    meaning: str
    name: str
    role: str
    signed_at: datetime
    content_sha256: str


class Story:
    """One complaint's events, each an hour after the one before."""

    def __init__(self, language: str = "zh", major: bool = False):
        self.fid = str(uuid.uuid4())
        self.no = "CF-2026-000777"
        self.events: list[tuple[Envelope, Contract]] = []
        self.language = language
        self.major = major
        self.action_id = f"A-{uuid.uuid4().hex[:6]}"

    def add(self, payload: Contract, actor: Actor = QUALITY) -> None:
        env = make_event(payload, producer="test", correlation_id=self.fid, actor=actor)
        env = env.model_copy(update={"occurred_at": T0 + timedelta(hours=len(self.events))})
        self.events.append((env, payload))

    def facts(self) -> dict:
        return dict(
            feedback_id=self.fid, register_no=self.no,
            customer=Customer(id="C-1001", name="深圳光明电机有限公司", contact_person="张敏",
                              language=self.language),
            channel=Channel.PHONE, received_at=T0 - timedelta(hours=2),
            category=Category.PRODUCT_QUALITY,
            severity=Severity.MAJOR if self.major else Severity.NORMAL,
            product=Product(code="HSG-220", name="Motor housing 220", lot="L2026-11-03"),
            quantity_affected=40, description="外壳在扭矩试验后于安装凸台处开裂。")

    def registered_and_escalated(self) -> "Story":
        self.add(c.FeedbackRegistered(is_complaint=True, **self.facts()), SALES)
        photo = AttachmentMeta(sha256="ab" * 32, filename="crack.jpg", content_type="image/jpeg",
                               size=2048, uploaded_by="wang.fang", uploaded_at=T0)
        sample = ReturnedSample(quantity=12, received_on=date(2026, 11, 20),
                                location="QA lab shelf B3")
        self.add(c.ComplaintEscalated(**self.facts(), attachments=[photo], samples=[sample],
                                      note="Customer line stopped"), SALES)
        self.add(c.ComplaintAccepted(feedback_id=self.fid, register_no=self.no, round=1,
                                     received_at=T0, due_at=T0 + timedelta(days=3),
                                     at_risk_at=T0 + timedelta(days=2),
                                     severity=Severity.NORMAL, trigger="form"),
                 Actor.system("quality"))
        if self.major:
            self.add(c.MajorAlert(feedback_id=self.fid, register_no=self.no,
                                  customer=self.facts()["customer"], description="x",
                                  heads=[Head(unit="rd", name="R&D head")]),
                     Actor.system("quality"))
        return self

    def handled(self, round_: int = 1) -> "Story":
        action = f"{self.action_id}-{round_}"
        self.add(c.ResponsibilityAssigned(
            feedback_id=self.fid, register_no=self.no, round=round_,
            preliminary_cause="模具磨损导致凸台气孔", defect_code="D03",
            defect_name="Functional failure", customer_id="C-1001",
            units=[c.UnitRequest(unit="production", request="查明原因并围堵",
                                 action_id=action)]))
        self.add(c.CountermeasuresProposed(
            action_id=action, feedback_id=self.fid, unit="production",
            containment="隔离并全检仓库及客户处库存", root_cause="模具磨损超过寿命",
            root_cause_category="machine", corrective=["更换模具"],
            preventive=["模具寿命计数器到期停机"],
            disposition=c.Disposition(type=DispositionType.REWORK, quantity=40,
                                      cost=Money(amount=Decimal("860.00"), currency="CNY"))),
            UNIT)
        self.add(c.CountermeasuresVerified(feedback_id=self.fid, action_id=action,
                                           unit="production", note="试装 50 件无裂纹"))
        self.add(c.ResolutionReady(
            feedback_id=self.fid, register_no=self.no, round=round_, cause="模具磨损",
            defect_code="D03", outcomes=[], summary=f"第{round_}轮：已更换模具并全检库存。",
            received_at=T0, resolved_at=T0 + timedelta(hours=30),
            due_at=T0 + timedelta(days=3), met_deadline=True))
        return self


def text_of(data: bytes, tmp_path: Path) -> str:
    path = tmp_path / f"{uuid.uuid4().hex}.pdf"
    path.write_bytes(data)
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True,
                          text=True, check=True).stdout


def render(d: dossier.Dossier, revision: int | None = 1, signatures=()) -> bytes:
    return complaint_report.render(d, company="华南精密制造有限公司", logo=None, kit=KIT,
                                   tz=SHANGHAI, revision=revision, signatures=signatures,
                                   defects={"D03": "功能失效"} if d.language == "zh" else None)


def test_p_5_3_1_report_folds_every_8d_section_from_the_events():
    s = Story(major=True).registered_and_escalated().handled()
    d = dossier.fold(s.fid, s.events)
    assert d.register_no == s.no and d.language == "zh" and d.severity == "major"
    assert [p.name for p in d.team.quality] == ["李伟"] and d.team.units == ["production"]
    assert [h.name for h in d.team.heads] == ["R&D head"]
    assert {e.kind for e in d.evidence} == {"attachment", "sample"}
    (answer,) = d.rounds[0].answers
    assert answer.containment.startswith("隔离") and answer.verification.accepted
    assert answer.disposition.cost == "860.00 CNY"
    assert all(d.has(section) for section in dossier.SECTIONS)


def test_p_5_3_1_pdf_shows_the_sections_and_values_in_chinese(tmp_path):
    s = Story(major=True).registered_and_escalated().handled()
    d = dossier.fold(s.fid, s.events)
    sig = Sig("approved", "李伟", "quality", T0 + timedelta(days=1), d.sha256())
    text = text_of(render(d, signatures=[sig]), tmp_path)
    for expected in ("客诉处理报告", "CF-2026-000777", "深圳光明电机有限公司", "HSG-220",
                     "L2026-11-03", "D03 功能失效", "D1 处理小组", "D2 问题描述", "D3 临时围堵措施",
                     "D4 根本原因", "D5 纠正措施", "D6 纠正措施验证", "D7 预防措施", "D8 结案",
                     "隔离并全检仓库及客户处库存", "模具磨损超过寿命", "更换模具",
                     "模具寿命计数器到期停机", "返工", "860.00 CNY", "已验证有效", "crack.jpg",
                     "QA lab shelf B3", "R&D head", "生产部", "批准（质量部）", "第 1 版",
                     d.sha256()[:40]):
        assert expected in text, expected
    assert "Complaint Handling Report" not in text  # one language: the customer's
    assert "2026-11-20 07:00" in text  # received 23:00 UTC: the next day in Shanghai


def test_p_5_3_1_pdf_in_english_for_an_english_customer(tmp_path):
    s = Story(language="en").registered_and_escalated().handled()
    text = text_of(render(dossier.fold(s.fid, s.events)), tmp_path)
    for expected in ("Complaint Handling Report", "D3 Containment", "D4 Root cause",
                     "Rework", "Verified", "Production", "Approved (Quality)",
                     "Reviewed (Sales)", "Revision 1"):
        assert expected in text, expected
    assert "客诉处理报告" not in text


def test_p_5_3_1_sections_a_complaint_does_not_have_are_left_out(tmp_path):
    s = Story(language="en").registered_and_escalated()  # with Quality, nothing analysed yet
    d = dossier.fold(s.fid, s.events)
    assert [x for x in dossier.SECTIONS if d.has(x)] == ["D2"]
    text = text_of(render(d, revision=None), tmp_path)
    assert "D2 Problem description" in text and "DRAFT 草稿" in text
    for absent in ("D1 ", "D3 ", "D4 ", "D5 ", "D6 ", "D7 ", "D8 "):
        assert absent not in text, absent


def test_p_5_4_2_same_input_same_bytes_and_a_new_fact_changes_the_hash(tmp_path):
    s = Story().registered_and_escalated().handled()
    d = dossier.fold(s.fid, list(reversed(s.events)))  # order of arrival does not matter
    assert d == dossier.fold(s.fid, s.events)
    sig = Sig("approved", "李伟", "quality", T0, d.sha256())
    assert render(d, signatures=[sig]) == render(d, signatures=[sig])
    before = d.sha256()
    s.add(c.ComplaintReopened(feedback_id=s.fid, register_no=s.no, comment="仍有裂纹",
                              reopen_count=1, had_form=True), SALES)
    s.add(c.ComplaintAccepted(feedback_id=s.fid, register_no=s.no, round=2, received_at=T0,
                              due_at=T0, at_risk_at=T0, severity=Severity.NORMAL,
                              trigger="reopened"), Actor.system("quality"))
    again = dossier.fold(s.fid, s.events)
    assert again.sha256() != before and again.rounds[1].reason == "仍有裂纹"
    assert "客户不满意，重新处理: 仍有裂纹" in text_of(render(again, revision=2), tmp_path)


def test_p_5_3_4_capa_opened_for_the_complaint_is_noted_on_its_register_row():
    s = Story().registered_and_escalated()
    capa = c.CapaOpened(capa_id="capa-1", number="CAPA-2026-0007", source="recurrence",
                        feedback_ids=[s.fid, s.fid], title="Cracked housings")
    s.add(capa)
    env, payload = s.events[-1]
    assert linked_feedback(env, payload) == [s.fid]
    row = FeedbackRow(id=s.fid)
    for e, p in s.events[:-1]:
        apply(row, e, p, SHANGHAI)
    assert apply_link(row, env, payload, SHANGHAI) and row.capa_ids == ["capa-1"]
    assert not apply_link(row, env, payload, SHANGHAI)  # a redelivery changes nothing
    rows = fold(s.events, SHANGHAI)  # a rebuild gives the same
    assert rows[(row.kind, s.fid)].capa_ids == ["capa-1"]
    assert env.id in rows[(row.kind, s.fid)].applied_events


def test_p_5_4_2_revisions_issued_are_never_altered_and_a_change_makes_the_next():
    quality = Principal(sub="li.wei", name="李伟", roles=["quality"])
    sales = Principal(sub="wang.fang", roles=["sales"])
    s = Story().registered_and_escalated().handled()
    first = dossier.fold(s.fid, s.events)
    report = ComplaintReport(id=s.fid)
    approved = report.approve(first, quality)
    assert approved is not None and approved.number == 1
    assert approved.approval.content_sha256 == first.sha256()
    assert approved.approval.meaning_label == "批准 / approved"
    assert report.approve(first, quality) is None  # the same approval again: nothing new
    with pytest.raises(Conflict, match="not the"):
        report.pending("0" * 64, first.sha256())  # Sales reviewed other content
    pending = report.pending(first.sha256(), first.sha256())
    review = Signature.by(sales, "sales", "reviewed", pending.content_sha256)
    report.issue(1, review, IssuedPdf(sha256="f" * 64, size=1, filename="x-rev1.pdf",
                                      issued_at=T0), sales)
    assert review.name == "wang.fang"  # no name in the token: its sub
    with pytest.raises(Conflict, match="issued with exactly this content"):
        report.approve(first, quality)
    s.add(c.FeedbackClosed(feedback_id=s.fid, register_no=s.no, closed_at=T0, had_form=True),
          SALES)
    closed = dossier.fold(s.fid, s.events)
    assert report.approve(closed, quality).number == 2
    s.add(c.ComplaintReopened(feedback_id=s.fid, register_no=s.no, reopen_count=1,
                              had_form=True), SALES)
    reopened = dossier.fold(s.fid, s.events)
    replaced = report.approve(reopened, quality)  # before Sales issued 2: approval replaced
    assert replaced.number == 2 and len(report.revisions) == 2
    assert report.revisions[0].pdf.sha256 == "f" * 64  # revision 1 as issued
    assert [h.action for h in report.history] == ["approved", "issued", "approved", "approved"]
    with pytest.raises(Conflict, match="changed since Quality approved"):
        report.pending(replaced.content_sha256, closed.sha256())
