"""HTTP routes of reporting: the register, the monthly statistics table, charts, rebuild.

Routes only translate: parse the query, read the read models, shape the answer.
Readers: manager, auditor, quality, ops; sales may read the register too.
"""

import asyncio
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from services.reporting import charts, exports, paper_forms, statistics
from services.reporting.domain import FeedbackRow, Status
from services.reporting.pdf import PdfKit
from services.reporting.statistics import MonthlyTable, money
from services.reporting.views import Views
from shared.api import Page, PageParams, page_params, period_of, period_view, service_of
from shared.auth import Principal, require
from shared.errors import Invalid
from shared.events import Actor
from shared.lists import history_page, load, sort_rows
from shared.periods import Period
from shared.vocabulary import Category, Channel, IsoDate, IsoMonth, Language, Severity

READERS = ("manager", "auditor", "quality", "ops")
REGISTER_READERS = (*READERS, "sales")
SORTS = {"received_at": "received_at", "register_no": "register_no", "status": "status",
         "severity": "severity", "category": "category", "channel": "channel",
         "customer": "customer_id", "form_opened_at": "form_opened_at",
         "quality_record_at": "quality_record_at", "closed_at": "closed_at",
         "reopen_count": "reopen_count"}
if TYPE_CHECKING:
    SortKey: TypeAlias = str  # a checker cannot build the Literal below; FastAPI checks it
else:
    SortKey = Literal[tuple(k for s in SORTS for k in (s, f"-{s}"))]


class Format(StrEnum):
    JSON = "json"
    CSV = "csv"
    XLSX = "xlsx"
    PDF = "pdf"


class Amount(BaseModel):
    amount: str = Field(..., examples=["1250.00"], description="Decimal string")
    currency: str = Field(..., examples=["CNY"])


class RegisterRow(BaseModel):
    """One line of the Customer Feedback Register (P-5.4.1), built from events."""

    feedback_id: str
    register_no: str | None = Field(None, examples=["CF-2026-000123"])
    status: Status
    is_complaint: bool | None = Field(None, description="False for a suggestion")
    category: str | None = Field(None, examples=["product_quality"])
    channel: str | None = Field(None, examples=["phone"])
    severity: str | None = Field(None, examples=["normal"])
    customer_id: str | None = Field(None, examples=["C-1001"])
    customer_name: str | None = Field(None, examples=["Shenzhen Bright Motors Co."])
    product_code: str | None = Field(None, examples=["HSG-220"])
    product_name: str | None = None
    product_lot: str | None = None
    quantity_affected: int | None = None
    description: str | None = Field(None, description="The customer's problem (first 2000 "
                                    "characters)")
    received_at: datetime | None = None
    registered_at: datetime | None = None
    form_opened_at: datetime | None = Field(None, description="Complaint Handling Form opened")
    quality_record_at: datetime | None = Field(None, description="Latest quality record handed "
                                               "to Sales")
    customer_reply_at: datetime | None = Field(None, description="First reply to the customer")
    closed_at: datetime | None = None
    withdrawn_at: datetime | None = None
    responsible_units: list[str] = Field(default_factory=list, examples=[["production"]])
    defect_code: str | None = Field(None, examples=["D03"])
    loss: list[Amount] = Field(default_factory=list, description="Disposition costs of the "
                               "quality records, else the estimated loss")
    estimated_loss: Amount | None = None
    reopen_count: int = 0
    rounds: int = Field(0, description="3-day clocks run (1 + reopens back to Quality)")
    breaches: int = Field(0, description="Missed 3-day deadlines")
    met_3_day_rule: bool | None = Field(None, description="Of the latest quality record")
    major_alert: bool = False
    evidence: int = Field(0, description="Attachments and returned samples recorded")

    @classmethod
    def of(cls, row: FeedbackRow) -> "RegisterRow":
        current = row.current_round
        est = row.estimated_loss
        return cls(
            feedback_id=row.id, register_no=row.register_no, status=row.status,
            is_complaint=row.is_complaint, category=row.category, channel=row.channel,
            severity=row.severity, customer_id=row.customer_id, customer_name=row.customer_name,
            product_code=row.product_code, product_name=row.product_name,
            product_lot=row.product_lot, quantity_affected=row.quantity_affected,
            description=row.description, received_at=row.received_at,
            registered_at=row.registered_at, form_opened_at=row.form_opened_at,
            quality_record_at=row.quality_record_at, customer_reply_at=row.first_reply_at,
            closed_at=row.closed_at, withdrawn_at=row.withdrawn_at,
            responsible_units=row.units, defect_code=row.defect_code,
            loss=[Amount(amount=money(v), currency=k)
                  for k, v in sorted(row.loss_by_currency().items())],
            estimated_loss=Amount(amount=money(est.cents), currency=est.currency) if est else None,
            reopen_count=row.reopen_count, rounds=len(row.rounds),
            breaches=sum(1 for r in row.rounds if r.is_breach),
            met_3_day_rule=current.met_deadline if current else None,
            major_alert=row.major_alert_at is not None, evidence=row.evidence)


class HistoryEvent(BaseModel):
    """An event of this feedback's story, as stored (P-5.4.2: who, what, when)."""

    id: str
    type: str = Field(..., examples=["complaint.accepted"])
    version: int
    occurred_at: datetime
    producer: str
    causation_id: str | None = None
    actor: Actor
    payload: dict[str, Any]


class RebuildResult(BaseModel):
    events: int = Field(..., description="Events replayed from the history")
    skipped: int = Field(..., description="Stored events with no known contract")
    rows: dict[str, int] = Field(..., examples=[{"feedback": 120, "capa": 3, "recurrence": 4}])
    months: int
    seconds: float


# ------------------------------------------------------------------ helpers


def views_of(request: Request) -> Views:
    return service_of(request).views


def _month_start(month: str, views: Views) -> datetime:
    year, mon = statistics.parse_month(month)
    return datetime(year, mon, 1, tzinfo=views.tz)


def _day_start(day: date, views: Views) -> datetime:
    return datetime.combine(day, time(), tzinfo=views.tz)


def _period(month: str | None, first: str | None, last: str | None, views: Views
            ) -> tuple[str, str]:
    if month and (first or last):
        raise Invalid("Give either `month` or `from`/`to`, not both.",
                      [{"loc": "query.month", "msg": "not with from/to"}])
    if month:
        return month, month
    today = views.today()
    first = first or last or today.strftime("%Y-%m")
    last = last or first
    if first > last:
        raise Invalid(f"`from` ({first}) is after `to` ({last}).",
                      [{"loc": "query.from", "msg": "must not be after to"}])
    most = views.settings.max_range_months
    if len(statistics.months_between(first, last)) > most:
        raise Invalid(f"A period may span at most {most} months: from {first} to {last} is "
                      "longer.", [{"loc": "query.from", "msg": f"at most {most} months"}])
    return first, last


def _register_period(request: Request, views: Views, month: str | None,
                     received_from: date | None, received_to: date | None) -> Period:
    """The register's period in UTC: a month, days (`received_to` included), both (where
    they overlap), or by default the last QMS_HISTORY_DAYS days; days and months are the
    plant's (`timezone`)."""
    start = _month_start(month, views) if month else None
    end = _month_start(statistics.shift_month(month, 1), views) if month else None
    if received_from:
        start = max(filter(None, [start, _day_start(received_from, views)]))
    if received_to:
        end = min(filter(None, [end, _day_start(received_to + timedelta(days=1), views)]))
    if month and start is not None and end is not None and start >= end:
        raise Invalid(f"The period is empty: received_from/received_to lie outside {month}.",
                      [{"loc": "query.month", "msg": "does not overlap received_from/to"}])
    return period_of(request, start, end, names=("received_from", "received_to"))


# Months from 2000-01 to 2099-12 in ASCII digits (`IsoMonth`): `\d` let full-width digits
# through (months_between never ended on them); years 0 or 9999 overflowed the arithmetic.
MonthQ = Annotated[IsoMonth | None, Query(description="One month, YYYY-MM (2000-01 to 2099-12)",
                                          examples=["2026-11"])]
FromQ = Annotated[IsoMonth | None, Query(alias="from", description="First month of a range, "
                                         "YYYY-MM (as `month`)")]
ToQ = Annotated[IsoMonth | None, Query(alias="to", description="Last month of a range, YYYY-MM "
                                       "(as `month`)")]
Reader = Annotated[Principal, Depends(require(*READERS))]


def _export_rows(docs: list[dict[str, Any]], order: list[tuple[str, int]]
                 ) -> list[dict[str, Any]]:
    return [RegisterRow.of(FeedbackRow.model_validate(d)).model_dump()
            for d in sort_rows(docs, order)]


def _kit(views: Views) -> PdfKit:
    return PdfKit(views.settings.cjk_font, views.settings.cjk_font_index)


def _register_pdf(views: Views, rows: list[dict[str, Any]], period: Period, lang: Language
                  ) -> bytes:
    """The register as its paper form; the period in the plant's days (end included)."""
    days = (period.start, period.end - timedelta(microseconds=1))
    label = " – ".join(d.astimezone(views.tz).date().isoformat() for d in days)
    return paper_forms.register_pdf(rows, tz=views.tz, lang=lang, period=label,
                                    company=views.settings.company_name, kit=_kit(views))


def _file(content: bytes | str, media_type: str, filename: str) -> Response:
    return Response(content, media_type=media_type,
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


async def monthly_table(views: Views, first: str, last: str) -> MonthlyTable:
    prev_first, _ = statistics.previous_period(first, last)
    monthly = await views.models.monthly(statistics.months_between(prev_first, last))
    open_docs = await views.models.open_counters(last)
    table = statistics.table_at(first, last, monthly, open_docs, views.today(),
                                views.settings.timezone)
    names = await views.models.customer_names(statistics.customer_ids(table))
    return statistics.name_customers(table, names)


def router() -> APIRouter:
    r = APIRouter()
    _register_routes(r)
    _statistics_routes(r)
    _admin_routes(r)
    return r


# ------------------------------------------------------------------ the register


def _register_routes(r: APIRouter) -> None:
    file_responses: dict[int | str, dict[str, Any]] = {
        200: {"content": {exports.CSV_MEDIA_TYPE: {}, exports.XLSX_MEDIA_TYPE: {},
                          exports.PDF_MEDIA_TYPE: {}},
              "description": "JSON page, or the whole filtered register as a file (PDF: the "
                             "paper form 客户意见登记表, A4 landscape)"}}

    @r.get("/register", response_model=Page[RegisterRow], tags=["register"],
           responses=file_responses,
           summary="The Customer Feedback Register (P-5.4.1): filtered, sorted, paged; CSV/XLSX",
           description="The rows received in a period: `month`, or `received_from`/"
                       "`received_to` (days in the plant's time zone, both included), by "
                       "default the last `QMS_HISTORY_DAYS` days (31); the JSON page returns "
                       "it as `period` (UTC, end exclusive). A period costs its own rows, "
                       "never the whole register.")
    async def register(
        request: Request,
        _: Annotated[Principal, Depends(require(*REGISTER_READERS))],
        paging: Annotated[PageParams, Depends(page_params)],
        status: Annotated[list[Status] | None, Query(description="Any of these")] = None,
        category: Category | None = None,
        channel: Channel | None = None,
        severity: Severity | None = None,
        customer: Annotated[str | None, Query(max_length=64, description="Customer id")] = None,
        product: Annotated[str | None, Query(max_length=64, description="Product code")] = None,
        unit: Annotated[str | None, Query(max_length=64, description="Responsible unit")] = None,
        defect_code: Annotated[str | None, Query(max_length=64)] = None,
        complaint: Annotated[bool | None, Query(description="false: suggestions only")] = None,
        month: Annotated[IsoMonth | None, Query(
            description="Received in this month, YYYY-MM (plant time zone; 2000-01 to "
                        "2099-12)",
            examples=["2026-11"])] = None,
        received_from: Annotated[IsoDate | None, Query(
            description="Received on or after (day, YYYY-MM-DD, a year from 2000 to 2099); "
                        "without `month`, `received_from` and `received_to`: the last "
                        "QMS_HISTORY_DAYS days")] = None,
        received_to: Annotated[IsoDate | None, Query(
            description="Received on or before (day, as `received_from`; default: "
                        "today)")] = None,
        sort: Annotated[SortKey, Query(description="Field; '-' first: descending")]
        = "-received_at",
        format: Format = Format.JSON,
        lang: Annotated[Language, Query(description="PDF: the form's language (zh: Chinese, "
                                        "en: English)")] = Language.ZH,
    ) -> Any:
        views = views_of(request)
        period = _register_period(request, views, month, received_from, received_to)
        query: dict[str, Any] = {}
        if status:
            query["status"] = {"$in": [s.value for s in status]}
        for name, value in (("category", category), ("channel", channel),
                             ("severity", severity), ("customer_id", customer),
                             ("product_code", product), ("units", unit),
                             ("defect_code", defect_code), ("is_complaint", complaint)):
            if value is not None:
                query[name] = value.value if isinstance(value, StrEnum) else value
        field = SORTS[sort.lstrip("-")]
        order = [(field, -1 if sort.startswith("-") else 1), ("_id", 1)]
        # The period's rows, found through `register_days` and read by `_id` (never the whole
        # register); filtered by the database, sorted here unless in the days' own order.
        models = views.models
        coll, days = models.register.collection, models.register_days
        if format is Format.JSON:
            docs, total = await history_page(coll, days, period, query, order, paging.skip,
                                             paging.page_size)
            return Page[RegisterRow](
                items=[RegisterRow.of(FeedbackRow.model_validate(d)) for d in docs],
                total=total, page=paging.page, page_size=paging.page_size,
                period=period_view(period))
        limit = views.settings.export_max_rows
        too_many = Invalid(f"The export would hold more than {limit} rows; "
                           "narrow the filter (e.g. a month).")
        entries = await days.entries(period)
        if not query and len(entries) > limit:
            raise too_many  # known from the days alone: no row read
        docs = await load(coll, (i for i, _ in entries), query)
        if len(docs) > limit:
            raise too_many
        rows = await asyncio.to_thread(_export_rows, docs, order)  # a month: thousands
        stamp = views.today().isoformat()
        if format is Format.CSV:
            return StreamingResponse(
                exports.register_csv(rows, views.tz), media_type=exports.CSV_MEDIA_TYPE,
                headers={"Content-Disposition": f'attachment; filename="register-{stamp}.csv"'})
        if format is Format.PDF:
            if len(rows) > paper_forms.REGISTER_PDF_MAX_ROWS:  # about 7 ms a line to lay out
                raise Invalid(f"The PDF form holds at most {paper_forms.REGISTER_PDF_MAX_ROWS} "
                              f"lines and this period has {len(rows)}: narrow the filter, or "
                              "take the CSV/XLSX. / PDF 登记表最多 "
                              f"{paper_forms.REGISTER_PDF_MAX_ROWS} 行，请缩小范围或导出 "
                              "CSV/XLSX。", [{"loc": "query.format", "msg": "too many lines "
                                             "for a PDF"}])
            content = await asyncio.to_thread(_register_pdf, views, rows, period, lang)
            return _file(content, exports.PDF_MEDIA_TYPE, f"register-{stamp}.pdf")
        content = await asyncio.to_thread(exports.register_xlsx, rows, views.tz)
        return _file(content, exports.XLSX_MEDIA_TYPE, f"register-{stamp}.xlsx")

    @r.get("/register/{feedback_id}", response_model=RegisterRow, tags=["register"],
           summary="One line of the register")
    async def register_row(
        request: Request, feedback_id: Annotated[str, Path(max_length=200)],
        _: Annotated[Principal, Depends(require(*REGISTER_READERS))],
    ) -> RegisterRow:
        await views_of(request).check_kept(feedback_id, "complaint")  # 410 once disposed of
        row = await views_of(request).models.register.get_or_raise(feedback_id, "Feedback")
        assert isinstance(row, FeedbackRow)  # the register's store holds feedback rows
        return RegisterRow.of(row)

    @r.get("/register/{feedback_id}/history", response_model=list[HistoryEvent],
           tags=["register"], summary="Every event of this feedback, oldest first (P-5.4.2)")
    async def register_history(
        request: Request, feedback_id: Annotated[str, Path(max_length=200)],
        _: Annotated[Principal, Depends(require(*REGISTER_READERS))],
    ) -> list[HistoryEvent]:
        models = views_of(request).models
        await views_of(request).check_kept(feedback_id, "complaint")  # 410 once disposed of
        row = await models.register.get_or_raise(feedback_id, "Feedback")
        return [HistoryEvent.model_validate(d) for d in await models.history_of(row)]


# ------------------------------------------------------------------ statistics and charts


def _statistics_routes(r: APIRouter) -> None:
    @r.get("/statistics/monthly", response_model=MonthlyTable, tags=["statistics"],
           responses={200: {"content": {exports.CSV_MEDIA_TYPE: {},
                                        exports.XLSX_MEDIA_TYPE: {},
                                        exports.PDF_MEDIA_TYPE: {}}}},
           summary="The Monthly Complaint Handling Statistics Table (P-F.6)")
    async def monthly(
        request: Request, _: Reader, month: MonthQ = None, first: FromQ = None,
        last: ToQ = None, format: Format = Format.JSON,
        lang: Annotated[Language, Query(description="CSV/XLSX/PDF: the headings' language "
                                        "(zh: Chinese, en: English)")] = Language.EN,
    ) -> Any:
        views = views_of(request)
        first, last = _period(month, first, last, views)
        table = await monthly_table(views, first, last)
        name = first if first == last else f"{first}_{last}"
        if format is Format.CSV:
            return _file(exports.table_csv(table, lang), exports.CSV_MEDIA_TYPE,
                         f"complaint-statistics-{name}.csv")
        if format is Format.XLSX:
            content = await asyncio.to_thread(exports.table_xlsx, table, lang)
            return _file(content, exports.XLSX_MEDIA_TYPE, f"complaint-statistics-{name}.xlsx")
        if format is Format.PDF:
            content = await asyncio.to_thread(
                paper_forms.table_pdf, table, lang=lang, company=views.settings.company_name,
                kit=_kit(views))
            return _file(content, exports.PDF_MEDIA_TYPE, f"complaint-statistics-{name}.pdf")
        return table

    @r.get("/charts/{chart}.png", response_class=Response, tags=["statistics"],
           responses={200: {"content": {"image/png": {}}}},
           summary="Charts: Pareto of defect codes by count or loss, monthly trend, timeliness")
    async def chart(
        request: Request, _: Reader,
        chart: Literal["pareto-count", "pareto-loss", "trend", "timeliness"],
        month: MonthQ = None, first: FromQ = None, last: ToQ = None,
        currency: Annotated[str | None, Query(pattern=r"^[A-Z]{3}$",
                                              description="pareto-loss: the currency "
                                              "(default: the largest total)")] = None,
        lang: Annotated[Language, Query(description="The chart's words and defect names: zh "
                                        "Chinese, en English")] = Language.EN,
    ) -> Response:
        views = views_of(request)
        first, last = _period(month, first, last, views)
        png = await _chart(views, chart, first, last, currency, lang)
        return Response(png, media_type="image/png")


async def _chart(views: Views, chart: str, first: str, last: str, currency: str | None,
                 lang: Language = Language.EN) -> bytes:
    months = statistics.months_between(first, last)
    if chart in ("trend", "timeliness") and len(months) == 1:
        months = statistics.months_between(statistics.shift_month(last, -11), last)
    monthly = await views.models.monthly(months)
    period = charts.period_text(first, last, lang)
    in_period = statistics.Counters(monthly[m] for m in statistics.months_between(first, last))
    kit = charts.ChartKit.of(views.settings, lang)
    if chart == "pareto-count":
        counts, _ = statistics.defect_pareto(in_period)
        return await asyncio.to_thread(kit.pareto_count, counts, period)
    if chart == "pareto-loss":
        _, losses = statistics.defect_pareto(in_period)
        if currency is None and losses:
            currency = max(losses, key=lambda cur: sum(v for _, v in losses[cur]))
        return await asyncio.to_thread(kit.pareto_loss, losses.get(currency or "", []),
                                       currency or "-", period)
    rows = statistics.trend(monthly, months)
    if chart == "trend":
        return await asyncio.to_thread(kit.trend, rows)
    hist = statistics.minutes_histogram(in_period, "qr")
    return await asyncio.to_thread(kit.timeliness, rows, hist, period)


# ------------------------------------------------------------------ operations


def _admin_routes(r: APIRouter) -> None:
    @r.post("/admin/rebuild", response_model=RebuildResult, tags=["ops"],
            summary="Rebuild every read model from the stored event history")
    async def rebuild(request: Request,
                      _: Annotated[Principal, Depends(require("ops"))]) -> RebuildResult:
        report = await views_of(request).rebuild()
        return RebuildResult(**report.__dict__)
