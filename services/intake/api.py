"""HTTP API of the Customer Feedback Register (Sales). Routes only translate.

Writes need role `sales` (P-3.1: Sales is the single window to the customer);
reads are open to sales, quality, manager and auditor. `{ref}` is the internal
id or the register number people say on the phone (`CF-2026-000123`).
"""

import asyncio
import hashlib
import json
import re
import unicodedata
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, BinaryIO
from uuid import UUID, uuid4, uuid5

from fastapi import APIRouter, Depends, File, Header, Query, Request, Response, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from services.intake.domain import (
    OPEN_STATUSES,
    Feedback,
    FeedbackStatus,
    FormWhereabouts,
    NewFeedback,
    QualityRecord,
    Reply,
    RequiredText,
    Satisfaction,
    check_registration,
    register_number,
)
from services.intake.settings import Settings
from shared.api import (
    Page,
    PageParams,
    PerStatus,
    Rows,
    page_params,
    period_of,
    period_view,
    rows_of,
    service_of,
)
from shared.attachments import (
    DOCX,
    EVIDENCE_NAMES,
    EVIDENCE_TYPES,
    HEAD_BYTES,
    XLSX,
    AttachmentStore,
    DamagedFile,
    FileTooLarge,
    evidence_type,
    sniff,
)
from shared.auth import Principal, require
from shared.domain import HistoryEntry
from shared.errors import Conflict, DomainError, Forbidden, Invalid, NotFound
from shared.events import utcnow
from shared.lists import history_page, open_page
from shared.store import AlreadyExists, Repository, WriteLocks
from shared.vocabulary import (
    REGISTER_NO_PATTERN,
    AttachmentMeta,
    AwareIsoDateTime,
    Category,
    Channel,
    Customer,
    IsoDateTime,
    LongText,
    Money,
    Product,
    ReturnedSample,
    ReturnedSampleInput,
    Severity,
)

FEEDBACK = "feedback"
SALES = ("sales",)
READERS = ("sales", "quality", "manager", "auditor")
REGISTER_NO = re.compile(rf"^{REGISTER_NO_PATTERN}$")
# Ids derived from Idempotency-Key: the same caller and key always name the same record.
IDEMPOTENCY_NS = UUID("5b0f3f4e-6c1d-4f0e-9a53-1d8b2c7e9a10")

Ref = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9-]{1,64}$",
                               description="Feedback id, or its register number",
                               examples=["CF-2026-000123"])]
Sha = Annotated[str, PathParam(pattern=r"^[0-9a-f]{64}$", description="sha256 of the file")]


class TooLarge(DomainError):
    status, code = 413, "too_large"


class UnsupportedType(DomainError):
    status, code = 415, "unsupported_media_type"


# ---------------------------------------------------------------- models


class FeedbackRead(BaseModel):
    """One entry of the Customer Feedback Register (its history: `/feedback/{ref}/history`)."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(..., description="Internal id (UUID)")
    register_no: str = Field(..., examples=["CF-2026-000123"])
    version: int
    status: FeedbackStatus
    customer: Customer
    channel: Channel
    received_at: datetime
    category: Category
    severity: Severity
    is_complaint: bool = Field(..., description="False for a suggestion")
    product: Product | None
    quantity_affected: int | None
    description: LongText
    estimated_loss: Money | None
    attachments: list[AttachmentMeta]
    samples: list[ReturnedSample]
    has_form: bool = Field(..., description="A Complaint Handling Form was opened (P-5.3.1)")
    form_opened_at: datetime | None
    form: FormWhereabouts | None = Field(
        None, description="Where the Complaint Handling Form is and since when: "
        "`sent_to_quality` (on its way: Quality's `GET /cases/{id}` may answer 404 for a "
        "moment), `with_quality`, `record_with_sales`, `withdrawn`; none without a form")
    quality_due_at: datetime | None = Field(..., description="P-F.5: Quality's 3-day deadline")
    direct_reply: Reply | None = Field(..., description="P-F.2 yes, P-5.3.3")
    quality_record: QualityRecord | None = Field(..., description="Quality's record (P-5.3.1)")
    customer_reply: Reply | None = Field(..., description="P-F.4: the reply built on it")
    satisfaction: Satisfaction | None
    reopen_count: int
    returned_to_quality: int = Field(0, description="Records Sales sent back to Quality")
    withdrawn_reason: LongText | None
    needs_triage: bool = Field(False, description="Arrived by mail; Sales still has to check "
                               "customer and classification (`POST /feedback/{ref}/classify`)")
    registered_by: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, fb: Feedback) -> "FeedbackRead":
        return cls.model_validate(fb.model_dump())


class ClassifyBody(BaseModel):
    """Sales' triage of a feedback, e.g. one that arrived by mail (P-5.2)."""

    model_config = ConfigDict(extra="forbid")
    customer: Customer
    category: Category
    severity: Severity = Severity.NORMAL
    product: Product | None = None


class ReplyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reply: RequiredText = Field(..., description="The text sent to the customer", examples=[
        "The shipment was held by customs; it leaves today and arrives Friday."])


def _sha_alone(value: Any) -> Any:
    """`"report": "<sha256>"` is short for `"report": {"sha256": "<sha256>"}`."""
    return {"sha256": value} if isinstance(value, str) else value


Sha256 = Annotated[str, Field(
    pattern=r"^[0-9a-fA-F]{64}$", description="sha256 of the PDF (64 hex digits)",
    examples=["9f2c4e0b7a1d3f5e6c8b9a0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f"]),
    AfterValidator(str.lower)]


class ReportRef(BaseModel):
    """The issued Complaint Handling Report, as reporting's `POST /documents/complaint-reports/
    {ref}/issue` answered it in `pdf`: the PDF is already in the attachment store by its
    sha256. That `pdf` object may be sent as it is (its other fields are not needed)."""

    model_config = ConfigDict(extra="ignore")
    sha256: Sha256
    filename: Annotated[str, Field(min_length=5, max_length=200)] | None = Field(
        None, description="The name the customer sees; default `<register_no>-report.pdf`",
        examples=["CF-2026-000123-rev1.pdf"])

    @field_validator("filename")
    @classmethod
    def _a_pdf_name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        name = _safe_filename(value)
        if not name.lower().endswith(".pdf"):
            raise ValueError("must end in .pdf (the report is a PDF)")
        return name


class CustomerReplyBody(ReplyBody):
    report: Annotated[ReportRef | None, BeforeValidator(
        _sha_alone, json_schema_input_type=ReportRef | Sha256 | None)] = Field(
        None, description="The issued Complaint Handling Report (PDF) to attach to the mail "
        "(P-5.3.1): `{\"sha256\": …, \"filename\": …}` (e.g. the `pdf` of reporting's issue "
        "answer, as it is) or just the sha256. It must be in the "
        "attachment store and be a PDF, or the reply is refused (422)",
        examples=[{"sha256": "9f2c4e0b7a1d3f5e6c8b9a0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f",
                   "filename": "CF-2026-000123-rev1.pdf"}])


class EscalateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: LongText | None = Field(None, description="What Sales asks of Quality", examples=[
        "Customer stopped line 3; please analyse the returned housings."])
    form_opened_at: AwareIsoDateTime | None = Field(
        None, description="When the form was opened, if earlier than now (a paper form entered "
        "later). Quality's 3-day clock starts here. Not before the feedback was received, "
        "not in the future.", examples=["2026-11-24T08:00:00+08:00"])


class SatisfactionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    satisfied: bool = Field(..., examples=[False])
    comment: LongText | None = Field(None, examples=["Cracks still found in lot L2026-11-09."])


class ReturnBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: RequiredText = Field(..., description="What the record lacks, for Quality",
                                 examples=["No containment for the stock in transit; the "
                                           "customer will ask about lot L2026-11-09."])


class WithdrawBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: RequiredText = Field(..., examples=["Registered twice by mistake; see CF-2026-000124."])


# ---------------------------------------------------------------- attachment store

ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/x-png": "image/png",
           "image/heif": "image/heic", "image/tif": "image/tiff"}
GENERIC = {"", "application/octet-stream", "binary/octet-stream"}
ZIP_TYPES = {"application/zip", "application/x-zip-compressed"}


def _declared_fits(declared: str, detected: str) -> bool:
    declared = ALIASES.get(declared, declared)
    if declared in GENERIC or declared == detected:
        return True
    if detected in (DOCX, XLSX):
        return declared in ZIP_TYPES
    return detected == "text/plain" and declared.startswith("text/")


def _store_evidence(store: AttachmentStore, src: BinaryIO, max_bytes: int,
                    declared: str) -> tuple[str, int, str]:
    """Store an upload if its content is an allowed evidence type; (sha256, size, type)."""
    detected: list[str] = []

    def check(head: bytes, tmp: Path) -> None:
        if not head:
            raise Invalid("The file is empty.", [{"loc": "body.file", "msg": "empty file"}])
        ctype = evidence_type(head, tmp)
        if ctype is None:
            raise UnsupportedType("This file type is not accepted as evidence; allowed: "
                                  f"{EVIDENCE_NAMES}.")
        if not _declared_fits(declared, ctype):
            raise UnsupportedType(f"The file was declared as {declared!r} but its content "
                                  f"is {ctype!r}; send it with its real type.")
        detected.append(ctype)

    try:
        sha, size = store.put_stream(src, max_bytes, check)
    except FileTooLarge as exc:
        raise TooLarge(str(exc)) from exc
    return sha, size, detected[0]


def _stored_report(store: AttachmentStore, ref: ReportRef, register_no: str,
                   who: Principal) -> AttachmentMeta:
    """The report's entry, once the store shows it holds that PDF whole. Blocking."""
    loc = "body.report.sha256"
    try:
        data = store.read(ref.sha256)
    except FileNotFoundError:
        raise Invalid(f"report.sha256: {ref.sha256} is not in the attachment store; issue "
                      f"the report first (reporting: POST /documents/complaint-reports/"
                      f"{register_no}/issue) and send the sha256 it answers.",
                      [{"loc": loc, "msg": "not in the attachment store"}]) from None
    except DamagedFile:
        raise Invalid(f"report.sha256: the stored file {ref.sha256} no longer matches its "
                      "sha256 (damaged); issue the report again.",
                      [{"loc": loc, "msg": "stored file damaged"}]) from None
    kind = sniff(data[:HEAD_BYTES], data)
    if kind != "application/pdf":
        raise Invalid(f"report.sha256: the stored file {ref.sha256} is "
                      f"{kind or 'of no recognised type'}, not a PDF; the reply carries the "
                      "issued Complaint Handling Report (PDF).",
                      [{"loc": loc, "msg": "not a PDF"}])
    return AttachmentMeta(sha256=ref.sha256, filename=ref.filename or f"{register_no}-report.pdf",
                          content_type=kind, size=len(data), uploaded_by=who.sub,
                          uploaded_at=utcnow())


def _safe_filename(raw: str | None) -> str:
    """The name as shown to people: no path, no control characters, bounded."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C").strip()
    return name[:200] or "attachment"


# ---------------------------------------------------------------- routes


def _repo(request: Request) -> Repository[Feedback]:
    return service_of(request).repo(FEEDBACK)


async def _load(request: Request, ref: str, *, to_change: bool = False) -> Feedback:
    """By id, or by register number (the lookup, then the record). `to_change`: as a change
    starts from it (`Repository.for_change`: without a read when this process has it)."""
    repo = _repo(request)
    fb = await (repo.by_number(ref) if REGISTER_NO.match(ref) else
                repo.for_change(ref) if to_change else repo.seen(ref))
    if fb is None:
        raise NotFound(f"Feedback {ref!r} does not exist.")
    return fb


async def _change(request: Request, ref: str, apply: Any) -> Feedback:
    fb = await _load(request, ref, to_change=True)
    return await _repo(request).change(fb.id, apply, what="Feedback", loaded=fb)


async def _add(request: Request, response: Response, ref: str, apply: Any) -> Feedback:
    """A change that may find nothing new (a retried request): then 200, not 201."""
    fb = await _load(request, ref, to_change=True)
    fb, wrote = await _repo(request).change_and_tell(fb.id, apply, what="Feedback", loaded=fb)
    if not wrote:
        response.status_code = 200
    return fb


# The register's order, newest received first (also `feedback_days`' own order, so a page of
# history without filters loads only its records); declared as an index (app.py) for MongoDB.
REGISTER_ORDER = [("received_at", -1), ("_id", -1)]
LISTED = {"history": 0, "applied_events": 0, "outbox": 0, "outbox_pending": 0}
# What `q` searches: each is also in the open summary, so Sales' inbox searches it too.
SEARCHED = ("description", "customer.name", "customer.id", "register_no", "product.code",
            "product.lot")
OPEN_QUERY = {"status": {"$in": sorted(s.value for s in OPEN_STATUSES)}}


def open_summary(fb: Feedback) -> dict[str, Any] | None:
    """An open feedback as the register's list filters and sorts it (`feedback_open`, Sales'
    inbox: what still waits for someone), None once it is history. The fields keep the
    store's names and shape, so the list's query reads either collection."""
    if fb.status not in OPEN_STATUSES:
        return None
    return {"status": fb.status, "category": fb.category, "channel": fb.channel,
            "severity": fb.severity, "received_at": fb.received_at,
            "register_no": fb.register_no, "description": fb.description,
            "customer": {"id": fb.customer.id, "name": fb.customer.name},
            "product": {"code": fb.product.code, "lot": fb.product.lot} if fb.product else None,
            # Sales' inbox row (FeedbackRow): what waits, since when
            "reopen_count": fb.reopen_count, "returned_to_quality": fb.returned_to_quality,
            "needs_triage": fb.needs_triage, "quality_due_at": fb.quality_due_at,
            "form": fb.form.model_dump() if fb.form else None,
            "quality_record": _times(fb.quality_record, "resolved_at"),
            "direct_reply": _times(fb.direct_reply, "replied_at"),
            "customer_reply": _times(fb.customer_reply, "replied_at")}


def _times(part: BaseModel | None, field: str) -> dict[str, Any] | None:
    return None if part is None else {field: getattr(part, field)}


class OpenFeedbackStatus(StrEnum):
    """The statuses of open work (`domain.OPEN_STATUSES`): what the inbox lists."""

    REGISTERED = FeedbackStatus.REGISTERED.value
    WITH_QUALITY = FeedbackStatus.WITH_QUALITY.value
    QUALITY_RECORD_READY = FeedbackStatus.QUALITY_RECORD_READY.value
    REPLIED = FeedbackStatus.REPLIED.value


class CustomerRow(BaseModel):
    id: str
    name: str


class ProductRow(BaseModel):
    code: str
    lot: str | None = None


class ReplyRow(BaseModel):
    replied_at: datetime


class RecordRow(BaseModel):
    resolved_at: datetime


class FeedbackRow(BaseModel):
    """One open feedback as Sales' inbox lists it, from `feedback_open` alone (no record is
    loaded): who, what, and since when it waits."""

    model_config = ConfigDict(extra="ignore")
    id: str = Field(..., validation_alias="_id")
    register_no: str
    status: FeedbackStatus
    severity: Severity
    category: Category
    channel: Channel
    received_at: datetime
    customer: CustomerRow
    product: ProductRow | None
    reopen_count: int
    returned_to_quality: int
    needs_triage: bool
    form: FormWhereabouts | None
    quality_due_at: datetime | None
    quality_record: RecordRow | None = Field(..., description="When Quality's record came")
    direct_reply: ReplyRow | None
    customer_reply: ReplyRow | None


# What FeedbackRow reads of a summary: a summary written before the inbox's rows lacks some.
ROW_FIELDS = ("reopen_count", "returned_to_quality", "needs_triage", "quality_due_at", "form",
              "quality_record", "direct_reply", "customer_reply")


def _fingerprint(body: NewFeedback) -> str:
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _check_filters(**filters: str | None) -> None:
    """Free-text filters go into database queries, which cannot hold NUL."""
    for name, value in filters.items():
        if value is not None and "\x00" in value:
            raise Invalid(f"Invalid request: query.{name}: must not contain NUL characters",
                          [{"loc": f"query.{name}", "msg": "must not contain NUL characters"}])


def router(settings: Settings) -> APIRouter:
    api = APIRouter(tags=["feedback"])
    store = AttachmentStore(settings.attachment_dir)
    skew = timedelta(seconds=settings.clock_skew_s)
    idempotency_locks = WriteLocks()  # its own: never shares a lock with the repo's

    async def _register(request: Request, body: NewFeedback, who: Principal, fid: str,
                        fingerprint: str | None) -> Feedback:
        now = utcnow()
        check_registration(body, now, skew)  # before a register number is used up
        year = (body.received_at or now).astimezone(UTC).year
        repo = _repo(request)
        fb = await repo.add_numbered(f"CF-{year}", lambda number: Feedback.register(
            id=fid, register_no=register_number(year, number), new=body, actor=who.as_actor(),
            now=now, skew=skew, fingerprint=fingerprint))  # its number claimed first
        return fb

    @api.post("/feedback", response_model=FeedbackRead, status_code=201,
              summary="Register a feedback in the Customer Feedback Register (P-F.1, P-5.1, "
                      "P-5.2)",
              description="Severity `major` (P-5.3.5) opens the Complaint Handling Form at once "
                          "(`complaint.escalated` with `feedback.registered`). With an "
                          "`Idempotency-Key`, a retry returns the first record with **200** and "
                          "`Idempotent-Replayed: true` (the first call answered 201); the same "
                          "key with a different body is refused with 409.",
              responses={200: {"description": "A retry with the same Idempotency-Key"},
                         409: {"description": "Idempotency-Key reused with another body"}})
    async def register(
        request: Request, response: Response, body: NewFeedback,
        who: Annotated[Principal, Depends(require(*SALES))],
        idempotency_key: Annotated[str | None, Header(
            alias="Idempotency-Key", pattern=r"^[\x21-\x7e]{1,200}$",
            description="Any unique string per intended registration (e.g. a UUID)")] = None,
    ) -> FeedbackRead:
        if idempotency_key is None:
            return FeedbackRead.of(await _register(request, body, who, str(uuid4()), None))
        fid = str(uuid5(IDEMPOTENCY_NS, f"{who.sub}\n{idempotency_key}"))
        fingerprint = _fingerprint(body)
        async with idempotency_locks("idempotency", fid):  # two retries at once: one number
            existing = await _repo(request).get(fid)
            if existing is None:
                try:
                    return FeedbackRead.of(await _register(request, body, who, fid, fingerprint))
                except AlreadyExists:  # another instance won the race
                    existing = await _repo(request).get_or_raise(fid, "Feedback")
        if existing.request_fingerprint != fingerprint:
            raise Conflict(f"Idempotency-Key {idempotency_key!r} was already used for "
                           f"{existing.register_no} with a different request body; use a new "
                           "key for a new feedback.")
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
        return FeedbackRead.of(existing)

    @api.get("/inbox", response_model=Rows[FeedbackRow],
             summary="Sales' inbox: the open feedback of each status as rows, newest received "
                     "first (read from the open work alone, so it costs the same at any size)",
             description="`counts` holds every open status's number of feedbacks; `items` at "
                         "most `per_status` rows of each status asked (repeat `status`; "
                         "default: every open status).")
    async def inbox(
        request: Request, _: Annotated[Principal, Depends(require(*READERS))],
        status: Annotated[list[OpenFeedbackStatus] | None, Query()] = None,
        per_status: PerStatus = 100,
    ) -> Rows[FeedbackRow]:
        query = {"status": {"$in": [s.value for s in status]}} if status else {}
        return await rows_of(_repo(request), query, REGISTER_ORDER, FeedbackRow.model_validate,
                             fields=ROW_FIELDS, per_status=per_status)

    @api.get("/feedback", response_model=Page[FeedbackRead],
             summary="The Customer Feedback Register, filtered and paged (P-5.4.1)",
             description="Newest received first. `q` searches description, customer name "
                         "and number, register number, product code and lot "
                         "(case-insensitive, literal); `lot` is an exact lot number. An "
                         "open `status` lists all open work (`received_from`/`received_to` "
                         "narrow it); any other list is of a period of receipt: "
                         "`received_from`/`received_to`, by default the last "
                         "`QMS_HISTORY_DAYS` days (31), returned as `period`.")
    async def list_feedback(
        request: Request, _: Annotated[Principal, Depends(require(*READERS))],
        paging: Annotated[PageParams, Depends(page_params)],
        status: FeedbackStatus | None = None, category: Category | None = None,
        channel: Channel | None = None, severity: Severity | None = None,
        customer_id: Annotated[str | None, Query(max_length=64)] = None,
        product_code: Annotated[str | None, Query(max_length=64)] = None,
        lot: Annotated[str | None, Query(max_length=64, description="Lot (exact)")] = None,
        received_from: Annotated[IsoDateTime | None, Query(
            description="Received at or after (ISO 8601, a year from 2000 to 2099; no offset "
                        "means UTC). Without `received_from` and `received_to`, a list of "
                        "history covers the last QMS_HISTORY_DAYS days")] = None,
        received_to: Annotated[IsoDateTime | None, Query(
            description="Received at or before (ISO 8601, as `received_from`; default: "
                        "now)")] = None,
        q: Annotated[str | None, Query(max_length=200, description="Free text")] = None,
    ) -> Page[FeedbackRead]:
        _check_filters(customer_id=customer_id, product_code=product_code, lot=lot, q=q)
        period = period_of(request, received_from, received_to, end_inclusive=True,
                           names=("received_from", "received_to"))  # checked on every list
        query: dict[str, Any] = {}
        for field, value in (("status", status), ("category", category),
                             ("channel", channel), ("severity", severity)):
            if value is not None:
                query[field] = value.value
        if customer_id:
            query["customer.id"] = customer_id
        if product_code:
            query["product.code"] = product_code
        if lot:
            query["product.lot"] = lot
        if q:
            pattern = {"$regex": re.escape(q), "$options": "i"}  # user text is literal
            query["$or"] = [{f: pattern} for f in SEARCHED]
        repo = _repo(request)
        if status in OPEN_STATUSES:
            # Sales' inbox: all of its open work (a read bounded by open work), narrowed by
            # the dates only when they are given.
            if received_from or received_to:
                query["received_at"] = {k: v for k, v in (("$gte", received_from),
                                                          ("$lte", received_to)) if v}
            docs, total = await open_page(repo, query, REGISTER_ORDER, paging.skip,
                                          paging.page_size, LISTED)
            shown = None
        else:
            # The history (all statuses, closed, withdrawn, a search): the period's records,
            # found through `feedback_days` and read by `_id`, never the whole register.
            assert repo.days is not None  # declared with history_by (app.py)
            docs, total = await history_page(repo.collection, repo.days, period, query,
                                             REGISTER_ORDER, paging.skip, paging.page_size,
                                             LISTED)
            shown = period_view(period)
        items = [FeedbackRead.of(Feedback.viewed(d)) for d in docs]
        return Page(items=items, total=total, page=paging.page, page_size=paging.page_size,
                    period=shown)

    @api.get("/feedback/{ref}", response_model=FeedbackRead, summary="One feedback")
    async def get_feedback(request: Request, ref: Ref,
                           _: Annotated[Principal, Depends(require(*READERS))]) -> FeedbackRead:
        return FeedbackRead.of(await _load(request, ref))

    @api.get("/feedback/{ref}/history", response_model=list[HistoryEntry],
             summary="The append-only history: who did what, when (P-5.4.2)")
    async def history(request: Request, ref: Ref,
                      _: Annotated[Principal, Depends(require(*READERS))]) -> list[HistoryEntry]:
        return (await _load(request, ref)).history

    @api.post("/feedback/{ref}/attachments", response_model=AttachmentMeta, status_code=201,
              tags=["evidence"],
              summary="Attach a photo or document (P-5.3.1)",
              description=f"Multipart field `file`. Allowed: {EVIDENCE_NAMES} (checked by "
                          "content). "
                          f"Limit: {settings.max_attachment_bytes} bytes (413). The same file "
                          "again returns its entry with 200 and adds nothing.",
              responses={200: {"description": "This file is already attached"},
                         413: {"description": "Too large"}, 415: {"description": "Type"}})
    async def add_attachment(
        request: Request, response: Response, ref: Ref,
        file: Annotated[UploadFile, File(description="The evidence file")],
        who: Annotated[Principal, Depends(require(*SALES))],
    ) -> AttachmentMeta:
        await _load(request, ref)  # 404 before storing anything
        sha, size, ctype = await asyncio.to_thread(
            _store_evidence, store, file.file, settings.max_attachment_bytes,
            (file.content_type or "").split(";")[0].strip().lower())
        meta = AttachmentMeta(sha256=sha, filename=_safe_filename(file.filename),
                              content_type=ctype, size=size, uploaded_by=who.sub,
                              uploaded_at=utcnow())
        fb = await _add(request, response, ref,
                        lambda fb: fb.add_attachment(meta, who.as_actor()))
        return next(a for a in fb.attachments if a.sha256 == sha)

    @api.get("/feedback/{ref}/attachments/{sha256}", response_class=FileResponse,
             tags=["evidence"], summary="Download an attachment's bytes",
             description="Sales, Quality, managers and auditors; and the people of a unit "
                         "Quality made responsible for this complaint (P-5.3.2).",
             responses={200: {"content": {t: {} for t in EVIDENCE_TYPES},
                              "description": "The file, with the content type it was "
                                             "accepted as"}})
    async def get_attachment(request: Request, ref: Ref, sha256: Sha,
                             who: Annotated[Principal, Depends(require(*READERS, "unit"))]
                             ) -> FileResponse:
        fb = await _load(request, ref)
        if not who.has_any(READERS) and who.unit not in fb.responsible_units:
            # P-5.3.2: a responsible unit gets the same attachments; other units do not.
            raise Forbidden(f"Unit {who.unit!r} is not responsible for {fb.register_no}; "
                            "Quality names the responsible units.")
        meta = next((a for a in fb.attachments if a.sha256 == sha256), None)
        if meta is None:
            raise NotFound(f"{fb.register_no} has no attachment {sha256}.")
        path = store.path(sha256)
        if not path.is_file():
            raise NotFound(f"The file {sha256} is missing from the attachment store.")
        return FileResponse(path, media_type=meta.content_type, filename=meta.filename)

    @api.post("/feedback/{ref}/samples", response_model=FeedbackRead, status_code=201,
              tags=["evidence"], summary="Note returned nonconforming samples (P-5.3.1)",
              description="The same note again (a retried request) adds nothing: 200.",
              responses={200: {"description": "These samples are already noted"}})
    async def add_sample(request: Request, response: Response, ref: Ref,
                         body: ReturnedSampleInput,
                         who: Annotated[Principal, Depends(require(*SALES))]) -> FeedbackRead:
        return FeedbackRead.of(await _add(request, response, ref,
                                          lambda fb: fb.add_sample(body.kept(), who.as_actor())))

    @api.post("/feedback/{ref}/direct-reply", response_model=FeedbackRead,
              summary="Answer the customer directly, no form (P-F.2 yes, P-5.3.3)",
              responses={409: {"description": "Product quality needs a form; or not registered"}})
    async def direct_reply(request: Request, ref: Ref, body: ReplyBody,
                           who: Annotated[Principal, Depends(require(*SALES))]) -> FeedbackRead:
        return FeedbackRead.of(await _change(
            request, ref, lambda fb: fb.reply_directly(body.reply, who.as_actor())))

    @api.post("/feedback/{ref}/classify", response_model=FeedbackRead,
              summary="Set the customer and classification (P-5.2), e.g. of a mailed complaint",
              responses={409: {"description": "Only while registered"}})
    async def classify(request: Request, ref: Ref, body: ClassifyBody,
                       who: Annotated[Principal, Depends(require(*SALES))]) -> FeedbackRead:
        return FeedbackRead.of(await _change(request, ref, lambda fb: fb.classify(
            who.as_actor(), customer=body.customer, category=body.category,
            severity=body.severity, product=body.product)))

    @api.post("/feedback/{ref}/escalate", response_model=FeedbackRead,
              summary="Open the Complaint Handling Form for Quality (P-F.2 no, P-5.3.1)",
              responses={409: {"description": "Not registered, or a suggestion"}})
    async def escalate(request: Request, ref: Ref, who: Annotated[Principal, Depends(
            require(*SALES))], body: EscalateBody | None = None) -> FeedbackRead:
        note = body.note if body else None
        opened_at = body.form_opened_at if body else None
        return FeedbackRead.of(await _change(
            request, ref, lambda fb: fb.escalate(who.as_actor(), note, opened_at=opened_at)))

    @api.post("/feedback/{ref}/reply", response_model=FeedbackRead,
              summary="Send the reply built on Quality's record (P-F.4), with the issued "
                      "Complaint Handling Report (P-5.3.1)",
              description="With `report`, notify attaches that PDF to the mail to the "
                          "customer. Give the sha256 reporting answered when Sales issued the "
                          "report (`POST /documents/complaint-reports/{ref}/issue`), and its "
                          "filename; 422 if the attachment store has no such file or it is "
                          "not a PDF.",
              responses={409: {"description": "Quality's record is not ready"},
                         422: {"description": "Bad input, or `report` names no stored PDF"}})
    async def reply(request: Request, ref: Ref, body: CustomerReplyBody,
                    who: Annotated[Principal, Depends(require(*SALES))]) -> FeedbackRead:
        fb = await _load(request, ref, to_change=True)  # 404 before looking in the store
        report = None if body.report is None else await asyncio.to_thread(
            _stored_report, store, body.report, fb.register_no, who)
        return FeedbackRead.of(await _repo(request).change(
            fb.id, lambda fb: fb.reply_to_customer(body.reply, who.as_actor(), report=report),
            what="Feedback", loaded=fb))

    @api.post("/feedback/{ref}/return-to-quality", response_model=FeedbackRead,
              summary="Send an inadequate quality record back to Quality (P-F.4 review)",
              description="Only in `quality_record_ready`, before replying. Quality works the "
                          "case again in a new round with its own 3-day clock; this is not a "
                          "customer reopen (`reopen_count` is unchanged).",
              responses={409: {"description": "No quality record waiting for Sales"}})
    async def return_to_quality(
            request: Request, ref: Ref, body: ReturnBody,
            who: Annotated[Principal, Depends(require(*SALES))]) -> FeedbackRead:
        return FeedbackRead.of(await _change(
            request, ref, lambda fb: fb.return_to_quality(body.reason, who.as_actor())))

    @api.post("/feedback/{ref}/satisfaction", response_model=FeedbackRead,
              summary="Record the customer's answer: satisfied closes, not satisfied reopens "
                      "(P-F.4)")
    async def satisfaction(request: Request, ref: Ref, body: SatisfactionBody,
                           who: Annotated[Principal, Depends(require(*SALES))]) -> FeedbackRead:
        return FeedbackRead.of(await _change(request, ref, lambda fb: fb.record_satisfaction(
            body.satisfied, body.comment, who.as_actor())))

    @api.post("/feedback/{ref}/withdraw", response_model=FeedbackRead,
              summary="Withdraw a record registered in error; it is kept (P-5.4.2)")
    async def withdraw(request: Request, ref: Ref, body: WithdrawBody,
                       who: Annotated[Principal, Depends(require(*SALES))]) -> FeedbackRead:
        return FeedbackRead.of(await _change(
            request, ref, lambda fb: fb.withdraw(body.reason, who.as_actor())))

    return api
