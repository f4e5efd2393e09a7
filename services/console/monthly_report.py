"""The monthly report (P-F.6): Quality writes the month's review beside each section's
figures, saves drafts, previews the PDF and issues it (批准, signing the content the page
showed); once issued the month is frozen and a correction is a new revision saying what it
corrects. Managers and auditors read it and download every issued revision.

reporting owns the report (content, signature, PDFs); the console passes on the person's
token. PDFs go through the console because a link cannot carry the bearer token.
"""

import re
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import FormData

from services.console.backend import ApiError
from services.console.documents import pdf_response, sign_refusal
from services.console.i18n import N_, Translator
from services.console.manager import AGES, this_month
from services.console.pages import Console, Ctx, text

READERS = ("quality", "manager", "auditor")  # reporting's readers of the monthly report
BASE = "/reports/monthly"
MONTH = re.compile(r"^20[0-9]{2}-(0[1-9]|1[0-2])$")
REVISION = re.compile(r"^[1-9][0-9]{0,3}$")
PDF_LANGUAGES = ("zh", "en")
# The review's sections (reporting's `Review`), in the report's order, as people read them.
SECTIONS = {"counts": N_("Complaint cases and counts"),
            "timeliness": N_("Timeliness: the 3-day rule"),
            "losses": N_("Losses"), "recurrences": N_("Recurrences"),
            "capas": N_("CAPAs"), "overall": N_("Overall review")}
STATUSES = {"draft": N_("Draft: not issued yet"),
            "issued": N_("Issued and frozen: a correction is a new revision"),
            "correcting": N_("Correction being drafted: issue it as the next revision")}


def section_figures(table: dict[str, Any], tr: Translator) -> dict[str, list[tuple[str, Any]]]:
    """Each review section's figures from the month's table, as the page shows them beside
    the review (names in the person's language, money with its currency)."""
    say, counts, follow = tr.gettext, table["counts"], table["follow_up"]
    timely = table["timeliness"]

    def money(row: dict[str, Any]) -> str:
        text = tr.money({"amount": row["amount"], "currency": row["currency"]})
        if row.get("estimated"):
            estimated = tr.money({"amount": row["estimated"], "currency": row["currency"]})
            text += f" ({say(N_('of which estimated'))} {estimated})"
        return text

    answered = ([(say(N_("Answered directly by Sales")), counts["answered_directly"])]
                if counts.get("answered_directly") is not None else [])
    return {
        "counts": [(say(N_("Feedback received")), counts["feedbacks"]),
                   (say(N_("Complaints")), counts["complaints"]),
                   (say(N_("Suggestions")), counts["suggestions"]), *answered,
                   *((tr.label(r["key"], "categories"), r["complaints"])
                     for r in counts["by_category"])],
        "timeliness": [(say(N_("Forms opened")), timely["forms_opened"]),
                       (say(N_("Quality records")), timely["quality_records"]),
                       (say(N_("Met the 3-day rule")),
                        f"{timely['met_3_day_rule']} / {timely['forms_due']}"),
                       (say(N_("3-day deadlines missed")), table["breaches"]["count"])],
        "losses": [*((f"{say(N_('Total'))} {r['currency']}", money(r))
                     for r in table["losses"]["total"]),
                   *((tr.label(r["key"], "units"), money(r))
                     for r in table["losses"]["by_unit"])],
        "recurrences": [(say(N_("Recurrences")), follow["recurrences"]),
                        *((f"{r['key']} {tr.defect(r['key'])}", r["count"])
                          for r in follow["recurrences_by_defect_code"])],
        "capas": [(say(N_("CAPAs opened")), follow["capas_opened"]),
                  (say(N_("CAPAs closed")), follow["capas_closed"]),
                  (say(N_("CAPAs withdrawn")), follow.get("capas_withdrawn", 0))],
        "overall": [(say(N_("Open cases")), table["open_cases"]["total"]),
                    *((say(AGES.get(r["age"], r["age"])), r["cases"])
                      for r in table["open_cases"]["by_age"]),
                    (say(N_("Closed")), follow["closures"]),
                    (say(N_("Reopened")), follow["reopens"]),
                    (say(N_("Customers satisfied")),
                     f"{follow['satisfied']} / {follow['satisfaction_answers']}")],
    }


def _path(month: str) -> str:
    return f"{BASE}/{month}"


def router(console: Console) -> APIRouter:
    r = APIRouter(include_in_schema=False)
    backend = console.backend

    async def report_page(ctx: Ctx, month: str, error: dict[str, Any] | None = None,
                          typed: dict[str, str] | None = None, status: int = 200
                          ) -> HTMLResponse:
        """The month's report; a refused step comes back here with the fresh state beside
        the refusal, and what was typed kept."""
        _, token = ctx.need(*READERS)
        if not MONTH.match(month):
            raise ApiError(422, "invalid", f"{month!r} is not a month YYYY-MM.")
        state = await backend.get(token, "reporting", _path(month))
        typed = typed or {}
        review = typed if typed.get("step") == "draft" else state["draft"]
        return ctx.render("monthly_report.html", status=status, month=month, state=state,
                          figures=section_figures(state["content"]["figures"]["table"], ctx.tr),
                          review=review, typed=typed, error=error, sections=SECTIONS,
                          statuses=STATUSES,
                          languages=PDF_LANGUAGES,
                          writer=ctx.principal is not None
                          and ctx.principal.has_any(("quality",)))

    @r.get("/monthly-report")
    async def current(request: Request) -> Response:
        ctx = await console.ctx(request)
        ctx.need(*READERS)
        month = request.query_params.get("month") or this_month(ctx)
        return ctx.redirect(f"/monthly-report/{month if MONTH.match(month) else this_month(ctx)}")

    @r.get("/monthly-report/{month}")
    async def report(request: Request, month: str) -> Response:
        return await report_page(await console.ctx(request), month)

    async def step(request: Request, month: str, method: str, path: str,
                   body_of: Callable[[FormData], dict[str, Any]], anchor: str) -> Response:
        ctx, form = await console.posted(request)
        _, token = ctx.need("quality")
        if not MONTH.match(month):
            return await report_page(ctx, month)  # the page's own refusal (422)
        try:
            await backend.send(token, "reporting", method, f"{_path(month)}{path}",
                               body_of(form))
        except ApiError as exc:
            if exc.status == 401 or exc.status >= 500:
                raise
            typed = {k: text(form, k) for k in (*SECTIONS, "corrects")}
            return await report_page(ctx, month, error=sign_refusal(ctx, exc), status=exc.status,
                                     typed=typed | {"step": path.strip("/")})
        return ctx.redirect(f"/monthly-report/{month}#{anchor}")

    @r.post("/monthly-report/{month}/draft")
    async def save_draft(request: Request, month: str) -> Response:
        return await step(request, month, "PUT", "/draft",
                          lambda form: {k: text(form, k) for k in SECTIONS}, "review")

    @r.post("/monthly-report/{month}/issue")
    async def issue(request: Request, month: str) -> Response:
        return await step(request, month, "POST", "/issue",
                          lambda form: {"content_sha256": text(form, "content_sha256")},
                          "revisions")

    @r.post("/monthly-report/{month}/revisions")
    async def correct(request: Request, month: str) -> Response:
        return await step(request, month, "POST", "/revisions",
                          lambda form: {"corrects": text(form, "corrects")}, "review")

    @r.get("/monthly-report/{month}/draft.pdf")
    async def draft_pdf(request: Request, month: str) -> Response:
        ctx = await console.ctx(request)
        _, token = ctx.need(*READERS)
        lang = request.query_params.get("lang") or ctx.tr.lang
        if not MONTH.match(month) or lang not in PDF_LANGUAGES:
            return Response(status_code=404)
        resp = await backend.raw(token, "reporting", "GET", f"{_path(month)}/draft.pdf",
                                 params={"lang": lang})
        return pdf_response(resp, "no-store")  # the draft moves with the review and figures

    @r.get("/monthly-report/{month}/revisions/{number}.pdf")
    async def revision_pdf(request: Request, month: str, number: str) -> Response:
        ctx = await console.ctx(request)
        _, token = ctx.need(*READERS)
        lang = request.query_params.get("lang") or ctx.tr.lang
        if not (MONTH.match(month) and REVISION.match(number)) or lang not in PDF_LANGUAGES:
            return Response(status_code=404)
        resp = await backend.raw(token, "reporting", "GET",
                                 f"{_path(month)}/revisions/{number}.pdf", params={"lang": lang})
        return pdf_response(resp, "private, max-age=3600")  # never altered once issued

    return r

