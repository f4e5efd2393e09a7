"""HTTP API of capa: routes only translate (parse, load, call the domain, save, answer).

Roles (P-3): a `unit` user sees and acts on its own unit's action requests only;
`quality` reads everything and runs formal CAPAs; `manager` and `auditor` read.
"""

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any
from uuid import uuid4

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from services.capa.complaint import ComplaintContext
from services.capa.domain import (
    ActionItem,
    ActionRequest,
    ActionStatus,
    Capa,
    CapaAction,
    CapaCreate,
    CapaPlan,
    CapaRootCause,
    CapaSource,
    CapaStatus,
    EffectivenessCheck,
    EffectivenessInput,
    Implementation,
    InvestigationDraft,
    ItemKind,
    OwnerInput,
    Rejection,
    RootCause,
    Withdrawal,
    WithdrawInput,
)
from services.capa.handlers import ACTIONS, CAPAS, add_numbered, capa_by_number
from services.capa.open_work import ACTIONS_ORDER, CAPAS_ORDER, OPEN_ACTIONS, OPEN_CAPAS
from services.capa.settings import Settings
from shared.api import (
    Page,
    PageParams,
    PeriodFrom,
    PeriodTo,
    PerStatus,
    Rows,
    list_page,
    page_params,
    rows_of,
    service_of,
)
from shared.auth import Principal, require
from shared.contracts import Disposition
from shared.domain import HistoryEntry
from shared.errors import Forbidden, NotFound
from shared.lists import Order
from shared.store import OUTBOX, PENDING, Repository
from shared.units import head_of
from shared.vocabulary import Head, LongText, ShortText

READ_ALL = ("quality", "manager", "auditor")
UNIT_NAME = r"^[a-z][a-z0-9_\-]*$"
CAPA_NUMBER = re.compile(r"^CAPA-\d{4}-\d{4,}$")
LIST_PROJECTION = {OUTBOX: 0, PENDING: 0, "history": 0, "applied_events": 0}

Reader = Annotated[Principal, Depends(require("unit", *READ_ALL))]
UnitUser = Annotated[Principal, Depends(require("unit"))]
Quality = Annotated[Principal, Depends(require("quality"))]
CapaEditor = Annotated[Principal, Depends(require("quality", "unit"))]
Paging = Annotated[PageParams, Depends(page_params)]


def sees_all(principal: Principal) -> bool:
    return principal.has_any(READ_ALL)


def scoped_unit(principal: Principal, asked: str | None) -> str | None:
    """A unit user's lists are its own unit's; asking for another unit's is refused."""
    if sees_all(principal):
        return asked
    if asked is not None and asked != principal.unit:
        raise Forbidden(f"You see unit {principal.unit!r}'s records only, not {asked!r}'s.")
    return principal.unit


async def page_of(request: Request, repo: Repository, query: dict[str, Any], paging: PageParams,
                  order: Order, view: Any, open_statuses: list[str], start: datetime | None,
                  end: datetime | None) -> Page:
    """A page, newest first. Asked for an open status (and no period), it comes from the
    open-work collection, bounded by open work (its summaries carry the fields lists filter
    and sort by, under the same names). Otherwise it lists the records of the period
    (`from`/`to`, by default the last QMS_HISTORY_DAYS days) through `<name>_days`, bounded
    by the period's volume, never by the history."""
    return await list_page(request, repo, query, order, paging,
                           lambda d: view.of(repo.model.viewed(d)),
                           open_work=query.get("status") in open_statuses, start=start, end=end,
                           projection=LIST_PROJECTION)


# ================================================================== action requests


class Missing(BaseModel):
    loc: str = Field(..., examples=["root_cause.category"])
    msg: str = Field(..., examples=["the root cause category (4M/6M) is missing"])


class ActionRequestView(BaseModel):
    """An action request to a responsible unit (P-3.3, P-5.3.2)."""

    id: str = Field(..., description="The action id Quality chose",
                    examples=["CF-2026-000123-production-r1"])
    version: int
    feedback_id: str = Field(..., description="The complaint (feedback) it belongs to")
    register_no: str = Field(..., examples=["CF-2026-000123"])
    unit: str = Field(..., examples=["production"])
    request: str = Field(..., description="What Quality asks of the unit")
    round: int = Field(..., description="The complaint's handling round (1, +1 on a reopen)")
    complaint: ComplaintContext = Field(
        ..., description="What the complaint is about, with its evidence (P-5.3.2)")
    status: ActionStatus
    containment: str | None = Field(None, description="The immediate (containment) action")
    root_cause: RootCause
    corrective: list[ActionItem]
    preventive: list[ActionItem]
    disposition: Disposition | None = None
    rejections: list[Rejection] = Field(..., description="Quality's reasons, newest last")
    missing: list[Missing] = Field(..., description="What the unit must still fill in to submit")
    requested_at: datetime
    updated_at: datetime
    submitted_at: datetime | None = None
    accepted_at: datetime | None = None
    completed_at: datetime | None = None
    withdrawal: Withdrawal | None = Field(None, description="Set when the complaint was "
                                          "withdrawn; no further changes are accepted")

    @classmethod
    def of(cls, action: ActionRequest) -> "ActionRequestView":
        return cls.model_validate(action.model_dump() | {"missing": action.missing()})


class ItemDone(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"note": "Insert replaced; first-article check OK (report FA-2291)"}]})

    note: ShortText | None = Field(None, description="Evidence that it was done")


class OpenActionStatus(StrEnum):
    """The statuses of open action requests (`domain.OPEN_ACTION_STATUSES`)."""

    REQUESTED = ActionStatus.REQUESTED.value
    PROPOSED = ActionStatus.PROPOSED.value
    ACCEPTED = ActionStatus.ACCEPTED.value
    RETURNED = ActionStatus.RETURNED.value


class ActionRow(BaseModel):
    """One open action request as a unit's inbox lists it, from `action_requests_open`
    alone (no record is loaded)."""

    model_config = ConfigDict(extra="ignore")
    id: str = Field(..., validation_alias="_id")
    feedback_id: str
    register_no: str
    unit: str
    request: str = Field(..., description="What Quality asks of the unit")
    round: int
    status: ActionStatus
    requested_at: datetime


# What ActionRow reads of a summary: a summary written before the inbox's rows lacks some.
ACTION_ROW_FIELDS = ("register_no", "request", "round")


def actions_router() -> APIRouter:
    router = APIRouter(prefix="/actions", tags=["action requests"])

    def repo(request: Request) -> Repository:
        return service_of(request).repo(ACTIONS)

    async def visible(request: Request, action_id: str, principal: Principal,
                      to_change: bool = False) -> ActionRequest:
        """Another unit's request does not exist for a unit user (the same 404, nothing
        leaks). `to_change`: as a change starts from it (`Repository.for_change`; the unit
        it is judged by never changes)."""
        action = await (repo(request).for_change(action_id) if to_change else
                        repo(request).seen(action_id))
        if action is None or (not sees_all(principal) and action.unit != principal.unit):
            raise NotFound(f"Action request {action_id!r} does not exist (yet): one Quality "
                           f"has just requested reaches capa within moments (Quality's case "
                           f"lists its action ids with `requested_at`).")
        return action

    async def change(request: Request, action_id: str, principal: Principal,
                     apply: Any) -> ActionRequestView:
        # Another unit's request does not exist for writes either: 404 as on reads, never a
        # 403 saying whose it is (action ids are guessable).
        action = await visible(request, action_id, principal, to_change=True)
        saved = await repo(request).change(action_id, apply, what="Action request",
                                           loaded=action)
        return ActionRequestView.of(saved)

    @router.get("", response_model=Page[ActionRequestView],
                summary="Action requests, newest first (a unit sees its own only): those of an "
                        "open status, or those requested in a period")
    async def list_actions(
        request: Request, principal: Reader, paging: Paging,
        unit: Annotated[str | None, Query(pattern=UNIT_NAME, max_length=64)] = None,
        status: ActionStatus | None = None,
        feedback_id: Annotated[str | None, Query(max_length=64)] = None,
        start: PeriodFrom = None, end: PeriodTo = None,
    ) -> Page[ActionRequestView]:
        query: dict[str, Any] = {}
        if (unit := scoped_unit(principal, unit)) is not None:
            query["unit"] = unit
        if status is not None:
            query["status"] = status.value
        if feedback_id is not None:
            query["feedback_id"] = feedback_id
        return await page_of(request, repo(request), query, paging, ACTIONS_ORDER,
                             ActionRequestView, OPEN_ACTIONS, start, end)

    @router.get("/inbox", response_model=Rows[ActionRow],
                summary="The open action requests as rows, newest first (a unit sees its own "
                        "only; read from the open work alone, so it costs the same at any size)")
    async def inbox(
        request: Request, principal: Reader,
        unit: Annotated[str | None, Query(pattern=UNIT_NAME, max_length=64)] = None,
        status: Annotated[list[OpenActionStatus] | None, Query(
            description="Repeat for several; default: every open status")] = None,
        per_status: PerStatus = 100,
    ) -> Rows[ActionRow]:
        query: dict[str, Any] = {}
        if (unit := scoped_unit(principal, unit)) is not None:
            query["unit"] = unit
        if status:
            query["status"] = {"$in": [s.value for s in status]}
        return await rows_of(repo(request), query, ACTIONS_ORDER, ActionRow.model_validate,
                             fields=ACTION_ROW_FIELDS, per_status=per_status)

    @router.get("/{action_id}", response_model=ActionRequestView, summary="One action request")
    async def get_action(request: Request, action_id: str,
                         principal: Reader) -> ActionRequestView:
        return ActionRequestView.of(await visible(request, action_id, principal))

    @router.get("/{action_id}/history", response_model=list[HistoryEntry],
                summary="Append-only history: who did what, when (P-5.4.2)")
    async def action_history(request: Request, action_id: str,
                             principal: Reader) -> list[HistoryEntry]:
        return (await visible(request, action_id, principal)).history

    @router.put("/{action_id}/investigation", response_model=ActionRequestView,
                summary="The unit saves its investigation draft (only the fields sent change)")
    async def save_investigation(request: Request, action_id: str, body: InvestigationDraft,
                                 principal: UnitUser) -> ActionRequestView:
        return await change(request, action_id, principal,
                            lambda a: a.draft(body, principal.as_actor()))

    @router.post("/{action_id}/submit", response_model=ActionRequestView,
                 summary="The unit submits its countermeasures to Quality (409 lists what is "
                         "missing)")
    async def submit(request: Request, action_id: str, principal: UnitUser) -> ActionRequestView:
        return await change(request, action_id, principal,
                            lambda a: a.submit(principal.as_actor()))

    @router.post("/{action_id}/items/{kind}/{no}/done", response_model=ActionRequestView,
                 summary="The unit marks a corrective/preventive action done (after Quality "
                         "verified); the last one completes the request")
    async def item_done(request: Request, action_id: str, kind: ItemKind,
                        no: Annotated[int, Path(ge=1, le=1000)], principal: UnitUser,
                        body: ItemDone | None = None) -> ActionRequestView:
        note = body.note if body else None
        return await change(request, action_id, principal,
                            lambda a: a.complete_item(kind, no, note, principal.as_actor()))

    return router


# ================================================================== formal CAPA


class CapaView(BaseModel):
    """A formal CAPA (P-5.3.4)."""

    id: str
    version: int
    number: str = Field(..., examples=["CAPA-2026-0007"])
    source: CapaSource
    title: str
    description: str
    kind: str | None = Field(None, examples=["customer:C-1001|defect:D03"])
    reason: str | None = Field(None, examples=["recurred"])
    defect_code: str | None = None
    customer_id: str | None = None
    product_code: str | None = None
    feedback_ids: list[str]
    owner_unit: str | None = Field(None, description="The unit that owns the plan; its people "
                                   "may work on it")
    owner: Head | None = Field(None, description="The owner unit's head (capa's `unit_heads`)")
    owner_confirmed: bool = Field(..., description="False while the owner is the default a "
                                  "recurrence gave it (the unit responsible for most of its "
                                  "complaints): Quality confirms it with `PUT /capas/{ref}/owner`")
    status: CapaStatus
    root_cause: CapaRootCause | None = None
    actions: list[CapaAction]
    implementations: list[Implementation]
    verifications: list[EffectivenessCheck] = Field(
        ..., description="Every effectiveness check, ineffective ones included")
    opened_at: datetime
    updated_at: datetime
    closed_at: datetime | None = None
    withdrawal: Withdrawal | None = Field(None, description="Why, when and by whom it was "
                                          "withdrawn; no further changes are accepted")

    @classmethod
    def of(cls, capa: Capa) -> "CapaView":
        return cls.model_validate(capa.model_dump())


class ImplementedInput(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"note": "Wear check added to PM plans of 42 moulds; training done 2027-01-20."}]})

    note: Annotated[LongText, Field(min_length=1)]


def capas_router() -> APIRouter:
    router = APIRouter(prefix="/capas", tags=["formal CAPA"])

    def repo(request: Request) -> Repository:
        return service_of(request).repo(CAPAS)

    def settings(request: Request) -> Settings:
        return service_of(request).settings

    async def find(request: Request, ref: str) -> Capa:
        """By id, or by number (`CAPA-2026-0007`)."""
        if CAPA_NUMBER.match(ref):
            capa = await capa_by_number(repo(request), ref)
            if capa is not None:
                return capa
        return await repo(request).get_or_raise(ref, "CAPA")

    async def visible(request: Request, ref: str, principal: Principal) -> Capa:
        capa = await find(request, ref)
        if not sees_all(principal) and capa.owner_unit != principal.unit:
            raise NotFound(f"CAPA {ref!r} does not exist.")
        return capa

    async def change(request: Request, ref: str, principal: Principal, apply: Any) -> CapaView:
        capa = await visible(request, ref, principal)  # not the unit's: 404, as on reads
        return CapaView.of(await repo(request).change(capa.id, apply, what="CAPA",
                                                      loaded=capa))

    @router.get("", response_model=Page[CapaView],
                summary="Formal CAPAs, newest first (a unit sees those it owns): those of an "
                        "open status, or those opened in a period")
    async def list_capas(
        request: Request, principal: Reader, paging: Paging,
        status: CapaStatus | None = None, source: CapaSource | None = None,
        feedback_id: Annotated[str | None, Query(max_length=64,
                                                 description="CAPAs linked to a complaint")] = None,
        owner_unit: Annotated[str | None, Query(pattern=UNIT_NAME, max_length=64)] = None,
        owner_confirmed: Annotated[bool | None, Query(
            description="`false`: those whose owner Quality has still to confirm")] = None,
        start: PeriodFrom = None, end: PeriodTo = None,
    ) -> Page[CapaView]:
        query: dict[str, Any] = {}
        if (owner_unit := scoped_unit(principal, owner_unit)) is not None:
            query["owner_unit"] = owner_unit
        if owner_confirmed is not None:
            query["owner_confirmed"] = owner_confirmed
        if status is not None:
            query["status"] = status.value
        if source is not None:
            query["source"] = source.value
        if feedback_id is not None:
            query["feedback_ids"] = feedback_id
        return await page_of(request, repo(request), query, paging, CAPAS_ORDER, CapaView,
                             OPEN_CAPAS, start, end)

    @router.post("", response_model=CapaView, status_code=201,
                 summary="Quality opens a CAPA by hand")
    async def open_capa(request: Request, body: CapaCreate, principal: Quality) -> CapaView:
        owner = head_of(settings(request).unit_heads, body.owner_unit) if body.owner_unit \
            else None
        capa = await add_numbered(repo(request), lambda number: Capa.by_hand(
            str(uuid4()), number, body, principal.as_actor(), owner))
        return CapaView.of(capa)

    @router.get("/{ref}", response_model=CapaView, summary="One CAPA, by id or number")
    async def get_capa(request: Request, ref: str, principal: Reader) -> CapaView:
        return CapaView.of(await visible(request, ref, principal))

    @router.get("/{ref}/history", response_model=list[HistoryEntry],
                summary="Append-only history: who did what, when (P-5.4.2)")
    async def capa_history(request: Request, ref: str, principal: Reader) -> list[HistoryEntry]:
        return (await visible(request, ref, principal)).history

    @router.put("/{ref}/root-cause", response_model=CapaView,
                summary="Root cause (Quality or the owner unit)")
    async def set_root_cause(request: Request, ref: str, body: CapaRootCause,
                             principal: CapaEditor) -> CapaView:
        return await change(request, ref, principal,
                            lambda c: c.set_root_cause(body, principal.as_actor()))

    @router.put("/{ref}/plan", response_model=CapaView,
                summary="Action plan (Quality or the owner unit); with a root cause → planned")
    async def set_plan(request: Request, ref: str, body: CapaPlan,
                       principal: CapaEditor) -> CapaView:
        return await change(request, ref, principal,
                            lambda c: c.set_plan(body, principal.as_actor()))

    @router.post("/{ref}/implemented", response_model=CapaView,
                 summary="The plan was carried out (409 unless planned)")
    async def implemented(request: Request, ref: str, body: ImplementedInput,
                          principal: CapaEditor) -> CapaView:
        return await change(request, ref, principal,
                            lambda c: c.implemented(body.note, principal.as_actor()))

    @router.post("/{ref}/effectiveness", response_model=CapaView,
                 summary="Quality verifies effectiveness: effective → may close; ineffective → "
                         "the plan reopens")
    async def effectiveness(request: Request, ref: str, body: EffectivenessInput,
                            principal: Quality) -> CapaView:
        return await change(request, ref, principal,
                            lambda c: c.verify_effectiveness(body, principal.as_actor()))

    @router.post("/{ref}/close", response_model=CapaView,
                 summary="Quality closes the CAPA (409 without an effective verification)")
    async def close(request: Request, ref: str, principal: Quality) -> CapaView:
        return await change(request, ref, principal, lambda c: c.close(principal.as_actor()))

    @router.post("/{ref}/withdraw", response_model=CapaView,
                 summary="Quality withdraws the CAPA with a reason (409 once closed); a "
                         "withdrawn CAPA accepts no further changes")
    async def withdraw(request: Request, ref: str, body: WithdrawInput,
                       principal: Quality) -> CapaView:
        return await change(request, ref, principal,
                            lambda c: c.withdraw(body.reason, principal.as_actor()))

    @router.put("/{ref}/owner", response_model=CapaView,
                summary="Quality assigns, changes or confirms the owner unit (its head owns "
                        "the plan); its people may then see and work on the CAPA")
    async def assign_owner(request: Request, ref: str, body: OwnerInput,
                           principal: Quality) -> CapaView:
        head = head_of(settings(request).unit_heads, body.unit)
        return await change(request, ref, principal,
                            lambda c: c.assign_owner(body.unit, principal.as_actor(), head))

    return router
