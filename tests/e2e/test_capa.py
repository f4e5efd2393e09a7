"""capa end to end: responsible units answer Quality's requests; Quality runs formal CAPAs.

The tests play Quality's side by publishing its events on the exchange, act as
the units and Quality through capa's HTTP API, and watch what capa publishes
through a queue of their own bound to the exchange.
"""

import hashlib
import os
import re
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from shared.contracts import (
    CountermeasuresRejected,
    CountermeasuresVerified,
    FeedbackWithdrawn,
    RecurrenceDetected,
    ResponsibilityAssigned,
    UnitRequest,
)
from shared.events import Actor, make_event
from tests.e2e.flow import Flow
from tests.e2e.harness import Actors, EventTap, System
from tests.support import eventually, ok, refused

QUALITY = Actor(sub="li.wei", name="Li Wei", roles=("quality",))
SALES = Actor(sub="wang.fang", name="Wang Fang", roles=("sales",))

COMPLETE_INVESTIGATION: dict[str, Any] = {
    "containment": "Shipments of lot L2026-11-03 stopped; stock sorted 100%.",
    "root_cause": {"five_whys": ["Housing cracks at the boss", "Wall too thin at the rib",
                                 "Cavity 2 of mould M-17 worn"],
                   "category": "machine",
                   "statement": "Worn cavity 2 of mould M-17 gives a thin wall at the rib."},
    "corrective": [{"description": "Replace the insert of cavity 2", "owner": "Zhao Lei",
                    "due_date": "2026-12-15"}],
    "preventive": [{"description": "Add cavity wear to the mould PM checklist",
                    "owner": "Sun Mei", "due_date": "2026-12-31"}],
}


# ------------------------------------------------------------------ fixtures


@pytest.fixture
async def tap(system: System) -> AsyncIterator[EventTap]:
    async with EventTap(system, "action.#", "capa.#") as events:
        yield events


@pytest.fixture
async def unit(actors: Actors) -> AsyncIterator[Callable[[str], httpx.AsyncClient]]:
    """`unit("production")`: a signed-in person of that responsible unit, on capa."""
    clients: list[httpx.AsyncClient] = []

    def client(name: str) -> httpx.AsyncClient:
        clients.append(actors.unit(name))
        return clients[-1]

    yield client
    for c in clients:
        await c.aclose()


@pytest.fixture
async def capa_as(system: System) -> AsyncIterator[Callable[[str], httpx.AsyncClient]]:
    """`capa_as("manager")`: a client on capa with that role."""
    clients: list[httpx.AsyncClient] = []

    def client(role: str) -> httpx.AsyncClient:
        clients.append(system.client("capa", role, sub=f"{role}.tester"))
        return clients[-1]

    yield client
    for c in clients:
        await c.aclose()


# ------------------------------------------------------------------ Quality's side


async def assign(system: System, *units: str,
                 feedback_id: str | None = None) -> tuple[str, dict[str, str]]:
    """Quality assigns responsibility for a (new) complaint; returns its id and the action ids."""
    feedback_id = feedback_id or str(uuid.uuid4())
    actions = {u: str(uuid.uuid4()) for u in units}
    await system.publish(ResponsibilityAssigned(
        feedback_id=feedback_id, register_no=f"CF-2026-{uuid.uuid4().int % 10**6:06d}",
        round=1, preliminary_cause="Cracks at the mounting boss", defect_code="D03",
        customer_id=f"C-{uuid.uuid4().hex[:6]}", product_code="HSG-220",
        units=[UnitRequest(unit=u, request=f"{u}: find the root cause and contain",
                           action_id=a) for u, a in actions.items()],
    ), correlation_id=feedback_id, actor=QUALITY, producer="quality")
    return feedback_id, actions


async def arrived(client: httpx.AsyncClient, action_id: str, **expect: Any) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        resp = await client.get(f"/actions/{action_id}")
        body = resp.json() if resp.status_code == 200 else {}
        return body if body and all(body.get(k) == v for k, v in expect.items()) else None
    return await eventually(check, what=f"action request {action_id} {expect}")


async def quality_decides(system: System, feedback_id: str, action_id: str, unit: str,
                          reason: str | None = None) -> None:
    payload = (CountermeasuresRejected(feedback_id=feedback_id, action_id=action_id, unit=unit,
                                       reason=reason) if reason else
               CountermeasuresVerified(feedback_id=feedback_id, action_id=action_id, unit=unit,
                                       note="Verified on site"))
    await system.publish(payload, correlation_id=feedback_id, actor=QUALITY, producer="quality")


async def handled(system: System, event_type: str) -> float:
    """How many events of this type capa has applied (its Prometheus counter)."""
    async with httpx.AsyncClient(base_url=system.url("capa")) as http:
        text = (await http.get("/metrics")).text
    wanted = ('outcome="applied"', f'type="{event_type}"')
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("qms_events_consumed_total{")
               and all(w in line for w in wanted))


def recurrence(feedback_ids: list[str]) -> RecurrenceDetected:
    customer = f"C-{uuid.uuid4().hex[:6]}"
    return RecurrenceDetected(kind=f"customer:{customer}|defect:D03", reason="recurred",
                              feedback_ids=feedback_ids, defect_code="D03", customer_id=customer)


async def capas_of(client: httpx.AsyncClient, feedback_id: str) -> list[dict[str, Any]]:
    return ok(await client.get("/capas", params={"feedback_id": feedback_id}))["items"]


async def recurrence_capa(system: System, client: httpx.AsyncClient) -> dict[str, Any]:
    ids = [str(uuid.uuid4()) for _ in range(3)]
    await system.publish(recurrence(ids), correlation_id=ids[-1], actor=QUALITY,
                         producer="quality")
    [capa] = await eventually(lambda: capas_of(client, ids[-1]), what="the CAPA to open")
    return capa


# ------------------------------------------------------------------ P-3.3


async def test_p_3_3_unit_investigates_and_proposes_countermeasures_to_quality(
        system, actors, unit, capa_as, tap):
    feedback_id, actions = await assign(system, "production", "logistics")
    production, logistics = unit("production"), unit("logistics")
    action_id = actions["production"]

    # One request per responsible unit, each announced.
    requested = await tap.wait("action.requested", 2, feedback_id=feedback_id)
    assert {e.payload["unit"] for e in requested} == {"production", "logistics"}
    assert {e.correlation_id for e in requested} == {feedback_id}
    action = await arrived(production, action_id, status="requested")
    assert action["request"].startswith("production:") and action["register_no"]

    # A unit sees its own requests only.
    mine = ok(await production.get("/actions", params={"feedback_id": feedback_id}))
    assert [a["id"] for a in mine["items"]] == [action_id]
    assert (await production.get(f"/actions/{actions['logistics']}")).status_code == 404
    refused(await production.get("/actions", params={"unit": "logistics"}), 403)
    everything = ok(await actors.capa_quality.get("/actions", params={"feedback_id": feedback_id}))
    assert everything["total"] == 2

    # Quality or a manager cannot touch it (403); for another unit it does not exist (404,
    # as on reads); nothing changes.
    for other, status in ((logistics, 404), (actors.capa_quality, 403),
                          (capa_as("manager"), 403)):
        refused(await other.put(f"/actions/{action_id}/investigation",
                                json={"containment": "not ours"}), status)
        refused(await other.post(f"/actions/{action_id}/submit"), status)
    untouched = ok(await production.get(f"/actions/{action_id}"))
    assert untouched["containment"] is None and untouched["version"] == action["version"]

    # The unit investigates and proposes.
    ok(await production.put(f"/actions/{action_id}/investigation", json=COMPLETE_INVESTIGATION))
    proposed = ok(await production.post(f"/actions/{action_id}/submit"))
    assert proposed["status"] == "proposed" and proposed["missing"] == []

    [event] = await tap.wait("action.countermeasures_proposed", action_id=action_id)
    assert event.correlation_id == feedback_id and event.actor.sub == "production.lead"
    assert event.payload["root_cause_category"] == "machine"
    assert event.payload["corrective"] == ["Replace the insert of cavity 2 (Zhao Lei, 2026-12-15)"]
    assert event.payload["preventive"] == [
        "Add cavity wear to the mould PM checklist (Sun Mei, 2026-12-31)"]

    # The record says who did what (P-5.4.2); a manager and an auditor read it all.
    history = ok(await capa_as("auditor").get(f"/actions/{action_id}/history"))
    assert [(h["action"], h["actor"]["sub"]) for h in history] == [
        ("requested", "li.wei"), ("investigation_drafted", "production.lead"),
        ("countermeasures_proposed", "production.lead")]
    assert ok(await capa_as("manager").get(f"/actions/{action_id}"))["status"] == "proposed"


async def test_p_3_3_another_units_action_request_or_capa_is_404_on_writes_as_on_reads(
        system, actors, unit):
    """Action ids are guessable: a write must not tell who is responsible for what (a 403
    "belongs to unit 'engineering'" did)."""
    feedback_id, actions = await assign(system, "engineering")
    action_id = actions["engineering"]
    engineering, production = unit("engineering"), unit("production")
    before = await arrived(engineering, action_id, status="requested")
    item = {"note": "not ours"}
    nothing = str(uuid.uuid4())  # the answer for a request that does not exist, word for word
    unknown = refused(await production.get(f"/actions/{nothing}"), 404)["message"]
    for resp in (await production.get(f"/actions/{action_id}"),
                 await production.put(f"/actions/{action_id}/investigation",
                                      json={"containment": "not ours"}),
                 await production.post(f"/actions/{action_id}/submit"),
                 await production.post(f"/actions/{action_id}/items/corrective/1/done",
                                       json=item)):
        error = refused(resp, 404)
        assert error["message"] == unknown.replace(nothing, action_id)
        assert "engineering" not in resp.text
    after = ok(await engineering.get(f"/actions/{action_id}"))
    assert after["version"] == before["version"] and after["containment"] is None

    capa = ok(await actors.capa_quality.post("/capas", json={
        "title": "Engineering's own", "owner_unit": "engineering"}), 201)
    for resp in (await production.get(f"/capas/{capa['id']}"),
                 await production.put(f"/capas/{capa['number']}/root-cause",
                                      json={"statement": "s", "category": "man"}),
                 await production.put(f"/capas/{capa['id']}/plan", json={"actions": [
                     {"description": "x", "owner": "y", "due_date": "2027-01-31"}]}),
                 await production.post(f"/capas/{capa['id']}/implemented", json={"note": "x"})):
        refused(resp, 404)
        assert "engineering" not in resp.text
    assert ok(await actors.capa_quality.get(f"/capas/{capa['id']}"))["version"] == \
        capa["version"]


async def test_p_3_3_redelivered_assignment_opens_no_second_request(system, actors, unit):
    feedback_id, actions = await assign(system, "production")
    await arrived(actors.capa_quality, actions["production"])
    before = await handled(system, "complaint.responsibility_assigned")
    event = make_event(ResponsibilityAssigned(
        feedback_id=feedback_id, register_no="CF-2026-000999", round=1,
        preliminary_cause="x", defect_code="D03", customer_id="C-1",
        units=[UnitRequest(unit="production", request="again", action_id=actions["production"])],
    ), producer="quality", correlation_id=feedback_id, actor=QUALITY)
    await system.publish_envelope(event)
    await system.publish_envelope(event)

    async def both_handled() -> bool:
        return await handled(system, "complaint.responsibility_assigned") >= before + 2
    await eventually(both_handled, what="capa to handle both deliveries")
    page = ok(await actors.capa_quality.get("/actions", params={"feedback_id": feedback_id}))
    assert page["total"] == 1
    assert page["items"][0]["request"] == "production: find the root cause and contain"


async def test_p_3_3_withdrawn_complaint_withdraws_the_units_open_requests(system, actors, unit):
    flow = Flow(actors)
    fb = await flow.register()
    await flow.escalate(fb["id"])
    assigned = await flow.assign(fb["id"], ["production", "logistics"])
    ids = {u["unit"]: u["action_id"] for u in assigned["responsible_units"]}
    production = unit("production")
    await arrived(production, ids["production"], status="requested")
    ok(await production.put(f"/actions/{ids['production']}/investigation",
                            json={"containment": "Stock quarantined"}))
    ok(await actors.sales.post(f"/feedback/{fb['id']}/withdraw",
                               json={"reason": "Registered twice by mistake"}))

    # Every open request of the complaint ends, with the reason, attributable to Sales.
    for action_id in ids.values():
        gone = await arrived(actors.capa_quality, action_id, status="withdrawn")
        assert gone["withdrawal"]["reason"] == "Registered twice by mistake"
        assert gone["withdrawal"]["by"] == "wang.fang"
    history = ok(await production.get(f"/actions/{ids['production']}/history"))
    assert (history[-1]["action"], history[-1]["actor"]["sub"],
            history[-1]["note"]) == ("withdrawn", "wang.fang", "Registered twice by mistake")

    # Nothing more is accepted, and the unit is told why.
    before = ok(await production.get(f"/actions/{ids['production']}"))
    assert before["containment"] == "Stock quarantined"  # what was done stays on record
    for resp in (await production.put(f"/actions/{ids['production']}/investigation",
                                      json=COMPLETE_INVESTIGATION),
                 await production.post(f"/actions/{ids['production']}/submit")):
        error = refused(resp, 409)
        assert "withdrawn" in error["message"]
        assert "Registered twice by mistake" in error["message"]
    after = ok(await production.get(f"/actions/{ids['production']}"))
    assert after["version"] == before["version"]
    listed = ok(await actors.capa_quality.get("/actions", params={
        "feedback_id": fb["id"], "status": "withdrawn"}))
    assert listed["total"] == 2


async def test_p_3_3_a_withdrawal_that_overtakes_the_assignment_still_ends_the_request(
        system, actors, unit):
    """Sales' withdrawal and Quality's assignment are separate events that may arrive in
    either order: the unit is never left with a request for a withdrawn complaint."""
    feedback_id = str(uuid.uuid4())
    await system.publish(FeedbackWithdrawn(
        feedback_id=feedback_id, register_no="CF-2026-000998", reason="Customer's own error"),
        correlation_id=feedback_id, actor=SALES, producer="intake")
    _, actions = await assign(system, "production", feedback_id=feedback_id)
    gone = await arrived(unit("production"), actions["production"], status="withdrawn")
    assert gone["withdrawal"]["reason"] == "Customer's own error"
    assert gone["withdrawal"]["by"] == SALES.sub


# ------------------------------------------------------------------ P-5.3.2


async def test_p_5_3_2_the_unit_sees_the_complaint_with_the_same_attachments(system, actors):
    flow = Flow(actors)
    fb = await flow.register()
    photo = b"\x89PNG\r\n\x1a\n" + os.urandom(2_000)
    files = {"file": ("crack at boss.png", photo, "image/png")}
    ok(await actors.sales.post(f"/feedback/{fb['id']}/attachments", files=files), 201)
    sample = {"quantity": 12, "received_on": "2026-11-20", "location": "QA lab shelf B3"}
    ok(await actors.sales.post(f"/feedback/{fb['id']}/samples", json=sample), 201)
    await flow.escalate(fb["id"])
    assigned = await flow.assign(fb["id"], ["production"])
    action_id = assigned["responsible_units"][0]["action_id"]

    action = await flow.action(action_id, "production")
    complaint = action["complaint"]
    assert complaint["product"] == fb["product"] | {"delivery_note": None}
    assert complaint["product"]["lot"] == "L2026-11-03"
    assert complaint["defect_code"] == "D03" and complaint["defect_name"]
    assert complaint["preliminary_cause"] == "Porosity at the boss from a worn die"
    assert complaint["customer_name"] == fb["customer"]["name"]
    assert complaint["quantity_affected"] == 40
    assert complaint["description"] == fb["description"]
    [attachment] = complaint["attachments"]
    assert attachment == attachment | {
        "filename": "crack at boss.png", "content_type": "image/png", "size": len(photo),
        "sha256": hashlib.sha256(photo).hexdigest()}
    assert [s["location"] for s in complaint["samples"]] == ["QA lab shelf B3"]

    # Evidence Sales adds later reaches the unit's open request too.
    report = b"%PDF-1.4\n" + os.urandom(500) + b"\n%%EOF\n"
    ok(await actors.sales.post(f"/feedback/{fb['id']}/attachments",
                               files={"file": ("lab report.pdf", report, "application/pdf")}),
       201)

    async def both() -> list[str] | None:
        names = [a["filename"] for a in
                 (await flow.action(action_id, "production"))["complaint"]["attachments"]]
        return names if len(names) == 2 else None
    assert await eventually(both, what="the later attachment") == [
        "crack at boss.png", "lab report.pdf"]


async def test_p_5_3_2_disposition_recorded_and_rejected_proposal_comes_back_with_reason(
        system, unit, tap):
    feedback_id, actions = await assign(system, "production")
    production, action_id = unit("production"), actions["production"]
    await arrived(production, action_id)
    disposition = {"type": "rework", "quantity": 480,
                   "cost": {"amount": "3600.00", "currency": "CNY"},
                   "note": "Rework at the customer's site"}
    # A partial draft first: what is still missing is shown.
    draft = ok(await production.put(f"/actions/{action_id}/investigation",
                                    json={"disposition": disposition}))
    assert draft["disposition"] == disposition
    assert {m["loc"] for m in draft["missing"]} >= {"containment", "corrective"}
    ok(await production.put(f"/actions/{action_id}/investigation", json=COMPLETE_INVESTIGATION))
    ok(await production.post(f"/actions/{action_id}/submit"))
    [first] = await tap.wait("action.countermeasures_proposed", action_id=action_id)
    assert first.payload["disposition"] == disposition

    # Quality rejects: the unit sees the reason, revises and submits again.
    await quality_decides(system, feedback_id, action_id, "production",
                          reason="Containment misses the WIP on line 3")
    returned = await arrived(production, action_id, status="returned")
    assert returned["rejections"][0]["reason"] == "Containment misses the WIP on line 3"
    assert returned["rejections"][0]["by"] == "li.wei"
    assert returned["disposition"] == disposition
    ok(await production.put(f"/actions/{action_id}/investigation", json={
        "containment": "Stock, transit and WIP on line 3 sorted 100%."}))
    again = ok(await production.post(f"/actions/{action_id}/submit"))
    assert again["status"] == "proposed"
    await tap.wait("action.countermeasures_proposed", 2, action_id=action_id)

    # Quality verifies; the unit carries the actions out; the last one completes it.
    await quality_decides(system, feedback_id, action_id, "production")
    await arrived(production, action_id, status="accepted")
    ok(await production.post(f"/actions/{action_id}/items/corrective/1/done",
                             json={"note": "Insert replaced; FA report FA-2291"}))
    done = ok(await production.post(f"/actions/{action_id}/items/preventive/1/done"))
    assert done["status"] == "completed"
    assert done["corrective"][0]["status"] == "done"
    assert done["corrective"][0]["note"] == "Insert replaced; FA report FA-2291"
    [completed] = await tap.wait("action.completed", action_id=action_id)
    assert completed.correlation_id == feedback_id


# ------------------------------------------------------------------ P-5.3.4


async def test_p_5_3_4_recurrence_opens_one_capa_even_if_the_event_is_redelivered(
        system, actors, tap):
    ids = [str(uuid.uuid4()) for _ in range(3)]
    before = await handled(system, "complaint.recurrence_detected")
    event = make_event(recurrence(ids), producer="quality", correlation_id=ids[-1], actor=QUALITY)
    await system.publish_envelope(event)
    await system.publish_envelope(event)

    async def both_handled() -> bool:
        return await handled(system, "complaint.recurrence_detected") >= before + 2
    await eventually(both_handled, what="capa to handle both deliveries")
    [capa] = await capas_of(actors.capa_quality, ids[0])
    assert re.fullmatch(r"CAPA-\d{4}-\d{4}", capa["number"])
    assert capa["source"] == "recurrence" and capa["status"] == "open"
    assert capa["feedback_ids"] == ids and "D03" in capa["title"]
    opened = await tap.wait("capa.opened", capa_id=capa["id"])
    assert len(opened) == 1 and opened[0].correlation_id == ids[-1]
    by_number = ok(await actors.capa_quality.get(f"/capas/{capa['number']}"))
    assert by_number["id"] == capa["id"]


async def test_p_5_3_4_capa_closes_only_after_an_effective_verification(system, actors, tap):
    quality = actors.capa_quality
    capa = await recurrence_capa(system, quality)
    cid = capa["id"]
    refused_close = refused(await quality.post(f"/capas/{cid}/close"), 409)
    assert "cannot close without an effective verification" in refused_close["message"]

    ok(await quality.put(f"/capas/{cid}/root-cause", json={
        "statement": "Mould wear is not in the PM plan", "category": "method",
        "five_whys": ["Cracks", "Thin wall", "Worn cavity", "Wear not checked"]}))
    planned = ok(await quality.put(f"/capas/{cid}/plan", json={"actions": [
        {"description": "Wear check in all PM plans", "owner": "Sun Mei",
         "due_date": "2027-01-31"}]}))
    assert planned["status"] == "planned"
    ok(await quality.post(f"/capas/{cid}/implemented", json={"note": "PM plans updated"}))
    refused(await quality.post(f"/capas/{cid}/close"), 409)

    # Ineffective: the plan reopens, the check stays on record.
    check = {"criteria": "No D03 from this customer for 90 days", "window_from": "2026-05-01",
             "window_to": "2026-07-31"}
    reopened = ok(await quality.post(f"/capas/{cid}/effectiveness", json=check | {
        "evaluation": "Recurred in March", "effective": False}))
    assert reopened["status"] == "planned"
    assert [v["effective"] for v in reopened["verifications"]] == [False]
    refused(await quality.post(f"/capas/{cid}/close"), 409)
    ok(await quality.put(f"/capas/{cid}/plan", json={"actions": [
        {"description": "Wear check in all PM plans", "owner": "Sun Mei",
         "due_date": "2027-01-31"},
        {"description": "Cavity pressure sensor with alarm", "owner": "Zhao Lei",
         "due_date": "2027-05-31"}]}))
    ok(await quality.post(f"/capas/{cid}/implemented", json={"note": "Sensors installed"}))
    ok(await quality.post(f"/capas/{cid}/effectiveness", json=check | {
        "window_from": "2026-08-01", "window_to": "2026-10-31",
        "evaluation": "No recurrence in the window", "effective": True}))
    closed = ok(await quality.post(f"/capas/{cid}/close"))
    assert closed["status"] == "closed" and closed["closed_at"]
    assert len(closed["verifications"]) == 2 and len(closed["implementations"]) == 2

    [event] = await tap.wait("capa.closed", capa_id=cid)
    assert event.payload["feedback_ids"] == capa["feedback_ids"]
    verified = await tap.wait("capa.effectiveness_verified", 2, capa_id=cid)
    assert [e.payload["effective"] for e in verified] == [False, True]
    history = [h["action"] for h in ok(await quality.get(f"/capas/{cid}/history"))]
    assert history[0] == "opened" and history[-1] == "closed"
    assert history.count("effectiveness_verified") == 2
    too_late = refused(await quality.post(f"/capas/{cid}/withdraw", json={"reason": "x"}), 409)
    assert "closed" in too_late["message"]


# ------------------------------------------------------------------ P-3.2


async def test_p_3_2_only_quality_opens_capas_and_verifies_their_effectiveness(
        system, actors, unit, capa_as):
    quality, production = actors.capa_quality, unit("production")
    for role in ("manager", "auditor", "unit"):
        client = production if role == "unit" else capa_as(role)
        refused(await client.post("/capas", json={"title": "not mine"}), 403)
    capa = ok(await quality.post("/capas", json={
        "title": "Cracked housings at several customers", "owner_unit": "production",
        "description": "Three customers in Q4"}), 201)
    cid = capa["id"]
    assert capa["source"] == "manual" and capa["status"] == "open"

    # The owner unit plans and implements; for another unit it does not exist.
    refused(await unit("logistics").put(f"/capas/{cid}/root-cause", json={
        "statement": "x", "category": "man"}), 404)
    ok(await production.put(f"/capas/{cid}/root-cause", json={
        "statement": "No wear check", "category": "method"}))
    ok(await production.put(f"/capas/{cid}/plan", json={"actions": [
        {"description": "Wear check", "owner": "Sun Mei", "due_date": "2027-01-31"}]}))
    implemented = ok(await production.post(f"/capas/{cid}/implemented", json={"note": "done"}))
    assert [c["id"] for c in ok(await production.get("/capas"))["items"]].count(cid) == 1

    check = {"criteria": "No recurrence in 90 days", "window_from": "2026-08-01",
             "window_to": "2026-10-31", "evaluation": "None", "effective": True}
    for client in (production, capa_as("manager")):
        refused(await client.post(f"/capas/{cid}/effectiveness", json=check), 403)
    refused(await production.post(f"/capas/{cid}/close"), 403)
    after = ok(await quality.get(f"/capas/{cid}"))
    assert after["status"] == "implemented" and after["verifications"] == []
    assert after["version"] == implemented["version"]

    verified = ok(await quality.post(f"/capas/{cid}/effectiveness", json=check))
    assert verified["status"] == "effective"
    assert verified["verifications"][0]["verifier"] == "li.wei"


# ------------------------------------------------------------------ bad input, wrong state


@pytest.mark.parametrize(("body", "loc"), [
    ({"corrective": [{"description": "x", "owner": "y", "due_date": "soon"}]},
     "body.corrective.0.due_date"),
    ({"root_cause": {"category": "luck"}}, "body.root_cause.category"),
    ({"root_cause": {"five_whys": ["w"] * 6}}, "body.root_cause.five_whys"),
    ({"disposition": {"type": "burn", "quantity": 1}}, "body.disposition.type"),
    ({"disposition": {"type": "scrap", "quantity": -3}}, "body.disposition.quantity"),
    ({"containment": "bad\u0000text"}, "body.containment"),
    ({"surprise": 1}, "body.surprise"),
])
async def test_p_3_3_bad_investigation_input_gets_422_with_its_location_and_writes_nothing(
        system, unit, body, loc):
    feedback_id, actions = await assign(system, "production")
    production, action_id = unit("production"), actions["production"]
    before = await arrived(production, action_id)
    error = refused(await production.put(f"/actions/{action_id}/investigation", json=body), 422)
    assert error["code"] == "invalid" and loc in [d["loc"] for d in error["details"]]
    after = ok(await production.get(f"/actions/{action_id}"))
    assert after["version"] == before["version"]


async def test_p_5_3_4_bad_capa_input_gets_422_with_its_location(system, actors):
    quality = actors.capa_quality
    error = refused(await quality.post("/capas", json={"title": ""}), 422)
    assert error["details"][0]["loc"] == "body.title"
    capa = await recurrence_capa(system, quality)
    cid = capa["id"]
    error = refused(await quality.put(f"/capas/{cid}/plan", json={"actions": []}), 422)
    assert error["details"][0]["loc"] == "body.actions"
    ok(await quality.put(f"/capas/{cid}/root-cause", json={"statement": "s", "category": "man"}))
    ok(await quality.put(f"/capas/{cid}/plan", json={"actions": [
        {"description": "d", "owner": "o", "due_date": "2027-01-31"}]}))
    ok(await quality.post(f"/capas/{cid}/implemented", json={"note": "done"}))
    error = refused(await quality.post(f"/capas/{cid}/effectiveness", json={
        "criteria": "c", "window_from": "2027-05-01", "window_to": "2027-04-01",
        "evaluation": "e", "effective": True}), 422)
    assert error["details"][0]["loc"] == "body.window_to"
    assert "window" in error["message"]
    refused(await quality.get("/capas", params={"status": "someday"}), 422)
    assert ok(await quality.get(f"/capas/{cid}"))["status"] == "implemented"


async def test_p_3_3_wrong_state_gets_409_with_the_reason(system, unit):
    feedback_id, actions = await assign(system, "production")
    production, action_id = unit("production"), actions["production"]
    await arrived(production, action_id)
    ok(await production.put(f"/actions/{action_id}/investigation",
                            json={"containment": "Stock quarantined"}))
    error = refused(await production.post(f"/actions/{action_id}/submit"), 409)
    assert [d["loc"] for d in error["details"]] == [
        "root_cause.statement", "root_cause.category", "root_cause.five_whys", "corrective",
        "preventive"]
    assert "corrective action" in error["message"]
    error = refused(await production.post(f"/actions/{action_id}/items/corrective/1/done"), 409)
    assert "'requested'" in error["message"]

    ok(await production.put(f"/actions/{action_id}/investigation", json=COMPLETE_INVESTIGATION))
    ok(await production.post(f"/actions/{action_id}/submit"))
    error = refused(await production.put(f"/actions/{action_id}/investigation",
                                         json={"containment": "late change"}), 409)
    assert "'proposed'" in error["message"]
    refused(await production.post(f"/actions/{action_id}/submit"), 409)
    refused(await production.post(f"/actions/{action_id}/items/sideways/1/done"), 422)
    assert (await production.get("/actions/no-such-action")).status_code == 404


async def test_p_5_3_4_ops_see_open_capas_and_overdue_actions_in_metrics(system):
    async with system.client("capa", None) as anonymous:
        text = (await anonymous.get("/metrics")).text
    assert 'qms_capa_overdue_actions{record="action_request"}' in text
    assert 'qms_capa_open{status="open"}' in text


# ------------------------------------------------------------------ withdrawal, window, owner


async def test_p_5_3_4_quality_withdraws_a_capa_with_a_reason_and_it_accepts_no_more(
        system, actors, unit, capa_as, tap):
    quality, production = actors.capa_quality, unit("production")
    capa = ok(await quality.post("/capas", json={"title": "Opened by mistake",
                                                 "owner_unit": "production"}), 201)
    cid = capa["id"]

    # Wrong role: 403; bad input: 422 naming the field; neither writes anything.
    for client in (production, capa_as("manager"), capa_as("auditor")):
        refused(await client.post(f"/capas/{cid}/withdraw", json={"reason": "not mine"}), 403)
    for body, loc in (({}, "body.reason"), ({"reason": ""}, "body.reason"),
                      ({"reason": "x", "surprise": 1}, "body.surprise")):
        error = refused(await quality.post(f"/capas/{cid}/withdraw", json=body), 422)
        assert loc in [d["loc"] for d in error["details"]]
    refused(await quality.post("/capas/no-such-capa/withdraw", json={"reason": "x"}), 404)
    assert ok(await quality.get(f"/capas/{cid}"))["version"] == capa["version"]

    withdrawn = ok(await quality.post(f"/capas/{cid}/withdraw",
                                      json={"reason": "Duplicate of the mould CAPA"}))
    assert withdrawn["status"] == "withdrawn"
    assert withdrawn["withdrawal"]["reason"] == "Duplicate of the mould CAPA"
    assert withdrawn["withdrawal"]["by"] == "li.wei"
    [event] = await tap.wait("capa.withdrawn", capa_id=cid)
    assert event.payload["reason"] == "Duplicate of the mould CAPA"

    # A withdrawn CAPA accepts no further changes, and says why.
    for resp in (
            await production.put(f"/capas/{cid}/root-cause",
                                 json={"statement": "s", "category": "man"}),
            await quality.put(f"/capas/{cid}/owner", json={"unit": "logistics"}),
            await quality.post(f"/capas/{cid}/close"),
            await quality.post(f"/capas/{cid}/withdraw", json={"reason": "again"})):
        assert "Duplicate of the mould CAPA" in refused(resp, 409)["message"]
    history = ok(await quality.get(f"/capas/{cid}/history"))
    assert (history[-1]["action"], history[-1]["actor"]["sub"]) == ("withdrawn", "li.wei")
    assert ok(await quality.get("/capas", params={"status": "withdrawn"}))["total"] >= 1


async def test_p_5_3_4_a_recurrence_after_a_withdrawn_capa_opens_a_new_one(system, actors):
    quality = actors.capa_quality
    first = [str(uuid.uuid4()) for _ in range(3)]
    kind = recurrence(first)
    await system.publish(kind, correlation_id=first[-1], actor=QUALITY, producer="quality")
    [capa] = await eventually(lambda: capas_of(quality, first[-1]), what="the first CAPA")
    ok(await quality.post(f"/capas/{capa['id']}/withdraw", json={"reason": "Wrong kind"}))
    again = [str(uuid.uuid4())]
    await system.publish(kind.model_copy(update={"feedback_ids": again}),
                         correlation_id=again[0], actor=QUALITY, producer="quality")
    [new] = await eventually(lambda: capas_of(quality, again[0]), what="a new CAPA")
    assert new["id"] != capa["id"] and new["status"] == "open"


async def test_p_5_3_4_effectiveness_cannot_be_judged_before_its_window_ends(system, actors):
    quality = actors.capa_quality
    capa = await recurrence_capa(system, quality)
    cid = capa["id"]
    ok(await quality.put(f"/capas/{cid}/root-cause", json={"statement": "s", "category": "man"}))
    ok(await quality.put(f"/capas/{cid}/plan", json={"actions": [
        {"description": "d", "owner": "o", "due_date": "2026-10-31"}]}))
    implemented = ok(await quality.post(f"/capas/{cid}/implemented", json={"note": "done"}))
    today = datetime.now(UTC).date()
    window_end = today + timedelta(days=30)
    check = {"criteria": "No recurrence for 90 days", "evaluation": "None so far",
             "window_from": (today - timedelta(days=60)).isoformat(),
             "window_to": window_end.isoformat()}
    for effective in (True, False):
        error = refused(await quality.post(f"/capas/{cid}/effectiveness",
                                           json=check | {"effective": effective}), 409)
        assert f"ends on {window_end.isoformat()}" in error["message"]
        assert (window_end + timedelta(days=1)).isoformat() in error["message"]
    after = ok(await quality.get(f"/capas/{cid}"))
    assert after["version"] == implemented["version"] and after["verifications"] == []

    ended = ok(await quality.post(f"/capas/{cid}/effectiveness", json=check | {
        "window_to": (today - timedelta(days=1)).isoformat(), "effective": True}))
    assert ended["status"] == "effective"


async def test_p_5_3_4_quality_assigns_the_owner_unit_of_a_recurrence_capa(
        system, actors, unit, capa_as, tap):
    quality, production, logistics = actors.capa_quality, unit("production"), unit("logistics")
    capa = await recurrence_capa(system, quality)
    cid = capa["id"]
    assert capa["owner_unit"] is None
    # No owner yet: the unit neither sees nor changes it.
    assert (await production.get(f"/capas/{cid}")).status_code == 404
    refused(await production.put(f"/capas/{cid}/root-cause",
                                 json={"statement": "s", "category": "man"}), 404)

    # Only Quality assigns; bad input is refused; neither writes anything.
    for client in (production, capa_as("manager"), capa_as("auditor")):
        refused(await client.put(f"/capas/{cid}/owner", json={"unit": "production"}), 403)
    for body, loc in (({}, "body.unit"), ({"unit": "Production Dept"}, "body.unit"),
                      ({"unit": "production", "extra": 1}, "body.extra")):
        error = refused(await quality.put(f"/capas/{cid}/owner", json=body), 422)
        assert loc in [d["loc"] for d in error["details"]]
    assert ok(await quality.get(f"/capas/{cid}"))["version"] == capa["version"]

    owned = ok(await quality.put(f"/capas/{cid}/owner", json={"unit": "production"}))
    assert owned["owner_unit"] == "production"
    [event] = await tap.wait("capa.owner_assigned", capa_id=cid)
    assert event.payload["owner_unit"] == "production"
    assert event.payload["previous_owner_unit"] is None

    # Now the owner unit sees it and works on it.
    assert cid in [c["id"] for c in ok(await production.get("/capas"))["items"]]
    ok(await production.put(f"/capas/{cid}/root-cause",
                            json={"statement": "Die wear not tracked", "category": "method"}))

    # Quality hands it to another unit: recorded, and the first unit is out.
    ok(await quality.put(f"/capas/{cid}/owner", json={"unit": "logistics"}))
    assert (await production.get(f"/capas/{cid}")).status_code == 404
    ok(await logistics.put(f"/capas/{cid}/plan", json={"actions": [
        {"description": "Die life counter", "owner": "He Ping", "due_date": "2026-12-20"}]}))
    history = ok(await quality.get(f"/capas/{cid}/history"))
    owners = [(h["actor"]["sub"], h["changes"]["owner_unit"], h["changes"]["previous_owner_unit"],
               h["changes"]["owner"]["name"]) for h in history
              if h["action"] == "owner_assigned"]
    assert owners == [("li.wei", "production", None, "Production head"),
                      ("li.wei", "logistics", "production", "Logistics head")]
    # P-5.4.2: the history also shows each owner unit before the change.
    assert [h["before"].get("owner_unit") for h in history
            if h["action"] == "owner_assigned"] == [None, "production"]


async def test_p_5_3_4_a_recurrence_capa_is_owned_by_default_by_the_responsible_unit_s_head(
        system, actors, unit, tap):
    """Quality need not set the owner by hand first: the unit it held responsible for most of
    the recurring complaints owns the CAPA, its head by name, until Quality confirms."""
    quality, production = actors.capa_quality, unit("production")
    ids = []
    for units in (("production",), ("logistics", "production"), ("production",)):
        feedback_id, actions = await assign(system, *units)
        for action_id in actions.values():  # capa has applied the assignment
            await arrived(quality, action_id)
        ids.append(feedback_id)
    third = ids[-1]
    await system.publish(recurrence(ids), correlation_id=third, actor=QUALITY,
                         producer="quality")
    [capa] = await eventually(lambda: capas_of(quality, third), what="the CAPA to open")
    assert capa["owner_unit"] == "production" and capa["owner_confirmed"] is False
    assert capa["owner"] == {"unit": "production", "name": "Production head",
                             "email": "production.head@plant.example"}
    [opened] = await tap.wait("capa.opened", capa_id=capa["id"])
    assert opened.payload["owner_unit"] == "production"
    assert opened.payload["owner_confirmed"] is False

    # Quality's board finds the owners still to confirm; the unit sees and works on it.
    waiting = ok(await quality.get("/capas", params={"status": "open",
                                                     "owner_confirmed": "false"}))
    assert capa["id"] in [c["id"] for c in waiting["items"]]
    ok(await production.put(f"/capas/{capa['id']}/root-cause",
                            json={"statement": "Die wear unchecked", "category": "method"}))

    # Quality confirms the default: recorded, announced, off the list.
    confirmed = ok(await quality.put(f"/capas/{capa['id']}/owner", json={"unit": "production"}))
    assert confirmed["owner_confirmed"] is True and confirmed["owner_unit"] == "production"
    assert confirmed["owner"]["name"] == "Production head"
    [assigned] = await tap.wait("capa.owner_assigned", capa_id=capa["id"])
    assert assigned.payload["owner_unit"] == assigned.payload["previous_owner_unit"]
    waiting = ok(await quality.get("/capas", params={"status": "open",
                                                     "owner_confirmed": "false"}))
    assert capa["id"] not in [c["id"] for c in waiting["items"]]
    history = ok(await quality.get(f"/capas/{capa['id']}/history"))
    assert history[-1]["action"] == "owner_assigned"
    assert history[-1]["before"]["owner_confirmed"] is False


async def test_p_5_3_4_a_capa_quality_opens_for_a_unit_is_owned_by_its_head(system, actors):
    capa = ok(await actors.capa_quality.post("/capas", json={
        "title": "Cracked housings at two plants", "owner_unit": "engineering"}), 201)
    assert capa["owner_confirmed"] is True
    assert capa["owner"]["name"] == "Engineering head"
    unowned = ok(await actors.capa_quality.post("/capas", json={"title": "To be seen"}), 201)
    assert unowned["owner"] is None and unowned["owner_confirmed"] is False
