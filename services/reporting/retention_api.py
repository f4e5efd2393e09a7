"""HTTP routes of records retention (P-5.4.2), and its wiring into the reporting service.

`mount` (one line in `app.build`) adds the routes and hooks `Kept` in: each projected
register row and each issued Complaint Handling Report tells it what ended; the fetch
routes of a complaint ask it before serving (410 once disposed of). Routes only translate.
"""

import logging
from datetime import date, datetime, time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel, Field

from services.reporting import documents
from services.reporting.domain import FeedbackRow, ReadRow, Status
from services.reporting.monthly_report import MONTHLY_REPORTS
from services.reporting.retention import (
    LABELS,
    Disposal,
    Held,
    RecordType,
    Retention,
    month_end,
    parse_record_id,
)
from services.reporting.views import Views
from shared.api import Page, PageParams, page_params
from shared.auth import Principal, require
from shared.errors import Forbidden, NotFound
from shared.service import Service
from shared.vocabulary import KeptIsoDate, LongText

log = logging.getLogger("qms.reporting")
BASE = "/records/retention"
RECORD_ID = r"^(complaint|complaint_report|monthly_report):[A-Za-z0-9_-]{1,64}$"
RecordId = Annotated[str, Field(pattern=RECORD_ID, examples=[
    "complaint_report:0b6f5a2e-4d1c-4a51-9a43-2f7c1e0d9b11"])]


class Kept:
    """Reporting's records under retention: what ends, from the rows, reports and months."""

    def __init__(self, service: Service, views: Views):
        self.service = service
        self.views = views
        self._retention: Retention | None = None

    @property
    def retention(self) -> Retention:
        if self._retention is None:  # once started: the database and locks exist
            settings = self.views.settings
            self._retention = Retention(
                self.service.database, self.service.locks, settings.retention_years,
                self.views.today, settings.retention_clock_offset_days, self.views.tz)
        return self._retention

    def _day(self, at: datetime) -> date:
        return at.astimezone(self.views.tz).date()

    def _held(self, kind: RecordType, ref: str, register_no: str | None,
              ended_at: datetime) -> Held:
        return self.retention.held(kind, ref, register_no, ended_at, self._day(ended_at))

    async def note_row(self, row: ReadRow) -> None:
        """A closure or withdrawal starts the complaint's period (and its report's)."""
        if not isinstance(row, FeedbackRow) or not row.registered:
            return
        ended = row.closed_at or row.withdrawn_at
        if ended is None:
            if row.reopens:  # reopened after it ended: held again when it ends again
                for kind in (RecordType.COMPLAINT, RecordType.COMPLAINT_REPORT):
                    await self.retention.release(kind, row.id)
            return
        await self.retention.hold(self._held(RecordType.COMPLAINT, row.id, row.register_no,
                                             ended))
        report = await self.service.repo(documents.REPORTS).get(row.id)
        if report is not None:
            await self.note_report(row, report)

    async def note_report(self, row: FeedbackRow, report: documents.ComplaintReport) -> None:
        """An issued report is kept from the complaint's end or its last issue, the later."""
        ended = row.closed_at or row.withdrawn_at
        issued = [r.pdf.issued_at for r in report.revisions if r.pdf is not None]
        if ended is not None and issued:
            await self.retention.hold(self._held(RecordType.COMPLAINT_REPORT, row.id,
                                                 row.register_no, max(ended, *issued)))

    async def note_month(self, doc: dict[str, Any]) -> None:
        """An issued monthly report is kept from the end of its month."""
        if doc.get("revisions"):
            last = month_end(doc["_id"])
            ended = datetime.combine(last, time(23, 59, 59), tzinfo=self.views.tz)
            await self.retention.hold(self.retention.held(
                RecordType.MONTHLY_REPORT, doc["_id"], None, ended, last))

    async def files_of(self, held: Held) -> list[str]:
        """The sha256 of the issued PDFs a disposal concerns (kept in the store)."""
        if held.type is RecordType.COMPLAINT_REPORT:
            report = await self.service.repo(documents.REPORTS).get(held.ref)
            return [r.pdf.sha256 for r in report.revisions if r.pdf] if report else []
        if held.type is RecordType.MONTHLY_REPORT:
            doc = await self.service.database[MONTHLY_REPORTS].find_one({"_id": held.ref})
            return [p["sha256"] for r in (doc or {}).get("revisions", [])
                    for p in r.get("pdfs", {}).values()]
        return []

    async def guard(self, feedback_id: str, *kinds: str) -> None:
        await self.retention.refuse_if_disposed(feedback_id, *map(RecordType, kinds))

    async def list_old_disposals(self) -> None:
        """At start, once ever: the disposals recorded before the list of all disposals."""
        try:
            count = await self.retention.list_disposals_once()
        except Exception as exc:  # noqa: BLE001 - the next start tries again
            log.error("could not list the disposals recorded before: %s", exc)
            return
        if count is not None:
            log.info("records retention: %d earlier disposals listed", count)

    async def sweep(self) -> None:
        """At start: the monthly reports (one small document per month), and once ever the
        register's ended rows written before retention was kept (a scan, then a marker)."""
        db = self.service.database
        try:
            async for doc in db[MONTHLY_REPORTS].find({}, projection={"revisions.pdfs": 1}):
                await self.note_month(doc)
            if await self.retention.built():
                return
            register = self.views.models.register
            count = 0
            async for doc in register.collection.find(
                    {"status": {"$in": [Status.CLOSED.value, Status.WITHDRAWN.value]}}):
                await self.note_row(FeedbackRow.model_validate(doc))
                count += 1
            await self.retention.mark_built()
            log.info("records retention: %d ended complaints held", count)
        except Exception as exc:  # noqa: BLE001 - the next start tries again
            log.error("could not hold the records ended before retention: %s", exc)


# -- answers ---------------------------------------------------------------------------
class DueRecord(BaseModel):
    id: str = Field(..., description="What `POST .../dispose` takes: `<type>:<ref>`")
    type: RecordType
    type_label: dict[str, str] = Field(..., examples=[{"zh-Hans": "客诉处理报告",
                                                       "en": "Complaint Handling Report"}])
    ref: str = Field(..., description="The feedback id, or the month of a monthly report")
    register_no: str | None = Field(None, examples=["CF-2026-000123"])
    ended_at: datetime = Field(..., description="Closure, withdrawal, last issue or the "
                                                "month's end")
    retain_until: date = Field(..., description="The last day it had to be kept")

    @classmethod
    def of(cls, held: Held) -> "DueRecord":
        zh, en = LABELS[held.type]
        return cls(id=held.id, type=held.type, type_label={"zh-Hans": zh, "en": en},
                   ref=held.ref, register_no=held.register_no, ended_at=held.ended_at,
                   retain_until=held.retain_until)


class DuePage(BaseModel):
    as_of: date = Field(..., description="The day the list is for")
    clock_offset_days: int = Field(..., description="0 on a real system")
    total: int = Field(..., description="Records due in all, before paging")
    items: list[DueRecord]
    next_after: str | None = Field(None, description="Pass as `after` for the next page")


class Dispose(BaseModel):
    records: list[RecordId] = Field(..., min_length=1, max_length=100,
                                    description="Record ids from the due list")
    reason: LongText = Field(..., min_length=3, examples=[
        "Retention period ended; disposed of by the Records Control Procedure, QP-4.2-01."])


class DisposalAnswer(BaseModel):
    disposals: list[Disposal]
    created: list[bool] = Field(..., description="Per record: False when it had been "
                                                 "disposed of before (nothing changed)")


class DisposalsPage(Page[Disposal]):
    years: list[int] = Field(..., description="The years with disposals, newest first "
                                              "(values for `year`)")


class Policy(BaseModel):
    years: dict[str, int] = Field(..., examples=[{"complaint": 10}])
    labels: dict[str, dict[str, str]]
    today: date = Field(..., description="The retention clock's day")
    clock_offset_days: int


def router(kept: Kept) -> APIRouter:
    r = APIRouter(tags=["records"])
    readers = Depends(require("quality", "manager", "auditor"))
    disposers = Depends(require("quality"))  # P-3: managers and auditors change nothing

    @r.get(f"{BASE}/policy", response_model=Policy,
           summary="P-5.4.2: how long each record type is kept")
    async def policy(_: Annotated[Principal, readers]) -> Policy:
        retention = kept.retention
        return Policy(years=retention.years, today=retention.today(),
                      clock_offset_days=retention.offset_days,
                      labels={k.value: {"zh-Hans": zh, "en": en}
                              for k, (zh, en) in LABELS.items()})

    @r.get(f"{BASE}/due", response_model=DuePage,
           summary="P-5.4.2: records whose retention period has ended, to dispose of",
           description="Oldest first; nothing is removed by listing. `as_of` (managers and "
                       "auditors) shows what will be due on another day.")
    async def due(who: Annotated[Principal, readers],
                  as_of: Annotated[KeptIsoDate | None, Query(
                      description="The day to list for (default: today)")] = None,
                  type: Annotated[RecordType | None, Query(  # noqa: A002 - the API's word
                      description="Only this record type")] = None,
                  limit: Annotated[int, Query(ge=1, le=500)] = 100,
                  after: Annotated[str | None, Query(max_length=100, description=(
                      "`next_after` of the previous page"))] = None) -> DuePage:
        retention = kept.retention
        if as_of is not None and not who.has_any(("manager", "auditor")):
            raise Forbidden("Listing for another day (`as_of`) needs role 'manager' or "
                            "'auditor'. / 按其他日期（as_of）查询须具备经理或审核员角色。")
        day = as_of or retention.today()
        records = await retention.due(day, {type} if type else None)
        start = next((i + 1 for i, h in enumerate(records) if h.id == after), 0) \
            if after else 0
        page = records[start:start + limit]
        more = start + limit < len(records)
        return DuePage(as_of=day, clock_offset_days=retention.offset_days,
                       total=len(records), items=[DueRecord.of(h) for h in page],
                       next_after=page[-1].id if more and page else None)

    @r.post(f"{BASE}/dispose", response_model=DisposalAnswer, status_code=201,
            responses={200: {"description": "Every record had been disposed of before"},
                       409: {"description": "A record is still within its retention period "
                                            "(the answer says until when), or has not ended; "
                                            "nothing was disposed of"}},
            summary="P-5.4.2: dispose of records whose retention has ended (recorded)",
            description="Records who, when and why for each record, for ever; the record is "
                        "then answered with 410 Gone. The issued PDFs stay in the store (it is "
                        "shared by hash): the disposal lists their sha256.")
    async def dispose(response: Response, body: Dispose,
                      who: Annotated[Principal, disposers]) -> DisposalAnswer:
        done = await kept.retention.dispose(body.records, body.reason, who, kept.files_of)
        response.status_code = 201 if any(created for _, created in done) else 200
        return DisposalAnswer(disposals=[d for d, _ in done], created=[c for _, c in done])

    @r.get(f"{BASE}/disposals", response_model=DisposalsPage,
           summary="P-5.4.2: every disposal (what was destroyed, when, by whom, why)",
           description="Newest first, by the moment of disposal; `year`: only those disposed "
                       "of that year (in the plant's time zone). Each as its disposal record.")
    async def disposals(_: Annotated[Principal, readers],
                        paging: Annotated[PageParams, Depends(page_params)],
                        year: Annotated[int | None, Query(
                            ge=2000, le=2099, description="Only this year of disposal")] = None
                        ) -> DisposalsPage:
        retention = kept.retention
        years = await retention.disposal_years()
        items, total = await retention.disposals_page(
            [year] if year is not None else years, paging.skip, paging.page_size)
        return DisposalsPage(items=items, total=total, page=paging.page,
                             page_size=paging.page_size, years=years)

    @r.get(f"{BASE}/disposals/{{record_id}}", response_model=Disposal,
           summary="The disposal record of one record (kept for ever)")
    async def disposal(record_id: Annotated[str, Path(pattern=RECORD_ID)],
                       _: Annotated[Principal, readers]) -> Disposal:
        kind, ref = parse_record_id(record_id)
        found = await kept.retention.disposal(kind, ref)
        if found is None:
            raise NotFound(f"{record_id} has not been disposed of. / {record_id} 未被处置。")
        return found

    return r


def mount(service: Service, views: Views) -> None:
    """Add the routes and hook retention into the rows, the reports and the fetch routes."""
    kept = Kept(service, views)
    views.row_hooks.append(kept.note_row)
    views.report_hooks.append(kept.note_report)
    views.month_hooks.append(kept.note_month)
    views.fetch_guards.append(kept.guard)
    service.background(kept.sweep)
    service.background(kept.list_old_disposals)
    service.routers.append(router(kept))
