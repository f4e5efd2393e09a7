"""The manager's pages: the monthly statistics table (P-F.6) with its charts and files, and
the open work to watch (open cases by age, major complaints, CAPAs).

Everything comes from the services' APIs with the person's token: reporting's table, charts
and exports, quality's open major cases, capa's open CAPAs.
"""

import asyncio
from datetime import datetime

from fastapi import APIRouter, Request, Response

from services.console.backend import ApiError
from services.console.i18n import N_
from services.console.pages import Console, Ctx, by_status

READERS = ("manager", "quality", "auditor")
CHARTS = {"pareto-count": N_("Complaints by defect code (Pareto)"),
          "pareto-loss": N_("Loss by defect code (Pareto)"),
          "trend": N_("Monthly trend"),
          "timeliness": N_("Timeliness against the 3-day rule")}
# reporting's age buckets of open cases (`open_cases.by_age[].age`), as people read them.
AGES = {"0-3 days": N_("0-3 days"), "4-7 days": N_("4-7 days"),
        "8-30 days": N_("8-30 days"), "over 30 days": N_("over 30 days")}
CAPA_OPEN = ("open", "planned", "implemented", "effective")
CASE_OPEN = ["open", "awaiting_units", "resolved"]


def this_month(ctx: Ctx) -> str:
    return datetime.now(ctx.tr.tz).strftime("%Y-%m")


def router(console: Console) -> APIRouter:
    r = APIRouter(include_in_schema=False)
    backend = console.backend

    @r.get("/manager")
    async def statistics(request: Request) -> Response:
        ctx = await console.ctx(request)
        _, token = ctx.need(*READERS)
        month = request.query_params.get("month") or this_month(ctx)
        try:
            table = await backend.get(token, "reporting", "/statistics/monthly", month=month)
            error = None
        except ApiError as exc:
            if exc.status >= 500 or exc.status == 401:
                raise
            table, error = None, ctx.error(exc)
        return ctx.render("manager.html", month=month, table=table, error=error,
                          charts=CHARTS, ages=AGES)

    @r.get("/manager/charts/{chart}.png")
    async def chart(request: Request, chart: str) -> Response:
        """reporting's PNG chart of a month, for the page's <img> (which cannot carry the
        token)."""
        ctx = await console.ctx(request)
        _, token = ctx.need(*READERS)
        if chart not in CHARTS:
            return Response(status_code=404)
        month = request.query_params.get("month") or this_month(ctx)
        resp = await backend.raw(token, "reporting", "GET", f"/charts/{chart}.png",
                                 params={"month": month})
        return Response(resp.content, media_type="image/png",
                        headers={"Cache-Control": "private, max-age=60"})

    @r.get("/manager/export")
    async def export(request: Request) -> Response:
        ctx = await console.ctx(request)
        _, token = ctx.need(*READERS)
        month = request.query_params.get("month") or this_month(ctx)
        kind = "xlsx" if request.query_params.get("format") == "xlsx" else "csv"
        resp = await backend.raw(token, "reporting", "GET", "/statistics/monthly",
                                 params={"month": month, "format": kind})
        headers = {k: v for k, v in resp.headers.items()
                   if k.lower() in ("content-type", "content-disposition")}
        return Response(resp.content, headers=headers)

    @r.get("/manager/open")
    async def open_work(request: Request) -> Response:
        """Major complaints still open (their heads summoned, their reviews) and the CAPAs
        by status: each read from the services' open work, never their history."""
        ctx = await console.ctx(request)
        _, token = ctx.need(*READERS)
        major, capas = await asyncio.gather(  # two services: side by side
            backend.get(token, "quality", "/cases", status=CASE_OPEN, severity="major",
                        page_size=200),
            by_status(backend, token, "capa", "/capas", CAPA_OPEN))
        return ctx.render("open_work.html", major=major, capas=capas)

    return r

