"""FerretDB's "database is locked" is a 503 with Retry-After, never a 500 (issue 12).

Under load FerretDB's SQLite handler gives up on a write after its busy timeout and answers
"database is locked (5) (SQLITE_BUSY)"; clients got a 500. Here another connection holds
the service database's SQLite file locked for writing, as a burst of writes would: a write
through the kit's app is answered 503 with `Retry-After` (counted, so ops see it), reads
are still served, and once the lock is gone the same write succeeds.
"""

import sqlite3
import uuid
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter

from shared.service import STORE_BUSY_RETRY_AFTER_S, Service, create_app
from shared.settings import ServiceSettings
from tests.conftest import ROOT, infra_settings, test_namespace
from tests.support import ok

pytestmark = pytest.mark.infra

FERRETDB_DATA = ROOT / "var" / "ferretdb" / "data"  # scripts/infra.sh's --sqlite-url


@pytest.fixture
async def plumbing():
    infra = infra_settings(test_namespace(uuid.uuid4().hex[:6]))
    svc = Service("plumbing", ServiceSettings(infra=infra))
    router = APIRouter()

    @router.post("/things")
    async def add() -> dict:
        await svc.database["things"].insert_one({"_id": uuid.uuid4().hex})
        return {"added": 1}

    @router.get("/things")
    async def count() -> dict:
        return {"things": await svc.database["things"].count_documents({})}

    svc.routers.append(router)
    app = create_app(svc, title="t", description="t")
    await svc.start()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t",
                                 timeout=120) as http:
        yield svc, http
    await svc.stop()


def sqlite_file(svc: Service) -> Path:
    path = FERRETDB_DATA / f"{svc.database.name}.sqlite"
    if not path.is_file():
        pytest.skip(f"not FerretDB's SQLite handler here ({path} does not exist)")
    return path


async def test_a_write_the_locked_database_refuses_is_a_503_with_retry_after(plumbing):
    svc, http = plumbing
    ok(await http.post("/things"))
    lock = sqlite3.connect(sqlite_file(svc), timeout=5, isolation_level=None)
    try:
        lock.execute("BEGIN EXCLUSIVE")  # FerretDB waits out its busy timeout, then gives up
        resp = await http.post("/things")
        assert resp.status_code == 503, resp.text
        assert resp.headers["Retry-After"] == str(STORE_BUSY_RETRY_AFTER_S)
        assert "database is busy" in resp.json()["error"]["message"]
        assert ok(await http.get("/things")) == {"things": 1}  # reads go on meanwhile
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    ok(await http.post("/things"))
    assert ok(await http.get("/things")) == {"things": 2}
    metrics = (await http.get("/metrics")).text
    assert 'route="/things",service="plumbing",status="503"} 1.0' in metrics
