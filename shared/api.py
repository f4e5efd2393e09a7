"""Small pieces every service's HTTP API uses: the service handle, pages, the audit of refusals."""

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import APIRouter, Depends, Query, Request
from fastapi.telemetry import TelemetryConfig
from pydantic import BaseModel, Field
from pymongo.asynchronous.collection import AsyncCollection

from shared.auth import Principal, require
from shared.errors import DomainError
from shared.events import utcnow
from shared.lists import Order, history_page, open_page, open_rows
from shared.periods import Period
from shared.store import Repository
from shared.vocabulary import IsoDateTime

# FastAPI's own OpenTelemetry, off: the metrics are Prometheus (`shared.service`), and left on
# it asks OpenTelemetry for its providers on every request (3 % of intake's CPU in the soak).
NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}

T = TypeVar("T")
REFUSALS = "audit_refusals"


def service_of(request: Request):
    """The running `shared.service.Service` behind this app."""
    return request.app.state.service


# Pages are bounded: a page number beyond 64 bits overflowed the database's skip (a 500);
# 10,000 pages of up to 500 are far more than any list holds (narrow it by period instead).
PAGE_MAX = 10_000


class PageParams(BaseModel):
    page: int = Field(1, ge=1, le=PAGE_MAX)
    page_size: int = Field(50, ge=1, le=500)

    @property
    def skip(self) -> int:
        return (self.page - 1) * self.page_size


async def page_params(page: Annotated[int, Query(ge=1, le=PAGE_MAX)] = 1,
                page_size: Annotated[int, Query(ge=1, le=500)] = 50) -> PageParams:
    return PageParams(page=page, page_size=page_size)


class PeriodView(BaseModel):
    start: datetime = Field(description="From this instant (UTC, inclusive)")
    end: datetime = Field(description="To this instant (UTC, exclusive)")


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    page: int
    page_size: int
    period: PeriodView | None = Field(
        None, description="The period a list of history covers (asked with `from`/`to`, or "
                          "the last `QMS_HISTORY_DAYS` days); none on lists of open work")


PeriodFrom = Annotated[IsoDateTime | None, Query(
    alias="from", description="History from this instant (ISO 8601, a year from 2000 to "
                              "2099; no offset means UTC). Without `from` and `to`: the last "
                              "QMS_HISTORY_DAYS days.")]
PeriodTo = Annotated[IsoDateTime | None, Query(
    alias="to", description="History up to this instant (exclusive; ISO 8601 as `from`; "
                            "default: now)")]


def period_of(request: Request, start: datetime | None, end: datetime | None,
              **options: Any) -> Period:
    """The period a list of history was asked for, with this service's default length."""
    infra = service_of(request).settings.infra
    return Period.of(start, end, default_days=infra.history_days,
                     max_days=infra.history_max_days, **options)


def period_view(period: Period) -> PeriodView:
    return PeriodView(start=period.start, end=period.end)


async def list_page(request: Request, repo: Repository, query: dict[str, Any], order: Order,
                    paging: PageParams, view: Callable[[dict[str, Any]], T], *,
                    open_work: bool = False, start: datetime | None = None,
                    end: datetime | None = None, projection: dict[str, Any] | None = None,
                    **period_options: Any) -> Page[T]:
    """One page of a list, each record shown by `view`. Of open work (`open_work`, and no
    period asked): matched and sorted on `<name>_open`. Otherwise of a period: the one asked
    for (`start`, `end`; `period_options` as `Period.of`) or the last QMS_HISTORY_DAYS."""
    period = None
    if open_work and start is None and end is None:
        docs, total = await open_page(repo, query, order, paging.skip, paging.page_size,
                                      projection)
    else:
        if repo.days is None:
            raise ValueError(f"{repo.collection.name} keeps no day lists (history_by)")
        period = period_of(request, start, end, **period_options)
        docs, total = await history_page(repo.collection, repo.days, period, query, order,
                                         paging.skip, paging.page_size, projection)
    return Page(items=[view(d) for d in docs], total=total, page=paging.page,
                page_size=paging.page_size, period=period_view(period) if period else None)


class Rows(BaseModel, Generic[T]):
    """Open work as lean rows (a board, an inbox): each group's first rows, and how many
    each group holds."""
    items: list[T]
    counts: dict[str, int] = Field(description="Rows per group, all of them (items may "
                                               "show fewer: `per_status`)")


PerStatus = Annotated[int, Query(ge=1, le=500, description="At most this many rows of each "
                                                           "status")]


async def rows_of(repo: Repository, query: dict[str, Any], order: Order,
                  view: Callable[[dict[str, Any]], T], *, fields: tuple[str, ...],
                  per_status: int) -> Rows[T]:
    """A board or inbox of open work, by status: `shared.lists.open_rows`, each row shown by
    `view` (which reads only `fields`)."""
    rows, counts = await open_rows(repo, query, order, fields=fields, group_by="status",
                                   per_group=per_status)
    return Rows(items=[view(r) for r in rows], counts=counts)


class Refusal(BaseModel):
    at: datetime
    sub: str | None
    roles: list[str]
    method: str
    path: str
    reason: str


async def record_refusal(request: Request, exc: DomainError) -> None:
    """P-3: a refused action leaves no trace but this entry in the audit log."""
    principal: Principal | None = getattr(request.state, "principal", None)
    db = service_of(request).db
    if db is None:
        return
    await (await _refusal_log(request)).insert_one({
        "at": utcnow(), "sub": principal.sub if principal else None,
        "roles": principal.roles if principal else [], "method": request.method,
        "path": request.url.path, "reason": exc.message,
    })


async def _refusal_log(request: Request) -> AsyncCollection:
    """The refusal log, with its index on `at` declared once per app: MongoDB pages the log
    newest first by it. (FerretDB's SQLite handler reads the whole log for the page: a log of
    refusals, which grows with misuse, not with the complaints on record.)"""
    coll = service_of(request).database[REFUSALS]
    if not getattr(request.app.state, "refusals_indexed", False):
        await coll.create_index("at")
        request.app.state.refusals_indexed = True
    return coll


def audit_router() -> APIRouter:
    router = APIRouter(tags=["audit"])

    @router.get("/audit/refusals", response_model=Page[Refusal],
                summary="Actions refused for lack of role (P-3), newest first")
    async def refusals(request: Request,
                       _: Annotated[Principal, Depends(require("auditor", "manager", "ops"))],
                       paging: Annotated[PageParams, Depends(page_params)]) -> Page[Refusal]:
        coll = await _refusal_log(request)
        docs = await coll.find({}, projection={"_id": 0}).sort("at", -1) \
            .skip(paging.skip).limit(paging.page_size).to_list(None)
        return Page(items=docs, total=await coll.count_documents({}), page=paging.page,
                    page_size=paging.page_size)

    return router
