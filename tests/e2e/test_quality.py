"""Quality's part of the procedure, end to end on the real broker and database.

Upstream facts (Sales escalating a form, a unit proposing countermeasures, the
customer's answer) are published on the exchange as intake and capa would; what
Quality does is driven through its HTTP API as a quality engineer would, and
observed through the API and through a queue of our own bound to the exchange,
as a plant system would bind one.
"""

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx

from shared.contracts import (
    ActionCompleted,
    CapaClosed,
    CapaOpened,
    ComplaintEscalated,
    ComplaintReopened,
    CountermeasuresProposed,
    Disposition,
    EvidenceAdded,
    FeedbackClosed,
    FeedbackWithdrawn,
)
from shared.events import Actor, make_event
from shared.vocabulary import AttachmentMeta, Customer, Money, Product, ReturnedSample
from tests.e2e.harness import EventTap, System
from tests.support import eventually, ok, refused

# ------------------------------------------------------------------ helpers


def form(*, severity: str = "normal", customer_id: str | None = None,
         product_code: str | None = "auto", with_evidence: bool = False) -> ComplaintEscalated:
    tag = uuid.uuid4().hex[:8]
    evidence: dict[str, Any] = {}
    if with_evidence:
        evidence = {
            "attachments": [AttachmentMeta(sha256="ab" * 32, filename="crack.png",
                                           content_type="image/png", size=2048,
                                           uploaded_by="wang.fang",
                                           uploaded_at=datetime.now(UTC))],
            "samples": [ReturnedSample(quantity=12, received_on=date(2026, 11, 20),
                                       location="QA lab shelf B3")]}
    return ComplaintEscalated(
        feedback_id=str(uuid.uuid4()), register_no=f"CF-2026-{tag}",
        customer=Customer(id=customer_id or f"C-{tag}", name=f"Bright Motors {tag}"),
        channel="phone", received_at=datetime.now(UTC) - timedelta(hours=1),
        category="product_quality", severity=severity,
        product=Product(code=f"HSG-{tag}" if product_code == "auto" else product_code,
                        name="Motor housing", lot="L2026-11-03") if product_code else None,
        quantity_affected=40, description="Housings crack at the mounting boss",
        estimated_loss=Money(amount="1250.00"), note="Please analyse", **evidence)


async def case_of(client: httpx.AsyncClient, ref: str, **expect: Any) -> dict[str, Any]:
    """The case once it shows `expect` (polled: events travel asynchronously)."""
    async def reached() -> dict[str, Any] | None:
        resp = await client.get(f"/cases/{ref}")
        if resp.status_code != 200:
            return None
        body = resp.json()
        return body if all(body.get(k) == v for k, v in expect.items()) else None
    return await eventually(reached, what=f"case {ref} with {expect}")


async def escalate(system: System, client: httpx.AsyncClient,
                   **kw: Any) -> tuple[ComplaintEscalated, dict[str, Any]]:
    """Sales opens a Complaint Handling Form; Quality's case appears."""
    f = form(**kw)
    await system.publish(f, correlation_id=f.feedback_id)
    return f, await case_of(client, f.feedback_id)


def responsibility(*units: str, defect_code: str = "D03") -> dict[str, Any]:
    return {"preliminary_cause": "Porosity at the boss from a worn die",
            "defect_code": defect_code,
            "units": [{"unit": u, "request": f"{u}: find the root cause and contain"}
                      for u in units]}


async def assign(client: httpx.AsyncClient, feedback_id: str, *units: str,
                 defect_code: str = "D03") -> dict[str, Any]:
    return ok(await client.post(f"/cases/{feedback_id}/responsibility",
                                json=responsibility(*units, defect_code=defect_code)))


def action_of(case: dict[str, Any], unit: str) -> str:
    return next(u["action_id"] for u in case["responsible_units"] if u["unit"] == unit)


async def propose(system: System, client: httpx.AsyncClient, case: dict[str, Any], unit: str,
                  *, containment: str = "Sort all stock at the customer and in the warehouse",
                  disposition: Disposition | None = None) -> dict[str, Any]:
    """The unit proposes countermeasures (as capa publishes them); Quality sees them."""
    proposals = next(u["proposals"] for u in case["responsible_units"] if u["unit"] == unit)
    await system.publish(CountermeasuresProposed(
        action_id=action_of(case, unit), feedback_id=case["id"], unit=unit,
        containment=containment, root_cause="Die worn beyond its limit",
        root_cause_category="machine", corrective=["Replace the die"],
        preventive=["Die-life counter that stops the press"], disposition=disposition),
        correlation_id=case["id"])

    async def arrived() -> dict[str, Any] | None:
        body = ok(await client.get(f"/cases/{case['id']}"))
        entry = next(u for u in body["responsible_units"] if u["unit"] == unit)
        return body if entry["status"] == "proposed" and entry["proposals"] > proposals \
            else None
    return await eventually(arrived, what=f"{unit}'s proposal to reach Quality")


async def verify(client: httpx.AsyncClient, feedback_id: str, unit: str, **body: Any) -> dict:
    return ok(await client.post(f"/cases/{feedback_id}/verification",
                                json={"unit": unit, "accepted": True} | body))


async def resolve(system: System, client: httpx.AsyncClient, feedback_id: str,
                  *units: str, defect_code: str = "D03") -> dict[str, Any]:
    return await finish(system, client, await assign(client, feedback_id, *units,
                                                     defect_code=defect_code))


async def finish(system: System, client: httpx.AsyncClient,
                 case: dict[str, Any]) -> dict[str, Any]:
    """The units of an assigned case propose; Quality verifies: the record goes to Sales."""
    units = [u["unit"] for u in case["responsible_units"]]
    for unit in units:
        case = await propose(system, client, case, unit)
    for unit in units:
        case = await verify(client, case["id"], unit)
    return case


def unit_entry(case: dict[str, Any], unit: str) -> dict[str, Any]:
    return next(u for u in case["responsible_units"] if u["unit"] == unit)


# ------------------------------------------------------------------ P-5.3.1


async def test_p_5_3_1_form_arrives_is_analysed_and_the_quality_record_goes_to_sales(
        system, actors):
    q = actors.quality
    async with EventTap(system) as tap:
        f, case = await escalate(system, q, with_evidence=True)
        fid = f.feedback_id
        # The form arrives with the evidence Sales gathered, and the 3-day clock runs.
        assert case["status"] == "open" and case["round"] == 1
        assert case["register_no"] == f.register_no and case["severity"] == "normal"
        assert case["attachments"][0]["filename"] == "crack.png"
        assert case["samples"][0]["location"] == "QA lab shelf B3"
        clock = case["clock"]
        assert clock["running"] and clock["time_left_seconds"] > 0 and not clock["breached"]
        accepted = await tap.wait_for("complaint.accepted", fid)
        assert accepted.payload["round"] == 1 and accepted.payload["due_at"]
        assert ok(await q.get(f"/cases/{f.register_no}"))["id"] == fid  # by register number

        # More evidence from Sales reaches the case.
        await system.publish(EvidenceAdded(feedback_id=fid, register_no=f.register_no,
                                           sample=ReturnedSample(quantity=3,
                                                                 received_on=date(2026, 11, 22),
                                                                 location="QA lab shelf C1")),
                             correlation_id=fid)
        await eventually(lambda: _has_sample(q, fid, "QA lab shelf C1"), what="new sample")

        # Quality follows up on site, then determines the cause and responsibility.
        visited = ok(await q.post(f"/cases/{fid}/site-visits", json={
            "visited_at": "2026-11-27T09:30:00Z", "location": "Customer plant, line 3",
            "participants": ["Li Wei", "Zhang Min"],
            "findings": "12 of 40 housings cracked at the boss"}), 201)
        assert visited["site_visits"][0]["findings"].startswith("12 of 40")
        case = await assign(q, fid, "production", "purchasing")
        assert case["status"] == "awaiting_units" and case["defect_name"] == "Functional failure"

        # The units propose; Quality verifies each; the record goes to Sales.
        for unit in ("production", "purchasing"):
            case = await propose(system, q, case, unit, disposition=Disposition(
                type="rework", quantity=40, cost=Money(amount="860.00")))
        case = await verify(q, fid, "production")
        assert case["status"] == "awaiting_units" and not case["quality_record"]
        case = await verify(q, fid, "purchasing", summary="Die replaced; stock reworked.")
        assert case["status"] == "resolved"
        record = case["quality_record"]
        assert record["summary"] == "Die replaced; stock reworked."
        assert record["cause"].startswith("Porosity") and record["defect_code"] == "D03"
        assert {o["unit"] for o in record["outcomes"]} == {"production", "purchasing"}
        assert record["outcomes"][0]["disposition"]["cost"]["amount"] == "860.00"
        assert any("Replace the die" in m for m in record["outcomes"][0]["countermeasures"])
        ready = await tap.wait_for("complaint.resolution_ready", fid)
        assert ready.payload["met_deadline"] is True and ready.payload["round"] == 1

        # The clock stopped: it shows the same time left whenever it is read.
        clock = case["clock"]
        assert not clock["running"] and clock["met_deadline"] is True
        assert clock["resolved_at"] and not clock["breached"]
        again = ok(await q.get(f"/cases/{fid}"))["clock"]
        assert again["time_left_seconds"] == clock["time_left_seconds"]

        # Sales closes the feedback; Quality keeps tracking (P-5.3.4 follow-up).
        await system.publish(FeedbackClosed(feedback_id=fid, register_no=f.register_no,
                                            closed_at=datetime.now(UTC), had_form=True),
                             correlation_id=fid)
        await case_of(q, fid, status="closed")
        followed = ok(await q.post(f"/cases/{fid}/follow-ups", json={
            "checked_at": "2027-01-15T08:00:00Z", "recurred": False,
            "note": "Two deliveries since; no cracks"}), 201)
        assert followed["follow_ups"][0]["recurred"] is False
        history = ok(await q.get(f"/cases/{fid}/history"))
        actions = [h["action"] for h in history]
        assert actions[0] == "received" and "resolved" in actions and actions[-1] == \
            "follow_up_recorded"
        assert all(h["actor"]["sub"] and h["at"] for h in history)


async def _has_sample(client: httpx.AsyncClient, fid: str, location: str) -> bool:
    case = ok(await client.get(f"/cases/{fid}"))
    return location in [s["location"] for s in case["samples"]]


async def test_p_5_3_1_a_redelivered_form_opens_no_second_case(system, actors):
    f, case = await escalate(system, actors.quality)
    # The same form again (a redelivery), and a second escalation event for it.
    await system.publish(f, correlation_id=f.feedback_id)
    marker = form()
    await system.publish(marker, correlation_id=marker.feedback_id)
    await case_of(actors.quality, marker.feedback_id)  # later events were processed
    again = ok(await actors.quality.get(f"/cases/{f.feedback_id}"))
    assert again["version"] == case["version"] and again["round"] == 1
    assert len(again["rounds"]) == 1


# ------------------------------------------------------------------ P-3.2


async def test_p_3_2_only_quality_determines_responsibility_and_verifies(system, actors):
    f, case = await escalate(system, actors.quality)
    fid = f.feedback_id
    writes = [("post", f"/cases/{fid}/responsibility", responsibility("production")),
              ("post", f"/cases/{fid}/verification", {"unit": "production", "accepted": True}),
              ("post", f"/cases/{fid}/major", {"reason": "line stopped"}),
              ("post", f"/cases/{fid}/site-visits", {
                  "visited_at": "2026-11-27T09:30:00Z", "location": "Line 3",
                  "participants": ["x"], "findings": "x"})]
    for role in ("sales", "manager", "auditor", "unit"):
        async with system.client("quality", role, unit="production") as other:
            for method, path, body in writes:
                err = refused(await getattr(other, method)(path, json=body), 403)
                assert "quality" in err["message"]
    # Sales, managers and auditors read; a unit's people do not read Quality's cases.
    for role in ("sales", "manager", "auditor"):
        async with system.client("quality", role) as reader:
            assert ok(await reader.get(f"/cases/{fid}"))["id"] == fid
            ok(await reader.get("/cases", params={"status": "open"}))
    async with system.client("quality", "unit", unit="production") as unit:
        refused(await unit.get(f"/cases/{fid}"), 403)
    async with system.client("quality", None) as anonymous:
        refused(await anonymous.get(f"/cases/{fid}"), 401)
    after = ok(await actors.quality.get(f"/cases/{fid}"))
    assert after["status"] == "open" and after["version"] == case["version"]
    assert after["major"] is None and after["site_visits"] == []
    assert [h["action"] for h in ok(await actors.quality.get(f"/cases/{fid}/history"))] == \
        ["received"]


# ------------------------------------------------------------------ P-F.3


async def test_p_f_3_cause_and_responsibility_reach_the_units_and_their_answers_come_back(
        system, actors):
    q = actors.quality
    async with EventTap(system) as tap:
        f, _ = await escalate(system, q)
        fid = f.feedback_id
        case = await assign(q, fid, "production", "rd", defect_code="D07")
        assert [u["status"] for u in case["responsible_units"]] == ["requested", "requested"]
        assigned = await tap.wait_for("complaint.responsibility_assigned", fid)
        p = assigned.payload
        assert p["defect_code"] == "D07" and p["customer_id"] == f.customer.id
        assert p["product_code"] == f.product.code and p["round"] == 1
        assert {u["action_id"] for u in p["units"]} == \
            {f"{f.register_no}-production-r1", f"{f.register_no}-rd-r1"}
    # Quality follows up: lists by unit and defect show the case.
    for params in ({"unit": "rd"}, {"defect_code": "D07", "status": "awaiting_units"}):
        listed = ok(await q.get("/cases", params=params | {"customer_id": f.customer.id}))
        assert [c["id"] for c in listed["items"]] == [fid]
    assert ok(await q.get("/cases", params={"unit": "logistics",
                                            "customer_id": f.customer.id}))["total"] == 0
    # The unit's proposal shows on the case; after acceptance its implementation too.
    case = await propose(system, q, case, "production")
    entry = unit_entry(case, "production")
    assert entry["proposal"]["root_cause"] == "Die worn beyond its limit"
    assert entry["proposal"]["corrective"] == ["Replace the die"]
    case = await verify(q, fid, "production")
    assert unit_entry(case, "production")["status"] == "accepted"
    assert case["status"] == "awaiting_units"  # rd has not answered yet
    await system.publish(ActionCompleted(action_id=action_of(case, "production"),
                                         feedback_id=fid, unit="production",
                                         completed_at=datetime.now(UTC)), correlation_id=fid)

    async def implemented() -> bool:
        return unit_entry(ok(await q.get(f"/cases/{fid}")), "production")["status"] == \
            "implemented"
    await eventually(implemented, what="production's actions implemented")


async def test_p_f_3_unknown_defect_code_and_units_are_refused_naming_what_is_known(
        system, actors):
    q = actors.quality
    f, case = await escalate(system, q)
    fid = f.feedback_id
    err = refused(await q.post(f"/cases/{fid}/responsibility",
                               json=responsibility("production", defect_code="D42")), 422)
    assert err["details"][0]["loc"] == "body.defect_code"
    assert "D42" in err["message"] and "D01" in err["message"] and "D99" in err["message"]
    codes = ok(await q.get("/defect-codes"))
    assert {"code": "D03", "name": "Functional failure"} in codes
    err = refused(await q.post(f"/cases/{fid}/responsibility",
                               json=responsibility("production", "bakery", "production")), 422)
    locs = {d["loc"]: d["msg"] for d in err["details"]}
    assert "known units" in locs["body.units.1.unit"] and "twice" in locs["body.units.2.unit"]
    err = refused(await q.post(f"/cases/{fid}/responsibility",
                               json=responsibility()), 422)
    assert err["details"][0]["loc"] == "body.units"
    after = ok(await q.get(f"/cases/{fid}"))
    assert after["status"] == "open" and after["version"] == case["version"]


# ------------------------------------------------------------------ bad input and wrong state


async def test_p_5_4_2_bad_input_gets_a_clear_4xx_with_where_and_writes_nothing(system,
                                                                                 actors):
    q = actors.quality
    f, case = await escalate(system, q)
    fid = f.feedback_id
    cases = [
        (f"/cases/{fid}/site-visits", {"visited_at": "yesterday", "location": "x",
                                       "participants": ["a"], "findings": "x"},
         "body.visited_at"),
        (f"/cases/{fid}/site-visits", {"visited_at": "2026-11-27T09:30:00Z", "location": "x",
                                       "participants": [], "findings": "x"},
         "body.participants"),
        (f"/cases/{fid}/site-visits", {"visited_at": "2026-11-27T09:30:00Z", "location": "x",
                                       "participants": ["a"], "findings": "bad\x00text"},
         "body.findings"),
        (f"/cases/{fid}/verification", {"unit": "production", "accepted": False},
         "body.reason"),
        (f"/cases/{fid}/verification", {"unit": "Not A Unit", "accepted": True},
         "body.unit"),
        (f"/cases/{fid}/major", {}, "body.reason"),
        (f"/cases/{fid}/responsibility", responsibility("production") | {"extra": 1},
         "body.extra"),
    ]
    for path, body, loc in cases:
        err = refused(await q.post(path, json=body), 422)
        assert loc in [d["loc"] for d in err["details"]], (path, body, err)
        assert err["code"] == "invalid" and loc in err["message"]
    err = refused(await q.get("/cases/bad%20ref!"), 422)
    assert err["details"][0]["loc"] == "path.ref"
    refused(await q.get("/cases", params={"page_size": 0}), 422)
    refused(await q.get(f"/cases/{uuid.uuid4()}"), 404)
    after = ok(await q.get(f"/cases/{fid}"))
    assert after["version"] == case["version"] and after["site_visits"] == []


async def test_p_f_3_actions_out_of_turn_get_409_saying_why(system, actors):
    q = actors.quality
    f, _ = await escalate(system, q)
    fid = f.feedback_id
    # Nothing to verify before responsibility is assigned.
    err = refused(await q.post(f"/cases/{fid}/verification",
                               json={"unit": "production", "accepted": True}), 409)
    assert "no responsibility assigned" in err["message"]
    err = refused(await q.post(f"/cases/{fid}/major-review", json={
        "held_at": "2026-11-28T09:00:00Z", "participants": ["R&D head"], "decisions": "x",
        "drafted_solution": "y"}), 409)
    assert "not major" in err["message"]
    err = refused(await q.post(f"/cases/{fid}/follow-ups", json={
        "checked_at": "2026-11-28T09:00:00Z", "recurred": False}), 409)
    assert "follow-up" in err["message"]
    case = await assign(q, fid, "production")
    err = refused(await q.post(f"/cases/{fid}/responsibility",
                               json=responsibility("rd")), 409)
    assert "already assigned" in err["message"]
    # The unit has not proposed yet; and rd is not responsible at all.
    err = refused(await q.post(f"/cases/{fid}/verification",
                               json={"unit": "production", "accepted": True}), 409)
    assert "no countermeasures waiting" in err["message"]
    err = refused(await q.post(f"/cases/{fid}/verification",
                               json={"unit": "rd", "accepted": True}), 409)
    assert "not a responsible unit" in err["message"]
    after = ok(await q.get(f"/cases/{fid}"))
    assert after["version"] == case["version"]


# ------------------------------------------------------------------ P-5.3.2


async def test_p_5_3_2_rejected_countermeasures_go_back_with_the_reason_then_pass(system,
                                                                                  actors):
    q = actors.quality
    async with EventTap(system) as tap:
        f, _ = await escalate(system, q)
        fid = f.feedback_id
        case = await assign(q, fid, "production")
        case = await propose(system, q, case, "production", containment="Sort warehouse stock",
                             disposition=Disposition(type="sorting", quantity=40))
        case = await verify(q, fid, "production", accepted=False,
                            reason="Containment misses WIP on line 3")
        entry = unit_entry(case, "production")
        assert entry["status"] == "rejected" and case["status"] == "awaiting_units"
        assert entry["rejections"][0]["reason"] == "Containment misses WIP on line 3"
        back = await tap.wait_for("complaint.countermeasures_rejected", fid)
        assert back.payload["reason"] == "Containment misses WIP on line 3"
        assert back.payload["action_id"] == entry["action_id"]
        # Nothing to verify until the unit proposes again.
        refused(await q.post(f"/cases/{fid}/verification",
                             json={"unit": "production", "accepted": True}), 409)
        case = await propose(system, q, case, "production",
                             containment="Sort warehouse stock and WIP on line 3",
                             disposition=Disposition(type="rework", quantity=40,
                                                     cost=Money(amount="860.00")))
        assert unit_entry(case, "production")["proposals"] == 2
        case = await verify(q, fid, "production", reason="Containment now complete")
        assert case["status"] == "resolved"
        await tap.wait_for("complaint.countermeasures_verified", fid)
        [outcome] = case["quality_record"]["outcomes"]
        assert outcome["disposition"] == {"type": "rework", "quantity": 40,
                                          "cost": {"amount": "860.00", "currency": "CNY"},
                                          "note": None}
        assert "Containment: Sort warehouse stock and WIP on line 3" in \
            outcome["countermeasures"]


# ------------------------------------------------------------------ P-F.5


async def test_p_f_5_clock_shows_at_risk_then_breached_while_open(fast_clock_system,
                                                                  fast_actors):
    q = fast_actors.quality
    async with EventTap(fast_clock_system, "complaint.sla_at_risk",
                        "complaint.sla_breached") as tap:
        f, case = await escalate(fast_clock_system, q)
        fid = f.feedback_id
        assert case["clock"]["time_left_seconds"] > 0 and not case["clock"]["at_risk"]

        async def shows(flag: str) -> dict[str, Any] | None:
            c = ok(await q.get(f"/cases/{fid}"))
            return c if c["clock"][flag] else None
        at_risk = await eventually(lambda: shows("at_risk"), what="at risk", timeout=30)
        assert at_risk["status"] == "open"
        risk_event = await tap.wait_for("complaint.sla_at_risk", fid)
        assert risk_event.payload["round"] == 1
        breached = await eventually(lambda: shows("breached"), what="breached", timeout=30)
        assert breached["status"] == "open", "the breach is visible while the case is open"
        assert breached["clock"]["time_left_seconds"] < 0 and breached["clock"]["running"]
        await tap.wait_for("complaint.sla_breached", fid)
        listed = ok(await q.get("/cases", params={"breached": True, "status": "open",
                                                  "customer_id": f.customer.id}))
        assert [c["id"] for c in listed["items"]] == [fid]
        assert ok(await q.get("/cases", params={"breached": False,
                                                "customer_id": f.customer.id}))["total"] == 0
        # Handed over late: the record says the deadline was missed.
        case = await resolve(fast_clock_system, q, fid, "production")
        assert case["status"] == "resolved"
        assert case["quality_record"]["met_deadline"] is False
        assert case["clock"]["met_deadline"] is False and case["clock"]["breached"]
        await tap.drain()
        assert len(tap.of("complaint.sla_breached", fid)) == 1  # once per round
        assert len(tap.of("complaint.sla_at_risk", fid)) == 1


async def test_p_f_5_record_handed_over_in_time_meets_the_deadline(system, actors):
    q = actors.quality
    f, case = await escalate(system, q)
    when = {k: datetime.fromisoformat(case["clock"][k]) for k in ("due_at", "at_risk_at",
                                                                  "received_at")}
    assert when["due_at"] > when["at_risk_at"] > when["received_at"]
    listed = ok(await q.get("/cases", params={"at_risk": False, "breached": False,
                                              "customer_id": f.customer.id}))
    assert [c["id"] for c in listed["items"]] == [f.feedback_id]
    case = await resolve(system, q, f.feedback_id, "production")
    assert case["clock"]["met_deadline"] is True and not case["clock"]["breached"]
    assert case["quality_record"]["met_deadline"] is True
    assert 0 < case["clock"]["time_left_seconds"] <= 3 * 86400


# ------------------------------------------------------------------ P-F.4 and withdrawal


async def test_p_f_4_reopened_case_gets_a_new_round_and_a_new_clock(system, actors):
    q = actors.quality
    async with EventTap(system) as tap:
        f, _ = await escalate(system, q)
        fid = f.feedback_id
        first = await resolve(system, q, fid, "production")
        await system.publish(ComplaintReopened(feedback_id=fid, register_no=f.register_no,
                                               comment="Still cracking in lot L2026-11-09",
                                               reopen_count=1, had_form=True),
                             correlation_id=fid)
        case = await case_of(q, fid, round=2, status="open")
        assert case["clock"]["running"]
        assert datetime.fromisoformat(case["clock"]["received_at"]) > \
            datetime.fromisoformat(first["clock"]["resolved_at"])  # not as strings: ".340Z"
        assert case["responsible_units"] == [] and case["quality_record"] is None
        assert case["rounds"][0]["record"]["met_deadline"] is True  # round 1 kept
        assert case["rounds"][1]["reopen_comment"].startswith("Still cracking")
        await tap.wait_for("complaint.accepted", fid, where=lambda p: p["round"] == 2)
        case = await assign(q, fid, "production")
        assert case["responsible_units"][0]["action_id"] == f"{f.register_no}-production-r2"


async def test_p_5_4_2_withdrawn_form_is_kept_with_its_reason_and_its_clock_stops(system,
                                                                                  actors):
    q = actors.quality
    f, _ = await escalate(system, q)
    fid = f.feedback_id
    await system.publish(FeedbackWithdrawn(feedback_id=fid, register_no=f.register_no,
                                           reason="Registered twice by mistake"),
                         correlation_id=fid)
    case = await case_of(q, fid, status="withdrawn")
    assert case["withdrawn_reason"] == "Registered twice by mistake"
    assert not case["clock"]["running"]
    err = refused(await q.post(f"/cases/{fid}/responsibility",
                               json=responsibility("production")), 409)
    assert "withdrawn" in err["message"]


# ------------------------------------------------------------------ P-5.3.5


async def test_p_5_3_5_major_complaint_summons_the_heads_at_once_and_the_review_is_kept(
        system, actors):
    q = actors.quality
    async with EventTap(system) as tap:
        f, case = await escalate(system, q, severity="major")
        fid = f.feedback_id
        alert = await tap.wait_for("complaint.major_alert", fid)
        assert {h["unit"] for h in alert.payload["heads"]} == {"rd", "engineering",
                                                               "production"}
        assert alert.payload["customer"]["id"] == f.customer.id
        assert case["severity"] == "major"
        assert {h["unit"] for h in case["major"]["heads"]} == {"rd", "engineering",
                                                               "production"}
        reviewed = ok(await q.post(f"/cases/{fid}/major-review", json={
            "held_at": "2026-11-28T09:00:00Z", "participants": ["R&D head", "Production head"],
            "decisions": "Stop line 3; 100% inspection",
            "drafted_solution": "Replace the lot within 48 h; 8D report"}), 201)
        [review] = reviewed["major"]["reviews"]
        assert review["decisions"] == "Stop line 3; 100% inspection"
        assert review["recorded_by"] == "li.wei"
        majors = ok(await q.get("/cases", params={"severity": "major",
                                                  "customer_id": f.customer.id}))
        assert [c["id"] for c in majors["items"]] == [fid]

        # A normal case found major later: flagged once, the heads summoned then.
        g, _ = await escalate(system, q)
        flagged = ok(await q.post(f"/cases/{g.feedback_id}/major",
                                  json={"reason": "The customer's line stopped"}))
        assert flagged["severity"] == "major"
        assert flagged["major"]["reason"] == "The customer's line stopped"
        await tap.wait_for("complaint.major_alert", g.feedback_id)
        err = refused(await q.post(f"/cases/{g.feedback_id}/major",
                                   json={"reason": "again"}), 409)
        assert "already major" in err["message"]
        await tap.drain()
        assert len(tap.of("complaint.major_alert", g.feedback_id)) == 1


# ------------------------------------------------------------------ P-5.3.4


async def _kinds(client: httpx.AsyncClient, **params: Any) -> dict[str, dict[str, Any]]:
    page = ok(await client.get("/recurrence", params=params))
    return {k["kind"]: k for k in page["items"]}


async def _kind_when(client: httpx.AsyncClient, customer: str, key: str, count: int,
                     ids: list[str]) -> dict[str, Any]:
    """The kind once it counts `count` occurrences linking exactly these complaints."""
    async def reached() -> dict[str, Any] | None:
        kind = (await _kinds(client, customer_id=customer)).get(key)
        return kind if kind and kind["count"] == count and \
            sorted(kind["feedback_ids"]) == sorted(ids) else None
    return await eventually(reached, what=f"{key} to count {count} with {len(ids)} complaints")


async def test_p_5_3_4_concurrent_complaints_are_one_occurrence_a_capa_needs_it_to_come_back(
        system, actors):
    """"Recurs two or more times in a row": handled, came back, handled again, came back
    again. One bad lot reported three times at once is one occurrence, not a recurrence."""
    q = actors.quality
    customer = f"C-{uuid.uuid4().hex[:8]}"
    product = f"HSG-{uuid.uuid4().hex[:6]}"
    ck, pk = f"customer:{customer}|defect:D02", f"product:{product}|defect:D02"
    async with EventTap(system, "complaint.recurrence_detected") as tap:
        lot = []
        for _ in range(3):  # three forms open at the same time, none handled yet
            f, _ = await escalate(system, q, customer_id=customer, product_code=product)
            lot.append(await assign(q, f.feedback_id, "production", defect_code="D02"))
        ids = [c["id"] for c in lot]
        # A different defect of the same customer is another kind: it does not count.
        other, _ = await escalate(system, q, customer_id=customer, product_code=product)
        await assign(q, other.feedback_id, "production", defect_code="D05")
        kind = await _kind_when(q, customer, ck, 1, ids)  # linked, counted once
        assert kind["detected"] is False and kind["threshold"] == 3
        await _kind_when(q, customer, f"customer:{customer}|defect:D05", 1, [other.feedback_id])
        for case in lot:
            await finish(system, q, case)
        await _kind_when(q, customer, ck, 1, ids)
        await tap.drain()
        assert not [e for e in tap.seen if e.payload["kind"] in (ck, pk)]  # no CAPA asked for

        # Handled, it comes back: the second occurrence; handled again, it comes back again.
        second, _ = await escalate(system, q, customer_id=customer, product_code=product)
        await resolve(system, q, second.feedback_id, "production", defect_code="D02")
        ids.append(second.feedback_id)
        await _kind_when(q, customer, ck, 2, ids)
        third, _ = await escalate(system, q, customer_id=customer, product_code=product)
        await assign(q, third.feedback_id, "production", defect_code="D02")
        ids.append(third.feedback_id)
        detected = await tap.wait_for("complaint.recurrence_detected",
                                      where=lambda p: p["kind"] in (ck, pk))
        assert detected.payload["reason"] == "recurred"
        assert sorted(detected.payload["feedback_ids"]) == sorted(ids)  # the lot stays linked
        assert detected.payload["defect_code"] == "D02"
        assert detected.payload["customer_id"] == customer
        assert detected.payload["product_code"] == product

        # The product kind holds the same complaints: one CAPA is asked for, not two.
        async def both_detected() -> bool:
            kinds = await _kinds(q, product_code=product) | await _kinds(q, customer_id=customer)
            return kinds[ck]["detected"] and kinds[pk]["detected"]
        await eventually(both_detected, what="both kinds detected")
        await tap.drain()
        about_these = [e for e in tap.seen if set(e.payload["feedback_ids"]) == set(ids)]
        assert len(about_these) == 1


async def test_p_5_3_4_a_closed_capa_starts_the_count_afresh_and_is_linked_to_cases(system,
                                                                                    actors):
    q = actors.quality
    customer = f"C-{uuid.uuid4().hex[:8]}"
    ck = f"customer:{customer}|defect:D04"
    ids = []
    for _ in range(2):
        f, _ = await escalate(system, q, customer_id=customer, product_code=None)
        await assign(q, f.feedback_id, "purchasing", defect_code="D04")
        ids.append(f.feedback_id)
    capa_id = str(uuid.uuid4())
    await system.publish(CapaOpened(capa_id=capa_id, number="CAPA-2026-9001", source="manual",
                                    kind=ck, feedback_ids=ids, title="Alloy out of spec"),
                         correlation_id=ids[0], producer="capa")

    async def linked() -> bool:
        cases = [ok(await q.get(f"/cases/{i}")) for i in ids]
        kinds = await _kinds(q, customer_id=customer)
        return all(c["capas"] for c in cases) and bool(kinds.get(ck, {}).get("capas"))
    await eventually(linked, what="the CAPA linked to the cases and the kind")
    case = ok(await q.get(f"/cases/{ids[0]}"))
    assert case["capas"][0]["number"] == "CAPA-2026-9001"

    await system.publish(CapaClosed(capa_id=capa_id, kind=ck, feedback_ids=ids,
                                    closed_at=datetime.now(UTC)),
                         correlation_id=ids[0], producer="capa")

    async def afresh() -> dict[str, Any] | None:
        kind = (await _kinds(q, customer_id=customer)).get(ck)
        return kind if kind and kind["count"] == 0 else None
    kind = await eventually(afresh, what="the kind counting afresh")
    assert kind["total_complaints"] == 2 and kind["capas"][0]["closed_at"]

    async def case_sees_it_closed() -> bool:  # the case applies capa.closed on its own
        return bool(ok(await q.get(f"/cases/{ids[0]}"))["capas"][0]["closed_at"])
    await eventually(case_sees_it_closed, what="the case showing its CAPA closed")


async def test_p_5_3_4_a_case_unimproved_for_too_long_asks_for_a_capa(fast_clock_system,
                                                                      fast_actors):
    q = fast_actors.quality
    async with EventTap(fast_clock_system, "complaint.recurrence_detected") as tap:
        f, _ = await escalate(fast_clock_system, q)
        await assign(q, f.feedback_id, "engineering", defect_code="D01")
        event = await tap.wait_for("complaint.recurrence_detected", f.feedback_id,
                                   timeout=60)
        assert event.payload["reason"] == "unimproved"
        assert event.payload["feedback_ids"] == [f.feedback_id]
        assert event.payload["kind"] == f"customer:{f.customer.id}|defect:D01"
        history = ok(await q.get(f"/cases/{f.feedback_id}/history"))
        assert "unimproved" in [h["action"] for h in history]


# ------------------------------------------------------------------ additions: audit findings


async def test_p_f_3_conclusion_without_action_is_refused_while_units_have_open_requests(
        system, actors):
    q = actors.quality
    f, _ = await escalate(system, q)
    fid = f.feedback_id
    case = await assign(q, fid, "production", "purchasing")
    err = refused(await q.post(f"/cases/{fid}/conclusion", json={
        "outcome": "no_fault_found", "finding": "Could not reproduce the crack"}), 409)
    assert "production, purchasing" in err["message"] and "open" in err["message"]
    after = ok(await q.get(f"/cases/{fid}"))
    assert after["status"] == "awaiting_units" and after["version"] == case["version"]
    # an open case, with no unit asked yet, may be concluded; once only
    g, _ = await escalate(system, q)
    done = ok(await q.post(f"/cases/{g.feedback_id}/conclusion", json={
        "outcome": "not_justified", "finding": "Within the agreed tolerance of 0.2 mm"}))
    assert done["quality_record"]["outcome"] == "not_justified"
    assert done["quality_record"]["defect_code"] == ""
    refused(await q.post(f"/cases/{g.feedback_id}/conclusion", json={
        "outcome": "not_justified", "finding": "again"}), 409)


async def test_p_f_5_a_reopened_rounds_clock_starts_when_the_customer_reopened(system, actors):
    """A backlog in Quality's queue must not hide time: the clock starts at the event."""
    q = actors.quality
    f, _ = await escalate(system, q)
    fid = f.feedback_id
    await resolve(system, q, fid, "production")
    reopened_at = datetime.now(UTC).replace(microsecond=123000) - timedelta(hours=5)
    event = make_event(ComplaintReopened(feedback_id=fid, register_no=f.register_no,
                                         comment="Cracks again", reopen_count=1,
                                         had_form=True),
                       producer="intake", correlation_id=fid,
                       actor=Actor(sub="wang.fang", roles=("sales",)))
    await system.publish_envelope(event.model_copy(update={"occurred_at": reopened_at}))
    case = await case_of(q, fid, round=2)
    assert datetime.fromisoformat(case["clock"]["received_at"]) == reopened_at
    assert datetime.fromisoformat(case["clock"]["due_at"]) == reopened_at + timedelta(days=3)


async def test_p_5_3_4_a_withdrawn_complaint_stops_counting_towards_recurrence(system, actors):
    q = actors.quality
    customer = f"C-{uuid.uuid4().hex[:8]}"
    ck = f"customer:{customer}|defect:D02"
    async with EventTap(system, "complaint.recurrence_detected") as tap:
        forms = []
        for _ in range(2):  # handled, came back, handled again
            f, _ = await escalate(system, q, customer_id=customer, product_code=None)
            await resolve(system, q, f.feedback_id, "production", defect_code="D02")
            forms.append(f)
        await _kind_when(q, customer, ck, 2, [f.feedback_id for f in forms])
        first = forms[0]
        await system.publish(FeedbackWithdrawn(feedback_id=first.feedback_id,
                                               register_no=first.register_no,
                                               reason="Registered in error: another customer"),
                             correlation_id=first.feedback_id)
        kind = await _kind_when(q, customer, ck, 1, [forms[1].feedback_id])
        assert kind["total_complaints"] == 1
        third, _ = await escalate(system, q, customer_id=customer, product_code=None)
        await resolve(system, q, third.feedback_id, "production", defect_code="D02")
        await _kind_when(q, customer, ck, 2, [forms[1].feedback_id, third.feedback_id])
        await tap.drain()
        assert not [e for e in tap.seen if e.payload["kind"] == ck]  # no CAPA asked for
        fourth, _ = await escalate(system, q, customer_id=customer, product_code=None)
        await assign(q, fourth.feedback_id, "production", defect_code="D02")
        detected = await tap.wait_for("complaint.recurrence_detected",
                                      where=lambda p: p["kind"] == ck)
        assert first.feedback_id not in detected.payload["feedback_ids"]
        assert len(detected.payload["feedback_ids"]) == 3
