"""The console's pages: each reads and writes through the services' APIs, nothing else.

Routes translate: a form becomes the service's request body, its answer (or its error, in
the person's language, with what they typed kept) becomes a page. A refused form comes back
with the service's status (4xx) and the refusal beside the fields it names.
"""

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from jinja2 import Environment
from starlette.datastructures import FormData

from services.console import reports
from services.console.backend import ApiError, Backend
from services.console.capa_owners import owners_to_confirm
from services.console.i18n import Translator, negotiate
from services.console.live import LiveFeed
from services.console.session import (
    CSRF_FIELD,
    LANG_COOKIE,
    Sessions,
    csrf_ok,
    forwarded_token,
    set_language,
)
from services.console.settings import Settings
from services.console.vocabulary import Vocabularies
from shared.auth import ROLES, Principal, TokenVerifier, make_token
from shared.errors import Unauthorized

HOME = {"sales": "/sales", "quality": "/quality", "unit": "/unit", "manager": "/manager",
        "auditor": "/audit"}
ACTION_OPEN = ("requested", "returned", "proposed", "accepted")
BOARD_STATUSES = ("open", "awaiting_units", "resolved")  # Quality's open forms


class SignInNeeded(Exception):
    pass


class NotAllowed(Exception):
    pass


@dataclass
class Ctx:
    """One request as a page sees it: who, in which language, their session."""

    request: Request
    console: "Console"
    session: dict[str, Any]
    tr: Translator
    principal: Principal | None = None
    token: str | None = None
    dirty: bool = False
    values: dict[str, Any] = field(default_factory=dict)

    def need(self, *roles: str) -> tuple[Principal, str]:
        if self.principal is None or self.token is None:
            raise SignInNeeded()
        if roles and not self.principal.has_any(roles):
            raise NotAllowed()
        return self.principal, self.token

    def render(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        """A page; one that shows a service's refusal answers with the refusal's status."""
        if status == 200 and isinstance(values.get("error"), dict):
            status = values["error"].get("status", 200)
        page = self.console.env.get_template(template)
        html = page.render(**self.tr.functions(), lang=self.tr.lang, me=self.principal,
                           csrf=self.session[CSRF_FIELD], path=self.request.url.path,
                           home=home_of(self.principal), dev_signin=self.console.dev_signin,
                           **values)
        response = HTMLResponse(html, status_code=status)
        self.finish(response)
        return response

    def redirect(self, url: str) -> RedirectResponse:
        response = RedirectResponse(url, status_code=303)
        self.finish(response)
        return response

    def finish(self, response: Response) -> None:
        response.headers["Cache-Control"] = "no-store"
        if self.dirty or self.session.get("new"):
            self.console.sessions.save(self.request, response, self.session)

    def error(self, exc: ApiError, names: Mapping[str, str] | None = None) -> dict[str, Any]:
        """A refusal as the page shows it: the meaning in the person's language, its status,
        and per form field (`names` maps the service's field to the form's) what the service
        said of it."""
        names = names or {}
        invalid = {names.get(f, f.rsplit(".", 1)[-1]): str(d.get("msg", ""))
                   for f, d in zip(exc.fields, exc.details, strict=True)}
        return {"code": exc.code, "text": self.tr.error(exc.code), "detail": exc.message,
                "fields": exc.fields, "status": exc.status, "invalid": invalid}


def home_of(principal: Principal | None) -> str:
    for role in principal.roles if principal else ():
        if role in HOME:
            return HOME[role]
    return "/signin"


def safe_next(target: str | None) -> str:
    """Only a path of this console (no other site, no scheme)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def number(value: str) -> int | str | None:
    """A typed count as the service's JSON wants it; anything else goes as typed (422)."""
    if not value:
        return None
    return int(value) if value.isdigit() else value


class Console:
    def __init__(self, settings: Settings, env: Environment, backend: Backend,
                 sessions: Sessions, catalogues: Mapping[str, Any], feed: LiveFeed | None):
        self.settings = settings
        self.env = env
        self.backend = backend
        self.sessions = sessions
        self.catalogues = catalogues
        self.feed = feed
        self.verifier = TokenVerifier(settings.infra)
        self.dev_signin = settings.dev_signin
        self.vocabularies = Vocabularies(backend, list(settings.service_urls()),
                                         settings.vocabulary_ttl_s)

    async def ctx(self, request: Request) -> Ctx:
        session = self.sessions.load(request)
        lang = negotiate(request.cookies.get(LANG_COOKIE), request.headers.get("accept-language"),
                         self.settings.default_language)
        tr = Translator(lang, self.catalogues.get(lang) or self.catalogues["en"],
                        self.settings.plant_timezone)
        ctx = Ctx(request, self, session, tr)
        token = forwarded_token(request) or session.get("token")
        if token:
            try:
                ctx.principal, ctx.token = self.verifier.verify(token), token
            except Unauthorized:
                if session.pop("token", None):
                    ctx.dirty = True  # expired: the page asks for a new sign-in
        # The word lists (any role may read them): with the person's token, or before
        # anyone signed in on the development sign-in page, a development token.
        token = ctx.token or (dev_token(self.settings) if self.dev_signin else None)
        tr.words = await self.vocabularies.fresh(token)
        return ctx

    async def posted(self, request: Request) -> tuple[Ctx, FormData]:
        """A form post: its context and fields, once its CSRF token checks out."""
        ctx = await self.ctx(request)
        form = await request.form()
        if not csrf_ok(ctx.session, form.get(CSRF_FIELD)):
            raise CsrfRefused(ctx)
        return ctx, form


class CsrfRefused(Exception):
    def __init__(self, ctx: Ctx):
        super().__init__("CSRF token missing or wrong")
        self.ctx = ctx


def router(console: Console) -> APIRouter:
    r = APIRouter(include_in_schema=False)
    backend = console.backend
    _session_routes(r, console)
    _quality_routes(r, console, backend)
    _unit_routes(r, console, backend)

    @r.get("/live")
    async def live(request: Request) -> Response:
        (await console.ctx(request)).need()
        if console.feed is None:
            return Response(status_code=204)  # no feed: the script stops asking
        return StreamingResponse(console.feed.stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store",
                                          "X-Accel-Buffering": "no"})

    return r


def grouped(rows: dict[str, Any], statuses: tuple[str, ...]) -> list[dict[str, Any]]:
    """A service's rows of open work (`shared.api.Rows`) as an inbox's groups, in the order
    of `statuses`, each with its whole count."""
    return [{"status": status, "rows": [row for row in rows["items"] if row["status"] == status],
             "total": rows["counts"].get(status, 0)} for status in statuses]


async def by_status(backend: Backend, token: str, service: str, path: str,
                     statuses: tuple[str, ...]) -> list[dict[str, Any]]:
    """An inbox: the open work of each status (a list bounded by open work, per status),
    the statuses asked side by side: the page waits for the slowest, not for their sum."""
    pages = await asyncio.gather(*(backend.get(token, service, path, status=status,
                                               page_size=100) for status in statuses))
    return [{"status": status, "rows": page["items"], "total": page["total"]}
            for status, page in zip(statuses, pages, strict=True)]


# ---------------------------------------------------------------- sign-in, language


def _session_routes(r: APIRouter, console: Console) -> None:
    @r.get("/")
    async def index(request: Request) -> Response:
        ctx = await console.ctx(request)
        return ctx.redirect(home_of(ctx.principal))

    @r.get("/signin")
    async def signin_page(request: Request) -> Response:
        ctx = await console.ctx(request)
        people = await _directory(console) if console.dev_signin else []
        return ctx.render("signin.html", people=people, roles=ROLES, units=ctx.tr.codes("units"),
                          next=safe_next(request.query_params.get("next")), form={})

    @r.post("/signin")
    async def signin(request: Request) -> Response:
        ctx, form = await console.posted(request)
        if not console.dev_signin:
            return ctx.render("signin.html", status=404, people=[], roles=ROLES,
                              units=ctx.tr.codes("units"), next="/", form={})
        name, role, unit = text(form, "name"), text(form, "role"), text(form, "unit")
        problems = []
        if not name:
            problems.append("name")
        if role not in ROLES:
            problems.append("role")
        if role == "unit" and unit not in ctx.tr.codes("units"):
            problems.append("unit")
        if problems:
            people = await _directory(console)
            return ctx.render("signin.html", people=people, roles=ROLES,
                              units=ctx.tr.codes("units"), next=safe_next(text(form, "next")),
                              form=dict(form), problems=problems)
        sub = ".".join(name.lower().split())[:64]
        ctx.session["token"] = make_token(
            console.settings.infra.jwt_secret.get_secret_value(), sub, [role], name=name,
            unit=unit if role == "unit" else None, ttl_s=console.settings.session_max_age_s)
        ctx.dirty = True
        principal = console.verifier.verify(ctx.session["token"])
        target = safe_next(text(form, "next"))
        return ctx.redirect(home_of(principal) if target == "/" else target)

    @r.post("/signout")
    async def signout(request: Request) -> Response:
        ctx, _ = await console.posted(request)
        ctx.session.pop("token", None)
        ctx.dirty = True
        if forwarded_token(request):  # signed in by the auth proxy: its session ends too
            return ctx.redirect("/oauth2/sign_out?rd=%2F")
        return ctx.redirect("/signin")

    @r.post("/language")
    async def language(request: Request) -> Response:
        ctx, form = await console.posted(request)
        response = ctx.redirect(safe_next(text(form, "next")))
        lang = text(form, "lang")
        if lang in console.catalogues:
            set_language(request, response, lang)
        return response


def dev_token(settings: Settings) -> str:
    """A short development token of role ops (development sign-in only)."""
    return make_token(settings.infra.jwt_secret.get_secret_value(), "console", ["ops"],
                      ttl_s=300)


async def _directory(console: Console) -> list[dict[str, Any]]:
    """The people and mailboxes of notify's directory (development sign-in only: read with a
    development token of role ops)."""
    token = dev_token(console.settings)
    try:
        page = await console.backend.get(token, "notify", "/directory", page_size=200,
                                         active="true")
    except ApiError:
        return []
    people = []
    for entry in page.get("items", []):
        groups = entry.get("groups", [])
        role = next((g.split(":", 1)[1] for g in groups if g.startswith("role:")), "")
        unit = next((g.split(":", 1)[1] for g in groups
                     if g.startswith(("unit:", "head:"))), "")
        people.append({"name": entry["name"], "email": entry["email"],
                       "role": role or ("unit" if unit else ""), "unit": unit})
    return people


# ---------------------------------------------------------------- Quality


def _board_order(case: dict[str, Any]) -> tuple[int, float]:
    clock = case["clock"]
    return (0 if clock["running"] else 1, clock["time_left_seconds"])


def _quality_routes(r: APIRouter, console: Console, backend: Backend) -> None:
    @r.get("/quality")
    async def board(request: Request) -> Response:
        ctx = await console.ctx(request)
        _, token = ctx.need("quality", "manager", "auditor")
        # The open forms (lean rows from quality's open work, one call) side by side with
        # the CAPAs (two services).
        board, capas = await asyncio.gather(
            backend.get(token, "quality", "/board", status=list(BOARD_STATUSES)),
            owners_to_confirm(backend, token))
        cases = sorted(board["items"], key=_board_order)
        return ctx.render("board.html", cases=cases, total=sum(board["counts"].values()),
                          capas=capas)

    async def case_page(ctx: Ctx, ref: str, error: dict[str, Any] | None = None,
                        form: Mapping[str, Any] | None = None) -> HTMLResponse:
        _, token = ctx.need("quality", "sales", "manager", "auditor")
        try:
            case = await backend.get(token, "quality", f"/cases/{quote(ref)}")
        except ApiError as exc:
            if exc.status != 404:
                raise
            return ctx.render("case.html", case=None, ref=ref, codes=[], units=[],
                              error=None, form={})
        report = (await reports.fetch(backend, token, case["id"]) if case.get("quality_record")
                  else None)  # Quality approves the report once its record is made
        return ctx.render("case.html", case=case, ref=ref,
                          codes=ctx.tr.codes("defect_codes"), units=ctx.tr.codes("units"),
                          error=error, form=form or {}, report=report)

    @r.get("/cases/{ref}")
    async def case(request: Request, ref: str) -> Response:
        return await case_page(await console.ctx(request), ref)

    @r.post("/cases/{ref}/responsibility")
    async def assign(request: Request, ref: str) -> Response:
        ctx, form = await console.posted(request)
        _, token = ctx.need("quality")
        units = [u for u in form.getlist("units") if isinstance(u, str)]
        body = {"preliminary_cause": text(form, "preliminary_cause"),
                "defect_code": text(form, "defect_code"),
                "units": [{"unit": u, "request": text(form, f"request_{u}")
                           or text(form, "request")} for u in units]}
        return await _case_step(ctx, form, ref, "responsibility", body, case_page)

    @r.post("/cases/{ref}/verification")
    async def verify(request: Request, ref: str) -> Response:
        ctx, form = await console.posted(request)
        ctx.need("quality")
        accepted = text(form, "verdict") == "accept"
        body: dict[str, Any] = {"unit": text(form, "unit"), "accepted": accepted}
        if not accepted:
            body["reason"] = text(form, "reason")
        return await _case_step(ctx, form, ref, "verification", body, case_page)

    @r.post("/cases/{ref}/conclusion")
    async def conclude(request: Request, ref: str) -> Response:
        """P-F.3: not the plant's fault; no unit is asked to act."""
        ctx, form = await console.posted(request)
        body = {"outcome": text(form, "outcome"), "finding": text(form, "finding"),
                "defect_code": text(form, "conclusion_defect_code") or None,
                "summary": text(form, "summary") or None}
        return await _case_step(ctx, form, ref, "conclusion", body, case_page,
                                {"defect_code": "conclusion_defect_code"})

    @r.post("/cases/{ref}/major")
    async def flag_major(request: Request, ref: str) -> Response:
        """P-5.3.5: the heads are summoned at once (quality's settings name them)."""
        ctx, form = await console.posted(request)
        return await _case_step(ctx, form, ref, "major", {"reason": text(form, "major_reason")},
                                case_page, {"reason": "major_reason"})

    @r.post("/cases/{ref}/major-review")
    async def major_review(request: Request, ref: str) -> Response:
        ctx, form = await console.posted(request)
        participants = [p.strip() for p in text(form, "participants").splitlines() if p.strip()]
        body = {"held_at": plant_time(text(form, "held_at"), ctx.tr.tz),
                "participants": participants, "decisions": text(form, "decisions"),
                "drafted_solution": text(form, "drafted_solution")}
        return await _case_step(ctx, form, ref, "major-review", body, case_page)


def plant_time(value: str, tz: ZoneInfo) -> str:
    """A `datetime-local` field (the plant's wall clock) as an ISO time with its offset; what
    does not parse goes as typed, for the service to refuse by name."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    return (moment if moment.tzinfo else moment.replace(tzinfo=tz)).isoformat()


async def _case_step(ctx: Ctx, form: FormData, ref: str, step: str, body: dict[str, Any],
                     case_page: Any, names: Mapping[str, str] | None = None) -> Response:
    _, token = ctx.need("quality")
    try:
        await ctx.console.backend.send(token, "quality", "POST",
                                       f"/cases/{quote(ref)}/{step}", body)
    except ApiError as exc:
        kept = {k: form.getlist(k) if k == "units" else form.get(k) for k in form}
        return await case_page(ctx, ref, error=ctx.error(exc, names),
                               form=kept | {"step": step})
    return ctx.redirect(f"/cases/{quote(ref)}")


# ---------------------------------------------------------------- responsible units


def _items(form: FormData, kind: str) -> list[dict[str, Any]]:
    rows = []
    for i in range(1, 4):
        row = {k: text(form, f"{kind}_{i}_{k}") for k in ("description", "owner", "due_date")}
        if any(row.values()):
            rows.append(row)
    return rows


def _investigation(form: FormData) -> dict[str, Any]:
    whys = [line.strip() for line in text(form, "five_whys").splitlines() if line.strip()]
    body: dict[str, Any] = {
        "containment": text(form, "containment") or None,
        "root_cause": {"five_whys": whys, "category": text(form, "category") or None,
                       "statement": text(form, "statement") or None},
        "corrective": _items(form, "corrective"), "preventive": _items(form, "preventive"),
    }
    if text(form, "disposition_type"):
        disposition: dict[str, Any] = {"type": text(form, "disposition_type"),
                                       "quantity": number(text(form, "disposition_quantity"))}
        if text(form, "disposition_cost"):
            disposition["cost"] = {"amount": text(form, "disposition_cost"), "currency": "CNY"}
        body["disposition"] = disposition
    return body


def _draft_form(action: dict[str, Any]) -> dict[str, Any]:
    """An action request's saved draft as the investigation form's fields."""
    rc = action.get("root_cause") or {}
    form: dict[str, Any] = {"containment": action.get("containment") or "",
                            "five_whys": "\n".join(rc.get("five_whys") or []),
                            "category": rc.get("category") or "",
                            "statement": rc.get("statement") or ""}
    for kind in ("corrective", "preventive"):
        for i, item in enumerate(action.get(kind) or [], start=1):
            for k in ("description", "owner", "due_date"):
                form[f"{kind}_{i}_{k}"] = item.get(k) or ""
    if disposition := action.get("disposition"):
        form |= {"disposition_type": disposition.get("type") or "",
                 "disposition_quantity": disposition.get("quantity") or "",
                 "disposition_cost": (disposition.get("cost") or {}).get("amount") or ""}
    return form


def _unit_routes(r: APIRouter, console: Console, backend: Backend) -> None:
    @r.get("/unit")
    async def requests(request: Request) -> Response:
        ctx = await console.ctx(request)
        _, token = ctx.need("unit", "quality", "manager", "auditor")
        rows = await backend.get(token, "capa", "/actions/inbox", status=list(ACTION_OPEN))
        return ctx.render("unit.html", groups=grouped(rows, ACTION_OPEN))

    async def action_page(ctx: Ctx, action_id: str, error: dict[str, Any] | None = None,
                          form: Mapping[str, Any] | None = None) -> HTMLResponse:
        _, token = ctx.need("unit", "quality", "manager", "auditor")
        action = await backend.get(token, "capa", f"/actions/{quote(action_id)}")
        return ctx.render("action.html", action=action, error=error,
                          form=form if form is not None else _draft_form(action),
                          categories=ctx.tr.codes("root_cause_categories"),
                          dispositions=ctx.tr.codes("dispositions"))

    @r.get("/actions/{action_id}")
    async def action(request: Request, action_id: str) -> Response:
        return await action_page(await console.ctx(request), action_id)

    @r.post("/actions/{action_id}")
    async def investigate(request: Request, action_id: str) -> Response:
        ctx, form = await console.posted(request)
        _, token = ctx.need("unit")
        path = f"/actions/{quote(action_id)}"
        try:
            await backend.send(token, "capa", "PUT", f"{path}/investigation",
                               _investigation(form))
            if text(form, "submit") == "yes":
                await backend.send(token, "capa", "POST", f"{path}/submit")
        except ApiError as exc:
            return await action_page(ctx, action_id, error=ctx.error(exc),
                                     form=dict(form))
        return ctx.redirect(path)

    @r.post("/actions/{action_id}/items/{kind}/{no}/done")
    async def item_done(request: Request, action_id: str, kind: str, no: str) -> Response:
        """The unit marks one verified corrective or preventive action done (the last one
        completes the request)."""
        ctx, form = await console.posted(request)
        _, token = ctx.need("unit")
        path = f"/actions/{quote(action_id)}"
        try:
            await backend.send(token, "capa", "POST",
                               f"{path}/items/{quote(kind)}/{quote(no)}/done",
                               {"note": text(form, "note") or None})
        except ApiError as exc:
            return await action_page(ctx, action_id, error=ctx.error(exc),
                                     form={"item": f"{kind}-{no}", "note": text(form, "note")})
        return ctx.redirect(path)
