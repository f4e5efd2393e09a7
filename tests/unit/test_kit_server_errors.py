"""Server errors are visible to ops, and a busy database is not one (issue 12).

Every 500 is counted in `qms_http_requests_total` with its status (an unhandled error used
to bypass the count: no 5xx sample although 38 were served). FerretDB's "database is
locked" (SQLite busy under load), or a connection lost while FerretDB restarts, is tried
again on a read and answered 503 with `Retry-After` on a write, never 500. The kit's app
answers here without being started (tests/integration/test_kit_store_busy.py locks the real
FerretDB).
"""

import httpx
import pytest
from fastapi import APIRouter
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    OperationFailure,
    ServerSelectionTimeoutError,
)

from shared.errors import store_busy, store_unreachable
from shared.service import STORE_BUSY_RETRY_AFTER_S, Service, create_app
from shared.settings import ServiceSettings
from tests.conftest import infra_settings

# As FerretDB's SQLite handler answers (seen on a write to a database another connection
# held locked, after its busy timeout).
LOCKED = ("[msg_insert.go:168 handler.(*Handler).MsgInsert] [collection.go:128 "
          "sqlite.(*collection).InsertAll.func1] database is locked (5) (SQLITE_BUSY)")


def busy() -> OperationFailure:
    return OperationFailure(LOCKED, 1, {"ok": 0.0, "errmsg": LOCKED, "code": 1,
                                        "codeName": "InternalError"})


class Plumbing:
    def __init__(self) -> None:
        self.service = Service("plumbing", ServiceSettings(infra=infra_settings("tunit")))
        self.calls: dict[str, int] = {}
        self.busy_reads = 0  # how many reads of /things the database refuses before it frees
        router = APIRouter()

        @router.get("/things")
        async def read() -> dict:
            if self._call("read") <= self.busy_reads:
                raise busy()
            return {"things": []}

        @router.post("/things")
        async def write() -> dict:
            self._call("write")
            raise busy()

        @router.post("/unreachable")
        async def unreachable() -> dict:
            self._call("unreachable")  # as intake saw while FerretDB restarted (tests/faults)
            raise AutoReconnect("127.0.0.1:27017: [Errno 104] Connection reset by peer")

        @router.get("/boom")
        async def boom() -> dict:
            raise RuntimeError("a bug")

        @router.get("/other-database-error")
        async def other() -> dict:
            raise OperationFailure("E11000 something else", 2)

        self.service.routers.append(router)
        self.app = create_app(self.service, title="t", description="t")

    def _call(self, name: str) -> int:
        self.calls[name] = self.calls.get(name, 0) + 1
        return self.calls[name]

    def counted(self, method: str, route: str, status: int) -> float:
        return self.service.registry.get_sample_value(
            "qms_http_requests_total", {"service": "plumbing", "method": method, "route": route,
                                        "status": str(status)}) or 0


@pytest.fixture
async def plumbing():
    p = Plumbing()
    transport = httpx.ASGITransport(app=p.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        p.http = http
        yield p


async def test_an_unhandled_error_is_a_500_in_the_error_shape_and_counted(plumbing):
    resp = await plumbing.http.get("/boom")
    assert resp.status_code == 500
    assert resp.json() == {"error": {"code": "internal", "details": [],
                                     "message": "Internal error; it has been logged."}}
    assert plumbing.counted("GET", "/boom", 500) == 1
    metrics = (await plumbing.http.get("/metrics")).text
    assert 'qms_http_requests_total{method="GET",route="/boom",service="plumbing",' \
           'status="500"} 1.0' in metrics


async def test_a_read_the_busy_database_refuses_is_tried_again_and_answered(plumbing):
    plumbing.busy_reads = 2
    resp = await plumbing.http.get("/things")
    assert resp.status_code == 200 and resp.json() == {"things": []}
    assert plumbing.calls["read"] == 3
    assert plumbing.counted("GET", "/things", 200) == 1
    assert plumbing.counted("GET", "/things", 503) == 0


async def test_a_read_the_database_keeps_refusing_is_a_503_with_retry_after(plumbing):
    plumbing.busy_reads = 100
    resp = await plumbing.http.get("/things")
    assert resp.status_code == 503
    assert resp.headers["Retry-After"] == str(STORE_BUSY_RETRY_AFTER_S)
    error = resp.json()["error"]
    assert error["code"] == "unavailable" and "database is busy" in error["message"]
    assert plumbing.calls["read"] == 3  # the first try and two more
    assert plumbing.counted("GET", "/things", 503) == 1


async def test_a_write_the_busy_database_refuses_is_a_503_once_never_repeated(plumbing):
    resp = await plumbing.http.post("/things", json={})
    assert resp.status_code == 503
    assert resp.headers["Retry-After"] == str(STORE_BUSY_RETRY_AFTER_S)
    assert "try again in" in resp.json()["error"]["message"]
    assert plumbing.calls["write"] == 1  # a write is the client's to repeat, not ours
    assert plumbing.counted("POST", "/things", 503) == 1


async def test_a_write_while_the_database_is_out_of_reach_is_a_503_saying_so(plumbing):
    resp = await plumbing.http.post("/unreachable", json={})
    assert resp.status_code == 503
    assert resp.headers["Retry-After"] == str(STORE_BUSY_RETRY_AFTER_S)
    assert "cannot be reached" in resp.json()["error"]["message"]
    assert plumbing.calls["unreachable"] == 1
    assert plumbing.counted("POST", "/unreachable", 503) == 1
    assert store_unreachable(ServerSelectionTimeoutError("no server"))
    assert not store_unreachable(OperationFailure("E11000 duplicate key", 11000))


async def test_any_other_database_error_stays_a_counted_500(plumbing):
    resp = await plumbing.http.get("/other-database-error")
    assert resp.status_code == 500
    assert plumbing.counted("GET", "/other-database-error", 500) == 1


def test_busy_is_told_by_ferretdbs_words_also_in_a_bulk_writes_details():
    assert store_busy(busy())
    assert store_busy(BulkWriteError({"writeErrors": [{"index": 0, "code": 1,
                                                       "errmsg": LOCKED}]}))
    assert not store_busy(OperationFailure("E11000 duplicate key", 11000))
    assert not store_busy(RuntimeError("database is locked"))  # not from the database driver
