"""capa's cost does not grow with history: every read of its steady state, on the real servers.

On FerretDB's SQLite handler any read but an `_id` lookup reads a whole collection. So once
capa has started, its gauges' timer, its event handlers and its request paths about one
record or about open work read by `_id` (records, and the lookups `capa_numbers`,
`recurrence_links`, `withdrawn_feedback`) or read `actions_open` / `capas_open`, whose size
follows the open work. The service runs in this process; Quality's and Sales' events are
published on the real exchange; the HTTP API is called in-process. The lists of history
(no status, or a closed one; e.g. `GET /actions?feedback_id=…`) list a period: they read its
days in `actions_days` / `capas_days` by `_id`, then its records by `_id`.
"""

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from services.capa.app import build
from services.capa.domain import ActionItem, ActionRequest, ActionStatus, Capa, CapaCreate
from services.capa.handlers import NUMBERS, add_numbered, capa_id_for
from services.capa.settings import Settings
from shared.auth import make_token
from shared.contracts import (
    CountermeasuresRejected,
    CountermeasuresVerified,
    EvidenceAdded,
    FeedbackWithdrawn,
    RecurrenceDetected,
    ResponsibilityAssigned,
    UnitRequest,
)
from shared.events import Actor, Contract, Envelope, make_event, utcnow
from shared.lookups import BUILT
from shared.messaging import EventPublisher, new_broker
from shared.service import Service, create_app
from shared.store import mongo_client
from shared.vocabulary import ReturnedSample
from tests import reads
from tests.conftest import infra_settings, test_namespace
from tests.support import eventually, ok, refused

pytestmark = pytest.mark.infra
WAIT = 60.0  # seconds: generous, the machine is shared

QUALITY = Actor(sub="li.wei", name="Li Wei", roles=("quality",))
SALES = Actor(sub="wang.fang", name="Wang Fang", roles=("sales",))
PAST, FUTURE = "2020-01-15", "2099-12-31"  # due dates: overdue, and not (2000-2099)


@dataclass
class Capa_:
    svc: Service
    log: reads.ReadLog
    publisher: EventPublisher
    http: httpx.AsyncClient

    def headers(self, role: str, unit: str | None = None) -> dict[str, str]:
        secret = self.svc.settings.infra.jwt_secret.get_secret_value()
        token = make_token(secret, f"{role}.tester", [role], unit=unit)
        return {"Authorization": f"Bearer {token}"}

    async def publish(self, payload: Contract, correlation_id: str,
                      actor: Actor = QUALITY) -> Envelope:
        event = make_event(payload, producer="quality", correlation_id=correlation_id,
                           actor=actor)
        await self.publisher.publish(event)
        return event

    async def action(self, action_id: str) -> ActionRequest | None:
        return await self.svc.repo("actions").get(action_id)

    async def capa(self, capa_id: str) -> Capa | None:
        return await self.svc.repo("capas").get(capa_id)


@pytest.fixture
async def capa(request: pytest.FixtureRequest) -> AsyncIterator[Capa_]:
    """capa, its gauges refreshed every 0.2 s (or every `request.param` s)."""
    namespace = test_namespace(uuid.uuid4().hex[:6])
    log = reads.install(namespace)  # before the service makes its database client
    infra = infra_settings(namespace, retry_delay_ms=200, max_attempts=3, relay_interval_s=0.2)
    svc = build(Settings(infra=infra, metrics_interval_s=getattr(request, "param", 0.2)))
    await svc.start()
    broker = new_broker(infra.amqp_url.get_secret_value())
    await broker.connect()
    app = create_app(svc, title="capa", description="")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://capa") as http:
        fixture = Capa_(svc, log, EventPublisher(broker, svc.topology.exchange), http)
        yield fixture
    await broker.stop()
    if fixture.svc.started:  # a test may have restarted it
        await fixture.svc.stop()
    client = mongo_client(svc.settings.database_url)
    await client.drop_database(f"{namespace}_capa")
    await client.close()


def assigned(feedback_id: str, units: dict[str, str]) -> ResponsibilityAssigned:
    return ResponsibilityAssigned(
        feedback_id=feedback_id, register_no=f"CF-2026-{uuid.uuid4().int % 10**6:06d}",
        round=1, preliminary_cause="Cracks at the mounting boss", defect_code="D03",
        customer_id="C-1001", product_code="HSG-220",
        units=[UnitRequest(unit=u, request="Find the root cause and contain", action_id=a)
               for u, a in units.items()])


def items(due: str) -> list[ActionItem]:
    return [ActionItem(no=1, description="Replace the insert", owner="Zhao Lei",
                       due_date=date.fromisoformat(due))]


HISTORY = 12  # closed action requests (and half as many withdrawn CAPAs)


async def load_history(svc: Service, n: int = HISTORY) -> None:
    """Closed records with overdue items: the steady state must neither read nor count them."""
    actions = svc.repo("actions")
    for i in range(n):
        fid, action_id = str(uuid.uuid4()), str(uuid.uuid4())
        a = ActionRequest.open(UnitRequest(unit="production", request="r", action_id=action_id),
                               assigned(fid, {"production": action_id}), QUALITY,
                               str(uuid.uuid4()))
        a.corrective = items(PAST)
        if i % 2:
            a.withdraw("registered in error", SALES, str(uuid.uuid4()))
        else:
            a.status = ActionStatus.COMPLETED
        await actions.add(a)
    for _ in range(n // 2):
        c = await add_numbered(svc.repo("capas"), lambda number: Capa.by_hand(
            str(uuid.uuid4()), number, CapaCreate(title="Old CAPA"), QUALITY))
        await svc.repo("capas").change(c.id, lambda c: c.withdraw("overtaken", QUALITY))


INVESTIGATION: dict[str, Any] = {
    "containment": "Shipments of the lot stopped; stock sorted 100%.",
    "root_cause": {"five_whys": ["Housing cracks", "Wall too thin", "Cavity worn"],
                   "category": "machine", "statement": "Worn cavity gives a thin wall."},
    "corrective": [{"description": "Replace the insert", "owner": "Zhao Lei",
                    "due_date": PAST}],
    "preventive": [{"description": "Add wear to the PM checklist", "owner": "Sun Mei",
                    "due_date": FUTURE}],
}


async def test_timer_handlers_and_requests_read_by_id_or_open_work_only(capa: Capa_):
    svc, http = capa.svc, capa.http
    await load_history(svc)
    await eventually(lambda: _quiet(svc), timeout=WAIT,
                     what="the start-up sweep and rebuild to end")

    capa.log.recording = True
    # -- Quality assigns two units; the units investigate and submit ----------------------
    fid, a1, a2 = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    await capa.publish(assigned(fid, {"production": a1, "logistics": a2}), fid)

    async def both_opened() -> bool:
        return None not in [await capa.action(a1), await capa.action(a2)]
    await eventually(both_opened, timeout=WAIT, what="both action requests")
    for unit, action_id in (("production", a1), ("logistics", a2)):
        as_unit = capa.headers("unit", unit)
        ok(await http.put(f"/actions/{action_id}/investigation", json=INVESTIGATION,
                          headers=as_unit))
        ok(await http.post(f"/actions/{action_id}/submit", headers=as_unit))
    # -- Quality verifies one, returns the other; Sales adds evidence ---------------------
    await capa.publish(CountermeasuresVerified(feedback_id=fid, action_id=a1, unit="production",
                                               note="Verified on site"), fid)
    await capa.publish(CountermeasuresRejected(feedback_id=fid, action_id=a2, unit="logistics",
                                               reason="The root cause is not shown"), fid)
    await capa.publish(EvidenceAdded(feedback_id=fid, register_no="CF-2026-000001",
                                     sample=ReturnedSample(quantity=3, received_on=date.today(),
                                                           location="QA lab shelf B3")),
                       fid, SALES)

    async def decided() -> bool:
        one, two = await capa.action(a1), await capa.action(a2)
        return bool(one and two and one.status == ActionStatus.ACCEPTED
                    and two.status == ActionStatus.RETURNED and one.complaint.samples
                    and two.complaint.samples)
    await eventually(decided, timeout=WAIT, what="Quality's decisions and the evidence applied")
    ok(await http.post(f"/actions/{a1}/items/corrective/1/done",
                       headers=capa.headers("unit", "production")))
    # -- the units' and Quality's lists of open work, one record, its history ------------
    quality = capa.headers("quality")
    returned = ok(await http.get("/actions", params={"status": "returned"}, headers=quality))
    assert [a["id"] for a in returned["items"]] == [a2] and returned["total"] == 1
    mine = ok(await http.get("/actions", params={"status": "accepted"},
                             headers=capa.headers("unit", "production")))
    assert [a["id"] for a in mine["items"]] == [a1]
    ok(await http.get(f"/actions/{a1}", headers=quality))
    ok(await http.get(f"/actions/{a1}/history", headers=quality))
    # -- Sales withdraws complaints: before and after Quality's assignment ---------------
    fid2, b1 = str(uuid.uuid4()), str(uuid.uuid4())
    await capa.publish(assigned(fid2, {"production": b1}), fid2)
    await eventually(lambda: capa.action(b1), timeout=WAIT, what="the request to withdraw")
    await capa.publish(FeedbackWithdrawn(feedback_id=fid2, register_no="CF-2026-000002",
                                         reason="Registered twice"), fid2, SALES)
    fid3, c1 = str(uuid.uuid4()), str(uuid.uuid4())
    await capa.publish(FeedbackWithdrawn(feedback_id=fid3, register_no="CF-2026-000003",
                                         reason="Registered in error"), fid3, SALES)
    await eventually(lambda: _withdrawn_remembered(svc, fid3), timeout=WAIT, what="the withdrawal")
    await capa.publish(assigned(fid3, {"production": c1}), fid3)

    async def both_withdrawn() -> bool:
        return all(a is not None and a.status == ActionStatus.WITHDRAWN
                   for a in [await capa.action(b1), await capa.action(c1)])
    await eventually(both_withdrawn, timeout=WAIT, what="both requests withdrawn")
    # -- a recurrence opens a CAPA; the same kind again joins it; redeliveries do nothing -
    kind = f"customer:C-{uuid.uuid4().hex[:6]}|defect:D03"
    first = await capa.publish(RecurrenceDetected(kind=kind, reason="recurred",
                                                  feedback_ids=[fid], defect_code="D03"), fid)
    opened = await eventually(lambda: capa.capa(capa_id_for(first.id)), timeout=WAIT,
                              what="the CAPA")
    assert opened is not None
    second = await capa.publish(RecurrenceDetected(kind=kind, reason="unimproved",
                                                   feedback_ids=[fid2], defect_code="D03"), fid2)

    async def linked() -> bool:
        c = await capa.capa(opened.id)
        return c is not None and fid2 in c.feedback_ids
    await eventually(linked, timeout=WAIT, what="the second recurrence linked to the open CAPA")
    joined = await capa.capa(opened.id)
    before = await _consumed(svc, "complaint.recurrence_detected")
    await capa.publisher.publish(first)
    await capa.publisher.publish(second)
    await eventually(lambda: _consumed_at_least(svc, "complaint.recurrence_detected",
                                                before + 2), timeout=WAIT, what="the redeliveries")
    again = await capa.capa(opened.id)
    assert joined is not None and again is not None and again.version == joined.version
    assert again.feedback_ids == [fid, fid2]
    # -- Quality opens a CAPA by hand and works on it by number ---------------------------
    by_hand = ok(await http.post("/capas", json={"title": "Cracked housings",
                                                 "owner_unit": "production"}, headers=quality),
                 201)
    number = by_hand["number"]
    ok(await http.get(f"/capas/{number}", headers=quality))
    refused(await http.get("/capas/CAPA-2026-9999", headers=quality), 404)  # one `_id` read
    ok(await http.put(f"/capas/{number}/root-cause", headers=quality,
                      json={"statement": "Worn cavity", "category": "machine"}))
    planned = ok(await http.put(f"/capas/{number}/plan", headers=quality, json={"actions": [
        {"description": "Wear check in the PM plan", "owner": "Sun Mei", "due_date": PAST}]}))
    assert planned["status"] == "planned"
    listed = ok(await http.get("/capas", params={"status": "planned"}, headers=quality))
    assert [c["id"] for c in listed["items"]] == [by_hand["id"]]
    mine = ok(await http.get("/capas", params={"status": "planned"},
                             headers=capa.headers("unit", "production")))
    assert [c["id"] for c in mine["items"]] == [by_hand["id"]]
    ok(await http.get(f"/capas/{by_hand['id']}/history", headers=quality))
    # -- the gauges' timer: open CAPAs and overdue items, history left out ----------------
    expected = {("qms_capa_open", "open"): 1, ("qms_capa_open", "planned"): 1,
                ("qms_capa_overdue_actions", "action_request"): 1,  # a2's corrective
                ("qms_capa_overdue_actions", "capa"): 1}

    async def gauges_right() -> bool:
        return all(_gauge(svc.registry, name, label) == value
                   for (name, label), value in expected.items())
    await eventually(gauges_right, timeout=WAIT, what=f"the gauges to show {expected}")
    # -- the lists of history: a period's records, through `*_days`, then by `_id` ----------
    production = capa.headers("unit", "production")
    everything = ok(await http.get("/actions", headers=quality))
    assert everything["total"] == HISTORY + 4 and everything["period"]  # a1 a2 b1 c1
    completed = ok(await http.get("/actions", params={"status": "completed"}, headers=quality))
    assert completed["total"] == len(range(0, HISTORY, 2))
    story = ok(await http.get("/actions", params={"feedback_id": fid}, headers=quality))
    assert {a["id"] for a in story["items"]} == {a1, a2}
    mine = ok(await http.get("/actions", params={"feedback_id": fid}, headers=production))
    assert [a["id"] for a in mine["items"]] == [a1], "a unit sees its own only"
    since = utcnow() - timedelta(minutes=30)
    page = ok(await http.get("/actions", params={"unit": "production", "from": since.isoformat(),
                                                 "page_size": 2}, headers=quality))
    assert page["total"] == HISTORY + 3 and len(page["items"]) == 2  # all but a2 (logistics)
    assert _at(page["period"]["start"]) == since
    capas = ok(await http.get("/capas", headers=quality))
    assert capas["total"] == HISTORY // 2 + 2 and capas["period"]  # the recurrence, by hand
    withdrawn = ok(await http.get("/capas", params={"status": "withdrawn"}, headers=quality))
    assert withdrawn["total"] == HISTORY // 2
    linked = ok(await http.get("/capas", params={"feedback_id": fid2}, headers=quality))
    assert [c["id"] for c in linked["items"]] == [opened.id]
    owned = ok(await http.get("/capas", headers=production))
    # The recurrence's CAPA is production's by default (named first for fid), unconfirmed.
    assert {c["id"] for c in owned["items"]} == {by_hand["id"], opened.id}, \
        "a unit sees those it owns"
    capa.log.recording = False

    assert capa.log.reads, "the listener saw no command: it is not installed"
    unbounded = capa.log.unbounded()
    assert not unbounded, "reads that grow with history:\n" + "\n".join(
        f"{r.collection}.{r.command} {r.filter}" for r in unbounded)


# The gauges' timer reads the open work too: every 0.2 s it could fall in the recorded request.
@pytest.mark.parametrize("capa", [3600.0], indirect=True)
async def test_a_units_inbox_rows_come_from_the_open_work_alone_and_only_its_own(
        capa: Capa_):
    """`GET /actions/inbox`: open action requests as rows from `actions_open` alone (no
    record read); a unit sees its own only; an older summary is completed once."""
    await load_history(capa.svc, n=4)
    fid = str(uuid.uuid4())
    ids = {"production": f"{fid}-production-r1", "purchasing": f"{fid}-purchasing-r1"}
    form = assigned(fid, ids)
    await capa.publish(form, fid)
    for action_id in ids.values():
        await eventually(lambda a=action_id: capa.action(a), what="the request to arrive",
                         timeout=WAIT)
    capa.log.reads.clear()
    capa.log.recording = True
    every = ok(await capa.http.get("/actions/inbox", headers=capa.headers("quality")))
    capa.log.recording = False
    finds = [r.collection for r in capa.log.reads if r.command == "find"]
    assert finds.count("actions_open") == 1 and "actions" not in finds, "no record read"
    assert every["counts"] == {"requested": 2}
    rows = {r["id"]: r for r in every["items"]}
    assert set(rows) == set(ids.values())
    full = ok(await capa.http.get(f"/actions/{ids['production']}",
                                  headers=capa.headers("quality")))
    row = rows[ids["production"]]
    assert {k: row[k] for k in row} == {k: full[k] for k in row}
    assert row["register_no"] == form.register_no and row["request"] == form.units[0].request

    own = ok(await capa.http.get("/actions/inbox",
                                 headers=capa.headers("unit", unit="purchasing")))
    assert [r["id"] for r in own["items"]] == [ids["purchasing"]]
    assert own["counts"] == {"requested": 1}, "another unit's requests are not even counted"
    refused(await capa.http.get("/actions/inbox", params={"status": "completed"},
                                headers=capa.headers("quality")), 422)

    # A summary from before the inbox's rows: the row is made from the record, and kept.
    opened = capa.svc.repo("actions").open_work.collection
    await opened.update_one({"_id": ids["production"]}, {"$unset": {"register_no": ""}})
    capa.svc.repo("actions").open_work.forget()  # changed behind its back: a restart
    again = ok(await capa.http.get("/actions/inbox", headers=capa.headers("quality")))
    assert {r["id"]: r for r in again["items"]}[ids["production"]] == row
    assert (await opened.find_one({"_id": ids["production"]}))["register_no"] == form.register_no


async def test_a_capa_older_than_the_number_lookup_is_found_after_the_next_start(
        capa: Capa_):
    """A CAPA stored before numbers were claimed first: asked for by number, it is not
    found (nothing scans for it) until the next start names the older CAPAs, once."""
    svc, quality = capa.svc, capa.headers("quality")
    await eventually(lambda: _quiet(svc), timeout=WAIT,
                     what="the start-up sweep and rebuild to end")
    old = Capa.by_hand(str(uuid.uuid4()), "CAPA-2025-0042", CapaCreate(title="Old"), QUALITY)
    await svc.repo("capas").add(old)
    await svc.database[NUMBERS].delete_one({"_id": BUILT})
    refused(await capa.http.get("/capas/CAPA-2025-0042", headers=quality), 404)

    await svc.stop()
    capa.svc = restarted = build(svc.settings)
    await restarted.start()
    await eventually(lambda: _quiet(restarted), timeout=WAIT, what="the one-time build")
    app = create_app(restarted, title="capa", description="")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://capa") as http:
        capa.log.recording = True
        assert ok(await http.get("/capas/CAPA-2025-0042", headers=quality))["id"] == old.id
        refused(await http.get("/capas/CAPA-2025-9999", headers=quality), 404)
        capa.log.recording = False
    assert capa.log.reads and not capa.log.unbounded(), "\n".join(
        f"{r.collection}.{r.command} {r.filter}" for r in capa.log.unbounded())


async def test_records_from_before_the_default_period_are_listed_when_it_is_asked(
        capa: Capa_):
    svc, quality = capa.svc, capa.headers("quality")
    long_ago = (utcnow() - timedelta(days=svc.settings.infra.history_days + 30)).replace(
        microsecond=0)  # as BSON keeps it
    fid = str(uuid.uuid4())
    for at in (long_ago, utcnow()):
        action_id = str(uuid.uuid4())
        action = ActionRequest.open(UnitRequest(unit="production", request="r",
                                                action_id=action_id),
                                    assigned(fid, {"production": action_id}), QUALITY,
                                    str(uuid.uuid4()))
        action.requested_at = at
        await svc.repo("actions").add(action)
        await add_numbered(svc.repo("capas"), lambda number, at=at: Capa.by_hand(
            str(uuid.uuid4()), number, CapaCreate(title="Cracks", feedback_ids=[fid]),
            QUALITY).model_copy(update={"opened_at": at}))
    await eventually(lambda: _quiet(svc), timeout=WAIT,
                     what="the start-up sweep and rebuild to end")
    around = {"from": (long_ago - timedelta(hours=1)).isoformat(),
              "to": (long_ago + timedelta(hours=1)).isoformat()}

    capa.log.recording = True
    for path, at in (("/actions", "requested_at"), ("/capas", "opened_at")):
        default = ok(await capa.http.get(path, params={"feedback_id": fid}, headers=quality))
        assert [_at(i[at]) > long_ago for i in default["items"]] == [True]
        assert _at(default["period"]["start"]) > long_ago
        asked = ok(await capa.http.get(path, params={"feedback_id": fid} | around,
                                       headers=quality))
        assert [_at(i[at]) for i in asked["items"]] == [long_ago] == \
            [_at(asked["period"]["start"]) + timedelta(hours=1)]
        error = refused(await capa.http.get(path, headers=quality, params={
            "from": around["to"], "to": around["from"]}), 422)
        assert error["details"][0]["loc"] == "query.from"
    capa.log.recording = False
    unbounded = capa.log.unbounded()
    assert not unbounded, "reads that grow with history:\n" + "\n".join(
        f"{r.collection}.{r.command} {r.filter}" for r in unbounded)


def _at(text: str) -> datetime:
    at = datetime.fromisoformat(text)
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


async def _quiet(svc: Service) -> bool:
    return svc.settled()


async def _withdrawn_remembered(svc: Service, feedback_id: str) -> bool:
    return await svc.database["withdrawn_feedback"].find_one({"_id": feedback_id}) is not None


def _gauge(registry: CollectorRegistry, name: str, label: str) -> float | None:
    for family in registry.collect():
        for s in family.samples:
            if s.name == name and label in s.labels.values():
                return s.value
    return None


async def _consumed(svc: Service, event_type: str) -> float:
    return sum(s.value for family in svc.registry.collect() for s in family.samples
               if s.name == "qms_events_consumed_total" and s.labels.get("type") == event_type
               and s.labels.get("outcome") == "applied")


async def _consumed_at_least(svc: Service, event_type: str, count: float) -> bool:
    return await _consumed(svc, event_type) >= count
