"""HTTP routes of the issued documents: the Complaint Handling Report (P-5.3.1, P-5.4.2).

Routes only translate: parse, call `documents.Documents`, shape the answer.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Path, Request, Response, UploadFile
from pydantic import BaseModel, Field

from services.reporting import dossier
from services.reporting.documents import (
    ComplaintReport,
    Documents,
    IssuedPdf,
    Revision,
    Signature,
    Verdict,
    state_of,
)
from services.reporting.monthly_report import (
    ISSUED_MONTHLY,
    MONTHLY_REPORTS,
    Verifier,
    sha256_of,
)
from shared.api import service_of
from shared.auth import Principal, require

READERS = ("quality", "sales", "manager", "auditor")
BASE = "/documents/complaint-reports"
VERIFY_PATH = "/documents/verify"
PDF = "application/pdf"
Ref = Annotated[str, Path(pattern=r"^[A-Za-z0-9-]{1,64}$", description="The register number "
                          "(e.g. CF-2026-000123) or the feedback id")]
Reader = Annotated[Principal, Depends(require(*READERS))]
PDF_ANSWER: dict[int | str, dict[str, Any]] = {200: {"content": {PDF: {}},
                                                     "description": "The PDF"}}


class Sign(BaseModel):
    content_sha256: str = Field(..., pattern=r"^[0-9a-f]{64}$", description="The "
                                "`content_sha256` of the report as the signer read it (GET "
                                f"{BASE}/{{ref}}): refused with 409 if it changed since")


class RevisionView(BaseModel):
    number: int
    content_sha256: str = Field(..., description="sha256 of the canonical JSON signed")
    status: str = Field(..., examples=["issued"], description="approved (awaiting Sales' "
                        "review) or issued")
    signatures: list[Signature]
    pdf: IssuedPdf | None = None
    download: str | None = Field(None, examples=[f"{BASE}/CF-2026-000123/revisions/1.pdf"])

    @classmethod
    def of(cls, ref: str, r: Revision) -> "RevisionView":
        return cls(number=r.number, content_sha256=r.content_sha256,
                   status="issued" if r.issued else "approved", signatures=r.signatures,
                   pdf=r.pdf, download=f"{BASE}/{ref}/revisions/{r.number}.pdf"
                   if r.issued else None)


class ReportState(BaseModel):
    feedback_id: str
    register_no: str | None
    language: str = Field(..., examples=["zh"], description="The customer's: the report's")
    status: str = Field(..., examples=["draft", "approved", "issued", "changed"], description=(
        "draft: the current content is not approved; approved: awaiting Sales' review; "
        "issued: the latest revision says what the events say; changed: issued, but the "
        "complaint moved on (the next approval makes a new revision)"))
    content_sha256: str = Field(..., description="What a signer sends back to sign this")
    sections: list[str] = Field(..., examples=[["D1", "D2", "D4", "D8"]],
                                description="The 8D sections this complaint has")
    content: dossier.Dossier
    revisions: list[RevisionView]


def documents_of(request: Request) -> Documents:
    return service_of(request).documents


def _pdf(data: bytes, filename: str) -> Response:
    return Response(data, media_type=PDF,
                    headers={"Content-Disposition": f'inline; filename="{filename}"'})


def _answer(response: Response, created: bool, ref: str, revision: Revision) -> RevisionView:
    response.status_code = 201 if created else 200
    return RevisionView.of(ref, revision)


def router() -> APIRouter:
    r = APIRouter(tags=["documents"])
    # Readers verify too: the verification POST writes nothing (see `x-read-only`).

    @r.get(f"{BASE}/{{ref}}", response_model=ReportState,
           summary="The Complaint Handling Report: current content, its sha256, revisions")
    async def report(request: Request, ref: Ref, _: Reader) -> ReportState:
        __, content, stored = await documents_of(request).current(ref)
        return _state(ref, content, stored)

    @r.get(f"{BASE}/{{ref}}/draft.pdf", response_class=Response, responses=PDF_ANSWER,
           summary="Preview the report as it stands (stamped draft, not stored)")
    async def draft(request: Request, ref: Ref, _: Reader) -> Response:
        filename, data = await documents_of(request).draft(ref)
        return _pdf(data, filename)

    @r.get(f"{BASE}/{{ref}}/revisions/{{number}}.pdf", response_class=Response,
           responses=PDF_ANSWER, summary="An issued revision: exactly the bytes issued",
           description="Checked against the sha256 recorded at issue (header "
                       "`X-Content-SHA256`): a file changed in the store is not served.")
    async def revision(request: Request, ref: Ref,
                       number: Annotated[int, Path(ge=1, le=10_000)], _: Reader) -> Response:
        pdf, data = await documents_of(request).revision_pdf(ref, number)
        response = _pdf(data, pdf.filename)
        response.headers["X-Content-SHA256"] = pdf.sha256
        return response

    @r.post(f"{BASE}/{{ref}}/approve", response_model=RevisionView, status_code=201,
            responses={200: {"description": "This content was approved already"}},
            summary="Quality approves the content (批准): the next revision, signed",
            description="The body names the content read (`content_sha256`); a content "
                        "changed since is refused (409), and so is content an issued "
                        "revision already says. Approving changed content before Sales "
                        "issued it replaces the pending approval (kept in the history).")
    async def approve(request: Request, response: Response, ref: Ref, body: Sign,
                      who: Annotated[Principal, Depends(require("quality"))]) -> RevisionView:
        revision, created = await documents_of(request).approve(ref, body.content_sha256, who)
        return _answer(response, created, ref, revision)

    @r.post(f"{BASE}/{{ref}}/issue", response_model=RevisionView, status_code=201,
            responses={200: {"description": "This content was issued already"}},
            summary="Sales reviews (审核) and issues the approved revision: the PDF, stored",
            description="The body names the content reviewed (`content_sha256`): it must be "
                        "the content Quality approved and still the current one (409 "
                        "otherwise). Renders the PDF with both signatures, keeps it in the "
                        "attachment store by its sha256 and answers its name, size and hash; "
                        "an issued revision is never altered.")
    async def issue(request: Request, response: Response, ref: Ref, body: Sign,
                    who: Annotated[Principal, Depends(require("sales"))]) -> RevisionView:
        revision, created = await documents_of(request).issue(ref, body.content_sha256, who)
        return _answer(response, created, ref, revision)

    @r.post(VERIFY_PATH, response_model=Verdict,
            summary="Was this PDF issued by this system, and which document is it?",
            description="Multipart field `file`: the PDF. Answers by its sha256: the "
                        "register number (or month), revision and signatures of the "
                        "Complaint Handling Report or monthly report issued with exactly these "
                        "bytes, or that this system did not issue it "
                        "(forged, or altered after issue). Changes nothing (`x-read-only`): "
                        "managers and auditors may ask.",
            openapi_extra={"x-read-only": True})
    async def verify(request: Request, _: Reader,
                     file: Annotated[UploadFile, File(description="The PDF to check")]
                     ) -> Verdict:
        return await verified(request, await sha256_of(file))

    @r.get(f"{VERIFY_PATH}/{{sha256}}", response_model=Verdict,
           summary="The same check by the PDF's sha256 (e.g. from `sha256sum`), no upload")
    async def verify_hash(request: Request, _: Reader,
                          sha256: Annotated[str, Path(pattern=r"^[0-9a-f]{64}$")]) -> Verdict:
        return await verified(request, sha256)

    return r


async def verified(request: Request, sha: str) -> Verdict:
    """One verification for every document reporting issues: a complaint's report, else a
    monthly report (each found by one `_id` read of its own index)."""
    verdict = await documents_of(request).verify(sha)
    if verdict.issued:
        return verdict
    db = service_of(request).database
    monthly = await Verifier(db[ISSUED_MONTHLY], db[MONTHLY_REPORTS]).verify(sha)
    return monthly or verdict


def _state(ref: str, content: dossier.Dossier, stored: ComplaintReport | None) -> ReportState:
    state = state_of(content, stored)
    return ReportState(
        feedback_id=content.feedback_id, register_no=content.register_no,
        language=content.language.value, status=state["status"],
        content_sha256=state["content_sha256"],
        sections=[s for s in dossier.SECTIONS if content.has(s)], content=content,
        revisions=[RevisionView.of(ref, r) for r in (stored.revisions if stored else [])])
