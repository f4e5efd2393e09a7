"""Quality's cost does not grow with history: its reads in steady state, on the real servers.

On FerretDB's SQLite handler (patched, deploy/ferretdb) only an `_id` lookup is cheap; any
other filter reads the whole collection, every complaint ever handled. So once Quality has
started, its clock watcher and gauge, its event handlers and the requests about one case or
about open work (the board) must read by `_id` or read `cases_open` (bounded by open work);
the lists of history read a period's days in `cases_days` by `_id`, then its cases by `_id`.
The service runs in this process on the real broker and database; a little closed history
is stored first, then the steady-state paths are driven while every command is recorded.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from faststream.rabbit import RabbitQueue
from prometheus_client import CollectorRegistry

from services.quality import sla
from services.quality.app import build
from services.quality.clock import now_ms
from services.quality.domain import Case, CaseStatus, kinds_of
from services.quality.lookups import CAPA_KINDS, CASE_NUMBERS, CapaKinds
from services.quality.recurrence import Kind
from services.quality.settings import Settings
from shared.auth import make_token
from shared.contracts import (
    ActionCompleted,
    CapaClosed,
    CapaOpened,
    ComplaintEscalated,
    ComplaintReopened,
    CountermeasuresProposed,
    EvidenceAdded,
    FeedbackClosed,
    FeedbackWithdrawn,
)
from shared.events import Actor, Contract, make_event
from shared.lookups import BUILT
from shared.messaging import EventPublisher, Topology, new_broker
from shared.service import Service, create_app
from shared.vocabulary import AttachmentMeta, Customer, Product
from tests import reads
from tests.conftest import infra_settings, test_namespace
from tests.support import eventually, ok, refused

pytestmark = pytest.mark.infra

SALES = Actor(sub="wang.fang", roles=("sales",))
UNIT = Actor(sub="production.lead", roles=("unit",), unit="production")
CAPA = Actor.system("capa")
HISTORY = 12  # closed cases: the steady state must never read them


class Quality:
    def __init__(self, service: Service, log: reads.ReadLog, http: httpx.AsyncClient,
                 publisher: EventPublisher):
        self.service, self.log, self.http, self.publisher = service, log, http, publisher

    @property
    def cases(self):
        return self.service.repo("cases")

    @property
    def kinds(self):
        return self.service.repo("kinds")

    async def publish(self, payload: Contract, feedback_id: str, actor: Actor = SALES,
                      producer: str = "intake") -> None:
        await self.publisher.publish(make_event(payload, producer=producer,
                                                correlation_id=feedback_id, actor=actor))

    async def case(self, feedback_id: str) -> Case | None:
        return await self.cases.get(feedback_id)

    async def quiet(self) -> bool:
        """The start-up rebuild and sweep are over and the relay has published everything."""
        return self.service.settled()


@pytest.fixture
async def quality() -> AsyncIterator[Quality]:
    namespace = test_namespace(uuid.uuid4().hex[:6])
    log = reads.install(namespace)  # before the service makes its client
    infra = infra_settings(namespace, retry_delay_ms=200, max_attempts=3, relay_interval_s=0.2)
    # The watcher's own loop runs once at start; the test then calls its check directly.
    settings = Settings(infra=infra, sla_check_interval_s=3600)
    broker = new_broker(infra.amqp_url.get_secret_value())
    await broker.connect()
    topology = Topology(namespace, "test-publisher")
    exchange = await broker.declare_exchange(topology.exchange)
    # Stands in for the other services: every event Quality publishes is routable.
    tap = await broker.declare_queue(RabbitQueue(f"{namespace}.tap", exclusive=True,
                                                 auto_delete=True))
    await tap.bind(exchange, routing_key="#")
    service = build(settings)
    await service.start()
    token = make_token(infra.jwt_secret.get_secret_value(), "li.wei", ["quality"])
    app = create_app(service, title="Quality", description="")  # started above, not by ASGI
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://q",
                                 headers={"Authorization": f"Bearer {token}"}) as http:
        yield Quality(service, log, http, EventPublisher(broker, topology.exchange))
    await broker.stop()
    if service.started:
        await service.stop()


def escalated(customer_id: str, severity: str = "normal") -> ComplaintEscalated:
    feedback_id = str(uuid.uuid4())
    return ComplaintEscalated(
        feedback_id=feedback_id, register_no=f"CF-2026-{uuid.uuid4().int % 10**9:09d}",
        customer=Customer(id=customer_id, name="Bright Motors"), channel="phone",
        received_at=now_ms() - timedelta(hours=2), category="product_quality",
        severity=severity, product=Product(code="HSG-1"), description="Cracked housings")


async def store_history(q: Quality, customer_id: str) -> None:
    """Closed and withdrawn cases, stored as Quality stores them (no event needed)."""
    settings: Settings = q.service.settings
    for i in range(HISTORY):
        form = escalated(customer_id)
        case = Case.receive(form, event_id=str(uuid.uuid4()), actor=SALES, now=now_ms(),
                            policy=sla.policy_of(settings), heads=[])
        if i % 4 == 0:
            case.withdraw(FeedbackWithdrawn(feedback_id=form.feedback_id,
                                            register_no=form.register_no, reason="in error"),
                          actor=SALES, now=now_ms(), event_id=str(uuid.uuid4()))
        else:
            case.close(FeedbackClosed(feedback_id=form.feedback_id, register_no=form.register_no,
                                      closed_at=now_ms(), had_form=True),
                       actor=SALES, event_id=str(uuid.uuid4()))
        await q.cases.add(case)


def unbounded(log: reads.ReadLog) -> list[reads.Read]:
    # No small configuration collection is needed: every read is by `_id`, of `cases_open`,
    # or of a lookup collection by `_id` (case_numbers, capa_kinds).
    return log.unbounded(bounded_collections=set())


def report(found: list[reads.Read]) -> str:
    return "reads that grow with history:\n" + "\n".join(
        f"{r.collection}.{r.command} {r.filter}" for r in found)


async def test_timer_handlers_and_requests_read_by_id_or_open_work_only(quality: Quality):
    q = quality
    customer = f"C-{uuid.uuid4().hex[:6]}"
    await store_history(q, customer)
    await eventually(q.quiet, what="the start-up rebuild and the relay to finish")
    open_ids = {d["_id"] for d in await q.cases.open_work.all()}
    assert open_ids == set(), "closed and withdrawn cases are history, not open work"

    q.log.recording = True
    # -- events: three forms arrive (one major) ------------------------------------------
    forms = [escalated(customer), escalated(customer), escalated(customer, "major")]
    for form in forms:
        await q.publish(form, form.feedback_id)
    for form in forms:
        await eventually(lambda f=form: q.case(f.feedback_id), what="the case to open")
    a, b, c = forms

    # -- requests about one case and the board ----------------------------------------------
    assert ok(await q.http.get(f"/cases/{a.feedback_id}"))["register_no"] == a.register_no
    assert ok(await q.http.get(f"/cases/{a.register_no}"))["id"] == a.feedback_id
    assert ok(await q.http.get(f"/cases/{a.register_no}/history"))
    refused(await q.http.get(f"/cases/{uuid.uuid4()}"), 404)
    refused(await q.http.get("/cases/CF-2026-999999999"), 404)  # a typo: one `_id` read
    board = ok(await q.http.get("/cases", params={"status": ["open", "awaiting_units"]}))
    assert {i["id"] for i in board["items"]} == {f.feedback_id for f in forms}
    assert board["total"] == 3
    majors = ok(await q.http.get("/cases", params={"status": "open", "severity": "major",
                                                   "customer_id": customer}))
    assert [i["id"] for i in majors["items"]] == [c.feedback_id]
    ok(await q.http.post(f"/cases/{b.register_no}/site-visits", json={
        "visited_at": "2026-11-27T09:30:00Z", "location": "Customer plant",
        "participants": ["Li Wei"], "findings": "Cracks at the boss"}), 201)
    ok(await q.http.post(f"/cases/{b.feedback_id}/major", json={"reason": "line stopped"}))

    # -- responsibility, the unit's answer, verification: the kinds follow by events ------------
    ok(await q.http.post(f"/cases/{a.feedback_id}/responsibility", json={
        "preliminary_cause": "Worn die", "defect_code": "D03",
        "units": [{"unit": "production", "request": "Find the root cause"}]}))
    kind_keys = kinds_of(customer, "HSG-1", "D03")
    await eventually(lambda: q.kinds.get(kind_keys[0]), what="the kind to count the complaint")
    action_id = f"{a.register_no}-production-r1"
    await q.publish(CountermeasuresProposed(
        action_id=action_id, feedback_id=a.feedback_id, unit="production", containment="Sort",
        root_cause="Die worn", root_cause_category="machine", corrective=["Replace die"],
        preventive=["Die life counter"]), a.feedback_id, UNIT, "capa")

    async def proposed() -> bool:
        case = await q.case(a.feedback_id)
        return case is not None and case.current.units[0].proposal is not None
    await eventually(proposed, what="the proposal to reach the case")
    await q.publish(ActionCompleted(action_id=action_id, feedback_id=a.feedback_id,
                                    unit="production", completed_at=now_ms()),
                    a.feedback_id, UNIT, "capa")
    ok(await q.http.post(f"/cases/{a.feedback_id}/verification",
                         json={"unit": "production", "accepted": True}))

    async def handled() -> bool:
        kind = await q.kinds.get(kind_keys[0])
        return kind is not None and all(e.handled_at for e in kind.window)
    await eventually(handled, what="the kind to learn the complaint was handled")
    resolved = ok(await q.http.get("/cases", params={"status": "resolved"}))
    assert [i["id"] for i in resolved["items"]] == [a.feedback_id]
    ok(await q.http.post(f"/cases/{b.feedback_id}/conclusion", json={
        "outcome": "customer_misuse", "finding": "Over-torqued", "defect_code": "D03"}))

    # -- a CAPA opens and closes; Sales closes, reopens, adds evidence, withdraws -----------------
    capa_id = str(uuid.uuid4())
    await q.publish(CapaOpened(capa_id=capa_id, number="CAPA-2026-0001", source="recurrence",
                               kind=kind_keys[0], feedback_ids=[a.feedback_id],
                               title="Cracks"), a.feedback_id, CAPA, "capa")

    async def capa(closed: bool) -> bool:
        kinds = [await q.kinds.get(k) for k in kind_keys]
        return all(k is not None and k.capas and bool(k.capas[0].closed_at) == closed
                   for k in kinds)
    await eventually(lambda: capa(closed=False), what="the kinds to carry the CAPA")
    await q.publish(CapaClosed(capa_id=capa_id, kind=kind_keys[0], feedback_ids=[a.feedback_id],
                               closed_at=now_ms()), a.feedback_id, CAPA, "capa")
    await eventually(lambda: capa(closed=True), what="the kinds to see the CAPA closed")
    await q.publish(FeedbackClosed(feedback_id=a.feedback_id, register_no=a.register_no,
                                   closed_at=now_ms(), had_form=True), a.feedback_id)
    await q.publish(ComplaintReopened(feedback_id=b.feedback_id, register_no=b.register_no,
                                      reopen_count=1, had_form=True), b.feedback_id)
    await q.publish(EvidenceAdded(feedback_id=c.feedback_id, register_no=c.register_no,
                                  attachment=AttachmentMeta(
                                      sha256="0" * 64, filename="photo.jpg",
                                      content_type="image/jpeg", size=10, uploaded_by="wang.fang",
                                      uploaded_at=now_ms())), c.feedback_id)
    await q.publish(FeedbackWithdrawn(feedback_id=c.feedback_id, register_no=c.register_no,
                                      reason="registered twice"), c.feedback_id)

    async def settled() -> bool:
        cases = [await q.case(f.feedback_id) for f in forms]
        return [x.status if x else None for x in cases] == \
            [CaseStatus.CLOSED, CaseStatus.OPEN, CaseStatus.WITHDRAWN]
    await eventually(settled, what="closed, reopened and withdrawn to reach the cases")

    # -- the timer: the clock passes the deadline, then the unimproved point ------------------
    settings: Settings = q.service.settings
    assert await sla.check_once(q.cases, settings, now_ms() + timedelta(days=4)) == 1
    assert await sla.check_once(q.cases, settings,
                                now_ms() + settings.unimproved_after + timedelta(days=1)) == 1
    await sla.ClockGauge(CollectorRegistry()).update(q.cases, now_ms() + timedelta(days=4))
    await eventually(q.quiet, what="the relay to publish what the checks produced")

    # -- the lists of history: a period's cases, through `cases_days`, then by `_id` ---------
    everything = ok(await q.http.get("/cases"))
    assert everything["total"] == HISTORY + len(forms) and everything["period"]
    assert {f.feedback_id for f in forms} <= {i["id"] for i in everything["items"]}
    assert newest_first(everything["items"])
    closed = ok(await q.http.get("/cases", params={"status": "closed", "customer_id": customer}))
    assert closed["total"] == HISTORY - len(range(0, HISTORY, 4)) + 1  # and `a`, closed above
    assert all(i["status"] == "closed" for i in closed["items"])
    since = now_ms() - timedelta(minutes=30)
    page = ok(await q.http.get("/cases", params={"customer_id": customer, "status": "withdrawn",
                                                 "from": since.isoformat(), "page_size": 2}))
    assert page["total"] == len(range(0, HISTORY, 4)) + 1 and len(page["items"]) == 2
    assert _at(page["period"]["start"]) == since
    reopened = ok(await q.http.get("/cases", params={"status": "open", "from": since.isoformat()}))
    assert [i["id"] for i in reopened["items"]] == [b.feedback_id], "open ones of a period"
    q.log.recording = False

    assert q.log.reads, "the listener saw no command: it is not installed"
    assert not unbounded(q.log), report(unbounded(q.log))
    assert {d["_id"] for d in await q.cases.open_work.all()} == {b.feedback_id}


async def test_a_form_claims_its_number_before_its_case_once_whatever_the_deliveries(
        quality: Quality):
    q = quality
    await eventually(q.quiet, what="the start-up rebuild and the relay to finish")
    form = escalated(f"C-{uuid.uuid4().hex[:6]}")
    for _ in range(2):  # delivered twice (two events: a redelivery from the outbox's view)
        await q.publish(form, form.feedback_id)
    await eventually(lambda: q.case(form.feedback_id), what="the case to open")
    # The same number on another feedback (a register restored from a backup reused it):
    # the form is handled all the same, found by its id; the number names the first case.
    again = form.model_copy(update={"feedback_id": str(uuid.uuid4())})
    await q.publish(again, again.feedback_id)
    await eventually(lambda: q.case(again.feedback_id), what="the second case to open")
    await eventually(q.quiet, what="the relay to publish the cases' events")
    assert await q.service.database[CASE_NUMBERS].find_one({"_id": form.register_no}) == {
        "_id": form.register_no, "id": form.feedback_id}
    assert ok(await q.http.get(f"/cases/{form.register_no}"))["id"] == form.feedback_id
    assert ok(await q.http.get(f"/cases/{again.feedback_id}"))["id"] == again.feedback_id


async def test_a_case_readable_by_its_id_is_found_by_its_number_too(quality: Quality):
    """The number is claimed before the case is written: a person who sees the case (or
    the plant systems told it was accepted) can ask for it by its register number at once,
    however slow the claim (a busy store)."""
    q = quality
    await eventually(q.quiet, what="the start-up rebuild and the relay to finish")
    lookup, claimed = q.cases.lookup, asyncio.Event()
    real_claim = lookup.claim

    async def slow_claim(value: str, doc_id: str) -> bool:
        await asyncio.sleep(0.5)
        try:
            return await real_claim(value, doc_id)
        finally:
            claimed.set()
    lookup.claim = slow_claim
    try:
        form = escalated(f"C-{uuid.uuid4().hex[:6]}")
        await q.publish(form, form.feedback_id)
        await eventually(lambda: q.case(form.feedback_id), interval=0.02,
                         what="the case to open")
        assert ok(await q.http.get(f"/cases/{form.register_no}"))["id"] == form.feedback_id
        assert claimed.is_set()
    finally:
        del lookup.claim


async def test_a_case_older_than_the_lookup_is_found_by_number_after_the_next_start(
        quality: Quality):
    """A case stored before numbers were claimed first: a request by its number finds
    nothing (no scan for it) until the next start names the older cases, once."""
    q = quality
    await eventually(q.quiet, what="the start-up rebuild and the relay to finish")
    form = escalated(f"C-{uuid.uuid4().hex[:6]}")
    await q.cases.add(Case.receive(form, event_id=str(uuid.uuid4()), actor=SALES, now=now_ms(),
                                   policy=sla.policy_of(q.service.settings), heads=[]))
    await q.service.database[CASE_NUMBERS].delete_one({"_id": BUILT})
    refused(await q.http.get(f"/cases/{form.register_no}"), 404)

    await q.service.stop()
    q.service = restarted = build(q.service.settings)
    await restarted.start()
    try:
        await eventually(q.quiet, what="the one-time build at start")
        app = create_app(restarted, title="Quality", description="")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://q",
                                     headers=q.http.headers) as http:
            q.log.recording = True
            assert ok(await http.get(f"/cases/{form.register_no}"))["id"] == form.feedback_id
            q.log.recording = False
        assert not unbounded(q.log), report(unbounded(q.log))
    finally:
        await restarted.stop()


async def test_a_capa_from_before_the_lookup_finds_its_kinds_once_then_by_id(
        quality: Quality):
    q = quality
    capa_id, key = str(uuid.uuid4()), f"customer:C-{uuid.uuid4().hex[:6]}|defect:D03"
    kind = Kind.new(key)
    kind.capa_opened(capa_id, "CAPA-2026-0009", actor=CAPA, now=now_ms())
    await q.kinds.add(kind)
    lookup = CapaKinds(q.service.database)
    await eventually(q.quiet, what="the start-up rebuild and the relay to finish")

    q.log.recording = True
    assert await lookup.kinds_of(q.kinds, capa_id) == [key]
    q.log.recording = False
    assert [(r.collection, r.filter) for r in unbounded(q.log)] == \
        [("kinds", {"capa_ids": capa_id})], "one fallback query, no more"
    assert await q.service.database[CAPA_KINDS].find_one({"_id": capa_id}) is not None

    q.log.reads.clear()
    q.log.recording = True
    assert await lookup.kinds_of(q.kinds, capa_id) == [key]
    q.log.recording = False
    assert not unbounded(q.log), report(unbounded(q.log))


async def test_a_case_from_before_the_default_period_is_listed_when_its_period_is_asked(
        quality: Quality):
    q = quality
    customer = f"C-{uuid.uuid4().hex[:6]}"
    long_ago = now_ms() - timedelta(days=q.service.settings.infra.history_days + 30)
    old = await store_case(q, customer, long_ago)
    recent = await store_case(q, customer, now_ms())
    await eventually(q.quiet, what="the start-up rebuild and the relay to finish")

    q.log.recording = True
    default = ok(await q.http.get("/cases", params={"customer_id": customer}))
    around = {"from": (long_ago - timedelta(days=1)).isoformat(),
              "to": (long_ago + timedelta(days=1)).isoformat()}
    asked = ok(await q.http.get("/cases", params={"customer_id": customer} | around))
    q.log.recording = False
    assert [i["id"] for i in default["items"]] == [recent] and default["total"] == 1
    assert _at(default["period"]["start"]) > long_ago
    assert [i["id"] for i in asked["items"]] == [old] and asked["total"] == 1
    assert {k: _at(v) for k, v in asked["period"].items()} == \
        {"start": long_ago - timedelta(days=1), "end": long_ago + timedelta(days=1)}
    assert not unbounded(q.log), report(unbounded(q.log))

    error = refused(await q.http.get("/cases", params={"from": around["to"],
                                                       "to": around["from"]}), 422)
    assert error["details"][0]["loc"] == "query.from"


async def store_case(q: Quality, customer_id: str, received_at: datetime) -> str:
    """A case whose form reached Quality at `received_at`, closed since."""
    form = escalated(customer_id)
    case = Case.receive(form, event_id=str(uuid.uuid4()), actor=SALES, now=received_at,
                        policy=sla.policy_of(q.service.settings), heads=[])
    case.close(FeedbackClosed(feedback_id=form.feedback_id, register_no=form.register_no,
                              closed_at=received_at, had_form=True),
               actor=SALES, event_id=str(uuid.uuid4()))
    await q.cases.add(case)
    return case.id


def newest_first(items: list[dict]) -> bool:
    received = [_at(i["rounds"][0]["received_at"]) for i in items]
    return received == sorted(received, reverse=True)


def _at(text: str) -> datetime:
    at = datetime.fromisoformat(text)
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


async def test_the_board_lists_open_forms_as_rows_read_from_open_work_alone(quality: Quality):
    """Quality's board: each open form's row (who, what, the clock) from `cases_open`, with
    no case record read; a summary written before the rows existed is completed once."""
    q = quality
    await eventually(q.quiet, what="the start-up rebuild and the relay to finish")
    customer = f"C-{uuid.uuid4().hex[:6]}"
    a, b, c = escalated(customer), escalated(customer), escalated(customer, "major")
    for form in (a, b, c):
        await q.publish(form, form.feedback_id)
    for form in (a, b, c):
        await eventually(lambda f=form: q.case(f.feedback_id), what="the case to open")
    ok(await q.http.post(f"/cases/{a.feedback_id}/responsibility", json={
        "preliminary_cause": "Worn die", "defect_code": "D03",
        "units": [{"unit": "production", "request": "Find the root cause"}]}))
    full = {i["id"]: i for i in ok(await q.http.get(
        "/cases", params={"status": ["open", "awaiting_units"]}))["items"]}

    q.log.reads.clear()
    q.log.recording = True
    board = ok(await q.http.get("/board"))
    q.log.recording = False
    finds = [r.collection for r in q.log.reads if r.command == "find"]
    assert finds.count("cases_open") == 1 and "cases" not in finds, "no record read"
    assert board["counts"] == {"open": 2, "awaiting_units": 1}
    rows = {r["id"]: r for r in board["items"]}
    assert set(rows) == set(full)
    for fid, row in rows.items():
        case = full[fid]
        assert {k: row[k] for k in ("register_no", "status", "severity", "round")} == {
            k: case[k] for k in ("register_no", "status", "severity", "round")}
        assert row["customer"] == {"id": customer, "name": "Bright Motors"}
        assert row["product"] == {"code": "HSG-1", "name": None}
        assert row["unit_names"] == [u["unit"] for u in case["responsible_units"]]
        for k in ("received_at", "due_at", "at_risk_at", "running", "resolved_at"):
            assert row["clock"][k] == case["clock"][k], k
    assert rows[a.feedback_id]["unit_names"] == ["production"]

    majors = ok(await q.http.get("/board", params={"severity": "major"}))
    assert [r["id"] for r in majors["items"]] == [c.feedback_id]
    one_each = ok(await q.http.get("/board", params={"per_status": 1}))
    assert len(one_each["items"]) == 2 and one_each["counts"]["open"] == 2
    refused(await q.http.get("/board", params={"status": "closed"}), 422)

    # A summary from before the board's rows: the row is made from the record, and kept.
    await q.cases.open_work.collection.update_one(
        {"_id": b.feedback_id}, {"$unset": {"customer": "", "round_received_at": ""}})
    q.cases.open_work.forget()  # changed behind the service's back: as after a restart
    again = {r["id"]: r for r in ok(await q.http.get("/board"))["items"]}
    assert again[b.feedback_id]["customer"] == rows[b.feedback_id]["customer"]
    assert again[b.feedback_id]["clock"]["received_at"] == \
        rows[b.feedback_id]["clock"]["received_at"]
    renewed = await q.cases.open_work.collection.find_one({"_id": b.feedback_id})
    assert renewed["customer"]["name"] == "Bright Motors" and renewed["round_received_at"]
