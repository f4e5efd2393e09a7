"""Intake (Sales), end to end: the Customer Feedback Register through its HTTP API.

Quality's side is played by publishing its events on the real exchange
(`system.publish`), so these tests prove intake's part of the choreography
without depending on how Quality reaches its conclusions.
"""

import asyncio
import hashlib
import io
import os
import re
import uuid
import zipfile
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from shared.contracts import (
    ComplaintAccepted,
    ResolutionReady,
    ResponsibilityAssigned,
    UnitOutcome,
    UnitRequest,
)
from shared.events import Actor
from tests.e2e.flow import received_a_little_ago
from tests.support import eventually, ok, refused

QUALITY = Actor(sub="li.wei", name="Li Wei", roles=("quality",))
CHANNELS = ("phone", "fax", "email", "letter", "visit", "proactive", "web")


def customer() -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    return {"id": f"C-{tag}", "name": f"Bright Motors {tag}", "contact_person": "Zhang Min",
            "email": f"quality@{tag}.example", "phone": "+86 755 1234 5678", "language": "en"}


def body(cust: dict | None = None, **kw: Any) -> dict[str, Any]:
    return {
        "customer": cust or customer(), "channel": "phone",
        "received_at": received_a_little_ago().isoformat(),
        "category": "product_quality", "severity": "normal",
        "product": {"code": f"HSG-{uuid.uuid4().hex[:6]}", "name": "Motor housing",
                    "lot": "L2026-11-03", "order_no": "SO-88123"},
        "quantity_affected": 40,
        "description": "Housings crack at the mounting boss after torque test.",
        "estimated_loss": {"amount": "1250.00", "currency": "CNY"},
    } | kw


def zipped(*names: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name in names:
            z.writestr(name, "<xml/>")
    return buf.getvalue()


DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


def sales_actions(history: list[dict[str, Any]]) -> list[str]:
    """What Sales did; Quality's service may add its own entries (e.g. its acceptance)."""
    return [h["action"] for h in history if h["actor"]["sub"] == "wang.fang"]


async def register(sales: httpx.AsyncClient, **kw: Any) -> dict[str, Any]:
    return ok(await sales.post("/feedback", json=body(**kw)), 201)


async def listed(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    return ok(await client.get("/feedback", params=params))


async def reaches(client: httpx.AsyncClient, ref: str, **expect: Any) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        fb = ok(await client.get(f"/feedback/{ref}"))
        return fb if all(fb.get(k) == v for k, v in expect.items()) else None
    return await eventually(check, what=f"feedback {ref} to show {expect}")


def resolution(fb: dict[str, Any], round_: int = 1, summary: str = "Die replaced") \
        -> ResolutionReady:
    now = datetime.now(UTC)
    return ResolutionReady(
        feedback_id=fb["id"], register_no=fb["register_no"], round=round_,
        cause="Porosity at the boss from a worn die", defect_code="D03",
        outcomes=[UnitOutcome(unit="production", action_id=str(uuid.uuid4()),
                              root_cause="Die worn beyond limit",
                              countermeasures=["Replace die", "Die life counter"])],
        summary=summary, received_at=now - timedelta(days=1), resolved_at=now,
        due_at=now + timedelta(days=2), met_deadline=True)


async def with_quality_record(system, sales: httpx.AsyncClient, **kw: Any) -> dict[str, Any]:
    """A product-quality complaint escalated, with Quality's record (round 1) back at Sales."""
    fb = await register(sales, **kw)
    ok(await sales.post(f"/feedback/{fb['id']}/escalate", json={"note": "Please analyse"}))
    await system.publish(resolution(fb), correlation_id=fb["id"], actor=QUALITY,
                         producer="quality")
    return await reaches(sales, fb["id"], status="quality_record_ready")


# ---------------------------------------------------------------- P-F.1, P-5.1, P-5.2


async def test_p_f_1_feedback_registered_with_register_number_and_findable_by_it(actors):
    fb = await register(actors.sales)
    year = datetime.now(UTC).year
    assert re.fullmatch(rf"CF-{year}-\d{{6}}", fb["register_no"])
    assert fb["status"] == "registered" and fb["registered_by"] == "wang.fang"
    by_number = ok(await actors.sales.get(f"/feedback/{fb['register_no']}"))
    assert by_number["id"] == fb["id"]
    found = await listed(actors.sales, q=fb["register_no"])
    assert [f["id"] for f in found["items"]] == [fb["id"]]
    history = ok(await actors.sales.get(f"/feedback/{fb['register_no']}/history"))
    assert history[0]["action"] == "registered" and history[0]["actor"]["sub"] == "wang.fang"


async def test_p_f_1_register_numbers_are_distinct(actors):
    numbers = {(await register(actors.sales))["register_no"] for _ in range(3)}
    assert len(numbers) == 3


async def test_p_5_1_each_channel_is_recorded(actors):
    cust = customer()
    for channel in CHANNELS:
        fb = await register(actors.sales, cust=cust, channel=channel)
        assert fb["channel"] == channel
    page = await listed(actors.sales, customer_id=cust["id"])
    assert sorted(f["channel"] for f in page["items"]) == sorted(CHANNELS)
    fax = await listed(actors.sales, customer_id=cust["id"], channel="fax")
    assert [f["channel"] for f in fax["items"]] == ["fax"]


async def test_p_5_2_1_product_quality_is_classified_as_a_complaint(actors):
    fb = await register(actors.sales, category="product_quality")
    assert fb["category"] == "product_quality" and fb["is_complaint"] is True


async def test_p_5_2_2_delivery_is_classified_as_a_complaint(actors):
    fb = await register(actors.sales, category="delivery", product=None)
    assert fb["category"] == "delivery" and fb["is_complaint"] is True


async def test_p_5_2_3_service_documents_is_classified_as_a_complaint(actors):
    fb = await register(actors.sales, category="service_documents")
    assert fb["category"] == "service_documents" and fb["is_complaint"] is True


async def test_p_5_2_suggestion_is_registered_but_not_a_complaint(actors):
    fb = await register(actors.sales, category="suggestion", severity="normal")
    assert fb["is_complaint"] is False and fb["severity"] == "normal"
    err = refused(await actors.sales.post(f"/feedback/{fb['id']}/escalate", json={}), 409)
    assert "suggestion is not a complaint" in err["message"]
    err = refused(await actors.sales.post("/feedback", json=body(category="suggestion",
                                                                  severity="major")), 422)
    assert err["details"][0]["loc"] == "body.severity"


# ---------------------------------------------------------------- P-5.3


async def test_p_5_3_3_delivery_complaint_answered_directly(actors):
    fb = await register(actors.sales, category="delivery", channel="email")
    reply = "The truck was held at customs; it arrives Friday. We pay the express fee."
    done = ok(await actors.sales.post(f"/feedback/{fb['register_no']}/direct-reply",
                                      json={"reply": reply}))
    assert done["status"] == "replied" and done["has_form"] is False
    assert done["direct_reply"]["text"] == reply and done["direct_reply"]["by"] == "wang.fang"
    history = ok(await actors.sales.get(f"/feedback/{fb['id']}/history"))
    assert [h["action"] for h in history] == ["registered", "replied_directly"]


async def test_p_5_3_3_sales_may_still_open_a_form_for_delivery(actors):
    fb = await register(actors.sales, category="delivery")
    done = ok(await actors.sales.post(f"/feedback/{fb['id']}/escalate"))
    assert done["status"] == "with_quality" and done["has_form"] is True


async def test_p_5_3_3_product_quality_cannot_be_answered_directly(actors):
    fb = await register(actors.sales, category="product_quality")
    err = refused(await actors.sales.post(f"/feedback/{fb['id']}/direct-reply",
                                          json={"reply": "Sorry about that"}), 409)
    assert "Complaint Handling Form (P-5.3.1)" in err["message"]
    assert "escalate" in err["message"]
    after = ok(await actors.sales.get(f"/feedback/{fb['id']}"))
    assert after["status"] == "registered" and after["version"] == fb["version"]


async def test_p_5_3_1_escalated_with_photo_and_returned_samples(actors, system):
    fb = await register(actors.sales)
    photo = b"\x89PNG\r\n\x1a\n" + os.urandom(300_000)
    sha = hashlib.sha256(photo).hexdigest()
    files = {"file": ("crack at boss.png", photo, "image/png")}
    meta = ok(await actors.sales.post(f"/feedback/{fb['id']}/attachments", files=files), 201)
    assert meta == meta | {"sha256": sha, "content_type": "image/png", "size": len(photo),
                           "filename": "crack at boss.png", "uploaded_by": "wang.fang"}
    again = ok(await actors.sales.post(f"/feedback/{fb['id']}/attachments", files=files), 200)
    assert again == meta  # the same file twice is one entry
    sample = {"quantity": 12, "received_on": "2026-11-20", "location": "QA lab shelf B3"}
    ok(await actors.sales.post(f"/feedback/{fb['id']}/samples", json=sample), 201)
    ok(await actors.sales.post(f"/feedback/{fb['id']}/samples", json=sample), 200)  # a retry
    done = ok(await actors.sales.post(f"/feedback/{fb['id']}/escalate",
                                      json={"note": "Customer stopped line 3"}))
    assert done["status"] == "with_quality" and done["has_form"] is True
    assert done["form_opened_at"] is not None
    assert [a["sha256"] for a in done["attachments"]] == [sha]
    assert done["samples"] == [sample | {"note": None}]
    async with system.client("intake", "quality") as quality:  # Quality reads the evidence
        download = await quality.get(f"/feedback/{fb['id']}/attachments/{sha}")
    assert download.status_code == 200
    assert download.headers["content-type"] == "image/png"
    assert hashlib.sha256(download.content).hexdigest() == sha
    history = ok(await actors.sales.get(f"/feedback/{fb['id']}/history"))
    assert sales_actions(history) == ["registered", "attachment_added", "sample_added",
                                             "escalated"]


async def test_p_5_3_1_documents_of_every_allowed_kind_are_accepted(actors, system):
    fb = await register(actors.sales)
    kinds = {"photo.jpg": (b"\xff\xd8\xff\xe0" + os.urandom(64), "image/jpeg"),
             "report.pdf": (b"%PDF-1.7\n" + os.urandom(64), "application/pdf"),
             "note.txt": ("裂纹在安装凸台 - crack at boss\n".encode(), "text/plain"),
             "8D.docx": (zipped("[Content_Types].xml", "word/document.xml"), DOCX),
             "scan.tif": (b"II*\x00" + os.urandom(64), "image/tiff"),
             "phone.heic": (b"\x00\x00\x00\x18ftypheic" + os.urandom(64), "image/heic")}
    for name, (content, ctype) in kinds.items():
        meta = ok(await actors.sales.post(f"/feedback/{fb['id']}/attachments",
                                          files={"file": (name, content, ctype)}), 201)
        assert meta["content_type"] == ctype
    async with system.client("intake", "quality") as quality:
        pdf = hashlib.sha256(kinds["report.pdf"][0]).hexdigest()
        resp = await quality.get(f"/feedback/{fb['id']}/attachments/{pdf}")
        assert resp.status_code == 200 and resp.content == kinds["report.pdf"][0]


async def test_p_5_3_1_attachment_of_a_wrong_type_or_too_large_is_refused(actors):
    fb = await register(actors.sales)
    url = f"/feedback/{fb['id']}/attachments"
    exe = {"file": ("tool.exe", b"MZ\x90\x00" + os.urandom(64), "application/octet-stream")}
    assert "not accepted" in refused(await actors.sales.post(url, files=exe), 415)["message"]
    archive = {"file": ("stuff.zip", zipped("a.txt"), "application/zip")}
    refused(await actors.sales.post(url, files=archive), 415)
    liar = {"file": ("photo.png", b"%PDF-1.4\n" + os.urandom(64), "image/png")}
    assert "declared" in refused(await actors.sales.post(url, files=liar), 415)["message"]
    big = {"file": ("big.png", b"\x89PNG\r\n\x1a\n" + bytes(25 * 1024 * 1024), "image/png")}
    assert "limit" in refused(await actors.sales.post(url, files=big), 413)["message"]
    after = ok(await actors.sales.get(f"/feedback/{fb['id']}"))
    assert after["attachments"] == [] and after["version"] == fb["version"]


async def test_p_5_3_5_major_complaint_is_escalated_at_registration(actors):
    fb = await register(actors.sales, severity="major")
    assert fb["status"] == "with_quality" and fb["has_form"] is True
    history = ok(await actors.sales.get(f"/feedback/{fb['id']}/history"))
    assert sales_actions(history) == ["registered", "escalated"]


async def test_p_f_5_quality_due_time_is_shown_on_the_feedback(actors, system):
    fb = await register(actors.sales)
    ok(await actors.sales.post(f"/feedback/{fb['id']}/escalate"))
    now = datetime.now(UTC).replace(microsecond=0)
    due = now + timedelta(days=3)
    await system.publish(ComplaintAccepted(
        feedback_id=fb["id"], register_no=fb["register_no"], round=7, received_at=now,
        due_at=due, at_risk_at=due - timedelta(hours=12), severity="normal"),
        correlation_id=fb["id"], actor=QUALITY, producer="quality")

    async def shown() -> bool:
        got = ok(await actors.sales.get(f"/feedback/{fb['id']}"))["quality_due_at"]
        return got is not None and datetime.fromisoformat(got) == due
    await eventually(shown, what="Quality's due time on the feedback")


# ---------------------------------------------------------------- P-F.4


async def test_p_f_4_reply_needs_quality_record_then_satisfied_customer_closes(actors, system):
    fb = await register(actors.sales)
    ok(await actors.sales.post(f"/feedback/{fb['id']}/escalate"))
    err = refused(await actors.sales.post(f"/feedback/{fb['id']}/reply",
                                          json={"reply": "Here is our analysis"}), 409)
    assert "Quality's record is not ready" in err["message"]
    await system.publish(resolution(fb), correlation_id=fb["id"], actor=QUALITY,
                         producer="quality")
    ready = await reaches(actors.sales, fb["id"], status="quality_record_ready")
    assert ready["quality_record"]["defect_code"] == "D03"
    assert ready["quality_record"]["outcomes"][0]["unit"] == "production"
    replied = ok(await actors.sales.post(f"/feedback/{fb['id']}/reply", json={
        "reply": "The die was worn; it is replaced and counted. Replacement parts ship today."}))
    assert replied["status"] == "replied" and replied["customer_reply"]["by"] == "wang.fang"
    closed = ok(await actors.sales.post(f"/feedback/{fb['id']}/satisfaction",
                                        json={"satisfied": True, "comment": "Thank you"}))
    assert closed["status"] == "closed" and closed["satisfaction"]["satisfied"] is True
    assert closed["quality_record"]["summary"] == "Die replaced"  # records kept
    history = ok(await actors.sales.get(f"/feedback/{fb['id']}/history"))
    received = next(h for h in history if h["action"] == "quality_record_received")
    assert received["actor"]["sub"] == "li.wei"  # attributable to Quality
    assert refused(await actors.sales.post(f"/feedback/{fb['id']}/withdraw",
                                           json={"reason": "oops"}), 409)


async def test_p_f_4_unsatisfied_customer_reopens_to_quality_with_count(actors, system):
    fb = await with_quality_record(system, actors.sales)
    ok(await actors.sales.post(f"/feedback/{fb['id']}/reply", json={"reply": "Die replaced"}))
    reopened = ok(await actors.sales.post(f"/feedback/{fb['id']}/satisfaction", json={
        "satisfied": False, "comment": "Cracks again in lot L2026-11-09"}))
    assert reopened["status"] == "with_quality" and reopened["reopen_count"] == 1
    assert reopened["satisfaction"]["comment"] == "Cracks again in lot L2026-11-09"
    # A stale round-1 record (e.g. replayed) changes nothing; round 2 is Quality's new record.
    await system.publish(resolution(fb, 1), correlation_id=fb["id"], actor=QUALITY,
                         producer="quality")
    await system.publish(resolution(fb, 2, "Second die and casting parameters changed"),
                         correlation_id=fb["id"], actor=QUALITY, producer="quality")
    ready = await reaches(actors.sales, fb["id"], status="quality_record_ready")
    assert ready["quality_record"]["round"] == 2
    ok(await actors.sales.post(f"/feedback/{fb['id']}/reply", json={"reply": "Fixed at source"}))
    closed = ok(await actors.sales.post(f"/feedback/{fb['id']}/satisfaction",
                                        json={"satisfied": True}))
    assert closed["status"] == "closed" and closed["reopen_count"] == 1


async def test_p_f_4_unsatisfied_after_direct_reply_goes_back_to_sales(actors):
    fb = await register(actors.sales, category="delivery")
    ok(await actors.sales.post(f"/feedback/{fb['id']}/direct-reply", json={"reply": "Friday"}))
    back = ok(await actors.sales.post(f"/feedback/{fb['id']}/satisfaction",
                                      json={"satisfied": False, "comment": "Too late"}))
    assert back["status"] == "registered" and back["reopen_count"] == 1


# ---------------------------------------------------------------- P-5.4


async def test_p_5_4_1_register_lists_and_filters_everything_suggestions_included(actors):
    cust = customer()
    tag = uuid.uuid4().hex[:10]
    now = datetime.now(UTC)
    made = []
    for i, (category, channel) in enumerate([("product_quality", "phone"),
                                             ("delivery", "fax"), ("suggestion", "visit")]):
        made.append(await register(
            actors.sales, cust=cust, category=category, channel=channel,
            received_at=(now - timedelta(hours=3 - i)).isoformat(),
            description=f"Remark {tag} number {i} (a.*b)"))
    page = await listed(actors.auditor_intake, customer_id=cust["id"])
    assert page["total"] == 3
    assert [f["id"] for f in page["items"]] == [f["id"] for f in reversed(made)]  # newest first
    assert {f["category"] for f in page["items"]} == {"product_quality", "delivery",
                                                      "suggestion"}
    suggestions = await listed(actors.manager_intake, customer_id=cust["id"],
                               category="suggestion")
    assert [f["id"] for f in suggestions["items"]] == [made[2]["id"]]
    assert (await listed(actors.sales, q=tag.upper()))["total"] == 3  # case-insensitive
    assert (await listed(actors.sales, q=cust["name"]))["total"] == 3
    assert (await listed(actors.sales, q=f"{tag} number 1 (a.*b)"))["total"] == 1  # literal
    assert (await listed(actors.sales, q=f"{tag}.*number"))["total"] == 0  # no regex
    assert (await listed(actors.sales, product_code=made[0]["product"]["code"]))["total"] == 1
    window = await listed(actors.sales, customer_id=cust["id"],
                          received_from=(now - timedelta(hours=2, minutes=30)).isoformat(),
                          received_to=(now - timedelta(hours=1, minutes=30)).isoformat())
    assert [f["id"] for f in window["items"]] == [made[1]["id"]]
    assert (await listed(actors.sales, customer_id=cust["id"], status="registered",
                         severity="normal"))["total"] == 3
    second = await listed(actors.sales, customer_id=cust["id"], page=2, page_size=2)
    assert second["total"] == 3 and [f["id"] for f in second["items"]] == [made[0]["id"]]


async def test_p_5_4_1_register_found_by_lot_and_by_customer_number_in_free_text(actors):
    """P-5.4.1: a lot the customer quotes finds its feedback, open (Sales' inbox) and in the
    period's history; `q` matches a customer number and a lot too, not only names."""
    cust, tag = customer(), uuid.uuid4().hex[:8].upper()
    lot = f"L{tag}-A"
    product = {"code": f"HSG-{tag}", "name": "Motor housing", "lot": lot}
    first = await register(actors.sales, cust=cust, product=product)
    other = await register(actors.sales, cust=cust, product=product | {"lot": f"L{tag}-B"})
    await register(actors.sales, product=product)  # the same lot at another customer
    answered = await register(actors.sales, cust=cust, product=product, category="delivery")
    ok(await actors.sales.post(f"/feedback/{answered['id']}/direct-reply",
                               json={"reply": "The shipment leaves today."}))
    by_lot = await listed(actors.sales, lot=lot)
    assert by_lot["total"] == 3 and other["id"] not in {f["id"] for f in by_lot["items"]}
    mine = await listed(actors.sales, lot=lot, customer_id=cust["id"])
    assert {f["id"] for f in mine["items"]} == {first["id"], answered["id"]}
    assert [f["id"] for f in (await listed(actors.sales, lot=lot, status="replied"))
            ["items"]] == [answered["id"]]  # open work, read from the summaries
    assert [f["id"] for f in (await listed(actors.sales, lot=lot.lower()))["items"]] == []
    assert (await listed(actors.sales, q=lot.lower()))["total"] == 3  # text: any case
    assert (await listed(actors.sales, q=f"L{tag}"))["total"] == 4
    assert (await listed(actors.sales, q=cust["id"]))["total"] == 3
    assert (await listed(actors.sales, q=cust["id"], status="registered"))["total"] == 2
    err = refused(await actors.sales.get("/feedback", params={"lot": "L" * 65}), 422)
    assert "lot" in str(err)


async def test_p_5_4_2_history_attributable_nothing_deleted_withdraw_keeps_record(actors):
    fb = await register(actors.sales)
    ok(await actors.sales.post(f"/feedback/{fb['id']}/samples", json={
        "quantity": 2, "received_on": "2026-11-21", "location": "QA lab"}), 201)
    gone = ok(await actors.sales.post(f"/feedback/{fb['id']}/withdraw",
                                      json={"reason": "Registered twice by mistake"}))
    assert gone["status"] == "withdrawn"
    assert gone["withdrawn_reason"] == "Registered twice by mistake"
    kept = ok(await actors.auditor_intake.get(f"/feedback/{fb['register_no']}"))
    assert kept["description"] == fb["description"] and len(kept["samples"]) == 1
    history = ok(await actors.auditor_intake.get(f"/feedback/{fb['id']}/history"))
    assert [h["action"] for h in history] == ["registered", "sample_added", "withdrawn"]
    assert all(h["actor"]["sub"] == "wang.fang" and h["at"] for h in history)
    assert history[-1]["changes"]["status"] == "withdrawn"
    assert history[-1]["event_id"]
    withdrawn = await listed(actors.sales, customer_id=fb["customer"]["id"], status="withdrawn")
    assert [f["id"] for f in withdrawn["items"]] == [fb["id"]]
    assert (await actors.sales.delete(f"/feedback/{fb['id']}")).status_code == 405
    refused(await actors.sales.post(f"/feedback/{fb['id']}/escalate"), 409)
    assert len(ok(await actors.sales.get(f"/feedback/{fb['id']}/history"))) == 3


async def test_p_5_4_2_history_shows_each_value_before_and_after_a_change(actors):
    fb = await register(actors.sales)
    ok(await actors.sales.post(f"/feedback/{fb['id']}/escalate", json={"note": "Analyse"}))
    history = ok(await actors.auditor_intake.get(f"/feedback/{fb['register_no']}/history"))
    registered, escalated = history[0], next(h for h in history if h["action"] == "escalated")
    assert registered["before"] == {}  # a new record: nothing was there before
    assert (escalated["before"]["status"], escalated["changes"]["status"]) == (
        "registered", "with_quality")
    assert (escalated["before"]["has_form"], escalated["changes"]["has_form"]) == (False, True)
    spec = ok(await actors.auditor_intake.get("/openapi.json"))
    before = spec["components"]["schemas"]["HistoryEntry"]["properties"]["before"]
    assert before["description"].startswith("field -> value before this change")


async def test_p_5_4_2_idempotency_key_makes_a_retry_return_the_first_record(actors):
    payload = body()
    key = str(uuid.uuid4())
    first = await actors.sales.post("/feedback", json=payload, headers={"Idempotency-Key": key})
    retry = await actors.sales.post("/feedback", json=payload, headers={"Idempotency-Key": key})
    assert first.status_code == 201 and retry.status_code == 200  # 200 = replayed
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.json()["id"] == first.json()["id"]
    assert retry.json()["register_no"] == first.json()["register_no"]
    assert (await listed(actors.sales, customer_id=payload["customer"]["id"]))["total"] == 1
    changed = payload | {"description": "Something else entirely"}
    err = refused(await actors.sales.post("/feedback", json=changed,
                                          headers={"Idempotency-Key": key}), 409)
    assert "different request body" in err["message"]
    other = await actors.sales.post("/feedback", json=payload,
                                    headers={"Idempotency-Key": str(uuid.uuid4())})
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]
    assert (await listed(actors.sales, customer_id=payload["customer"]["id"]))["total"] == 2


async def test_p_5_4_2_concurrent_retries_with_one_key_make_one_record(actors):
    payload, key = body(), {"Idempotency-Key": f"retry-{uuid.uuid4()}"}
    answers = await asyncio.gather(*(actors.sales.post("/feedback", json=payload, headers=key)
                                     for _ in range(4)))
    assert sorted(a.status_code for a in answers) == [200, 200, 200, 201]
    assert len({a.json()["register_no"] for a in answers}) == 1
    assert (await listed(actors.sales, customer_id=payload["customer"]["id"]))["total"] == 1


# ---------------------------------------------------------------- P-3 and bad input


async def test_p_3_1_only_sales_registers_and_replies(actors, system):
    cust = customer()
    async with system.client("intake", "quality") as quality, \
            system.client("intake", "unit", unit="production") as unit:
        refused(await quality.post("/feedback", json=body(cust)), 403)
        fb = await register(actors.sales, category="delivery")
        err = refused(await quality.post(f"/feedback/{fb['id']}/direct-reply",
                                         json={"reply": "We fixed it"}), 403)
        assert "'sales'" in err["message"]
        refused(await actors.manager_intake.post(f"/feedback/{fb['id']}/withdraw",
                                                 json={"reason": "x"}), 403)
        refused(await actors.auditor_intake.post(f"/feedback/{fb['id']}/escalate"), 403)
        refused(await unit.get(f"/feedback/{fb['id']}"), 403)
        assert ok(await quality.get(f"/feedback/{fb['id']}"))["id"] == fb["id"]  # may read
    assert (await listed(actors.sales, customer_id=cust["id"]))["total"] == 0
    after = ok(await actors.sales.get(f"/feedback/{fb['id']}"))
    assert after["status"] == "registered" and after["version"] == fb["version"]
    assert len(ok(await actors.sales.get(f"/feedback/{fb['id']}/history"))) == 1
    refusals = ok(await actors.auditor_intake.get("/audit/refusals", params={"page_size": 500}))
    assert any(r["path"] == f"/feedback/{fb['id']}/direct-reply" for r in refusals["items"])


async def test_bad_input_is_422_with_its_location_and_nothing_is_written(actors):
    cust = customer()
    nameless = body(cust)
    nameless["customer"] = cust | {"name": ""}
    cases = {
        "body.customer.name": nameless,
        "body.channel": body(cust, channel="pigeon"),
        "body.description": body(cust, description="cracked\x00boss"),
        "body.received_at": body(cust, received_at=(datetime.now(UTC)
                                                    + timedelta(days=1)).isoformat()),
        "body.category": body(cust, category="price"),
        "body.estimated_loss.amount": body(cust, estimated_loss={"amount": "-5"}),
    }
    for loc, bad in cases.items():
        err = refused(await actors.sales.post("/feedback", json=bad), 422)
        assert err["code"] == "invalid" and loc in [d["loc"] for d in err["details"]], err
    blank = body(cust, description="   ")
    assert refused(await actors.sales.post("/feedback", json=blank), 422)["details"][0]["loc"] \
        == "body.description"
    assert (await listed(actors.sales, customer_id=cust["id"]))["total"] == 0

    fb = await register(actors.sales, category="delivery")
    url = f"/feedback/{fb['id']}"
    err = refused(await actors.sales.post(f"{url}/direct-reply", json={"reply": ""}), 422)
    assert err["details"][0]["loc"] == "body.reply"
    err = refused(await actors.sales.post(f"{url}/samples", json={"quantity": 0,
                                          "received_on": "2026-11-20", "location": "B3"}), 422)
    assert err["details"][0]["loc"] == "body.quantity"
    err = refused(await actors.sales.post(f"{url}/attachments", data={"x": "y"}), 422)
    assert err["details"][0]["loc"] == "body.file"
    err = refused(await actors.sales.get("/feedback", params={"q": "a\x00b"}), 422)
    assert err["details"][0]["loc"] == "query.q"
    refused(await actors.sales.get("/feedback/CF-2026-999999"), 404)
    after = ok(await actors.sales.get(url))
    assert after["version"] == fb["version"] and after["samples"] == []


async def test_p_5_3_2_the_responsible_unit_downloads_the_same_attachments(actors, system):
    fb = await register(actors.sales)
    photo = b"\x89PNG\r\n\x1a\n" + os.urandom(2048)
    sha = hashlib.sha256(photo).hexdigest()
    ok(await actors.sales.post(f"/feedback/{fb['id']}/attachments",
                               files={"file": ("boss.png", photo, "image/png")}), 201)
    url = f"/feedback/{fb['id']}/attachments/{sha}"
    async with system.client("intake", "unit", sub="li.na", unit="production") as production, \
            system.client("intake", "unit", sub="zhao.lei", unit="purchasing") as purchasing:
        assert "not responsible" in refused(await production.get(url), 403)["message"]
        await system.publish(ResponsibilityAssigned(
            feedback_id=fb["id"], register_no=fb["register_no"], round=1,
            preliminary_cause="Porosity at the boss", defect_code="D03",
            customer_id=fb["customer"]["id"],
            units=[UnitRequest(unit="production", request="Contain and find the cause",
                               action_id=str(uuid.uuid4()))]),
            correlation_id=fb["id"], actor=QUALITY, producer="quality")

        async def downloaded():
            resp = await production.get(url)
            return resp if resp.status_code == 200 else None
        download = await eventually(downloaded, what="production to be named responsible")
        assert hashlib.sha256(download.content).hexdigest() == sha
        refused(await purchasing.get(url), 403)  # another unit: not its complaint
    history = ok(await actors.sales.get(f"/feedback/{fb['id']}/history"))
    assert history[-1]["action"] == "responsibility_assigned"
    assert history[-1]["changes"]["units"] == ["production"]
