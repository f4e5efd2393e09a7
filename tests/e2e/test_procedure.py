"""The procedure end to end: intake, quality and capa as one choreography of events.

Each test walks one clause through the public HTTP APIs of the real services,
on the real broker and database, and asserts what the people involved see.
"""

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.e2e.flow import Flow, new_customer
from tests.support import eventually, ok


@pytest.fixture
def flow(actors) -> Flow:
    return Flow(actors)


async def test_p_1_complaint_answered_and_measures_in_place(flow, actors):
    """P-1: answered quickly and correctly, analysed, with corrective and preventive measures."""
    fb = await flow.handle_quality_complaint()
    record = fb["quality_record"]
    assert record["cause"] and record["defect_code"] == "D03"
    [outcome] = record["outcomes"]
    assert outcome["unit"] == "production" and outcome["countermeasures"]
    ok(await actors.sales.post(f"/feedback/{fb['id']}/reply",
                               json={"reply": "Root cause found; dies replaced; stock sorted."}))
    closed = ok(await actors.sales.post(f"/feedback/{fb['id']}/satisfaction",
                                        json={"satisfied": True}))
    assert closed["status"] == "closed"


@pytest.mark.parametrize("category", ["product_quality", "delivery", "service_documents", "other"])
async def test_p_2_every_kind_of_complaint_is_in_scope(flow, category):
    fb = await flow.register(category=category)
    assert fb["category"] == category and fb["is_complaint"] is True
    assert fb["register_no"].startswith("CF-")


async def test_p_f_1_need_received_and_registered_with_a_number_to_say_on_the_phone(flow,
                                                                                    actors):
    fb = await flow.register(channel="phone")
    by_number = ok(await actors.sales.get(f"/feedback/{fb['register_no']}"))
    assert by_number["id"] == fb["id"]
    listed = ok(await actors.sales.get("/feedback", params={"q": fb["register_no"]}))
    assert [i["id"] for i in listed["items"]] == [fb["id"]]


async def test_p_f_2_sales_answers_directly_or_opens_a_form_for_quality(flow, actors):
    delivery = await flow.register(category="delivery")
    replied = ok(await actors.sales.post(f"/feedback/{delivery['id']}/direct-reply",
                                         json={"reply": "Shipped today by express."}))
    assert replied["status"] == "replied"
    # Quality never sees a form for it.
    assert (await actors.quality.get(f"/cases/{delivery['id']}")).status_code == 404

    quality = await flow.register(category="product_quality")
    refused = await actors.sales.post(f"/feedback/{quality['id']}/direct-reply",
                                      json={"reply": "Sorry"})
    assert refused.status_code == 409
    assert "Complaint Handling Form" in refused.json()["error"]["message"]
    await flow.escalate(quality["id"])
    case = await flow.case(quality["id"])
    assert case["register_no"] == quality["register_no"] and case["status"] == "open"


async def test_p_f_3_quality_analyses_the_unit_acts_and_quality_follows_up(flow, actors):
    fb = await flow.register()
    await flow.escalate(fb["id"])
    assigned = await flow.assign(fb["id"], ["production", "purchasing"])
    assert assigned["status"] == "awaiting_units"
    actions = {u["unit"]: u["action_id"] for u in assigned["responsible_units"]}
    # Each responsible unit gets its own request...
    for unit, action_id in actions.items():
        action = await flow.action(action_id, unit, status="requested")
        assert action["feedback_id"] == fb["id"]
    # ...and proposes; Quality accepts one, the other is still awaited.
    await flow.propose(actions["production"], "production")
    await flow.verify(fb["id"], "production")
    case = ok(await actors.quality.get(f"/cases/{fb['id']}"))
    assert case["status"] == "awaiting_units"
    await flow.propose(actions["purchasing"], "purchasing")
    await flow.verify(fb["id"], "purchasing")
    await flow.case(fb["id"], status="resolved")
    # The units then carry out their actions; Quality sees them implemented.
    await flow.action(actions["production"], "production", status="accepted")
    async with actors.unit("production") as unit:
        ok(await unit.post(f"/actions/{actions['production']}/items/corrective/1/done",
                           json={"note": "die replaced"}))
        done = ok(await unit.post(f"/actions/{actions['production']}/items/preventive/1/done",
                                  json={"note": "counter installed"}))
    assert done["status"] == "completed"

    async def implemented():
        case = ok(await actors.quality.get(f"/cases/{fb['id']}"))
        return {u["unit"]: u["status"] for u in case["responsible_units"]}["production"] \
            == "implemented"
    await eventually(implemented, what="Quality to see the unit's actions implemented")


async def test_p_f_4_unsatisfied_customer_reopens_the_case_then_it_closes(flow, actors):
    fb = await flow.handle_quality_complaint()
    ok(await actors.sales.post(f"/feedback/{fb['id']}/reply", json={"reply": "Fixed."}))
    reopened = ok(await actors.sales.post(f"/feedback/{fb['id']}/satisfaction", json={
        "satisfied": False, "comment": "Still cracking in lot L2026-11-09"}))
    assert reopened["status"] == "with_quality" and reopened["reopen_count"] == 1
    case = await flow.case(fb["id"], round=2, status="open", what="the reopened round")
    assert case["clock"]["breached"] is False
    # Round 2 goes through Quality again and back to Sales.
    assigned = await flow.assign(fb["id"], ["production"])
    await flow.propose(assigned["responsible_units"][0]["action_id"], "production")
    await flow.verify(fb["id"], "production")
    await flow.feedback(fb["id"], status="quality_record_ready")
    ok(await actors.sales.post(f"/feedback/{fb['id']}/reply", json={"reply": "Fixed again."}))
    closed = ok(await actors.sales.post(f"/feedback/{fb['id']}/satisfaction",
                                        json={"satisfied": True}))
    assert closed["status"] == "closed" and closed["reopen_count"] == 1
    await flow.case(fb["id"], status="closed", what="Quality's case to close")


async def test_p_5_3_1_quality_complaint_with_photos_and_samples_reaches_quality(flow, actors):
    fb = await flow.register()
    png = b"\x89PNG\r\n\x1a\n" + uuid.uuid4().bytes * 64
    ok(await actors.sales.post(f"/feedback/{fb['id']}/attachments",
                               files={"file": ("crack.png", png, "image/png")}), 201)
    ok(await actors.sales.post(f"/feedback/{fb['id']}/samples", json={
        "quantity": 12, "received_on": "2026-11-20", "location": "QA lab shelf B3"}), 201)
    await flow.escalate(fb["id"])
    case = await flow.case(fb["id"])
    text = str(case)
    assert "crack.png" in text and "QA lab shelf B3" in text


async def test_p_5_3_2_return_disposition_with_quantity_and_cost_reaches_sales(flow, actors):
    fb = await flow.register()
    await flow.escalate(fb["id"])
    assigned = await flow.assign(fb["id"], ["production"])
    action_id = assigned["responsible_units"][0]["action_id"]
    await flow.propose(action_id, "production", disposition={
        "type": "rework", "quantity": 40, "cost": {"amount": "860.00", "currency": "CNY"}})
    # Quality rejects first: the unit sees why, revises, and submits again.
    await flow.verify(fb["id"], "production", accepted=False, reason="Containment misses WIP")
    returned = await flow.action(action_id, "production", status="returned")
    assert "Containment misses WIP" in str(returned)
    await flow.propose(action_id, "production", disposition={
        "type": "rework", "quantity": 40, "cost": {"amount": "860.00", "currency": "CNY"}})
    await flow.verify(fb["id"], "production")
    done = await flow.feedback(fb["id"], status="quality_record_ready")
    disposition = done["quality_record"]["outcomes"][0]["disposition"]
    assert disposition["type"] == "rework" and disposition["quantity"] == 40
    assert disposition["cost"] == {"amount": "860.00", "currency": "CNY"}


async def test_p_5_3_3_delivery_complaint_handled_by_sales_and_kept_in_the_register(flow, actors):
    fb = await flow.register(category="delivery")
    ok(await actors.sales.post(f"/feedback/{fb['id']}/direct-reply",
                               json={"reply": "Partial shipment completed today."}))
    closed = ok(await actors.sales.post(f"/feedback/{fb['id']}/satisfaction",
                                        json={"satisfied": True}))
    assert closed["status"] == "closed" and closed["has_form"] is False
    # Sales may still open a form for a delivery complaint.
    other = await flow.register(category="delivery")
    await flow.escalate(other["id"])
    await flow.case(other["id"])


async def test_p_5_3_4_third_complaint_of_the_same_kind_opens_a_capa_that_needs_proof(flow,
                                                                                     actors):
    customer = new_customer()
    product = f"HSG-{uuid.uuid4().hex[:6]}"
    ids = []
    for _ in range(3):
        fb = await flow.handle_quality_complaint(customer=customer, product_code=product,
                                                 defect_code="D02")
        ids.append(fb["id"])

    async def capa_opened():
        page = ok(await actors.capa_quality.get("/capas", params={"source": "recurrence"}))
        return [c for c in page["items"] if set(ids) <= set(c["feedback_ids"])]
    [capa] = await eventually(capa_opened, what="a CAPA for the recurring complaint")
    assert capa["status"] == "open" and capa["number"].startswith("CAPA-")
    cid = capa["id"]
    q = actors.capa_quality
    ok(await q.put(f"/capas/{cid}/root-cause", json={
        "statement": "Polishing step skipped under schedule pressure", "category": "method"}))
    ok(await q.put(f"/capas/{cid}/plan", json={"actions": [
        {"description": "Interlock polishing station", "owner": "liu.gang",
         "due_date": "2026-12-31"}]}))
    ok(await q.post(f"/capas/{cid}/implemented", json={"note": "interlock live"}))
    refused = await q.post(f"/capas/{cid}/close")
    assert refused.status_code == 409 and "effective" in refused.json()["error"]["message"]
    ok(await q.post(f"/capas/{cid}/effectiveness", json={
        "criteria": "No D02 from this customer for 90 days", "window_from": "2026-08-01",
        "window_to": "2026-10-31", "evaluation": "None recurred", "effective": True}))
    closed = ok(await q.post(f"/capas/{cid}/close"))
    assert closed["status"] == "closed"


async def test_p_5_3_5_major_complaint_is_escalated_and_flagged_at_once(flow, actors):
    fb = await flow.register(severity="major")
    assert fb["status"] == "with_quality" and fb["has_form"] is True
    case = await flow.case(fb["id"], what="the major case")
    assert case["severity"] == "major"
    assert {h["unit"] for h in case["major"]["heads"]} >= {"rd", "engineering", "production"}
    review = ok(await actors.quality.post(f"/cases/{fb['id']}/major-review", json={
        "held_at": "2026-11-28T09:00:00Z", "participants": ["R&D head", "Production head"],
        "decisions": "Stop line 3; 100% inspection", "drafted_solution": "Replace lot, 8D"}))
    assert "Stop line 3" in str(review)
    majors = ok(await actors.quality.get("/cases", params={"severity": "major"}))
    assert fb["id"] in [c["id"] for c in majors["items"]]


async def test_p_3_1_only_sales_talks_to_the_customer(flow, actors, system):
    fb = await flow.handle_quality_complaint()
    async with system.client("intake", "quality") as quality_on_intake:
        refused = await quality_on_intake.post(f"/feedback/{fb['id']}/reply",
                                               json={"reply": "From Quality"})
    assert refused.status_code == 403
    after = ok(await actors.sales.get(f"/feedback/{fb['id']}"))
    assert after["status"] == "quality_record_ready" and after["customer_reply"] is None


async def test_p_3_2_only_quality_determines_responsibility(flow, actors, system):
    fb = await flow.register()
    await flow.escalate(fb["id"])
    await flow.case(fb["id"])
    async with system.client("quality", "sales") as sales_on_quality:
        refused = await sales_on_quality.post(f"/cases/{fb['id']}/responsibility", json={
            "preliminary_cause": "x", "defect_code": "D03",
            "units": [{"unit": "production", "request": "x"}]})
    assert refused.status_code == 403
    case = ok(await actors.quality.get(f"/cases/{fb['id']}"))
    assert case["status"] == "open"


async def test_p_3_3_a_unit_acts_only_on_its_own_requests(flow, actors):
    fb = await flow.register()
    await flow.escalate(fb["id"])
    assigned = await flow.assign(fb["id"], ["production"])
    action_id = assigned["responsible_units"][0]["action_id"]
    await flow.action(action_id, "production")
    async with actors.unit("logistics") as other:
        refused = await other.put(f"/actions/{action_id}/investigation",
                                  json={"containment": "not ours"})
    assert refused.status_code in (403, 404)
    action = await flow.action(action_id, "production")
    assert not action.get("containment")


async def test_p_5_4_1_register_holds_every_feedback_whatever_its_source(flow, actors):
    customer = new_customer()
    made = []
    for channel, category in [("phone", "product_quality"), ("email", "delivery"),
                              ("fax", "service_documents"), ("letter", "suggestion"),
                              ("visit", "other"), ("proactive", "delivery")]:
        made.append(await flow.register(customer=customer, channel=channel, category=category))
    listed = ok(await actors.manager_intake.get("/feedback",
                                                params={"customer_id": customer["id"]}))
    assert listed["total"] == 6
    assert {i["channel"] for i in listed["items"]} == {"phone", "email", "fax", "letter",
                                                      "visit", "proactive"}
    suggestion = next(i for i in listed["items"] if i["category"] == "suggestion")
    assert suggestion["is_complaint"] is False


async def test_p_5_4_2_every_change_is_attributable_and_nothing_is_deleted(flow, actors):
    fb = await flow.handle_quality_complaint()
    history = ok(await actors.auditor_intake.get(f"/feedback/{fb['id']}/history"))
    actions = [h["action"] for h in history]
    assert actions[0] == "registered"
    assert all(h["actor"]["sub"] and h["at"] for h in history)
    assert (await actors.sales.delete(f"/feedback/{fb['id']}")).status_code == 405
    case_history = ok(await actors.quality.get(f"/cases/{fb['id']}/history"))
    assert any(h["actor"]["sub"] == "li.wei" for h in case_history)


async def test_p_f_5_three_day_clock_is_visible_while_open_and_breaches_are_flagged(
        fast_actors):
    flow = Flow(fast_actors)
    fb = await flow.register()
    await flow.escalate(fb["id"])
    case = await flow.case(fb["id"])
    clock = case["clock"]
    assert clock["due_at"] and clock["time_left_seconds"] > 0 and clock["breached"] is False

    async def shows_breach():
        c = ok(await fast_actors.quality.get(f"/cases/{fb['id']}"))
        return c if c["clock"]["breached"] else None
    breached = await eventually(shows_breach, what="the 3-day breach flag", timeout=30)
    assert breached["status"] == "open", "the breach must be visible while the case is open"
    assert breached["clock"]["at_risk"] is True and breached["clock"]["time_left_seconds"] < 0


async def test_p_f_6_months_forms_are_summarised_by_reporting(flow, actors, system):
    customer = new_customer()
    fb = await flow.handle_quality_complaint(customer=customer)
    month = fb["received_at"][:7]
    async with system.client("reporting", "manager") as manager:
        async def counted():
            resp = await manager.get("/statistics/monthly", params={"month": month})
            if resp.status_code != 200:
                return None
            table = resp.json()
            rows = {r["key"]: r for r in table["counts"]["by_customer"]}
            return table if customer["id"] in rows else None
        table = await eventually(counted, what="this complaint in the monthly table")
    rows = {r["key"]: r for r in table["counts"]["by_customer"]}
    assert rows[customer["id"]] == {"key": customer["id"], "name": customer["name"],
                                    "feedbacks": 1, "complaints": 1}
    loss = {r["key"]: r for r in table["losses"]["by_customer"]}[customer["id"]]
    assert (loss["currency"], loss["amount"], loss["name"]) == \
        ("CNY", "1250.00", customer["name"])
    assert table["timeliness"]["quality_records"] >= 1


async def test_p_f_5_a_paper_form_entered_late_starts_the_clock_when_it_was_opened(flow, actors):
    fb = await flow.register(received_at=(datetime.now(UTC) - timedelta(days=5)).isoformat())
    opened = datetime.now(UTC) - timedelta(days=4)
    ok(await actors.sales.post(f"/feedback/{fb['id']}/escalate", json={
        "note": "paper form from the site visit", "form_opened_at": opened.isoformat()}))
    case = await flow.case(fb["id"])
    assert case["clock"]["breached"] is True and case["clock"]["time_left_seconds"] < 0
    # A form cannot be opened before the complaint arrived.
    other = await flow.register()
    refused = await actors.sales.post(f"/feedback/{other['id']}/escalate", json={
        "form_opened_at": (datetime.now(UTC) - timedelta(days=30)).isoformat()})
    assert refused.status_code == 422
    assert refused.json()["error"]["details"][0]["loc"] == "body.form_opened_at"


async def test_p_f_3_complaint_not_the_plants_fault_is_concluded_without_action_then_closed(
        flow, actors):
    """Quality finds customer misuse: no unit is asked to act, Sales still gets the record."""
    fb = await flow.register()
    await flow.escalate(fb["id"])
    case = await flow.case(fb["id"])
    url = f"/cases/{fb['id']}/conclusion"
    conclusion = {"outcome": "customer_misuse", "defect_code": "D03",
                  "finding": "Housings torqued to 45 Nm at the customer; the drawing allows 25"}
    for loc, bad in (("body.outcome", conclusion | {"outcome": "bad_luck"}),
                     ("body.finding", conclusion | {"finding": ""}),
                     ("body.defect_code", conclusion | {"defect_code": "D77"})):
        err = (await actors.quality.post(url, json=bad)).json()["error"]
        assert loc in [d["loc"] for d in err["details"]], err
    assert ok(await actors.quality.get(f"/cases/{fb['id']}"))["version"] == case["version"]
    async with actors.as_role("quality", "sales") as sales_on_quality:
        assert (await sales_on_quality.post(url, json=conclusion)).status_code == 403  # P-3.2

    concluded = ok(await actors.quality.post(url, json=conclusion))
    assert concluded["status"] == "resolved" and concluded["responsible_units"] == []
    assert concluded["clock"]["running"] is False and concluded["clock"]["met_deadline"] is True
    assert concluded["quality_record"]["outcome"] == "customer_misuse"
    assert concluded["kinds"] == []  # not the plant's fault: no recurrence count (P-5.3.4)

    ready = await flow.feedback(fb["id"], status="quality_record_ready")
    record = ready["quality_record"]
    assert record["outcome"] == "customer_misuse" and record["outcomes"] == []
    assert record["cause"].startswith("Housings torqued") and record["defect_code"] == "D03"
    ok(await actors.sales.post(f"/feedback/{fb['id']}/reply", json={
        "reply": "The cracks come from over-torque at assembly; please use 25 Nm."}))
    closed = ok(await actors.sales.post(f"/feedback/{fb['id']}/satisfaction",
                                        json={"satisfied": True}))
    assert closed["status"] == "closed"
    await flow.case(fb["id"], status="closed", what="Quality's case to close")
    actions = ok(await actors.capa_quality.get("/actions", params={"feedback_id": fb["id"]}))
    assert actions["total"] == 0  # no responsible unit was asked for anything


async def test_p_f_4_sales_returns_an_inadequate_record_and_quality_answers_again(flow, actors):
    """P-F.4 "Sales reviews it": a record Sales cannot answer the customer with goes back to
    Quality, which is not the customer being unsatisfied."""
    fb = await flow.handle_quality_complaint()
    url = f"/feedback/{fb['id']}/return-to-quality"
    err = (await actors.sales.post(url, json={"reason": "  "})).json()["error"]
    assert err["details"][0]["loc"] == "body.reason"
    async with actors.as_role("intake", "quality") as quality:
        assert (await quality.post(url, json={"reason": "x"})).status_code == 403
    assert ok(await actors.sales.get(f"/feedback/{fb['id']}"))["version"] == fb["version"]

    returned = ok(await actors.sales.post(url, json={
        "reason": "No containment for the stock in transit; the customer will ask"}))
    assert returned["status"] == "with_quality" and returned["returned_to_quality"] == 1
    assert returned["reopen_count"] == 0 and returned["satisfaction"] is None
    again = await actors.sales.post(url, json={"reason": "again"})
    assert again.status_code == 409 and "quality_record_ready" in again.json()["error"]["message"]

    case = await flow.case(fb["id"], round=2, status="open", what="the returned round")
    assert case["rounds"][1]["returned_reason"].startswith("No containment")
    assert case["rounds"][1]["reopen_comment"] is None
    assert case["clock"]["running"] and case["rounds"][0]["record"]["met_deadline"] is True
    assigned = await flow.assign(fb["id"], ["production"])
    await flow.propose(assigned["responsible_units"][0]["action_id"], "production")
    await flow.verify(fb["id"], "production")
    ready = await flow.feedback(fb["id"], status="quality_record_ready")
    assert ready["quality_record"]["round"] == 2
    ok(await actors.sales.post(f"/feedback/{fb['id']}/reply", json={"reply": "Fixed; stock "
                                                                    "in transit sorted too."}))
    closed = ok(await actors.sales.post(f"/feedback/{fb['id']}/satisfaction",
                                        json={"satisfied": True}))
    assert closed["status"] == "closed" and closed["reopen_count"] == 0
    history = ok(await actors.sales.get(f"/feedback/{fb['id']}/history"))
    [entry] = [h for h in history if h["action"] == "returned_to_quality"]
    assert entry["actor"]["sub"] == "wang.fang" and entry["note"].startswith("No containment")


async def test_p_5_3_5_a_case_quality_flags_major_later_is_major_in_the_register(flow, actors):
    cust = new_customer()
    fb = await flow.register(customer=cust)
    await flow.escalate(fb["id"])
    await flow.case(fb["id"])
    ok(await actors.quality.post(f"/cases/{fb['id']}/major",
                                 json={"reason": "The customer's line 3 stopped"}))
    major = await flow.feedback(fb["id"], severity="major")
    assert major["status"] == "with_quality"
    listed = ok(await actors.sales.get("/feedback", params={"severity": "major",
                                                           "customer_id": cust["id"]}))
    assert [i["id"] for i in listed["items"]] == [fb["id"]]
    history = ok(await actors.sales.get(f"/feedback/{fb['id']}/history"))
    [entry] = [h for h in history if h["action"] == "major_alert"]
    assert entry["actor"]["sub"] == "li.wei" and entry["changes"]["was"] == "normal"
