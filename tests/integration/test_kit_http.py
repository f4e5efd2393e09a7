"""The HTTP plumbing every service shares: auth, the error shape, limits, health and metrics."""

import time
import uuid

import httpx
import jwt
import pytest
from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from shared.auth import Principal, make_token, require
from shared.errors import Conflict
from shared.service import Service, create_app
from shared.settings import ServiceSettings
from tests.conftest import infra_settings, test_namespace


class Thing(BaseModel):
    name: str = Field(..., min_length=1)
    count: int = Field(..., ge=1)


@pytest.fixture
async def client():
    infra = infra_settings(test_namespace(uuid.uuid4().hex[:6]), max_body_bytes=2048)
    svc = Service("plumbing", ServiceSettings(infra=infra))
    router = APIRouter()

    @router.post("/things/{thing_id}")
    async def make_thing(thing_id: str, body: Thing,
                         who: Principal = Depends(require("quality"))) -> dict:
        if thing_id == "taken":
            raise Conflict("Thing 'taken' exists already.")
        return {"id": thing_id, "by": who.sub}

    svc.routers.append(router)
    app = create_app(svc, title="t", description="t")
    await svc.start()
    secret = infra.jwt_secret.get_secret_value()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as c:
        c.secret = secret
        yield c
    await svc.stop()


def bearer(secret: str, roles: list[str], **kw) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(secret, 'li.wei', roles, **kw)}"}


def assert_error_shape(resp: httpx.Response, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["details"], list)
    return body["error"]


async def test_missing_token_is_401_with_the_error_shape(client):
    err = assert_error_shape(await client.post("/things/a", json={"name": "x", "count": 1}),
                             401, "unauthorized")
    assert "bearer token" in err["message"].lower()


async def test_forged_or_expired_token_is_401(client):
    forged = make_token("another-secret-of-sufficient-length-000", "x", ["quality"])
    resp = await client.post("/things/a", json={"name": "x", "count": 1},
                             headers={"Authorization": f"Bearer {forged}"})
    assert_error_shape(resp, 401, "unauthorized")
    expired = make_token(client.secret, "x", ["quality"], ttl_s=-10)
    resp = await client.post("/things/a", json={"name": "x", "count": 1},
                             headers={"Authorization": f"Bearer {expired}"})
    assert "expired" in assert_error_shape(resp, 401, "unauthorized")["message"]


async def test_wrong_role_is_403_naming_the_role_needed(client):
    resp = await client.post("/things/a", json={"name": "x", "count": 1},
                             headers=bearer(client.secret, ["sales"]))
    err = assert_error_shape(resp, 403, "forbidden")
    assert "'quality'" in err["message"]
    # The refusal is the only trace, and auditors can read it.
    audit = await client.get("/audit/refusals", headers=bearer(client.secret, ["auditor"]))
    [refusal] = audit.json()["items"]
    assert refusal["sub"] == "li.wei" and refusal["path"] == "/things/a"


async def test_unit_role_token_without_unit_is_refused(client):
    token = jwt.encode({"sub": "u", "roles": ["unit"], "exp": int(time.time()) + 600},
                       client.secret, algorithm="HS256")
    resp = await client.post("/things/a", json={"name": "x", "count": 1},
                             headers={"Authorization": f"Bearer {token}"})
    assert "responsible unit" in assert_error_shape(resp, 401, "unauthorized")["message"]


async def test_a_token_living_longer_than_the_maximum_is_401_saying_so(client):
    ten_years = make_token(client.secret, "x", ["quality"], ttl_s=10 * 365 * 86400)
    resp = await client.post("/things/a", json={"name": "x", "count": 1},
                             headers={"Authorization": f"Bearer {ten_years}"})
    message = assert_error_shape(resp, 401, "unauthorized")["message"]
    assert "lives too long" in message and "QMS_TOKEN_MAX_LIFETIME_S" in message


async def test_invalid_body_is_422_saying_what_and_where(client):
    resp = await client.post("/things/a", json={"name": "", "count": 0},
                             headers=bearer(client.secret, ["quality"]))
    err = assert_error_shape(resp, 422, "invalid")
    locs = {d["loc"] for d in err["details"]}
    assert locs == {"body.name", "body.count"}
    assert "body." in err["message"]
    resp = await client.post("/things/a", content=b"{not json",
                             headers=bearer(client.secret, ["quality"]) |
                             {"content-type": "application/json"})
    assert_error_shape(resp, 422, "invalid")


async def test_domain_conflict_is_409_and_body_too_large_is_413(client):
    resp = await client.post("/things/taken", json={"name": "x", "count": 1},
                             headers=bearer(client.secret, ["quality"]))
    assert "exists already" in assert_error_shape(resp, 409, "conflict")["message"]
    resp = await client.post("/things/a", json={"name": "x" * 5000, "count": 1},
                             headers=bearer(client.secret, ["quality"]))
    assert_error_shape(resp, 413, "too_large")


async def test_health_ready_and_metrics_need_no_token(client):
    assert (await client.get("/healthz")).json()["status"] == "ok"
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"broker": "ok", "database": "ok"}
    await client.post("/things/b", json={"name": "x", "count": 1},
                      headers=bearer(client.secret, ["quality"]))
    metrics = (await client.get("/metrics")).text
    assert 'route="/things/{thing_id}"' in metrics  # labelled by template, not by raw path
    assert "qms_http_requests_total" in metrics


async def test_event_catalogue_documents_every_contract_for_plant_systems(client):
    from shared.events import registered_contracts

    spec = (await client.get("/asyncapi.json")).json()
    assert spec["asyncapi"] == "3.0.0"
    addresses = {c["address"] for c in spec["channels"].values()}
    public = {t for t, _ in registered_contracts() if not t.startswith(("kit.", "unit."))}
    assert addresses == public and "complaint.escalated" in addresses
    exchange = next(iter(spec["channels"].values()))["bindings"]["amqp"]["exchange"]
    assert exchange["type"] == "topic" and exchange["name"].endswith(".events")
