"""Records retention (P-5.4.2): how long each record type is kept, what has passed its
period and may be disposed of, disposing of selected records with a reason (Quality), each
disposal's record, kept for ever, and the list of every disposal (newest first, by year).

reporting owns retention and refuses a record still within its period (409, naming the day
it ends); the page says that day in the person's language.
"""

import asyncio
import re
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import FormData

from services.console.backend import ApiError
from services.console.i18n import ERRORS, N_
from services.console.pages import Console, Ctx, text

READERS = ("quality", "manager", "auditor")
BASE = "/records/retention"
# reporting's record ids (`<type>:<ref>`), as the due list gives them
RECORD_ID = re.compile(r"^(complaint|complaint_report|monthly_report):[A-Za-z0-9_-]{1,64}$")
MAX_RECORDS = 100  # reporting disposes of at most this many at once
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
YEAR = re.compile(r"^20\d{2}$")  # reporting keeps years 2000-2099
LOG_PAGE = re.compile(r"^[1-9]\d{0,3}$")
LOG_PAGE_SIZE = 50
KEPT_UNTIL = N_("%(record)s is kept until %(day)s: it may be disposed of from the next day "
                "on. Nothing was disposed of.")
NOT_ENDED = N_("%(record)s has not ended (not closed, withdrawn or issued): its retention "
               "period has not begun. Nothing was disposed of.")


def _records(form: FormData) -> list[str]:
    return [v.strip() for v in form.getlist("records") if isinstance(v, str) and v.strip()]


def _bad(ctx: Ctx, name: str, message: str) -> dict[str, Any]:
    """The page's own refusal of a field (as a service's 422 would show)."""
    return {"code": "invalid", "text": ctx.tr.gettext(message), "detail": None, "fields": [],
            "status": 422, "invalid": {name: ""}}


def _refusal(ctx: Ctx, exc: ApiError, records: list[str]) -> dict[str, Any]:
    """reporting's refusal; a record still kept (or not ended) named, with its day."""
    error = ctx.error(exc)
    for detail in exc.details:
        loc = str(detail.get("loc", ""))
        index = loc.rsplit(".", 1)[-1]
        record = records[int(index)] if index.isdigit() and int(index) < len(records) else ""
        if detail.get("msg") == "retained" and detail.get("retain_until"):
            day = ctx.tr.date(str(detail["retain_until"]))
            error |= {"text": ctx.tr.gettext(KEPT_UNTIL, record=record, day=day),
                      "retain_until": detail["retain_until"]}
        elif detail.get("msg") == "not ended":
            error |= {"text": ctx.tr.gettext(NOT_ENDED, record=record)}
    return error


def _log_params(year: str, page: str) -> dict[str, Any]:
    """The list of disposals asked for: a year (else all) and a page (else the first)."""
    params: dict[str, Any] = {"page_size": LOG_PAGE_SIZE}
    if YEAR.match(year.strip()):
        params["year"] = int(year)
    if LOG_PAGE.match(page.strip()):
        params["page"] = int(page)
    return params


def router(console: Console) -> APIRouter:
    r = APIRouter(include_in_schema=False)
    backend = console.backend

    async def page(ctx: Ctx, error: dict[str, Any] | None = None,
                   done: list[dict[str, Any]] | None = None,
                   typed: dict[str, Any] | None = None, status: int = 200) -> HTMLResponse:
        principal, token = ctx.need(*READERS)
        query = ctx.request.query_params
        params: dict[str, Any] = {"limit": 500}
        as_of = (query.get("as_of") or "").strip()
        # Another day's list is for managers and auditors (reporting's rule): others see today
        if as_of and DAY.match(as_of) and principal.has_any(("manager", "auditor")):
            params["as_of"] = as_of
        listing = _log_params(query.get("year", ""), query.get("page", ""))
        policy, due, log = await asyncio.gather(
            backend.get(token, "reporting", f"{BASE}/policy"),
            backend.get(token, "reporting", f"{BASE}/due", **params),
            backend.get(token, "reporting", f"{BASE}/disposals", **listing))
        return ctx.render("retention.html", status=status, policy=policy, due=due,
                          error=error, done=done or [], typed=typed or {},
                          as_of=params.get("as_of", ""), log=log,
                          log_year=listing.get("year", ""),
                          disposer=principal.has_any(("quality",)),
                          planner=principal.has_any(("manager", "auditor")))

    @r.get("/records")
    async def retention(request: Request) -> Response:
        return await page(await console.ctx(request))

    @r.post("/records/dispose")
    async def dispose(request: Request) -> Response:
        ctx, form = await console.posted(request)
        _, token = ctx.need("quality")
        records = _records(form)
        typed = {"records": records, "reason": text(form, "reason")}
        if not records or not all(RECORD_ID.match(x) for x in records):
            return await page(ctx, error=_bad(ctx, "records", N_(
                "Select the records to dispose of from the list.")), typed=typed)
        try:
            answer = await backend.send(token, "reporting", "POST", f"{BASE}/dispose",
                                        {"records": records, "reason": text(form, "reason")})
        except ApiError as exc:
            if exc.status == 401 or exc.status >= 500:
                raise
            return await page(ctx, error=_refusal(ctx, exc, records), typed=typed,
                              status=exc.status)
        done = "&".join(f"id={quote(d['id'], safe=':')}" for d in answer["disposals"])
        return ctx.redirect(f"/records/disposals?{done}")

    @r.get("/records/disposals")
    async def disposals(request: Request) -> Response:
        """Disposal records, by the records' ids (`<type>:<ref>`; the page a disposal
        returns to, and a look-up)."""
        ctx = await console.ctx(request)
        _, token = ctx.need(*READERS)
        records = [x.strip() for x in request.query_params.getlist("id")][:MAX_RECORDS]
        if not records or not all(RECORD_ID.match(x) for x in records):
            return await page(ctx, error=_bad(ctx, "id", ERRORS["invalid"]),
                              typed={"id": " ".join(records)})
        try:
            found = await asyncio.gather(*(
                backend.get(token, "reporting", f"{BASE}/disposals/{x}") for x in records))
        except ApiError as exc:
            if exc.status == 401 or exc.status >= 500:
                raise
            return await page(ctx, error=ctx.error(exc), typed={"id": " ".join(records)})
        return await page(ctx, done=list(found))

    return r
