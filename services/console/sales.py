"""Sales' pages: the phone call in one screen with its photos and returned samples, the inbox
of what waits for Sales, a feedback's page (answer directly or open the form, review Quality's
record, reply or return it, the customer's answer) and the search of the register.

Everything goes through intake's API with the person's own token: the console decides
nothing a service does not (a role intake refuses gets intake's 403).
"""

import asyncio
import re
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import FormData, UploadFile

from services.console import reports
from services.console.backend import ApiError, Backend
from services.console.i18n import N_
from services.console.pages import Console, Ctx, grouped, number, plant_time, text
from shared.vocabulary import REGISTER_NO_PATTERN

IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")  # what intake's header accepts
REGISTER_NO = re.compile(rf"^{REGISTER_NO_PATTERN}$")
READERS = ("sales", "quality", "manager", "auditor")  # who may read intake's register
# A 422's field (the service's `loc` without `body.`) -> the registration form's field.
REGISTRATION_FIELDS = {
    "customer.id": "customer_id", "customer.name": "customer_name",
    "customer.contact_person": "contact_person", "customer.phone": "phone",
    "customer.email": "email", "product.code": "product_code", "product.name": "product_name",
    "product.lot": "lot", "quantity_affected": "quantity", "category": "category",
    "severity": "severity", "channel": "channel", "description": "description",
    "estimated_loss.amount": "loss_amount", "estimated_loss.currency": "loss_currency",
}
SAMPLE_FIELDS = {"quantity": "sample_quantity", "received_on": "sample_received_on",
                 "location": "sample_location", "note": "sample_note"}
# The inbox: intake's open statuses in the order Sales works them, each with what it asks.
INBOX = (
    ("registered", N_("New"),
     N_("Answer the customer directly, or open the Complaint Handling Form for Quality.")),
    ("quality_record_ready", N_("Quality's record to review"),
     N_("Quality has answered the form: review its record, then reply to the customer or "
        "return it to Quality.")),
    ("with_quality", N_("Replies due"),
     N_("The customer waits for our answer; Quality's record is due by the time shown.")),
    ("replied", N_("Satisfaction not yet recorded"),
     N_("The customer has our reply: ask whether they are satisfied and record the answer.")),
)
INBOX_ORDER = {"quality_record_ready": lambda fb: (fb.get("quality_record") or {}).get(
    "resolved_at") or "", "with_quality": lambda fb: fb.get("quality_due_at") or ""}
CUSTOMERS_READ = 200  # the newest feedback whose customers the registration offers
SEARCH_IN = ("text", "customer", "product", "lot")
SEARCH_PAGE = 100


# ---------------------------------------------------------------- forms -> intake's bodies


def registration_body(form: FormData) -> dict[str, Any]:
    customer = {"id": text(form, "customer_id"), "name": text(form, "customer_name"),
                "language": text(form, "customer_language") or "zh"}
    for key in ("contact_person", "phone", "email"):
        if text(form, key):
            customer[key] = text(form, key)
    body: dict[str, Any] = {
        "customer": customer, "channel": text(form, "channel"),
        "category": text(form, "category"), "severity": text(form, "severity") or "normal",
        "description": text(form, "description"),
    }
    if text(form, "product_code") or text(form, "product_name") or text(form, "lot"):
        product = {"code": text(form, "product_code")}
        for key, name in (("name", "product_name"), ("lot", "lot")):
            if text(form, name):
                product[key] = text(form, name)
        body["product"] = product
    if (quantity := number(text(form, "quantity"))) is not None:
        body["quantity_affected"] = quantity
    if text(form, "loss_amount"):
        body["estimated_loss"] = {"amount": text(form, "loss_amount"),
                                  "currency": text(form, "loss_currency") or "CNY"}
    return body


def sample_body(form: FormData) -> dict[str, Any] | None:
    """The returned samples typed on the form, None when nothing was typed."""
    if not any(text(form, name) for name in SAMPLE_FIELDS.values()):
        return None
    return {"quantity": number(text(form, "sample_quantity")),
            "received_on": text(form, "sample_received_on"),
            "location": text(form, "sample_location"),
            "note": text(form, "sample_note") or None}


def chosen_files(form: FormData) -> list[UploadFile]:
    """The files of the photos input (a browser sends one empty part when none is chosen)."""
    return [f for f in form.getlist("photos") if isinstance(f, UploadFile) and f.filename]


async def add_evidence(ctx: Ctx, token: str, feedback_id: str,
                       form: FormData) -> dict[str, Any] | None:
    """P-5.3.1: each chosen file to intake's evidence route, then the returned samples; the
    first refusal as the page shows it (with the files intake refused), None when all went."""
    backend, path = ctx.console.backend, f"/feedback/{quote(feedback_id)}"
    refused: list[str] = []
    error: dict[str, Any] | None = None
    for upload in chosen_files(form):
        await upload.seek(0)
        try:
            await backend.raw(token, "intake", "POST", f"{path}/attachments", files={
                "file": (upload.filename, upload.file,
                         upload.content_type or "application/octet-stream")})
        except ApiError as exc:
            refused.append(str(upload.filename))
            error = error or ctx.error(exc)
    if (sample := sample_body(form)) is not None:
        try:
            await backend.send(token, "intake", "POST", f"{path}/samples", sample)
        except ApiError as exc:
            error = error or ctx.error(exc, SAMPLE_FIELDS)
    if error is not None:
        error["refused_files"] = refused
    return error


def kept(form: FormData) -> dict[str, Any]:
    """What was typed, to show again (files cannot be: a browser never refills them)."""
    return {k: v for k, v in form.items() if isinstance(v, str)}


# ---------------------------------------------------------------- reads


async def inbox_groups(backend: Backend, token: str) -> list[dict[str, Any]]:
    """Each open status's work (intake's lean rows of open work, one call), oldest waiting
    first where the status has a time that says so."""
    statuses = tuple(status for status, _, _ in INBOX)
    rows = await backend.get(token, "intake", "/inbox", status=list(statuses), per_status=100)
    groups = grouped(rows, statuses)
    for group, (status, title, hint) in zip(groups, INBOX, strict=True):
        if status in INBOX_ORDER:
            group["rows"] = sorted(group["rows"], key=INBOX_ORDER[status])
        group |= {"title": title, "hint": hint}
    return groups


async def earlier_customers(backend: Backend, token: str) -> list[dict[str, Any]]:
    """The customers of the newest feedback (one page of the register), for the picker."""
    try:
        page = await backend.get(token, "intake", "/feedback", page_size=CUSTOMERS_READ)
    except ApiError:
        return []  # the picker is a help: the form works without it
    found: dict[str, dict[str, Any]] = {}
    for fb in page["items"]:
        customer = fb.get("customer") or {}
        if customer.get("id") and not fb.get("needs_triage"):
            found.setdefault(customer["id"], customer)
    return sorted(found.values(), key=lambda c: str(c.get("name", "")))


async def rounds_of(backend: Backend, token: str, fb: dict[str, Any]) -> list[dict[str, Any]]:
    """The customer's reopens and Sales' returns to Quality, with their comment or reason
    (the record's own history: one read of the same record)."""
    if not (fb.get("reopen_count") or fb.get("returned_to_quality")):
        return []
    history = await backend.get(token, "intake", f"/feedback/{quote(fb['id'])}/history")
    return [entry for entry in history if entry.get("action") in ("reopened",
                                                                   "returned_to_quality")]


async def search_register(ctx: Ctx, token: str, q: str, where: str, since: str,
                          until: str) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Open work of any age, and the period's history (intake's default: the last 31 days),
    matching the search; newest first, each feedback once."""
    backend = ctx.console.backend
    params: dict[str, Any] = {"text": {"q": q}, "customer": {"customer_id": q},
                              "product": {"product_code": q}, "lot": {"lot": q}}[where]
    if since:
        params["received_from"] = plant_time(f"{since}T00:00:00", ctx.tr.tz)
    if until:
        params["received_to"] = plant_time(f"{until}T23:59:59", ctx.tr.tz)
    found: dict[str, dict[str, Any]] = {}
    period = None
    statuses = (None, *(s for s, _, _ in INBOX))
    pages = await asyncio.gather(*(  # side by side; merged in this order below
        backend.get(token, "intake", "/feedback", page_size=SEARCH_PAGE, **params,
                    **({"status": status} if status else {})) for status in statuses))
    for page in pages:
        period = period or page.get("period")
        for fb in page["items"]:
            found.setdefault(fb["id"], fb)
    rows = sorted(found.values(), key=lambda fb: fb["received_at"], reverse=True)
    return rows, period


# ---------------------------------------------------------------- routes


def router(console: Console) -> APIRouter:
    r = APIRouter(include_in_schema=False)
    backend = console.backend

    async def form_page(ctx: Ctx, form: Mapping[str, Any], error: dict[str, Any] | None = None,
                        files_lost: bool = False) -> HTMLResponse:
        _, token = ctx.need("sales")
        return ctx.render("register.html", form=form, error=error,
                          invalid=(error or {}).get("invalid", {}), files_lost=files_lost,
                          customers=await earlier_customers(backend, token),
                          categories=ctx.tr.codes("categories"), channels=ctx.tr.codes("channels"),
                          severities=ctx.tr.codes("severities"))

    @r.get("/sales")
    async def inbox(request: Request) -> Response:
        ctx = await console.ctx(request)
        _, token = ctx.need("sales", "manager", "auditor")
        return ctx.render("inbox.html", groups=await inbox_groups(backend, token))

    @r.get("/sales/new")
    async def new_feedback(request: Request) -> Response:
        ctx = await console.ctx(request)
        ctx.need("sales")
        return await form_page(ctx, {"channel": "phone", "severity": "normal",
                                     "category": "product_quality", "loss_currency": "CNY",
                                     "customer_language": ctx.tr.lang,
                                     "idempotency_key": str(uuid.uuid4())})

    @r.post("/sales/new")
    async def register(request: Request) -> Response:
        """P-F.1, P-5.1: the registration, then its evidence (P-5.3.1) on the new record."""
        ctx, form = await console.posted(request)
        _, token = ctx.need("sales")
        key = text(form, "idempotency_key")
        if not IDEMPOTENCY_KEY.match(key):
            key = str(uuid.uuid4())  # not the key this console's form carries: a new one
        try:
            created = await backend.send(token, "intake", "POST", "/feedback",
                                         registration_body(form),
                                         headers={"Idempotency-Key": key})
        except ApiError as exc:
            return await form_page(ctx, kept(form), error=ctx.error(exc, REGISTRATION_FIELDS),
                                   files_lost=bool(chosen_files(form)))
        error = await add_evidence(ctx, token, created["id"], form)
        if error is not None:  # registered: the record's page says what was not attached
            return await feedback_page(ctx, created["id"], error=error,
                                       form=kept(form) | {"step": "evidence"}, registered=True)
        return ctx.redirect(f"/feedback/{created['id']}?registered=1")

    async def feedback_page(ctx: Ctx, ref: str, error: dict[str, Any] | None = None,
                            form: Mapping[str, Any] | None = None,
                            registered: bool = False) -> HTMLResponse:
        _, token = ctx.need(*READERS)
        fb = await backend.get(token, "intake", f"/feedback/{quote(ref)}")
        report = (await reports.fetch(backend, token, fb["id"]) if fb.get("quality_record")
                  else None)  # P-5.3.1: the report goes with the reply built on the record
        registered = registered or ctx.request.query_params.get("registered") == "1"
        return ctx.render("feedback.html", fb=fb, error=error, form=form or {}, report=report,
                          rounds=await rounds_of(backend, token, fb), registered=registered,
                          invalid=(error or {}).get("invalid", {}))

    @r.get("/feedback/{ref}")
    async def feedback(request: Request, ref: str) -> Response:
        return await feedback_page(await console.ctx(request), ref)

    @r.post("/feedback/{ref}/evidence")
    async def evidence(request: Request, ref: str) -> Response:
        """P-5.3.1: more photos, documents or returned samples on a registered feedback."""
        ctx, form = await console.posted(request)
        _, token = ctx.need("sales")
        fb = await backend.get(token, "intake", f"/feedback/{quote(ref)}")
        error = await add_evidence(ctx, token, fb["id"], form)
        if error is not None:
            return await feedback_page(ctx, ref, error=error,
                                       form=kept(form) | {"step": "evidence"})
        return ctx.redirect(f"/feedback/{quote(ref)}#evidence")

    @r.post("/feedback/{ref}/{step}")
    async def feedback_step(request: Request, ref: str, step: str) -> Response:
        ctx, form = await console.posted(request)
        _, token = ctx.need("sales")
        bodies = {
            "escalate": lambda: {"note": text(form, "note") or None},
            "direct-reply": lambda: {"reply": text(form, "reply")},
            "reply": lambda: {"reply": text(form, "reply")} | reports.attachment(form),
            "return-to-quality": lambda: {"reason": text(form, "reason")},
            "satisfaction": lambda: {"satisfied": text(form, "satisfied") == "yes",
                                     "comment": text(form, "comment") or None},
        }
        if step not in bodies:
            return ctx.render("error.html", status=404, error=None)
        try:
            await backend.send(token, "intake", "POST", f"/feedback/{quote(ref)}/{step}",
                               bodies[step]())
        except ApiError as exc:
            return await feedback_page(ctx, ref, error=ctx.error(exc),
                                       form=dict(form) | {"step": step})
        return ctx.redirect(f"/feedback/{quote(ref)}")

    @r.get("/search")
    async def search(request: Request) -> Response:
        """A register number opens its record; anything else is looked up in the register."""
        ctx = await console.ctx(request)
        _, token = ctx.need(*READERS)
        params = request.query_params
        q = (params.get("q") or "").strip()[:200]
        where = next((w for w in SEARCH_IN if w == params.get("in")), "text")
        since, until = (params.get("from") or "").strip(), (params.get("to") or "").strip()
        values = {"q": q, "in": where, "from": since, "to": until}
        if REGISTER_NO.match(q.upper()):
            try:
                fb = await backend.get(token, "intake", f"/feedback/{quote(q.upper())}")
            except ApiError as exc:
                if exc.status != 404:
                    raise
                return ctx.render("search.html", status=404, form=values, rows=None,
                                  missing=q.upper(), period=None, error=None)
            return ctx.redirect(f"/feedback/{quote(fb['id'])}")
        if not q:
            return ctx.render("search.html", form=values, rows=None, period=None, error=None)
        try:
            rows, period = await search_register(ctx, token, q, where, since, until)
        except ApiError as exc:
            if exc.status >= 500 or exc.status == 401:
                raise
            return ctx.render("search.html", form=values, rows=None, period=None,
                              error=ctx.error(exc, {"query.received_from": "from",
                                                    "query.received_to": "to"}))
        return ctx.render("search.html", form=values, rows=rows, period=period, error=None,
                          limit=SEARCH_PAGE)

    return r
