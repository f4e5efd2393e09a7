"""Quality's HTTP API: routes only translate (parse, call the domain, answer).

`{ref}` is the feedback id or the register number (`CF-2026-000123`). Writes need
role `quality` (P-3.2); Sales, managers and auditors read.
"""

from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, TypeAlias

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from services.quality.clock import Clock, clock_view, now_ms
from services.quality.domain import (
    OPEN_WORK,
    RUNNING,
    CapaLink,
    Case,
    CaseStatus,
    FollowUp,
    MajorHandling,
    MajorReview,
    Round,
    SiteVisit,
    UnitEntry,
    check_assignment,
)
from services.quality.lookups import case_of
from services.quality.recurrence import Detection, Kind, KindCapa
from services.quality.settings import Settings
from services.quality.sla import MOST_FREQUENT_FIRST, NEWEST_FIRST
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
from shared.contracts import ResolutionReady
from shared.domain import HistoryEntry
from shared.errors import Invalid, NotFound
from shared.store import Repository
from shared.vocabulary import (
    AttachmentMeta,
    Category,
    Channel,
    Customer,
    LongText,
    Money,
    Name,
    NoActionOutcome,
    NoNul,
    Product,
    ReturnedSample,
    Severity,
    UnitName,
)

WRITE = require("quality")
READ = require("quality", "sales", "manager", "auditor")
Writer = Annotated[Principal, Depends(WRITE)]
Reader = Annotated[Principal, Depends(READ)]
Ref = Annotated[str, Path(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]*$",
                          description="Feedback id or register number",
                          examples=["CF-2026-000123"])]
Required: TypeAlias = Annotated[str, Field(min_length=1, max_length=20_000), NoNul]
Place: TypeAlias = Annotated[str, Field(min_length=1, max_length=200), NoNul]


def _as_utc(value: datetime) -> datetime:
    """A time without a zone is taken as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]
People = Annotated[list[Name], Field(min_length=1, max_length=50)]

# ------------------------------------------------------------------ requests


class UnitAsk(BaseModel):
    model_config = ConfigDict(extra="forbid")

    unit: UnitName = Field(..., examples=["production"])
    request: Required = Field(..., description="What Quality asks of this unit",
                              examples=["Find the root cause of the cracks; contain all stock"])


class AssignResponsibility(BaseModel):
    """P-F.3, P-3.2: the outcome of the cause analysis."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "preliminary_cause": "Porosity at the mounting boss from a worn die",
        "defect_code": "D03",
        "units": [{"unit": "production", "request": "Find the root cause; sort stock"},
                  {"unit": "purchasing", "request": "Check the supplier's alloy certificates"}],
    }]})

    preliminary_cause: Required
    defect_code: str = Field(..., min_length=1, max_length=64,
                             description="From `GET /defect-codes`")
    units: list[UnitAsk] = Field(..., min_length=1, max_length=20)


class Verification(BaseModel):
    """Quality's verdict on one unit's countermeasures."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"unit": "production", "accepted": True,
         "summary": "Die replaced; stock sorted; die-life counter installed."},
        {"unit": "production", "accepted": False, "reason": "Containment misses WIP"},
    ]})

    unit: UnitName
    accepted: bool
    reason: LongText | None = Field(None, validate_default=True,
                                    description="Required when rejecting: what the unit must "
                                                "rework")
    summary: LongText | None = Field(None, description="Quality's conclusion for Sales; "
                                                       "generated when not given")

    @field_validator("reason")
    @classmethod
    def _reason_when_rejecting(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("accepted") is False and not (value or "").strip():
            raise ValueError("a rejection needs a reason the unit can act on")
        return value


class NoActionConclusion(BaseModel):
    """P-F.3: the complaint is not the plant's fault; no responsible unit is asked to act."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "outcome": "customer_misuse",
        "finding": "Housings were torqued to 45 Nm at the customer; the drawing allows 25 Nm",
        "defect_code": "D03",
        "summary": "Cracks come from over-torque at assembly; parts are within specification."}]})

    outcome: NoActionOutcome = Field(..., description="Why no corrective action is needed")
    finding: Required = Field(..., description="The cause or finding that shows it")
    defect_code: str | None = Field(None, min_length=1, max_length=64,
                                    description="Optional, from `GET /defect-codes`")
    summary: LongText | None = Field(None, description="Quality's conclusion for Sales; "
                                                       "generated when not given")


class SiteVisitIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "visited_at": "2026-11-27T09:30:00Z", "location": "Customer plant, line 3",
        "participants": ["Li Wei", "Zhang Min"],
        "findings": "Cracks at the boss on 12 of 40 housings; torque within spec"}]})

    visited_at: UtcDatetime
    location: Place
    participants: People
    findings: Required


class MajorIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "reason": "The customer's assembly line stopped"}]})

    reason: Required


class MajorReviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "held_at": "2026-11-28T09:00:00Z", "participants": ["R&D head", "Production head"],
        "decisions": "Stop line 3; 100% inspection of stock",
        "drafted_solution": "Replace the lot within 48 h; 8D report in a week"}]})

    held_at: UtcDatetime
    participants: People
    decisions: Required
    drafted_solution: Required


class FollowUpIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "checked_at": "2027-01-15T08:00:00Z", "recurred": False,
        "note": "Two deliveries since; no cracks reported"}]})

    checked_at: UtcDatetime
    recurred: bool
    note: LongText | None = None


# ------------------------------------------------------------------ responses


class CaseRead(BaseModel):
    """The Complaint Handling Form as Quality works it, with its clock as of now."""

    id: str = Field(..., description="The feedback id")
    register_no: str = Field(..., examples=["CF-2026-000123"])
    status: CaseStatus
    severity: Severity
    round: int = Field(..., description="1, then +1 on each reopen")
    clock: Clock
    customer: Customer
    product: Product | None
    channel: Channel
    category: Category
    description: str
    quantity_affected: int | None
    estimated_loss: Money | None
    feedback_received_at: datetime = Field(..., description="When Sales received the feedback")
    note: str | None = Field(None, description="What Sales asks of Quality")
    attachments: list[AttachmentMeta]
    samples: list[ReturnedSample]
    preliminary_cause: str | None
    defect_code: str | None
    defect_name: str | None
    responsible_units: list[UnitEntry] = Field(..., description="This round's units")
    quality_record: ResolutionReady | None = Field(None, description="This round's record "
                                                                     "for Sales")
    major: MajorHandling | None = Field(None, description="P-5.3.5; null unless major")
    site_visits: list[SiteVisit]
    follow_ups: list[FollowUp]
    capas: list[CapaLink]
    kinds: list[str] = Field(..., description="P-5.3.4 kinds it is counted in")
    rounds: list[Round] = Field(..., description="Every round, the current one last")
    closed_at: datetime | None
    withdrawn_reason: str | None
    version: int

    @classmethod
    def of(cls, case: Case, now: datetime) -> "CaseRead":
        rnd = case.current
        return cls(
            id=case.id, register_no=case.register_no, status=case.status,
            severity=case.severity, round=rnd.number, clock=case.clock(now),
            customer=case.customer, product=case.product, channel=case.channel,
            category=case.category, description=case.description,
            quantity_affected=case.quantity_affected, estimated_loss=case.estimated_loss,
            feedback_received_at=case.feedback_received_at, note=case.note,
            attachments=case.attachments, samples=case.samples,
            preliminary_cause=rnd.preliminary_cause, defect_code=rnd.defect_code,
            defect_name=rnd.defect_name, responsible_units=rnd.units, quality_record=rnd.record,
            major=case.major, site_visits=case.site_visits, follow_ups=case.follow_ups,
            capas=case.capas, kinds=case.kinds, rounds=case.rounds, closed_at=case.closed_at,
            withdrawn_reason=case.withdrawn_reason, version=case.version)


class OpenCaseStatus(StrEnum):
    """The statuses of open work (`domain.OPEN_WORK`): what the board lists."""

    OPEN = CaseStatus.OPEN.value
    AWAITING_UNITS = CaseStatus.AWAITING_UNITS.value
    RESOLVED = CaseStatus.RESOLVED.value


class CaseCustomer(BaseModel):
    id: str
    name: str


class CaseProduct(BaseModel):
    code: str
    name: str | None = None


class CaseRow(BaseModel):
    """One open form as the board lists it, from `cases_open` alone (no record is loaded):
    who, what, and the clock as of now."""

    id: str = Field(..., description="The feedback id")
    register_no: str = Field(..., examples=["CF-2026-000123"])
    status: CaseStatus
    severity: Severity
    round: int
    clock: Clock
    customer: CaseCustomer
    product: CaseProduct | None
    defect_code: str | None
    unit_names: list[str] = Field(..., description="This round's responsible units")

    @classmethod
    def of(cls, row: dict[str, Any], now: datetime) -> "CaseRow":
        """`row`: a `cases_open` summary (`Case.open_summary`)."""
        return cls(
            id=row["_id"], register_no=row["register_no"], status=row["status"],
            severity=row["severity"], round=row["current_round"],
            clock=clock_view(received_at=row["round_received_at"], due_at=row["due_at"],
                             at_risk_at=row["at_risk_at"], resolved_at=row["resolved_at"],
                             stopped_at=row["stopped_at"], now=now),
            customer=row["customer"], product=row["product"], defect_code=row["defect_code"],
            unit_names=row["unit_names"])


# What CaseRow reads of a summary: a summary written before the board's rows lacks some.
ROW_FIELDS = ("customer", "product", "round_received_at", "stopped_at")


class DefectCode(BaseModel):
    code: str = Field(..., examples=["D03"])
    name: str = Field(..., examples=["Functional failure"])


class KindRead(BaseModel):
    """P-5.3.4: one kind of complaint and how often it came back."""

    kind: str = Field(..., examples=["customer:C-1001|defect:D03"])
    dimension: str = Field(..., examples=["customer"])
    subject: str = Field(..., description="Customer id or product code")
    defect_code: str
    count: int = Field(..., description="Occurrences since the last CAPA closed: complaints "
                       "that came after every earlier one was handled (others join them)")
    threshold: int = Field(..., description="The count that asks for a CAPA")
    feedback_ids: list[str] = Field(..., description="The complaints linked now, joined ones "
                                    "included")
    total_complaints: int = Field(..., description="Ever, withdrawn ones not counted")
    detected: bool = Field(..., description="A CAPA was asked for in this count")
    detections: list[Detection]
    capas: list[KindCapa]

    @classmethod
    def of(cls, kind: Kind, threshold: int) -> "KindRead":
        return cls(kind=kind.id, dimension=kind.dimension, subject=kind.subject,
                   defect_code=kind.defect_code, count=kind.count, threshold=threshold,
                   feedback_ids=kind.window_ids,
                   total_complaints=sum(e.withdrawn_at is None for e in kind.complaints),
                   detected=kind.detected, detections=kind.detections, capas=kind.capas)


# ------------------------------------------------------------------ helpers


def _cases(request: Request) -> Repository[Case]:
    return service_of(request).repo("cases")


def _settings(request: Request) -> Settings:
    return service_of(request).settings


async def _case(request: Request, ref: str, *, to_change: bool = False) -> Case:
    """By feedback id or register number (`_id` reads; `to_change`: see `case_of`)."""
    found = await case_of(_cases(request), ref, to_change=to_change)
    if found is None:
        raise NotFound(f"No Complaint Handling Form {ref!r}: Sales has not opened one for "
                       f"this feedback, or it is on its way (a form Sales has just sent "
                       f"reaches Quality within moments; the register's `form.state` says "
                       f"`sent_to_quality` until it has).")
    return found


async def _change(request: Request, ref: str, apply: Callable[[Case], None]) -> CaseRead:
    case = await _case(request, ref, to_change=True)
    case = await _cases(request).change(case.id, apply, what="Case", loaded=case)
    return CaseRead.of(case, now_ms())


# What a list item shows: neither the change log nor the bookkeeping (both grow per record).
_LISTED = {"history": 0, "applied_events": 0, "outbox": 0, "outbox_pending": 0}
_OPEN_WORK_VALUES = {s.value for s in OPEN_WORK}


def _clock_filter(field: str, flag: str, wanted: bool, now: datetime) -> dict[str, Any]:
    """Match the clock as shown: running cases by time, stopped ones by their frozen flag."""
    inclusive = field == "at_risk_at"  # at risk from the point on; breached only after it
    if wanted:
        by_time = {"$lte" if inclusive else "$lt": now}
    else:
        by_time = {"$gt" if inclusive else "$gte": now}
    running = {"status": {"$in": [s.value for s in RUNNING]}, field: by_time}
    return {"$or": [running, {flag: wanted}]}


# ------------------------------------------------------------------ routes

router = APIRouter(tags=["cases"])


@router.get("/cases", response_model=Page[CaseRead],
            summary="Complaint Handling Forms, newest first, with their clocks: the open ones "
                    "(status open, awaiting_units, resolved only), or those received in a period")
async def list_cases(
    request: Request, _: Reader, paging: Annotated[PageParams, Depends(page_params)],
    status: Annotated[list[CaseStatus] | None, Query(description="Repeat for several")] = None,
    severity: Severity | None = None,
    at_risk: Annotated[bool | None, Query(description="The clock passed its at-risk point")]
    = None,
    breached: Annotated[bool | None, Query(description="The 3-day deadline passed (P-F.5)")]
    = None,
    unit: Annotated[UnitName | None, Query(description="A responsible unit this round")] = None,
    defect_code: Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")]
    = None,
    customer_id: Annotated[str | None, Query(max_length=64,
                                             pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-/]*$")] = None,
    start: PeriodFrom = None, end: PeriodTo = None,
) -> Page[CaseRead]:
    """Asked for open statuses only (and no period), every open case: from `cases_open`,
    bounded by open work. Otherwise the cases first received in the period (`from`/`to`,
    by default the last QMS_HISTORY_DAYS days): read through `cases_days`, bounded by the
    period's volume, never by the history."""
    now = now_ms()
    clauses: list[dict[str, Any]] = []
    if status:
        clauses.append({"status": {"$in": [s.value for s in status]}})
    if severity:
        clauses.append({"severity": severity.value})
    if unit:
        clauses.append({"unit_names": unit})
    if defect_code:
        clauses.append({"defect_code": defect_code})
    if customer_id:
        clauses.append({"customer.id": customer_id})
    if at_risk is not None:
        clauses.append(_clock_filter("at_risk_at", "clock_at_risk", at_risk, now))
    if breached is not None:
        clauses.append(_clock_filter("due_at", "clock_breached", breached, now))
    query = {"$and": clauses} if clauses else {}
    # The board (open statuses only, no period): matched and sorted on cases_open.
    board = bool(status and {s.value for s in status} <= _OPEN_WORK_VALUES)
    return await list_page(request, _cases(request), query, NEWEST_FIRST, paging,
                           lambda d: CaseRead.of(Case.viewed(d), now), open_work=board,
                           start=start, end=end, projection=_LISTED)


@router.get("/board", response_model=Rows[CaseRow],
            summary="Quality's board: every open form as a row with its clock, newest first "
                    "(read from the open work alone, so it costs the same at any size)")
async def board(
    request: Request, _: Reader,
    status: Annotated[list[OpenCaseStatus] | None, Query(
        description="Repeat for several; default: every open status")] = None,
    severity: Severity | None = None, per_status: PerStatus = 500,
) -> Rows[CaseRow]:
    now = now_ms()
    query: dict[str, Any] = {}
    if status:
        query["status"] = {"$in": [s.value for s in status]}
    if severity:
        query["severity"] = severity.value
    return await rows_of(_cases(request), query, NEWEST_FIRST,
                         lambda row: CaseRow.of(row, now), fields=ROW_FIELDS,
                         per_status=per_status)


@router.get("/cases/{ref}", response_model=CaseRead, summary="One case with its clock")
async def get_case(request: Request, ref: Ref, _: Reader) -> CaseRead:
    return CaseRead.of(await _case(request, ref), now_ms())


@router.get("/cases/{ref}/history", response_model=list[HistoryEntry],
            summary="P-5.4.2: every change to the case, oldest first (append-only)")
async def case_history(request: Request, ref: Ref, _: Reader) -> list[HistoryEntry]:
    return (await _case(request, ref)).history


@router.post("/cases/{ref}/site-visits", response_model=CaseRead, status_code=201,
             summary="P-5.3.1: record a visit to the customer or the site")
async def add_site_visit(request: Request, ref: Ref, body: SiteVisitIn,
                         who: Writer) -> CaseRead:
    actor, now = who.as_actor(), now_ms()
    visit = SiteVisit(**body.model_dump(), recorded_by=who.sub, recorded_at=now)
    return await _change(request, ref, lambda c: c.record_site_visit(visit, actor))


@router.post("/cases/{ref}/major", response_model=CaseRead,
             summary="P-5.3.5: flag the case major; the heads are summoned at once")
async def flag_major(request: Request, ref: Ref, body: MajorIn, who: Writer) -> CaseRead:
    heads = _settings(request).heads_to_summon()
    return await _change(request, ref, lambda c: c.flag_major(body.reason, heads,
                                                              who.as_actor(), now_ms()))


@router.post("/cases/{ref}/major-review", response_model=CaseRead, status_code=201,
             summary="P-5.3.5: the heads' review and the drafted solution (major cases only)")
async def record_major_review(request: Request, ref: Ref, body: MajorReviewIn,
                              who: Writer) -> CaseRead:
    review = MajorReview(**body.model_dump(), recorded_by=who.sub, recorded_at=now_ms())
    return await _change(request, ref, lambda c: c.record_major_review(review, who.as_actor()))


@router.post("/cases/{ref}/responsibility", response_model=CaseRead,
             summary="P-F.3, P-3.2: cause, defect code and the responsible units")
async def assign_responsibility(request: Request, ref: Ref, body: AssignResponsibility,
                                who: Writer) -> CaseRead:
    settings = _settings(request)
    check_assignment(body.defect_code, [u.unit for u in body.units],
                     settings.defect_catalogue, settings.units)
    return await _change(request, ref, lambda c: c.assign_responsibility(
        preliminary_cause=body.preliminary_cause, defect_code=body.defect_code,
        defect_name=settings.defect_catalogue[body.defect_code],
        units=[(u.unit, u.request) for u in body.units], actor=who.as_actor(), now=now_ms()))


@router.post("/cases/{ref}/verification", response_model=CaseRead,
             summary="Accept or reject a unit's countermeasures; when all are accepted the "
                     "quality record goes to Sales and the clock stops")
async def verify(request: Request, ref: Ref, body: Verification, who: Writer) -> CaseRead:
    return await _change(request, ref, lambda c: c.verify(
        unit=body.unit, accepted=body.accepted, reason=body.reason, summary=body.summary,
        actor=who.as_actor(), now=now_ms()))


@router.post("/cases/{ref}/conclusion", response_model=CaseRead,
             summary="P-F.3: conclude without corrective action (not justified, no fault found, "
                     "customer misuse); the quality record goes to Sales and the clock stops",
             responses={409: {"description": "Units were asked to act and their requests are "
                                             "open, or the case is not open"}})
async def conclude(request: Request, ref: Ref, body: NoActionConclusion,
                   who: Writer) -> CaseRead:
    catalogue = _settings(request).defect_catalogue
    if body.defect_code is not None and body.defect_code not in catalogue:
        known = ", ".join(sorted(catalogue))
        msg = f"unknown defect code {body.defect_code!r}; known codes: {known}"
        raise Invalid(f"Invalid request: body.defect_code: {msg}",
                      [{"loc": "body.defect_code", "msg": msg}])
    return await _change(request, ref, lambda c: c.conclude_without_action(
        outcome=body.outcome, finding=body.finding, defect_code=body.defect_code,
        defect_name=catalogue.get(body.defect_code) if body.defect_code else None,
        summary=body.summary, actor=who.as_actor(), now=now_ms()))


@router.post("/cases/{ref}/follow-ups", response_model=CaseRead, status_code=201,
             summary="P-5.3.4: a follow-up check after the case was handled")
async def add_follow_up(request: Request, ref: Ref, body: FollowUpIn, who: Writer) -> CaseRead:
    follow_up = FollowUp(**body.model_dump(), recorded_by=who.sub, recorded_at=now_ms())
    return await _change(request, ref, lambda c: c.record_follow_up(follow_up, who.as_actor()))


@router.get("/defect-codes", response_model=list[DefectCode], tags=["reference"],
            summary="The defect catalogue (configurable)")
async def defect_codes(request: Request, _: Reader) -> list[DefectCode]:
    return [DefectCode(code=c, name=n) for c, n in _settings(request).defect_catalogue.items()]


@router.get("/recurrence", response_model=Page[KindRead], tags=["recurrence"],
            summary="P-5.3.4: the kinds of complaint being tracked, most frequent first")
async def recurrence(
    request: Request, _: Reader, paging: Annotated[PageParams, Depends(page_params)],
    customer_id: Annotated[str | None, Query(max_length=64)] = None,
    product_code: Annotated[str | None, Query(max_length=64)] = None,
    defect_code: Annotated[str | None, Query(max_length=64)] = None,
    min_count: Annotated[int, Query(ge=0)] = 0,
) -> Page[KindRead]:
    query: dict[str, Any] = {k: v for k, v in (("customer_id", customer_id),
                                               ("product_code", product_code),
                                               ("defect_code", defect_code)) if v}
    if min_count:
        query["count"] = {"$gte": min_count}
    # A read of the whole `kinds` collection on FerretDB (indexed on MongoDB, ensure_indexes):
    # bounded by the number of kinds (customer or product, times defect code), which grows
    # with the plant's customers, products and defect catalogue, not with each complaint.
    # (Each kind does keep every complaint of its own, `complaints`: bytes read still grow,
    # slowly, with the history.)
    coll = service_of(request).repo("kinds").collection
    docs = await coll.find(query, _LISTED).sort(MOST_FREQUENT_FIRST) \
        .skip(paging.skip).limit(paging.page_size).to_list(None)
    threshold = _settings(request).recurrence_count
    return Page(items=[KindRead.of(Kind.viewed(d), threshold) for d in docs],
                total=await coll.count_documents(query), page=paging.page,
                page_size=paging.page_size)
