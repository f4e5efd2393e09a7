"""The Complaint Handling Report's pages (P-5.3.1, P-5.4.2): Quality approves it (批准), Sales
reviews and issues it (审核), anyone who reads records downloads its revisions, and auditors
and managers check whether a PDF is one this system issued.

reporting owns the document (content, signatures, PDFs, the index of issued hashes); the
console passes on the person's token and shows the answers. PDFs go through the console
because a link cannot carry the bearer token.
"""

import re
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse
from starlette.datastructures import UploadFile

from services.console import reports
from services.console.backend import ApiError
from services.console.i18n import N_
from services.console.pages import Console, Ctx, safe_next

SHA256 = re.compile(r"^[0-9a-f]{64}$")
REVISION = re.compile(r"^[1-9][0-9]{0,4}$")
MAX_UPLOAD = 50 * 1024 * 1024  # a report is well under 1 MB; a scan of one stays under this
CHANGED = N_("The report changed since this page showed it: read the new content below "
             "and sign again.")


def sign_refusal(ctx: Ctx, exc: ApiError) -> dict[str, Any]:
    """A refused signature as the page shows it: content that moved since the page showed
    it is said in words (its sha256 was a hidden field)."""
    error = ctx.error(exc)
    if exc.status == 409 and "content_sha256" in exc.fields:
        error |= {"text": ctx.tr.gettext(CHANGED), "fields": []}
    return error


def pdf_response(resp: Any, cache: str) -> Response:
    """reporting's PDF as the browser gets it: its name, type and recorded hash kept."""
    headers = {k: v for k, v in resp.headers.items()
               if k.lower() in ("content-type", "content-disposition", "x-content-sha256")}
    return Response(resp.content, headers=headers | {
        "Cache-Control": cache, "X-Content-Type-Options": "nosniff"})


def path_of(ref: str) -> str:
    return f"{reports.BASE}/{quote(ref, safe='')}"


def router(console: Console) -> APIRouter:
    r = APIRouter(include_in_schema=False)
    backend = console.backend

    async def report_page(ctx: Ctx, ref: str, error: dict[str, Any] | None = None,
                          status: int = 200, back: str | None = None) -> HTMLResponse:
        """The report alone: its status, preview, signing and revisions (also the page a
        refused signature comes back to, with the fresh state beside the refusal)."""
        _, token = ctx.need(*reports.READERS)
        report = await reports.fetch(backend, token, ref)
        if "missing" in report and error is None:
            raise report["missing"]  # the console's error page, with reporting's status
        return ctx.render("report.html", status=status, ref=ref, report=report, error=error,
                          back=back or f"/reports/{quote(ref, safe='')}")

    @r.get("/reports/{ref}")
    async def report(request: Request, ref: str) -> Response:
        return await report_page(await console.ctx(request), ref)

    @r.get("/reports/{ref}/draft.pdf")
    async def draft(request: Request, ref: str) -> Response:
        ctx = await console.ctx(request)
        _, token = ctx.need(*reports.READERS)
        resp = await backend.raw(token, "reporting", "GET", f"{path_of(ref)}/draft.pdf")
        return pdf_response(resp, "no-store")  # the content moves with the complaint

    @r.get("/reports/{ref}/revisions/{number}.pdf")
    async def revision(request: Request, ref: str, number: str) -> Response:
        ctx = await console.ctx(request)
        _, token = ctx.need(*reports.READERS)
        if not REVISION.match(number):
            return Response(status_code=404)
        resp = await backend.raw(token, "reporting", "GET",
                                 f"{path_of(ref)}/revisions/{number}.pdf")
        return pdf_response(resp, "private, max-age=3600")  # never altered once issued

    async def sign(request: Request, ref: str, step: str, role: str) -> Response:
        """Approve (Quality) or issue (Sales) exactly the content the page showed: its
        sha256 came with the form; reporting refuses (409) if the content moved since."""
        ctx, form = await console.posted(request)
        _, token = ctx.need(role)
        seen, target = form.get("content_sha256"), form.get("next")
        back = safe_next(target if isinstance(target, str) else None)
        try:
            await backend.send(token, "reporting", "POST", f"{path_of(ref)}/{step}",
                               {"content_sha256": seen if isinstance(seen, str) else ""})
        except ApiError as exc:
            if exc.status == 401 or exc.status >= 500:
                raise
            # the fresh state beside the refusal; signing again returns where it started
            return await report_page(ctx, ref, error=sign_refusal(ctx, exc), status=exc.status,
                                     back=back if back != "/" else None)
        return ctx.redirect(back + "#report")

    @r.post("/reports/{ref}/approve")
    async def approve(request: Request, ref: str) -> Response:
        return await sign(request, ref, "approve", "quality")

    @r.post("/reports/{ref}/issue")
    async def issue(request: Request, ref: str) -> Response:
        return await sign(request, ref, "issue", "sales")

    def verify_page(ctx: Ctx, verdict: dict[str, Any] | None = None,
                    error: dict[str, Any] | None = None, sha256: str = "",
                    status: int = 200) -> HTMLResponse:
        return ctx.render("verify.html", status=status, verdict=verdict, error=error,
                          sha256=sha256)

    def bad_field(ctx: Ctx, name: str, status: int = 422) -> dict[str, Any]:
        return {"code": "invalid", "text": ctx.tr.error("invalid"), "detail": None,
                "fields": [], "status": status, "invalid": {name: ""}}

    @r.get("/documents/verify")
    async def verify_form(request: Request) -> Response:
        """The page, or the check by a sha256 typed in (e.g. from `sha256sum`)."""
        ctx = await console.ctx(request)
        _, token = ctx.need(*reports.READERS)
        typed = (request.query_params.get("sha256") or "").strip().lower()
        if not typed:
            return verify_page(ctx)
        if not SHA256.match(typed):
            return verify_page(ctx, error=bad_field(ctx, "sha256"), sha256=typed, status=422)
        verdict = await backend.get(token, "reporting", f"/documents/verify/{typed}")
        return verify_page(ctx, verdict=verdict, sha256=typed)

    @r.post("/documents/verify")
    async def verify_upload(request: Request) -> Response:
        ctx, form = await console.posted(request)
        _, token = ctx.need(*reports.READERS)
        upload = form.get("file")
        if not isinstance(upload, UploadFile) or not upload.filename:
            return verify_page(ctx, error=bad_field(ctx, "file"), status=422)
        data = await upload.read(MAX_UPLOAD + 1)
        if not data:
            return verify_page(ctx, error=bad_field(ctx, "file"), status=422)
        if len(data) > MAX_UPLOAD:
            return verify_page(ctx, error=bad_field(ctx, "file", 413), status=413)
        resp = await backend.raw(token, "reporting", "POST", "/documents/verify",
                                 files={"file": (upload.filename, data, "application/pdf")})
        return verify_page(ctx, verdict=resp.json())

    return r
