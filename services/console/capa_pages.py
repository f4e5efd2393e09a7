"""Quality's formal CAPAs and the recurrences that open them (P-5.3.4): the list (owners to
confirm first), one CAPA's page with each step of its life (owner, root cause, plan,
implementation, effectiveness, close, withdraw), and the kinds of complaint quality tracks.

capa owns the CAPA and enforces who may take each step; the console shows what the person's
role may try and passes on the service's refusal beside the form it concerns.
"""

import asyncio
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import FormData

from services.console.backend import ApiError, Backend
from services.console.capa_owners import CAPA_OPEN
from services.console.i18n import N_
from services.console.pages import Console, Ctx, by_status, text

READERS = ("quality", "unit", "manager", "auditor")  # capa's readers (a unit: its own)
CASE_READERS = ("quality", "manager", "auditor")  # who may follow a complaint's link
PLAN_ROWS = 3
MAX_LINKED = 20  # register numbers looked up per page; more are listed by id
# capa's history actions of a CAPA, as people read them (an unknown one shows its code).
STEPS = {"opened": N_("Opened"), "owner_assigned": N_("Owner unit assigned"),
         "root_cause_set": N_("Root cause recorded"), "plan_set": N_("Action plan recorded"),
         "planned": N_("Planned"), "implemented": N_("Plan implemented"),
         "effectiveness_verified": N_("Effectiveness verified"), "closed": N_("Closed"),
         "withdrawn": N_("Withdrawn"), "recurrence_linked": N_("Recurring complaints linked")}
# A form field -> the service's field when they differ (a refusal is shown beside the form).
FIELDS = {"reason": "withdraw_reason", "note": "implemented_note", "unit": "owner_unit"} | {
    f"actions.{i}.{k}": f"action_{i + 1}_{k}" for i in range(PLAN_ROWS)
    for k in ("description", "owner", "due_date")}


def _plan_body(form: FormData) -> dict[str, Any]:
    rows = []
    for i in range(1, PLAN_ROWS + 1):
        row = {k: text(form, f"action_{i}_{k}") for k in ("description", "owner", "due_date")}
        if any(row.values()):
            rows.append(row)
    return {"actions": rows}


def _bodies(form: FormData) -> dict[str, Any]:
    """Each step's request body, built from the form when the step is taken."""
    whys = [w.strip() for w in text(form, "five_whys").splitlines() if w.strip()]
    return {
        "owner": lambda: ("PUT", {"unit": text(form, "owner_unit")}),
        "root-cause": lambda: ("PUT", {"statement": text(form, "statement"),
                                       "category": text(form, "category"),
                                       "five_whys": whys}),
        "plan": lambda: ("PUT", _plan_body(form)),
        "implemented": lambda: ("POST", {"note": text(form, "implemented_note")}),
        "effectiveness": lambda: ("POST", {
            "criteria": text(form, "criteria"), "window_from": text(form, "window_from"),
            "window_to": text(form, "window_to"), "evaluation": text(form, "evaluation"),
            "effective": text(form, "effective") == "yes"}),
        "close": lambda: ("POST", None),
        "withdraw": lambda: ("POST", {"reason": text(form, "withdraw_reason")}),
    }


def _draft(capa: dict[str, Any]) -> dict[str, Any]:
    """The CAPA's saved root cause and plan as the forms' fields."""
    rc = capa.get("root_cause") or {}
    form: dict[str, Any] = {"statement": rc.get("statement") or "",
                            "category": rc.get("category") or "",
                            "five_whys": "\n".join(rc.get("five_whys") or []),
                            "owner_unit": capa.get("owner_unit") or ""}
    for action in capa.get("actions") or []:
        for k in ("description", "owner", "due_date"):
            form[f"action_{action['no']}_{k}"] = action.get(k) or ""
    return form


async def _register_numbers(backend: Backend, token: str, ids: list[str]) -> dict[str, str]:
    """The complaints' register numbers (quality's cases), for the links; one not found
    (yet) is listed by its id."""
    async def one(feedback_id: str) -> tuple[str, str]:
        try:
            case = await backend.get(token, "quality", f"/cases/{quote(feedback_id)}")
        except ApiError as exc:
            if exc.status == 401:
                raise
            return feedback_id, ""
        return feedback_id, str(case.get("register_no") or "")
    found = await asyncio.gather(*(one(i) for i in ids[:MAX_LINKED]))
    return {k: v for k, v in found if v}


ENDED = ("closed", "withdrawn")  # a CAPA's end: what an auditor looks back on


def _year(asked: str | None, ctx: Ctx) -> int:
    """The year whose ended CAPAs are listed: asked (2000 to this year), else this year."""
    this_year = datetime.now(ctx.tr.tz).year
    return int(asked) if asked and asked.isdigit() and 2000 <= int(asked) <= this_year \
        else this_year


async def ended_capas(backend: Backend, token: str, year: int,
                      ctx: Ctx) -> list[dict[str, Any]]:
    """The CAPAs opened in `year` (the plant's calendar) that are closed or withdrawn: capa's
    lists of history for that period, one per status, side by side."""
    period = {"from": datetime(year, 1, 1, tzinfo=ctx.tr.tz).isoformat(),
              "to": datetime(year + 1, 1, 1, tzinfo=ctx.tr.tz).isoformat()}
    pages = await asyncio.gather(*(backend.get(token, "capa", "/capas", status=status,
                                               page_size=100, **period) for status in ENDED))
    return [{"status": status, "rows": page["items"], "total": page["total"]}
            for status, page in zip(ENDED, pages, strict=True)]


def router(console: Console) -> APIRouter:
    r = APIRouter(include_in_schema=False)
    backend = console.backend

    @r.get("/capas")
    async def capas(request: Request) -> Response:
        ctx = await console.ctx(request)
        _, token = ctx.need(*READERS)
        year = _year(request.query_params.get("year"), ctx)
        groups, ended = await asyncio.gather(
            by_status(backend, token, "capa", "/capas", CAPA_OPEN),
            ended_capas(backend, token, year, ctx))
        confirm = ([c for g in groups for c in g["rows"] if not c["owner_confirmed"]]
                   if ctx.principal and ctx.principal.has_any(("quality",)) else [])
        return ctx.render("capas.html", groups=groups, confirm=confirm, ended=ended,
                          year=year, years=range(datetime.now(ctx.tr.tz).year, 1999, -1))

    async def capa_page(ctx: Ctx, ref: str, error: dict[str, Any] | None = None,
                        form: Mapping[str, Any] | None = None) -> HTMLResponse:
        principal, token = ctx.need(*READERS)
        path = f"/capas/{quote(ref, safe='')}"
        capa, history = await asyncio.gather(backend.get(token, "capa", path),
                                             backend.get(token, "capa", f"{path}/history"))
        numbers = (await _register_numbers(backend, token, capa["feedback_ids"])
                   if principal.has_any(CASE_READERS) else {})
        quality = principal.has_any(("quality",))
        editor = quality or (principal.has_any(("unit",))
                             and principal.unit == capa.get("owner_unit"))
        return ctx.render("capa.html", capa=capa, history=history, numbers=numbers,
                          error=error, form={**_draft(capa), **(form or {})}, steps=STEPS,
                          quality=quality, editor=editor, plan_rows=range(1, PLAN_ROWS + 1),
                          units=ctx.tr.codes("units"),
                          categories=ctx.tr.codes("root_cause_categories"),
                          links=principal.has_any(CASE_READERS))

    @r.get("/capas/{ref}")
    async def capa(request: Request, ref: str) -> Response:
        return await capa_page(await console.ctx(request), ref)

    @r.post("/capas/{ref}/{step}")
    async def capa_step(request: Request, ref: str, step: str) -> Response:
        ctx, form = await console.posted(request)
        _, token = ctx.need("quality", "unit")
        bodies = _bodies(form)
        if step not in bodies:
            return ctx.render("error.html", status=404, error=None, message=None)
        method, body = bodies[step]()
        path = f"/capas/{quote(ref, safe='')}"
        try:
            await backend.send(token, "capa", method, f"{path}/{step}", body)
        except ApiError as exc:
            if exc.status == 401 or exc.status >= 500:
                raise
            kept = {k: form.get(k) for k in form if k != "csrf"}
            return await capa_page(ctx, ref, error=ctx.error(exc, FIELDS),
                                   form=kept | {"step": step})
        return ctx.redirect(f"{path}#{step}")

    @r.get("/recurrences")
    async def recurrences(request: Request) -> Response:
        """The kinds of complaint quality tracks (customer or product, times defect code),
        most frequent first, with the CAPAs their recurrences opened."""
        ctx = await console.ctx(request)
        _, token = ctx.need("quality", "manager", "auditor")
        page = await backend.get(token, "quality", "/recurrence", min_count=1, page_size=100)
        return ctx.render("recurrences.html", kinds=page["items"], total=page["total"])

    return r
