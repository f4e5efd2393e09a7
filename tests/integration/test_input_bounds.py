"""The bad input issue 12 found, sent to intake, reporting and capa running on the real broker
and database: each request that answered 500, or was wrongly accepted (a date read as a Unix
timestamp, a complaint of 1900, a month in full-width digits, a CAPA's evaluation window
ending in 9999), is now a 422 saying what is wrong and where, and no server error is
counted; the edges of each range still answer, and the OpenAPI states the ranges.
"""

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from faststream.rabbit import RabbitQueue

from services.capa.app import create as create_capa
from services.capa.settings import Settings as CapaSettings
from services.intake.app import create as create_intake
from services.intake.settings import Settings as IntakeSettings
from services.reporting.app import create as create_reporting
from services.reporting.settings import Settings as ReportingSettings
from shared.auth import make_token
from shared.messaging import Topology, new_broker
from shared.service import Service
from shared.vocabulary import ISO_DATE
from tests.conftest import infra_settings, test_namespace
from tests.support import ok, refused

pytestmark = pytest.mark.infra


class Running:
    def __init__(self, service: Service, http: httpx.AsyncClient):
        self.service, self.http = service, http

    def server_errors(self) -> float:
        """5xx answers counted in qms_http_requests_total so far."""
        return sum(s.value for family in self.service.registry.collect()
                   if family.name == "qms_http_requests" for s in family.samples
                   if s.name.endswith("_total") and s.labels["status"].startswith("5"))

    async def refused_at(self, method: str, path: str, loc: str, **kw: Any) -> str:
        """The message of the 422 this request gets, which must name `loc`."""
        before = self.server_errors()
        error = refused(await self.http.request(method, path, **kw), 422)
        assert error["code"] == "invalid" and loc in {d["loc"] for d in error["details"]}, error
        assert loc.split(".", 1)[1] in error["message"]  # the parameter or field, by name
        assert self.server_errors() == before
        return error["message"]


async def running(app, namespace: str, roles: list[str]) -> tuple[Service, Any, httpx.AsyncClient]:
    service: Service = app.state.service
    await service.start()
    broker = new_broker(service.settings.infra.amqp_url.get_secret_value())
    await broker.connect()
    # Where the other services' queues would be: the service's events are routed somewhere.
    sink = await broker.declare_queue(RabbitQueue(f"{namespace}.sink", auto_delete=True))
    await sink.bind(await broker.declare_exchange(Topology(namespace, "test").exchange),
                    routing_key="#")
    token = make_token(service.settings.infra.jwt_secret.get_secret_value(), "wang.fang", roles)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc",
                             headers={"Authorization": f"Bearer {token}"})
    return service, broker, http


@pytest.fixture(scope="module")
async def intake(tmp_path_factory) -> AsyncIterator[Running]:
    namespace = test_namespace(uuid.uuid4().hex[:6])
    settings = IntakeSettings(infra=infra_settings(namespace, relay_interval_s=0.2),
                              attachment_dir=tmp_path_factory.mktemp("attachments"))
    service, broker, http = await running(create_intake(settings), namespace,
                                          ["sales", "auditor"])
    async with http:
        yield Running(service, http)
    await broker.stop()
    await service.stop()


@pytest.fixture(scope="module")
async def reporting() -> AsyncIterator[Running]:
    namespace = test_namespace(uuid.uuid4().hex[:6])
    settings = ReportingSettings(infra=infra_settings(namespace), gauges_refresh_interval_s=3600)
    service, broker, http = await running(create_reporting(settings), namespace, ["manager"])
    async with http:
        yield Running(service, http)
    await broker.stop()
    await service.stop()


@pytest.fixture(scope="module")
async def capa() -> AsyncIterator[Running]:
    namespace = test_namespace(uuid.uuid4().hex[:6])
    service, broker, http = await running(create_capa(CapaSettings(
        infra=infra_settings(namespace))), namespace, ["quality"])
    async with http:
        yield Running(service, http)
    await broker.stop()
    await service.stop()


def body(**kw: Any) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    return {"customer": {"id": f"C-{tag}", "name": f"Bright Motors {tag}"},
            "channel": "phone", "category": "product_quality",
            "description": f"Housings crack at the mounting boss ({tag})."} | kw


ISO = "ISO 8601 with a year from 2000 to 2099"
MONTHS = "a month YYYY-MM from 2000-01 to 2099-12"


@pytest.mark.parametrize("method,path,kw,loc,says", [
    ("GET", "/feedback", {"params": {"page": 10**18}}, "query.page", "10000"),
    ("GET", "/feedback", {"params": {"page": 10**18, "status": "registered"}}, "query.page",
     "10000"),
    ("GET", "/audit/refusals", {"params": {"page": 10**18}}, "query.page", "10000"),
    ("POST", "/feedback", {"json": body(quantity_affected=10**20)}, "body.quantity_affected",
     "1000000000"),
    ("POST", "/feedback", {"json": body(received_at="0001-01-01T00:00:00+05:00")},
     "body.received_at", ISO),
    ("POST", "/feedback", {"json": body(received_at="1900-01-01T00:00:00+00:00")},
     "body.received_at", ISO),
    ("POST", "/feedback", {"json": body(received_at=0)}, "body.received_at", ISO),
    ("GET", "/feedback", {"params": {"received_from": "0001-01-01T00:00:00"}},
     "query.received_from", ISO),
    ("GET", "/feedback", {"params": {"received_from": "9999-12-31T23:59:59"}},
     "query.received_from", ISO),
    ("GET", "/feedback", {"params": {"received_to": "9999-12-31T23:59:59"}},
     "query.received_to", ISO),
    ("GET", "/feedback", {"params": {"received_to": "0001-01-01"}}, "query.received_to", ISO),
    ("GET", "/feedback", {"params": {"received_to": "0.5"}}, "query.received_to", ISO),
    ("GET", "/feedback", {"params": {"received_to": "0"}}, "query.received_to", ISO),
], ids=["page", "page-of-open-work", "audit-page", "quantity-affected", "received-at-year-1",
        "received-at-1900", "received-at-a-number", "received-from-year-1",
        "received-from-9999", "received-to-9999", "received-to-year-1", "received-to-0.5",
        "received-to-0"])
async def test_intake_refuses_bad_input_with_422_saying_what_and_where(intake, method, path,
                                                                       kw, loc, says):
    assert says in await intake.refused_at(method, path, loc, **kw)


async def test_intake_registers_nothing_from_1900_and_no_sample_beyond_a_billion(intake):
    await intake.refused_at("POST", "/feedback", "body.received_at",
                            json=body(received_at="1900-01-01T00:00:00+00:00"))
    refused(await intake.http.get("/feedback/CF-1900-000001"), 404)
    fb = ok(await intake.http.post("/feedback", json=body()), 201)
    await intake.refused_at("POST", f"/feedback/{fb['id']}/samples", "body.quantity",
                            json={"quantity": 10**20, "received_on": "2026-11-20",
                                  "location": "QA lab"})
    await intake.refused_at("POST", f"/feedback/{fb['id']}/samples", "body.received_on",
                            json={"quantity": 2, "received_on": 0, "location": "QA lab"})


async def test_intake_answers_at_the_edges_of_its_ranges(intake):
    first = ok(await intake.http.post("/feedback", json=body(
        received_at="2000-01-01T00:00:00+00:00", quantity_affected=1_000_000_000)), 201)
    assert first["register_no"].startswith("CF-2000-")
    ok(await intake.http.get("/feedback", params={"page": 10_000}))
    ok(await intake.http.get("/feedback", params={"received_from": "2099-12-31T00:00:00Z"}))
    listed = ok(await intake.http.get("/feedback", params={
        "received_from": "2000-01-01", "received_to": "2000-01-01T00:00:00Z"}))
    assert [f["id"] for f in listed["items"]] == [first["id"]]
    now = datetime.now(UTC)
    fb = ok(await intake.http.post("/feedback", json=body(
        received_at=(now - timedelta(hours=1)).isoformat())), 201)
    ok(await intake.http.post(f"/feedback/{fb['id']}/samples", json={
        "quantity": 1_000_000_000, "received_on": now.date().isoformat(), "location": "QA"}))
    assert intake.server_errors() == 0


@pytest.mark.parametrize("path,params,loc,says", [
    ("/register", {"page": 10**18}, "query.page", "10000"),
    ("/statistics/monthly", {"month": "0000-01"}, "query.month", MONTHS),
    ("/statistics/monthly", {"month": "9999-12"}, "query.month", MONTHS),
    ("/statistics/monthly", {"from": "0000-12", "to": "0001-01"}, "query.from", MONTHS),
    ("/statistics/monthly", {"month": "２０２６-01"}, "query.month", MONTHS),
    ("/register", {"month": "２０２６-01"}, "query.month", MONTHS),
    ("/register", {"month": "9999-12"}, "query.month", MONTHS),
    ("/register", {"received_from": "0001-01-01"}, "query.received_from", ISO),
    ("/register", {"received_to": "9999-12-31"}, "query.received_to", ISO),
    ("/register", {"received_to": "0"}, "query.received_to", ISO),
    ("/charts/trend.png", {"month": "9999-12"}, "query.month", MONTHS),
    ("/statistics/monthly", {"from": "2000-01", "to": "2099-12"}, "query.from",
     "at most 60 months"),
    ("/statistics/monthly", {"from": "2026-02", "to": "2026-01"}, "query.from", "after"),
], ids=["page", "month-0000", "month-9999", "from-0000-to-0001", "full-width-month",
        "register-full-width-month", "register-month-9999", "register-from-year-1",
        "register-to-9999", "register-to-0", "trend-chart-9999", "range-too-long",
        "range-backwards"])
async def test_reporting_refuses_bad_input_with_422_saying_what_and_where(reporting, path,
                                                                          params, loc, says):
    assert says in await reporting.refused_at("GET", path, loc, params=params)


async def test_reporting_answers_at_the_edges_of_its_ranges(reporting):
    ok(await reporting.http.get("/statistics/monthly", params={"month": "2000-01"}))
    ok(await reporting.http.get("/statistics/monthly", params={"from": "2099-01",
                                                               "to": "2099-12"}))
    for month in ("2000-01", "2099-12"):
        chart = await reporting.http.get("/charts/trend.png", params={"month": month})
        assert chart.status_code == 200 and chart.content.startswith(b"\x89PNG")
    ok(await reporting.http.get("/register", params={"month": "2099-12", "page": 10_000}))
    ok(await reporting.http.get("/register", params={"received_to": "2000-01-01"}))
    assert reporting.server_errors() == 0


SAMPLE = {"quantity": 2, "location": "QA lab"}


@pytest.mark.parametrize("received_on", ["9999-12-31", "1900-01-01", "0001-01-01"])
async def test_p_5_3_1_a_returned_sample_received_beyond_the_years_is_refused(intake,
                                                                            received_on):
    fb = ok(await intake.http.post("/feedback", json=body()), 201)
    message = await intake.refused_at("POST", f"/feedback/{fb['id']}/samples",
                                      "body.received_on",
                                      json=SAMPLE | {"received_on": received_on})
    assert ISO in message
    assert ok(await intake.http.get(f"/feedback/{fb['id']}"))["samples"] == []


async def test_p_5_3_1_a_sample_received_in_2000_or_2099_is_noted_once(intake):
    fb = ok(await intake.http.post("/feedback", json=body()), 201)
    for day in ("2000-01-01", "2099-12-31"):
        note = SAMPLE | {"received_on": day}
        ok(await intake.http.post(f"/feedback/{fb['id']}/samples", json=note), 201)
        ok(await intake.http.post(f"/feedback/{fb['id']}/samples", json=note), 200)  # a retry
    samples = ok(await intake.http.get(f"/feedback/{fb['id']}"))["samples"]
    assert [s["received_on"] for s in samples] == ["2000-01-01", "2099-12-31"]
    assert intake.server_errors() == 0


async def implemented_capa(capa: Running, due_date: str = "2027-01-31") -> str:
    """A CAPA Quality opened, planned and implemented: its effectiveness is next."""
    opened = ok(await capa.http.post("/capas", json={"title": "Cracked housings HSG-220"}), 201)
    ref = opened["id"]
    ok(await capa.http.put(f"/capas/{ref}/root-cause", json={
        "statement": "Mould M-17 has no wear check in its PM plan.", "category": "method"}))
    ok(await capa.http.put(f"/capas/{ref}/plan", json={"actions": [
        {"description": "Add a cavity wear check", "owner": "Sun Mei", "due_date": due_date}]}))
    ok(await capa.http.post(f"/capas/{ref}/implemented", json={"note": "PM plan updated"}))
    return ref


def check(window_from: str, window_to: str) -> dict[str, Any]:
    return {"criteria": "No cracked housing for 3 months", "window_from": window_from,
            "window_to": window_to, "evaluation": "None in the window", "effective": True}


@pytest.mark.parametrize("window_from,window_to,loc", [
    ("2026-01-01", "9999-12-31", "body.window_to"),
    ("0001-01-01", "2001-01-31", "body.window_from"),
    ("1999-12-01", "1999-12-31", "body.window_from"),
], ids=["window-to-9999", "window-from-year-1", "window-in-1999"])
async def test_p_5_3_4_an_effectiveness_window_beyond_the_years_is_refused(capa, window_from,
                                                                         window_to, loc):
    ref = await implemented_capa(capa)
    assert ISO in await capa.refused_at("POST", f"/capas/{ref}/effectiveness", loc,
                                        json=check(window_from, window_to))
    assert ok(await capa.http.get(f"/capas/{ref}"))["status"] == "implemented"


@pytest.mark.parametrize("due_date", ["9999-12-31", "0001-01-01"])
async def test_p_5_3_4_an_action_due_beyond_the_years_is_refused(capa, due_date):
    opened = ok(await capa.http.post("/capas", json={"title": "Cracked housings"}), 201)
    assert ISO in await capa.refused_at(
        "PUT", f"/capas/{opened['id']}/plan", "body.actions.0.due_date",
        json={"actions": [{"description": "Wear check", "owner": "Sun Mei",
                           "due_date": due_date}]})
    assert ok(await capa.http.get(f"/capas/{opened['id']}"))["actions"] == []


async def test_p_5_3_4_capa_answers_at_the_edges_of_its_years(capa):
    ref = await implemented_capa(capa, due_date="2099-12-31")
    verified = ok(await capa.http.post(f"/capas/{ref}/effectiveness",
                                       json=check("2000-01-01", "2000-03-31")))
    assert verified["status"] == "effective"
    assert verified["actions"][0]["due_date"] == "2099-12-31"
    assert verified["verifications"][0]["window_to"] == "2000-03-31"
    # A window still running is refused for what it is, up to the last day of the years
    ref = await implemented_capa(capa)
    early = refused(await capa.http.post(f"/capas/{ref}/effectiveness",
                                         json=check("2026-01-01", "2099-12-31")), 409)
    assert "2100-01-01" in early["message"]
    assert capa.server_errors() == 0


async def test_the_openapi_states_the_years_of_every_date_people_send(capa, intake):
    def schema(doc: dict[str, Any], name: str) -> dict[str, Any]:
        return doc["components"]["schemas"][name]["properties"]

    capa_doc = ok(await capa.http.get("/openapi.json"))
    for name, field in (("EffectivenessInput", "window_from"),
                        ("EffectivenessInput", "window_to"), ("ItemInput", "due_date")):
        assert schema(capa_doc, name)[field]["pattern"] == ISO_DATE, (name, field)
    intake_doc = ok(await intake.http.get("/openapi.json"))
    assert schema(intake_doc, "ReturnedSampleInput")["received_on"]["pattern"] == ISO_DATE
