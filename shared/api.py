"""Small pieces every service's HTTP API uses: the service handle, pages, the audit of refusals."""

from datetime import datetime
from typing import Annotated, Generic, TypeVar

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from pymongo.asynchronous.collection import AsyncCollection

from shared.auth import Principal, require
from shared.errors import DomainError
from shared.events import utcnow

T = TypeVar("T")
REFUSALS = "audit_refusals"


def service_of(request: Request):
    """The running `shared.service.Service` behind this app."""
    return request.app.state.service


class PageParams(BaseModel):
    page: int = Field(1, ge=1)
    page_size: int = Field(50, ge=1, le=500)

    @property
    def skip(self) -> int:
        return (self.page - 1) * self.page_size


def page_params(page: Annotated[int, Query(ge=1)] = 1,
                page_size: Annotated[int, Query(ge=1, le=500)] = 50) -> PageParams:
    return PageParams(page=page, page_size=page_size)


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    page: int
    page_size: int


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
