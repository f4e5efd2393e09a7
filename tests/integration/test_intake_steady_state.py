"""Intake's cost does not grow with the register's history: its reads in steady state.

On FerretDB's SQLite handler any read but an `_id` lookup reads a whole collection (see
tests/reads.py). So once intake has started, a registration, the requests about one
record (by id or by the register number said on the phone), Sales' inbox (the list of an
open status), the lists of history (all statuses, closed, a search, a period: the period's
days in `feedback_days`, then its records by `_id`), and the events Quality and notify send
must read by `_id` only, or read the small `feedback_open` summaries. The real service runs
in this process on the real broker and database; a little closed and withdrawn history
lies in the register.
"""

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from faststream.rabbit import RabbitQueue

from services.intake import numbers
from services.intake.api import FEEDBACK
from services.intake.app import create
from services.intake.handlers import MAIL_NS
from services.intake.settings import Settings
from shared.auth import make_token
from shared.contracts import ComplaintAccepted, MailReceived, ResolutionReady
from shared.events import Actor, Contract, make_event
from shared.lookups import BUILT
from shared.messaging import EventPublisher, Topology, new_broker
from shared.service import Service
from tests import reads
from tests.conftest import infra_settings, test_namespace
from tests.support import eventually, ok, refused

pytestmark = pytest.mark.infra

QUALITY = Actor(sub="li.wei", roles=("quality",))
NOTIFY = Actor(sub="system:notify")


class Intake:
    """The service, its HTTP API in process (as Sales), a publisher playing Quality and
    notify, and the log of every read the service sends."""

    def __init__(self, service: Service, http: httpx.AsyncClient, publisher: EventPublisher,
                 log: reads.ReadLog):
        self.service, self.http, self.publisher, self.log = service, http, publisher, log

    async def register(self, **kw: Any) -> dict[str, Any]:
        return ok(await self.http.post("/feedback", json=body(**kw)), 201)

    async def post(self, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        return ok(await self.http.post(path, json=payload or {}))

    async def publish(self, payload: Contract, feedback_id: str, actor: Actor = QUALITY) -> None:
        await self.publisher.publish(make_event(payload, producer="quality",
                                                correlation_id=feedback_id, actor=actor))

    async def status_becomes(self, fid: str, status: str) -> None:
        async def reached() -> bool:
            fb = await self.service.repo(FEEDBACK).get(fid)
            return fb is not None and fb.status == status
        await eventually(reached, what=f"{fid} to become {status}")


def body(**kw: Any) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    return {"customer": {"id": f"C-{tag}", "name": f"Bright Motors {tag}"},
            "channel": "phone", "category": "product_quality", "severity": "normal",
            "received_at": (datetime.now(UTC) - timedelta(minutes=5)).isoformat(),
            "product": {"code": f"HSG-{tag[:6]}", "name": "Motor housing"},
            "description": f"Housings crack at the mounting boss ({tag})."} | kw


@pytest.fixture
async def intake(tmp_path) -> AsyncIterator[Intake]:
    namespace = test_namespace(uuid.uuid4().hex[:6])
    log = reads.install(namespace)  # before the service makes its database client
    settings = Settings(infra=infra_settings(namespace, retry_delay_ms=200, max_attempts=3,
                                             relay_interval_s=0.2),
                        attachment_dir=tmp_path / "attachments")
    app = create(settings)
    service: Service = app.state.service
    await service.start()
    broker = new_broker(settings.infra.amqp_url.get_secret_value())
    await broker.connect()
    exchange = Topology(namespace, "test-publisher").exchange
    # Where the other services' queues would be: intake's own events are routed somewhere.
    sink = await broker.declare_queue(RabbitQueue(f"{namespace}.sink", auto_delete=True))
    await sink.bind(await broker.declare_exchange(exchange), routing_key="#")
    token = make_token(settings.infra.jwt_secret.get_secret_value(), "wang.fang", ["sales"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://intake",
                                 headers={"Authorization": f"Bearer {token}"}) as http:
        yield Intake(service, http, EventPublisher(broker, exchange), log)
    await broker.stop()
    if service.started:
        await service.stop()


async def quiet(service: Service) -> bool:
    """The start-up work that reads history is over: the open-work rebuild, and the relay's
    sweep of pending events (next due in minutes), with nothing left to publish."""
    return service.settled()


def only_bounded_reads(log: reads.ReadLog) -> None:
    assert log.reads, "the listener saw no command: it is not installed"
    unbounded = log.unbounded()
    assert not unbounded, "reads that grow with history:\n" + "\n".join(
        f"{r.collection}.{r.command} {r.filter}" for r in unbounded)


async def load_history(intake: Intake, closed: int = 6, withdrawn: int = 3) -> None:
    """Closed and withdrawn feedback: the history the steady state must never read."""
    for _ in range(closed):
        fb = await intake.register(category="delivery")
        await intake.post(f"/feedback/{fb['id']}/direct-reply", {"reply": "Ships Friday."})
        await intake.post(f"/feedback/{fb['id']}/satisfaction", {"satisfied": True})
    for _ in range(withdrawn):
        fb = await intake.register()
        await intake.post(f"/feedback/{fb['id']}/withdraw", {"reason": "Registered twice"})


async def test_requests_events_and_the_inbox_read_by_id_or_open_work_only(intake):
    await load_history(intake)
    await eventually(lambda: quiet(intake.service), what="the start-up rebuild and sweep")

    intake.log.recording = True
    # Registration (with a retried Idempotency-Key), and the requests about one record.
    key = {"Idempotency-Key": str(uuid.uuid4())}
    payload = body()
    fb = ok(await intake.http.post("/feedback", json=payload, headers=key), 201)
    ok(await intake.http.post("/feedback", json=payload, headers=key), 200)  # replayed
    fid, number = fb["id"], fb["register_no"]
    assert ok(await intake.http.get(f"/feedback/{number}"))["id"] == fid  # said on the phone
    ok(await intake.http.get(f"/feedback/{fid}/history"))
    await intake.post(f"/feedback/{number}/samples",
                      {"quantity": 2, "received_on": "2026-11-21", "location": "QA lab"})
    await intake.post(f"/feedback/{number}/escalate", {"note": "Analyse the housings"})

    # Quality's events, through the broker.
    now = datetime.now(UTC)
    await intake.publish(ComplaintAccepted(
        feedback_id=fid, register_no=number, round=1, received_at=now,
        due_at=now + timedelta(days=3), at_risk_at=now + timedelta(days=2),
        severity="normal"), fid)
    await intake.publish(ResolutionReady(
        feedback_id=fid, register_no=number, round=1, cause="Worn die", defect_code="D03",
        outcomes=[], summary="Die replaced", received_at=now, resolved_at=now,
        due_at=now + timedelta(days=3), met_deadline=True), fid)
    await intake.status_becomes(fid, "quality_record_ready")

    # Sales' inbox: what waits for Sales, with the list's filters.
    inbox = ok(await intake.http.get("/feedback", params={"status": "quality_record_ready"}))
    assert [f["id"] for f in inbox["items"]] == [fid] and inbox["total"] == 1
    mine = ok(await intake.http.get("/feedback", params={
        "status": "registered", "customer_id": payload["customer"]["id"]}))
    assert mine["total"] == 0
    found = ok(await intake.http.get("/feedback", params={
        "status": "quality_record_ready", "q": number.lower(), "severity": "normal"}))
    assert [f["id"] for f in found["items"]] == [fid]

    # notify's mails: a new one registers a feedback, one quoting the number joins it.
    new_mail = MailReceived(mail_id=f"m-{uuid.uuid4().hex}", from_address="qa@bright.example",
                            subject="Cracked housings", body="Lot L2026-11-09.",
                            received_at=now)
    await intake.publish(new_mail, new_mail.mail_id, NOTIFY)
    followup = MailReceived(mail_id=f"m-{uuid.uuid4().hex}", from_address="qa@bright.example",
                            subject=f"Re: {number}", body="More photos.", received_at=now,
                            register_no=number)
    await intake.publish(followup, followup.mail_id, NOTIFY)
    mailed = str(uuid.uuid5(MAIL_NS, new_mail.mail_id))
    await intake.status_becomes(mailed, "registered")

    async def followup_joined() -> bool:
        fb = await intake.service.repo(FEEDBACK).get(fid)
        return fb is not None and any(h.action == "mail_received" for h in fb.history)
    await eventually(followup_joined, what="the follow-up mail in the record's history")

    # Sales closes the case: it leaves the open work.
    await intake.post(f"/feedback/{number}/reply", {"reply": "We replaced the die."})
    await intake.post(f"/feedback/{number}/satisfaction", {"satisfied": True})
    inbox = ok(await intake.http.get("/feedback", params={"status": "quality_record_ready"}))
    assert inbox["total"] == 0
    await eventually(lambda: quiet(intake.service), what="the relay to publish everything")
    intake.log.recording = False

    only_bounded_reads(intake.log)


async def test_the_inbox_is_the_open_work_and_matches_the_register(intake):
    await load_history(intake, closed=2, withdrawn=1)
    opened = [await intake.register() for _ in range(3)]
    await intake.post(f"/feedback/{opened[0]['id']}/escalate")
    registered = ok(await intake.http.get("/feedback", params={"status": "registered"}))
    assert [f["id"] for f in registered["items"]] == [opened[2]["id"], opened[1]["id"]]
    assert registered["items"][0] == ok(await intake.http.get(f"/feedback/{opened[2]['id']}"))
    paged = ok(await intake.http.get("/feedback", params={"status": "registered",
                                                          "page": 2, "page_size": 1}))
    assert paged["total"] == 2 and [f["id"] for f in paged["items"]] == [opened[1]["id"]]
    summaries = await intake.service.repo(FEEDBACK).open_work.all()
    assert {s["_id"] for s in summaries} == {f["id"] for f in opened}  # no history in it
    # The history search still finds the closed ones, from the register itself.
    closed = ok(await intake.http.get("/feedback", params={"status": "closed"}))
    assert closed["total"] == 2


async def test_sales_inbox_rows_come_from_the_open_work_alone_and_match_the_records(intake):
    """`GET /inbox`: Sales' open work by status, as rows read from `feedback_open` alone
    (no record), each row what the record says; an older summary is completed once."""
    await load_history(intake, closed=2, withdrawn=1)
    new, sent, replied = (await intake.register(product={"code": "HSG-1", "lot": "L7"}),
                          await intake.register(), await intake.register(category="delivery"))
    await intake.post(f"/feedback/{sent['id']}/escalate")
    await intake.post(f"/feedback/{replied['id']}/direct-reply", {"reply": "Ships Friday."})
    await eventually(lambda: quiet(intake.service), what="the relay to publish everything")

    intake.log.reads.clear()
    intake.log.recording = True
    inbox = ok(await intake.http.get("/inbox"))
    intake.log.recording = False
    finds = [r.collection for r in intake.log.reads if r.command == "find"]
    assert finds.count("feedback_open") == 1 and "feedback" not in finds, "no record read"
    assert inbox["counts"] == {"registered": 1, "with_quality": 1, "replied": 1}
    rows = {r["id"]: r for r in inbox["items"]}
    assert list(rows) == [replied["id"], sent["id"], new["id"]]  # newest received first
    for fb in (new, sent, replied):
        record = ok(await intake.http.get(f"/feedback/{fb['id']}"))
        row = rows[fb["id"]]
        for k in ("register_no", "status", "severity", "category", "channel", "received_at",
                  "reopen_count", "returned_to_quality", "needs_triage", "form",
                  "quality_due_at"):
            assert row[k] == record[k], k
        assert row["customer"] == {k: record["customer"][k] for k in ("id", "name")}
    assert rows[new["id"]]["product"] == {"code": "HSG-1", "lot": "L7"}
    assert rows[sent["id"]]["form"]["state"] == "sent_to_quality"
    assert rows[replied["id"]]["direct_reply"]["replied_at"] == ok(await intake.http.get(
        f"/feedback/{replied['id']}"))["direct_reply"]["replied_at"]

    asked = ok(await intake.http.get("/inbox", params={"status": ["registered", "replied"],
                                                       "per_status": 1}))
    assert [r["id"] for r in asked["items"]] == [replied["id"], new["id"]]
    refused(await intake.http.get("/inbox", params={"status": "closed"}), 422)

    # A summary from before the inbox's rows: the row is made from the record, and kept.
    opened = intake.service.repo(FEEDBACK).open_work.collection
    await opened.update_one({"_id": sent["id"]}, {"$unset": {"form": "", "reopen_count": ""}})
    intake.service.repo(FEEDBACK).open_work.forget()  # changed behind its back: a restart
    again = {r["id"]: r for r in ok(await intake.http.get("/inbox"))["items"]}
    assert again[sent["id"]] == rows[sent["id"]]
    assert (await opened.find_one({"_id": sent["id"]}))["form"]["state"] == "sent_to_quality"


async def test_an_unknown_register_number_reads_its_lookup_by_id_only(intake):
    """A typo said on the phone, or quoted in a mail: no record carries the number, and
    finding that out costs one `_id` read of `register_numbers`, never a scan."""
    await load_history(intake, closed=2, withdrawn=1)
    await eventually(lambda: quiet(intake.service), what="the start-up rebuild and sweep")
    unknown = "CF-2026-999999"
    intake.log.recording = True
    refused(await intake.http.get(f"/feedback/{unknown}"), 404)
    refused(await intake.http.get(f"/feedback/{unknown}/history"), 404)
    refused(await intake.http.post(f"/feedback/{unknown}/withdraw", json={"reason": "typo"}),
            404)
    # A mail quoting it is a new feedback, not a follow-up of some other record.
    mail = MailReceived(mail_id=f"m-{uuid.uuid4().hex}", from_address="qa@bright.example",
                        subject=f"Re: {unknown}", body="Still cracking.",
                        received_at=datetime.now(UTC), register_no=unknown)
    await intake.publish(mail, mail.mail_id, NOTIFY)
    await intake.status_becomes(str(uuid.uuid5(MAIL_NS, mail.mail_id)), "registered")
    await eventually(lambda: quiet(intake.service), what="the relay to publish it")
    intake.log.recording = False
    only_bounded_reads(intake.log)


async def test_a_record_older_than_the_lookup_is_found_by_number_after_the_next_start(intake):
    """Records written before numbers were claimed first are named once, at a start."""
    fb = await intake.register()
    await eventually(lambda: quiet(intake.service), what="the start-up rebuild and sweep")
    lookup = intake.service.database[numbers.REGISTER_NUMBERS]
    assert await lookup.find_one({"_id": fb["register_no"]}) == {
        "_id": fb["register_no"], "id": fb["id"]}, "claimed before the record was written"
    # As before the lookup existed: the record, and neither its entry nor the build's marker.
    await lookup.delete_many({"_id": {"$in": [fb["register_no"], BUILT]}})
    refused(await intake.http.get(f"/feedback/{fb['register_no']}"), 404)  # not scanned for

    await intake.service.stop()
    app = create(intake.service.settings)
    restarted: Service = app.state.service
    await restarted.start()
    try:
        await eventually(lambda: quiet(restarted), what="the one-time build at start")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://intake",
                                     headers=intake.http.headers) as http:
            intake.log.recording = True
            assert ok(await http.get(f"/feedback/{fb['register_no']}"))["id"] == fb["id"]
            intake.log.recording = False
        only_bounded_reads(intake.log)  # found by `_id`, once built
        marker = restarted.database[numbers.REGISTER_NUMBERS].find_one({"_id": BUILT})
        assert await marker is not None, "built once, not at each start"
    finally:
        await restarted.stop()


async def test_lists_of_history_read_their_period_by_id_only(intake):
    await load_history(intake)
    old = await intake.register(received_at=(datetime.now(UTC) - timedelta(days=50)).isoformat())
    fb = await intake.register()
    await eventually(lambda: quiet(intake.service), what="the start-up rebuild and sweep")

    now = datetime.now(UTC)
    intake.log.recording = True
    everything = ok(await intake.http.get("/feedback"))
    closed = ok(await intake.http.get("/feedback", params={"status": "closed"}))
    withdrawn = ok(await intake.http.get("/feedback", params={"status": "withdrawn",
                                                              "page_size": 2}))
    customer = ok(await intake.http.get("/feedback", params={
        "customer_id": fb["customer"]["id"]}))
    search = ok(await intake.http.get("/feedback", params={"q": fb["register_no"].lower()}))
    period = ok(await intake.http.get("/feedback", params={
        "received_from": (now - timedelta(days=60)).isoformat(),
        "received_to": (now - timedelta(days=40)).isoformat()}))
    intake.log.recording = False

    assert everything["total"] == 10 and everything["items"][0]["id"] == fb["id"]
    assert closed["total"] == 6 and {f["status"] for f in closed["items"]} == {"closed"}
    assert withdrawn["total"] == 3 and len(withdrawn["items"]) == 2
    assert [f["id"] for f in customer["items"]] == [fb["id"]]
    assert [f["id"] for f in search["items"]] == [fb["id"]]
    assert [f["id"] for f in period["items"]] == [old["id"]]
    only_bounded_reads(intake.log)


async def test_a_record_older_than_the_default_period_is_listed_only_when_asked_for(intake):
    received = datetime.now(UTC) - timedelta(days=45)
    old = await intake.register(received_at=received.isoformat())
    recent = await intake.register()

    default = ok(await intake.http.get("/feedback"))
    assert [f["id"] for f in default["items"]] == [recent["id"]]
    start, end = (datetime.fromisoformat(default["period"][k]) for k in ("start", "end"))
    assert end - start == timedelta(days=31) and start > received  # QMS_HISTORY_DAYS

    day = received.replace(hour=0, minute=0, second=0, microsecond=0)
    asked = ok(await intake.http.get("/feedback", params={
        "received_from": day.isoformat(), "received_to": (day + timedelta(days=1)).isoformat()}))
    assert [f["id"] for f in asked["items"]] == [old["id"]] and asked["total"] == 1
    assert datetime.fromisoformat(asked["period"]["start"]) == day
    # received_to is inclusive: a record received at that very instant is listed.
    exact = ok(await intake.http.get("/feedback", params={
        "received_from": day.isoformat(), "received_to": old["received_at"]}))
    assert [f["id"] for f in exact["items"]] == [old["id"]]
    # Lists of open work are not of a period: the old one waits in Sales' inbox.
    inbox = ok(await intake.http.get("/feedback", params={"status": "registered"}))
    assert {f["id"] for f in inbox["items"]} == {old["id"], recent["id"]}
    assert inbox["period"] is None


async def test_a_reversed_period_is_refused_naming_the_parameter(intake):
    now = datetime.now(UTC)
    for status in (None, "closed", "registered"):
        params = {"received_from": now.isoformat(),
                  "received_to": (now - timedelta(days=1)).isoformat()}
        error = refused(await intake.http.get("/feedback", params=params | (
            {"status": status} if status else {})), 422)
        assert "received_from must be before received_to" in error["message"], error
        assert error["details"][0]["loc"] == "query.received_from"
