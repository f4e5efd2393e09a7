"""The monthly report (P-F.6): the month's statistics with Quality's explanation and review,
signed and issued as PDF, frozen once issued (P-5.4.2).

One document per month in `monthly_reports` (`_id` = the month, an aggregate with optimistic
`version` and an attributable history): the draft review Quality writes (per section:
counts, timeliness, losses, recurrences, CAPAs, overall), and the issued revisions. Issuing
signs (批准 / approved, role quality) the sha256 of exactly the content the signer saw: the
review and the month's figures (the table, the 12 months of the trend, the record times, the
defects' names). A content changed since (a late event moved a figure, someone edited the
review) is refused (409). The PDF is rendered from that content alone, in Chinese and in
English (two files, one signature: the reader picks the language, and each file is the
bytes issued, forever), kept by sha256 in the attachment store and indexed by hash in
`issued_monthly_reports` (`_id` = the PDF's sha256) for verification.

Once issued the month is frozen: a draft change is refused (409); a correction is a new
revision (`start_correction`, saying what it corrects) that starts from the issued text.
"""

import hashlib
import json
from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from services.reporting import statistics
from services.reporting.defects import defect_names
from services.reporting.documents import IssuedPdf, Signature, Verdict
from services.reporting.statistics import MonthlyTable
from shared.attachments import AttachmentStore, DamagedFile
from shared.auth import Principal
from shared.domain import Aggregate
from shared.errors import Conflict, Invalid, NotFound
from shared.events import utcnow
from shared.vocabulary import Language, LongText

MONTHLY_REPORTS = "monthly_reports"
ISSUED_MONTHLY = "issued_monthly_reports"
SECTIONS = ("counts", "timeliness", "losses", "recurrences", "capas", "overall")
LANGUAGES = (Language.ZH, Language.EN)
TREND_MONTHS = 12


class Review(BaseModel):
    """Quality's explanation and review, per section of the report (free text)."""

    counts: LongText = Field("", description="Complaint cases and counts")
    timeliness: LongText = Field("", description="Reply timeliness, the 3-day rule (P-F.5)")
    losses: LongText = Field("", description="Loss amounts")
    recurrences: LongText = Field("", description="Recurrences (P-5.3.4)")
    capas: LongText = Field("", description="CAPAs opened, closed, their effectiveness")
    overall: LongText = Field("", description="The overall review and what follows from it")


class Figures(BaseModel):
    """The month's figures as the report shows them (all from the read models)."""

    table: MonthlyTable
    trend: list[dict[str, Any]] = Field(..., description="The 12 months up to the month")
    record_minutes: dict[str, int] = Field(..., description="Form -> quality record, in whole "
                                           "minutes -> how many (the timeliness chart)")
    defect_names: dict[str, dict[str, str]] = Field(..., description="Language -> code -> "
                                                    "name, for the codes the month shows")


class Content(BaseModel):
    """What a revision says, and what its signature covers (`sha256` of `canonical`)."""

    month: str
    revision: int
    corrects: str | None = Field(None, description="What this revision corrects")
    review: Review
    figures: Figures

    def canonical(self) -> str:
        return json.dumps(self.model_dump(mode="json"), ensure_ascii=False, sort_keys=True,
                          separators=(",", ":"))

    def sha256(self) -> str:
        return hashlib.sha256(self.canonical().encode()).hexdigest()


class MonthlyRevision(BaseModel):
    number: int = Field(..., ge=1)
    content_sha256: str
    content: str = Field(..., description="The canonical JSON signed (kept for the audit)")
    corrects: str | None = None
    approval: Signature
    pdfs: dict[str, IssuedPdf] = Field(..., description="Language -> the issued PDF")


class MonthlyReport(Aggregate):
    """One month's report: the draft and the issued revisions; `_id` = the month."""

    producer: ClassVar[str] = "reporting"

    draft: Review = Field(default_factory=Review)
    draft_by: str | None = Field(None, description="Who saved the draft last (name)")
    draft_at: datetime | None = None
    corrects: str | None = Field(None, description="While a correction is being drafted: "
                                 "what it corrects")
    revisions: list[MonthlyRevision] = Field(default_factory=list)

    @property
    def latest(self) -> MonthlyRevision | None:
        return self.revisions[-1] if self.revisions else None

    @property
    def status(self) -> Literal["draft", "issued", "correcting"]:
        if not self.revisions:
            return "draft"
        return "correcting" if self.corrects is not None else "issued"

    @property
    def next_number(self) -> int:
        return len(self.revisions) + 1

    def revision(self, number: int) -> MonthlyRevision:
        for r in self.revisions:
            if r.number == number:
                return r
        raise NotFound(f"The monthly report {self.id} has no issued revision {number}. / "
                       f"{self.id} 月报没有已签发的第 {number} 版。")

    def save_draft(self, review: Review, who: Principal) -> None:
        self.check_open()
        # Only the sections this save changed: the earlier entries hold the text they replace,
        # and a report saved a hundred times stays a small document.
        changed = {f"draft_{k}": v for k, v in review.model_dump().items()
                   if getattr(self.draft, k) != v}
        self.draft, self.draft_by, self.draft_at = review, who.name or who.sub, utcnow()
        self.log(who.as_actor(), "draft_saved", changed, note="Monthly report draft saved")

    def check_open(self) -> None:
        """Refuse a change to an issued month: it is frozen until a correction starts."""
        if self.status == "issued":
            latest = self.latest
            assert latest is not None
            raise Conflict(
                f"The monthly report {self.id} was issued (revision {latest.number}) and is "
                "frozen: a correction is a new revision (POST .../revisions with what it "
                f"corrects). / {self.id} 月报已签发（第 {latest.number} 版），不可再修改；更正"
                "须开立新版本（POST .../revisions，并说明更正内容）。",
                [{"loc": "path.month", "msg": "issued: frozen"}])

    def start_correction(self, corrects: str, who: Principal) -> None:
        """Revision N+1 starts from the text issued in N, saying what it corrects."""
        latest = self.latest
        if latest is None:
            raise Conflict(f"The monthly report {self.id} has not been issued: edit its draft "
                           f"(PUT .../draft). / {self.id} 月报尚未签发：直接修改草稿即可。")
        if self.corrects is not None:
            raise Conflict(f"Revision {self.next_number} of {self.id} is being drafted already "
                           f"(it corrects: {self.corrects}). / {self.id} 月报第 "
                           f"{self.next_number} 版已在起草中。")
        self.corrects = corrects
        self.draft = Content.model_validate_json(latest.content).review
        self.draft_by, self.draft_at = who.name or who.sub, utcnow()
        self.log(who.as_actor(), "correction_started",
                 {"corrects": corrects, "revision": self.next_number},
                 note=f"Revision {self.next_number} started from revision {latest.number}")

    def issue(self, content: Content, approval: Signature, pdfs: dict[str, IssuedPdf],
              who: Principal) -> MonthlyRevision:
        if content.revision != self.next_number or self.status == "issued":
            raise Conflict(f"Revision {content.revision} of {self.id} is no longer the one to "
                           f"issue: reload. / {self.id} 月报已有变化，请重新读取。")
        revision = MonthlyRevision(number=content.revision, content_sha256=content.sha256(),
                                   content=content.canonical(), corrects=content.corrects,
                                   approval=approval, pdfs=pdfs)
        self.revisions.append(revision)
        self.corrects = None
        self.log(who.as_actor(), "issued", {"revision": revision.number,
                                            "content_sha256": revision.content_sha256,
                                            "pdf_sha256": {k: p.sha256 for k, p in pdfs.items()}},
                 note="Monthly report approved (批准) and issued")
        return revision


class IssuedMonthly(BaseModel):
    """One issued PDF of a monthly report, found by its sha256 (`_id`)."""

    sha256: str
    month: str
    revision: int
    language: str
    filename: str
    size: int
    issued_at: datetime


def filename(month: str, number: int | None, lang: Language) -> str:
    rev = f"rev{number}" if number is not None else "draft"
    return f"monthly-report-{month}-{rev}-{lang.value}.pdf"


def figures_of(table: MonthlyTable, monthly: dict[str, dict[str, int]], month: str,
               labels: dict[str, tuple[str, str]]) -> Figures:
    """The figures of `month` from its table and the counters of the 12 months up to it."""
    months = statistics.months_between(statistics.shift_month(month, 1 - TREND_MONTHS), month)
    minutes = statistics.minutes_histogram(statistics.Counters([monthly.get(month, {})]), "qr")
    codes = {r.key for r in table.counts.by_defect_code} | {
        r.key for r in table.losses.by_defect_code} | {
        r.key for r in table.follow_up.recurrences_by_defect_code}
    names = {lang.value: {c: n for c, n in defect_names(labels, lang).items() if c in codes}
             for lang in LANGUAGES}
    return Figures(table=table, trend=[dict(r) for r in statistics.trend(monthly, months)],
                   record_minutes={str(m): n for m, n in sorted(minutes.items())},
                   defect_names=names)


class Verifier:
    """Which issued monthly report a PDF is, by its sha256: one `_id` read of the index, then
    the report, which must name the same file (an index entry no revision confirms, left by
    a crash between the two writes, is not an issued document)."""

    def __init__(self, issued: AsyncCollection, reports: AsyncCollection):
        self.issued, self.reports = issued, reports

    async def index(self, doc: IssuedMonthly) -> None:
        try:
            await self.issued.insert_one({"_id": doc.sha256} | doc.model_dump())
        except DuplicateKeyError:
            pass  # the same bytes again: a retry after a crash

    async def verify(self, sha: str) -> Verdict | None:
        """The verdict for a monthly report's PDF, or None: not one of them."""
        doc = await self.issued.find_one({"_id": sha})
        stored = await self.reports.find_one({"_id": doc["month"]}) if doc else None
        report = MonthlyReport.model_validate(stored) if stored else None
        revision = next((r for r in report.revisions
                         if any(p.sha256 == sha for p in r.pdfs.values())), None) \
            if report else None
        if doc is None or revision is None:
            return None
        pdf = revision.pdfs[doc["language"]]
        return Verdict(
            issued=True, sha256=sha, revision=revision.number, filename=pdf.filename,
            issued_at=pdf.issued_at, signatures=[revision.approval], message={
                "zh-Hans": f"本系统签发：{doc['month']} 客诉处理月报第 {revision.number} 版"
                           f"（{'中文' if doc['language'] == 'zh' else '英文'}），内容与签发时"
                           "完全一致。",
                "en": f"Issued by this system: the monthly complaint report {doc['month']}, "
                      f"revision {revision.number} ({doc['language']}), unchanged since it "
                      "was issued."})


def read_issued(store: AttachmentStore, pdf: IssuedPdf, what: str) -> bytes:
    """The issued bytes, checked against their hash by the store."""
    try:
        return store.read(pdf.sha256)
    except (FileNotFoundError, DamagedFile) as exc:
        raise NotFound(f"The file of {what} ({pdf.sha256}) is missing from the document store "
                       "or no longer matches its hash; restore it from the backup. / 文件缺失"
                       "或与签发时的哈希不符，请从备份恢复。") from exc


def check_month(month: str, current: str) -> None:
    if month > current:
        raise Invalid(f"{month} has not begun (this month is {current}): there is nothing to "
                      f"report yet. / {month} 尚未开始，无可报告。",
                      [{"loc": "path.month", "msg": "a month that has begun"}])



async def sha256_of(file: Any) -> str:
    """The sha256 of an uploaded file (`UploadFile`), read in chunks."""
    digest = hashlib.sha256()
    while chunk := await file.read(1 << 20):
        digest.update(chunk)
    return digest.hexdigest()
