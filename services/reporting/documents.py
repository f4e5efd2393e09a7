"""Issued documents (P-5.3.1, P-5.4.2): the Complaint Handling Report's revisions, their
electronic signatures, and the PDFs kept by hash.

Issuing the report is a step of the procedure: Quality approves the content (批准), Sales
reviews it and issues it (审核). Each signature says who (name and role from the token),
when, what it means, and the sha256 of exactly the content signed (`Dossier.canonical`). A
signer signs what they saw: the request carries the `content_sha256` they read, and a
content changed since is refused (409). Issuing renders the PDF with both signatures and
keeps it in the attachment store by its sha256; an issued revision is never altered, and a
later change (a reopen, a new round) makes the next revision once approved again.

Storage, in reporting's database: `complaint_reports`, one document per complaint (`_id` =
the feedback id) with its revisions and history (an aggregate: optimistic `version`); and
`issued_documents`, one per issued PDF (`_id` = the PDF's sha256), so a PDF handed in for
verification is found by one `_id` read. The index entry is written before the revision
that names it: a crash between leaves an entry no revision confirms, which verification
treats as not issued (it checks both).
"""

import asyncio
import threading
from datetime import datetime
from typing import Any, ClassVar, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from services.reporting import complaint_report, dossier
from services.reporting.defects import defect_names
from services.reporting.domain import CapaRow, FeedbackRow, RowKind
from services.reporting.pdf import PdfKit
from services.reporting.readmodels import ReadModels, parse_history_doc
from services.reporting.settings import Settings
from services.reporting.views import Views
from shared.attachments import AttachmentStore, DamagedFile
from shared.auth import Principal
from shared.domain import Aggregate
from shared.errors import Conflict, NotFound
from shared.events import MalformedEvent, UnknownEvent, utcnow
from shared.store import AlreadyExists, Repository

REPORTS = "complaint_reports"
ISSUED = "issued_documents"
Meaning = Literal["approved", "reviewed"]
MEANING_LABELS: dict[str, tuple[str, str]] = {"approved": ("批准", "approved"),
                                              "reviewed": ("审核", "reviewed")}
_RENDERING = threading.Lock()  # reportlab keeps process-wide state: one rendering at a time


class Signature(BaseModel):
    """An electronic signature (P-5.4.2: attributable, and bound to what was signed)."""

    meaning: Meaning = Field(..., description="approved: Quality (批准); reviewed: Sales (审核)")
    meaning_label: str = Field(..., examples=["批准 / approved"])
    sub: str = Field(..., examples=["li.wei"])
    name: str = Field(..., examples=["Li Wei"], description="From the token (else its sub)")
    role: str = Field(..., examples=["quality"])
    signed_at: datetime
    content_sha256: str = Field(..., description="sha256 of the canonical JSON content signed")

    @classmethod
    def by(cls, who: Principal, role: str, meaning: Meaning, content_sha256: str
           ) -> "Signature":
        zh, en = MEANING_LABELS[meaning]
        return cls(meaning=meaning, meaning_label=f"{zh} / {en}", sub=who.sub,
                   name=who.name or who.sub, role=role, signed_at=utcnow(),
                   content_sha256=content_sha256)


class IssuedPdf(BaseModel):
    sha256: str
    size: int
    filename: str = Field(..., examples=["CF-2026-000123-rev1.pdf"])
    issued_at: datetime


class Revision(BaseModel):
    number: int = Field(..., ge=1)
    content_sha256: str
    content: str = Field(..., description="The canonical JSON signed (kept for the audit)")
    approval: Signature
    review: Signature | None = None
    pdf: IssuedPdf | None = None

    @property
    def issued(self) -> bool:
        return self.pdf is not None

    @property
    def signatures(self) -> list[Signature]:
        return [s for s in (self.approval, self.review) if s is not None]


class ComplaintReport(Aggregate):
    """The revisions of one complaint's report; `_id` = the feedback id."""

    producer: ClassVar[str] = "reporting"

    register_no: str | None = None
    revisions: list[Revision] = Field(default_factory=list)

    @property
    def latest(self) -> Revision | None:
        return self.revisions[-1] if self.revisions else None

    def revision(self, number: int) -> Revision:
        for r in self.revisions:
            if r.number == number and r.issued:
                return r
        raise NotFound(f"{self.register_no or self.id} has no issued revision {number}.")

    def approve(self, content: dossier.Dossier, who: Principal) -> Revision | None:
        """Quality's approval of this content: a new revision, or the pending one's approval
        replaced (its content changed before it was issued). None: approved already."""
        sha = content.sha256()
        last = self.latest
        if last is not None and last.content_sha256 == sha:
            if last.issued:
                raise Conflict(f"Revision {last.number} was issued with exactly this content; "
                               "a later change (a reopen, a new round) makes the next one.")
            return None
        number = last.number if last is not None and not last.issued else len(self.revisions) + 1
        revision = Revision(number=number, content_sha256=sha, content=content.canonical(),
                            approval=Signature.by(who, "quality", "approved", sha))
        if last is not None and not last.issued:
            self.revisions[-1] = revision  # the history keeps the approval it replaces
        else:
            self.revisions.append(revision)
        self.register_no = content.register_no
        self.log(who.as_actor(), "approved", {"revision": number, "content_sha256": sha},
                 note="Complaint Handling Report approved (批准)")
        return revision

    def pending(self, seen_sha256: str, current_sha256: str) -> Revision:
        """The approved revision Sales may issue, having reviewed `seen_sha256`."""
        last = self.latest
        if last is None or last.issued:
            raise Conflict("Nothing approved to issue: Quality approves the current content "
                           "first (POST .../approve).")
        if seen_sha256 != last.content_sha256:
            raise Conflict(f"Quality approved content {last.content_sha256}, not the "
                           f"{seen_sha256} you reviewed: read the report again.")
        if current_sha256 != last.content_sha256:
            raise Conflict("The content changed since Quality approved it; Quality approves "
                           "the current content first.")
        return last

    def issue(self, number: int, review: Signature, pdf: IssuedPdf, who: Principal) -> None:
        revision = self.revision_pending(number)
        revision.review, revision.pdf = review, pdf
        self.log(who.as_actor(), "issued", {"revision": number, "pdf_sha256": pdf.sha256},
                 note="Complaint Handling Report reviewed (审核) and issued")

    def revision_pending(self, number: int) -> Revision:
        last = self.latest
        if last is None or last.number != number or last.issued:
            raise Conflict(f"Revision {number} is no longer the one awaiting issue: reload.")
        return last


class IssuedDocument(BaseModel):
    """One issued PDF, found by its sha256 (`_id`)."""

    sha256: str
    feedback_id: str
    register_no: str | None
    revision: int
    filename: str
    size: int
    issued_at: datetime


class Verdict(BaseModel):
    """What `POST /documents/verify` says of a PDF."""

    issued: bool = Field(..., description="True: this system issued exactly these bytes")
    sha256: str
    message: dict[str, str] = Field(..., description="The answer for a person, in zh-Hans "
                                    "and en")
    register_no: str | None = None
    feedback_id: str | None = None
    revision: int | None = None
    filename: str | None = None
    issued_at: datetime | None = None
    signatures: list[Signature] = Field(default_factory=list)


class Documents:
    """The report's service layer: content on demand, signing, issuing, reading, verifying."""

    def __init__(self, settings: Settings, views: Views,
                 reports: Repository[ComplaintReport], issued: AsyncCollection):
        self.settings = settings
        self.views = views
        self.reports = reports
        self.issued = issued
        self.store = AttachmentStore(settings.attachment_dir)
        self.kit = PdfKit(settings.cjk_font, settings.cjk_font_index)
        self.tz = ZoneInfo(settings.timezone)

    @property
    def models(self) -> ReadModels:
        return self.views.models

    # -- content -------------------------------------------------------------------
    async def row(self, ref: str) -> FeedbackRow:
        """The complaint's register row, by register number or feedback id (`_id` reads)."""
        feedback_id = await self.models.feedback_id_of(ref)
        await self.views.check_kept(feedback_id, "complaint_report")  # 410 once disposed of
        row = await self.models.register.get(feedback_id)
        if not isinstance(row, FeedbackRow) or not row.registered:
            raise NotFound(f"No feedback {ref!r} in the register (yet).")
        if row.form_opened_at is None:
            raise NotFound(f"{row.register_no} has no Complaint Handling Form, so no Complaint "
                           "Handling Report (P-F.2: it was not handed to Quality).")
        return row

    async def content(self, row: FeedbackRow) -> dossier.Dossier:
        """Folded from the events the row names and its CAPAs: `_id` reads only."""
        events = []
        for doc in await self.models.history_of(row):
            try:
                events.append(parse_history_doc(doc))
            except (UnknownEvent, MalformedEvent):
                continue  # an event of a newer producer: not part of the report
        capas = await asyncio.gather(*(self.models.rows[RowKind.CAPA].get(capa_id)
                                       for capa_id in row.capa_ids))
        links = [dossier.capa_link(c.id, c.number, c.title, c.closed_at is not None,
                                   c.withdrawn_at is not None, c.effective)
                 for c in capas if isinstance(c, CapaRow)]
        return dossier.fold(row.id, events, links)

    async def current(self, ref: str) -> tuple[FeedbackRow, dossier.Dossier,
                                               ComplaintReport | None]:
        row = await self.row(ref)
        content, report = await asyncio.gather(self.content(row), self.reports.get(row.id))
        return row, content, report

    # -- signing -------------------------------------------------------------------
    async def approve(self, ref: str, seen_sha256: str, who: Principal
                      ) -> tuple[Revision, bool]:
        """The approved revision, and whether this call wrote it (False: approved already)."""
        row, content, report = await self.current(ref)
        _unchanged(seen_sha256, content)
        if report is None:
            report = ComplaintReport(id=row.id, register_no=row.register_no)
        revision = report.approve(content, who)
        if revision is None:  # approved already (a retried request): nothing to write
            latest = report.latest
            assert latest is not None
            return latest, False
        try:
            await (self.reports.add(report) if report.version == 0
                   else self.reports.save(report))
        except AlreadyExists as exc:  # another approval created it meanwhile
            raise Conflict("Someone signed this report at the same moment: read it again."
                           ) from exc
        return revision, True

    async def issue(self, ref: str, seen_sha256: str, who: Principal
                    ) -> tuple[Revision, bool]:
        """The issued revision, and whether this call issued it (False: issued already)."""
        row, content, report = await self.current(ref)
        last = report.latest if report is not None else None
        if report is None or last is None:
            raise Conflict("Nothing approved to issue: Quality approves the current content "
                           "first (POST .../approve).")
        if last.issued and last.content_sha256 == seen_sha256:
            await self._issued(row, report)  # a retry also finishes what a crash left
            return last, False  # issued already (a retried request)
        revision = report.pending(seen_sha256, content.sha256())
        review = Signature.by(who, "sales", "reviewed", revision.content_sha256)
        signed = dossier.Dossier.model_validate_json(revision.content)
        data = await self._render(signed, revision.number, [revision.approval, review])
        sha = await asyncio.to_thread(self.store.put_bytes, data)
        pdf = IssuedPdf(sha256=sha, size=len(data), issued_at=review.signed_at,
                        filename=f"{row.register_no or row.id}-rev{revision.number}.pdf")
        await self._index(IssuedDocument(sha256=sha, feedback_id=row.id,
                                         register_no=row.register_no, revision=revision.number,
                                         filename=pdf.filename, size=pdf.size,
                                         issued_at=pdf.issued_at))
        report.issue(revision.number, review, pdf, who)
        saved = await self.reports.save(report)
        await self._issued(row, saved)
        return saved.revision(revision.number), True

    async def _issued(self, row: FeedbackRow, report: ComplaintReport) -> None:
        for hook in self.views.report_hooks:  # records retention (P-5.4.2)
            await hook(row, report)

    async def _index(self, doc: IssuedDocument) -> None:
        try:
            await self.issued.insert_one({"_id": doc.sha256} | doc.model_dump())
        except DuplicateKeyError:
            pass  # the same bytes again: a retry after a crash

    # -- reading -------------------------------------------------------------------
    async def _render(self, content: dossier.Dossier, revision: int | None,
                      signatures: list[Signature]) -> bytes:
        def render() -> bytes:
            with _RENDERING:
                return complaint_report.render(
                    content, company=self.settings.company_name, logo=self.settings.company_logo,
                    kit=self.kit, tz=self.tz, revision=revision, signatures=signatures,
                    defects=defect_names(self.settings.defect_labels, content.language))
        return await asyncio.to_thread(render)

    async def draft(self, ref: str) -> tuple[str, bytes]:
        """A preview of the current content (stamped draft, not stored), with the approval
        when the pending revision approved exactly this content."""
        row, content, report = await self.current(ref)
        last = report.latest if report is not None else None
        approved = [last.approval] if last is not None and not last.issued \
            and last.content_sha256 == content.sha256() else []
        data = await self._render(content, None, approved)
        return f"{row.register_no or row.id}-draft.pdf", data

    async def revision_pdf(self, ref: str, number: int) -> tuple[IssuedPdf, bytes]:
        """An issued revision's PDF: exactly the bytes issued, checked against their hash."""
        row = await self.row(ref)
        report = await self.reports.get(row.id)
        if report is None:
            raise NotFound(f"{row.register_no} has no issued Complaint Handling Report.")
        pdf = report.revision(number).pdf
        assert pdf is not None  # `revision` returns issued revisions only
        try:
            return pdf, await asyncio.to_thread(self.store.read, pdf.sha256)
        except (FileNotFoundError, DamagedFile) as exc:
            raise NotFound(f"The file of revision {number} ({pdf.sha256}) is missing from the "
                           "document store or no longer matches its hash; restore it from "
                           "the backup.") from exc

    async def verify(self, sha: str) -> Verdict:
        """Whether the system issued a PDF with this sha256, and which."""
        doc = await self.issued.find_one({"_id": sha})
        report = await self.reports.get(doc["feedback_id"]) if doc else None
        revision = next((r for r in report.revisions if r.pdf and r.pdf.sha256 == sha),
                        None) if report else None
        if doc is None or revision is None or revision.pdf is None:
            return Verdict(issued=False, sha256=sha, message={
                "zh-Hans": "本系统未签发此文件：它不是本系统签发的文件，或签发后已被修改。",
                "en": "Not issued by this system: it is not a document this system issued, "
                      "or it was changed after it was issued."})
        no = doc.get("register_no") or doc["feedback_id"]
        return Verdict(
            issued=True, sha256=sha, register_no=doc.get("register_no"),
            feedback_id=doc["feedback_id"], revision=revision.number,
            filename=revision.pdf.filename, issued_at=revision.pdf.issued_at,
            signatures=revision.signatures, message={
                "zh-Hans": f"本系统签发：{no} 客诉处理报告第 {revision.number} 版，"
                           "内容与签发时完全一致。",
                "en": f"Issued by this system: Complaint Handling Report {no}, revision "
                      f"{revision.number}, unchanged since it was issued."})


def _unchanged(seen_sha256: str, content: dossier.Dossier) -> None:
    current = content.sha256()
    if seen_sha256 != current:
        raise Conflict(f"The report's content changed since you read it (you saw "
                       f"{seen_sha256}, it is now {current}): read it again and sign what it "
                       "says now.", [{"loc": "body.content_sha256", "msg": "not the current "
                                      "content"}])


def state_of(content: dossier.Dossier, report: ComplaintReport | None) -> dict[str, Any]:
    """Where the report stands: `draft` (never approved), `approved` (awaiting Sales),
    `issued` (the latest revision says what the events say), `changed` (issued, but the
    complaint moved on: the next approval makes a new revision)."""
    last = report.latest if report is not None else None
    sha = content.sha256()
    if last is None:
        status = "draft"
    elif not last.issued:
        status = "approved" if last.content_sha256 == sha else "draft"
    else:
        status = "issued" if last.content_sha256 == sha else "changed"
    return {"status": status, "content_sha256": sha}
