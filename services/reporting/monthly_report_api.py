"""HTTP routes of the monthly report (P-F.6): Quality drafts, issues and corrects it; the
manager, the auditor and Quality read every issued revision.

Routes only translate: parse, call `MonthlyReports`, shape the answer. `mount` declares the
report's collection and adds the routes to the service (one line in `app.build`).
"""

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, Field

from services.reporting.documents import IssuedPdf, Signature
from services.reporting.documents_api import PDF_ANSWER, Sign
from services.reporting.monthly_report import (
    ISSUED_MONTHLY,
    MONTHLY_REPORTS,
    Content,
    MonthlyReport,
    MonthlyRevision,
    Review,
    Verifier,
)
from services.reporting.monthly_report_service import MonthlyReports
from shared.api import service_of
from shared.auth import Principal, require
from shared.domain import HistoryEntry
from shared.service import Service
from shared.vocabulary import IsoMonth, Language, LongText

READERS = ("quality", "manager", "auditor")
BASE = "/reports/monthly"
PDF = "application/pdf"
Month = Annotated[IsoMonth, Path(description="The month reported, YYYY-MM",
                                 examples=["2026-11"])]
Reader = Annotated[Principal, Depends(require(*READERS))]
Writer = Annotated[Principal, Depends(require("quality"))]
Lang = Annotated[Language, Query(description="The PDF's language: zh (Chinese) or en "
                                 "(English); both are issued")]


class Correction(BaseModel):
    corrects: LongText = Field(..., min_length=1, examples=["The loss of CF-2026-000123 was "
                               "counted twice; the table of revision 1 is corrected."],
                               description="What the new revision corrects (shown on it)")


class RevisionView(BaseModel):
    number: int
    content_sha256: str = Field(..., description="sha256 of the canonical JSON signed")
    corrects: str | None = None
    approval: Signature
    pdfs: dict[str, IssuedPdf] = Field(..., description="Language -> the issued PDF")
    downloads: dict[str, str] = Field(..., examples=[{
        "zh": f"{BASE}/2026-11/revisions/1.pdf?lang=zh"}])

    @classmethod
    def of(cls, month: str, r: MonthlyRevision) -> "RevisionView":
        return cls(number=r.number, content_sha256=r.content_sha256, corrects=r.corrects,
                   approval=r.approval, pdfs=r.pdfs,
                   downloads={lang: f"{BASE}/{month}/revisions/{r.number}.pdf?lang={lang}"
                              for lang in r.pdfs})


class MonthlyReportState(BaseModel):
    month: str
    status: Literal["draft", "issued", "correcting"] = Field(..., description=(
        "draft: never issued; issued: frozen (a correction is a new revision); correcting: "
        "the next revision is being drafted"))
    content_sha256: str = Field(..., description="What issuing now would sign: send it back "
                                "to `POST .../issue`")
    draft: Review
    draft_by: str | None = None
    draft_at: str | None = None
    corrects: str | None = Field(None, description="While correcting: what it corrects")
    content: Content = Field(..., description="The review and the month's figures as issuing "
                             "now would sign them")
    revisions: list[RevisionView]
    history: list[HistoryEntry] = Field(..., description="Who saved, issued and corrected "
                                        "what, when (P-5.4.2); a draft save names the "
                                        "sections it changed")


def _state(report: MonthlyReport, content: Content) -> MonthlyReportState:
    return MonthlyReportState(
        month=report.id, status=report.status, content_sha256=content.sha256(),
        draft=report.draft, draft_by=report.draft_by,
        draft_at=report.draft_at.isoformat() if report.draft_at else None,
        corrects=report.corrects, content=content,
        revisions=[RevisionView.of(report.id, r) for r in report.revisions],
        history=report.history)


def reports_of(request: Request) -> MonthlyReports:
    """The monthly reports of the running service (cheap to make: no connection of its own)."""
    service = service_of(request)
    db = service.database
    return MonthlyReports(service.views.settings, service.views, service.repo(MONTHLY_REPORTS),
                          Verifier(db[ISSUED_MONTHLY], db[MONTHLY_REPORTS]))


def _pdf(data: bytes, filename: str, sha256: str | None = None) -> Response:
    headers = {"Content-Disposition": f'inline; filename="{filename}"'}
    if sha256:
        headers["X-Content-SHA256"] = sha256
    return Response(data, media_type=PDF, headers=headers)


def router() -> APIRouter:
    r = APIRouter(tags=["statistics"])

    @r.get(f"{BASE}/{{month}}", response_model=MonthlyReportState,
           summary="P-F.6: the month's report: draft review, figures, sha256, revisions")
    async def state(request: Request, month: Month, _: Reader) -> MonthlyReportState:
        report, content = await reports_of(request).current(month)
        return _state(report, content)

    @r.put(f"{BASE}/{{month}}/draft", response_model=MonthlyReportState,
           summary="Quality saves the draft review (any number of times until issued)",
           description="Sections: counts, timeliness, losses, recurrences, capas, overall "
                       "(free text). Who and when are kept in the history. An issued month is "
                       "frozen (409): a correction is a new revision (POST .../revisions).")
    async def save_draft(request: Request, month: Month, body: Review,
                         who: Writer) -> MonthlyReportState:
        return _state(*await reports_of(request).save_draft(month, body, who))

    @r.post(f"{BASE}/{{month}}/issue", response_model=RevisionView, status_code=201,
            responses={200: {"description": "This content was issued already"}},
            summary="Quality approves (批准) and issues the report: the signed PDFs, stored",
            description="The body names the content read (`content_sha256` of GET "
                        f"{BASE}/{{month}}): a review or a figure changed since is refused "
                        "(409), and so is an empty overall review. Renders the PDF in Chinese "
                        "and in English with the signature, keeps both by sha256; the month is "
                        "then frozen.")
    async def issue(request: Request, response: Response, month: Month, body: Sign,
                    who: Writer) -> RevisionView:
        revision, created = await reports_of(request).issue(month, body.content_sha256, who)
        response.status_code = 201 if created else 200
        return RevisionView.of(month, revision)

    @r.post(f"{BASE}/{{month}}/revisions", response_model=MonthlyReportState, status_code=201,
            summary="Start a correction: revision N+1, from the issued text, saying what it "
                    "corrects",
            description="Only for an issued month. The draft starts as the latest issued "
                        "review; edit it (PUT .../draft) and issue it as usual. The issued "
                        "revisions stay as they are.")
    async def correct(request: Request, month: Month, body: Correction,
                      who: Writer) -> MonthlyReportState:
        return _state(*await reports_of(request).start_correction(month, body.corrects, who))

    @r.get(f"{BASE}/{{month}}/draft.pdf", response_class=Response, responses=PDF_ANSWER,
           summary="Preview the report as issuing now would make it (stamped draft)")
    async def draft_pdf(request: Request, month: Month, _: Reader,
                        lang: Lang = Language.ZH) -> Response:
        name, data = await reports_of(request).draft_pdf(month, lang)
        return _pdf(data, name)

    @r.get(f"{BASE}/{{month}}/revisions/{{number}}.pdf", response_class=Response,
           responses=PDF_ANSWER, summary="An issued revision: exactly the bytes issued",
           description="Checked against the sha256 recorded at issue (header "
                       "`X-Content-SHA256`).")
    async def revision_pdf(request: Request, month: Month,
                           number: Annotated[int, Path(ge=1, le=10_000)], _: Reader,
                           lang: Lang = Language.ZH) -> Response:
        pdf, data = await reports_of(request).revision_pdf(month, number, lang)
        return _pdf(data, pdf.filename, pdf.sha256)

    return r


def mount(service: Service) -> None:
    """Declare the monthly reports' collection and add their routes (`app.build`)."""
    service.collection(MONTHLY_REPORTS, MonthlyReport)
    service.routers.append(router())
