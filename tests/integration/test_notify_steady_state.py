"""notify's cost does not grow with history: every read of its steady state, on the real servers.

On FerretDB's SQLite handler any read but an `_id` lookup reads a whole collection. So once
notify has started, its dispatcher (every `dispatch_interval_s`) and parked gauge, its event
handlers, its inbound mail and its request paths about one record or about open work read
by `_id` or read `notifications_open`, whose size follows the notifications still to deliver
or parked for ops, and the configuration. The service runs in this process with an SMTP
server and a plant system of the test's own; events are published on the real exchange; the
HTTP API is called in-process. The lists of history (no status, or a closed one; e.g.
`GET /notifications?feedback_id=…`, `GET /mail`) list a period: they read its days in
`notifications_days` / `inbound_mail_days` by `_id`, then its records by `_id`.
"""

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from pymongo import monitoring

from services.notify.app import build
from services.notify.domain import (
    ChannelName,
    InboundMail,
    Notification,
    NotificationStatus,
)
from services.notify.inbound import Inbox
from services.notify.metrics import NotifyMetrics
from services.notify.settings import Settings
from shared.auth import make_token
from shared.contracts import ComplaintEscalated, FeedbackRegistered, MajorAlert, SlaBreached
from shared.events import Actor, Contract, Envelope, make_event, utcnow
from shared.messaging import EventPublisher, new_broker
from shared.periods import PAGE_SIZE, Period
from shared.service import Service, create_app
from shared.store import mongo_client
from shared.vocabulary import Customer, Head
from tests import reads
from tests.conftest import infra_settings, test_namespace
from tests.e2e.harness import free_port
from tests.e2e.test_notify import HookReceiver, MailSink
from tests.integration import pages_at_size
from tests.support import eventually, ok, refused

pytestmark = pytest.mark.infra
WAIT = 60.0  # seconds: generous, the machine is shared
# Documents each reply carries (before the fixtures make their clients: PyMongo gives
# global listeners to new clients); counts only while a test records.
REPLIES = pages_at_size.install(test_namespace())


class Writes(monitoring.CommandListener):
    """The updates of `notifications` documents, by `_id`, in the order they were sent."""

    def __init__(self, database_prefix: str):
        self.database_prefix = database_prefix
        self.updates: list[tuple[Any, dict[str, Any]]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.database_name.startswith(self.database_prefix) and \
                event.command_name == "update" and event.command["update"] == "notifications":
            self.updates += [(u["q"].get("_id"), u["u"]) for u in event.command["updates"]]

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


WRITES = Writes(test_namespace())
monitoring.register(WRITES)

SALES = Actor(sub="wang.fang", roles=("sales",))
# Configuration, not history: read whole (or by a non-`_id` filter) on the paths below, their
# size set by the plant, never by the complaints on record.
CONFIGURATION = {
    "directory",              # mailboxes and people told (role, unit, head groups)
    "webhook_subscriptions",  # the plant systems that receive events
    "customers",              # the customer directory Sales keeps, for inbound matching
}


@dataclass
class Notify_:
    svc: Service
    settings: Settings
    log: reads.ReadLog
    publisher: EventPublisher
    http: httpx.AsyncClient
    sink: MailSink
    hooks: HookReceiver

    def headers(self, role: str) -> dict[str, str]:
        secret = self.settings.infra.jwt_secret.get_secret_value()
        return {"Authorization": f"Bearer {make_token(secret, f'{role}.tester', [role])}"}

    async def publish(self, payload: Contract, correlation_id: str) -> Envelope:
        event = make_event(payload, producer="quality", correlation_id=correlation_id,
                           actor=Actor.system("quality"))
        await self.publisher.publish(event)
        return event

    async def notification(self, notification_id: str) -> Notification | None:
        return await self.svc.repo("notifications").get(notification_id)


@pytest.fixture
async def notify(tmp_path: Path) -> AsyncIterator[Notify_]:
    sink, hooks = MailSink(free_port()), HookReceiver()
    sink.start()
    namespace = test_namespace(uuid.uuid4().hex[:6])
    log = reads.install(namespace)  # before the service makes its database client
    infra = infra_settings(namespace, retry_delay_ms=200, max_attempts=3, relay_interval_s=0.2)
    settings = Settings(
        infra=infra, smtp_host="127.0.0.1", smtp_port=sink.port, smtp_timeout_s=5,
        inbound_enabled=False, attachment_dir=tmp_path, email_backoff_base_s=0.2,
        email_backoff_max_s=0.5, webhook_max_attempts=2, webhook_backoff_base_s=0.2,
        webhook_backoff_max_s=0.5, webhook_timeout_s=5, dispatch_interval_s=0.2,
        dispatch_lease_s=10)
    svc = build(settings)
    await svc.start()
    broker = new_broker(infra.amqp_url.get_secret_value())
    await broker.connect()
    app = create_app(svc, title="notify", description="")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://notify") as http:
        yield Notify_(svc, settings, log, EventPublisher(broker, svc.topology.exchange), http,
                      sink, hooks)
    await broker.stop()
    await svc.stop()
    client = mongo_client(settings.database_url)
    await client.drop_database(f"{namespace}_notify")
    await client.close()
    hooks.server.shutdown()
    sink.stop()


async def load_history(svc: Service, n: int = 20) -> None:
    """Notifications sent long ago, and ones nobody could be told: never read again."""
    repo = svc.repo("notifications")
    for i in range(n):
        fid = str(uuid.uuid4())
        event = make_event(SlaBreached(feedback_id=fid, register_no="CF-2025-000001", round=1,
                                       due_at=utcnow(), severity="normal"),
                           producer="quality", correlation_id=fid, actor=Actor.system("quality"))
        if i % 4:
            n_ = Notification.create(channel=ChannelName.EMAIL, recipient="old@plant.example",
                                     event=event, purpose="sla_breached", body="b",
                                     now=utcnow(), subject="s")
            n_.delivered(utcnow(), "250 OK")
        else:
            n_ = Notification.nobody(channel=ChannelName.EMAIL, audience="role:quality",
                                     reason="nobody", event=event, purpose="sla_breached",
                                     body="b", now=utcnow())
        await repo.add(n_)


def customer(u: str, email: str | None = None) -> Customer:
    return Customer(id=f"C-{u}", name=f"Bright Motors {u}", contact_person="Zhang Min",
                    email=email)


async def test_dispatcher_handlers_inbound_and_requests_read_by_id_open_work_or_config(
        notify: Notify_):
    svc, http = notify.svc, notify.http
    ops = notify.headers("ops")
    await load_history(svc)
    await eventually(lambda: _quiet(svc), timeout=WAIT,
                     what="the start-up sweep and rebuild to end")

    notify.log.recording = True
    # -- a plant system subscribes; another one fails until it is fixed -------------------
    u = uuid.uuid4().hex[:8]
    ok_path, failing_path = f"/erp/{u}", f"/mes/{u}"
    notify.hooks.status[failing_path] = 500
    erp = ok(await http.post("/webhooks", headers=ops, json={
        "name": "ERP", "url": notify.hooks.url(ok_path), "event_types": ["complaint.*"]}), 201)
    mes = ok(await http.post("/webhooks", headers=ops, json={
        "name": "MES", "url": notify.hooks.url(failing_path),
        "event_types": ["complaint.sla_breached"]}), 201)
    # -- events: a registration (case facts), an escalation, a breach, a major alert -------
    fid, number = str(uuid.uuid4()), f"CF-2026-{uuid.uuid4().int % 10**6:06d}"
    who = customer(u, email=f"zhang.{u}@brightmotors.example")
    facts = dict(feedback_id=fid, register_no=number, customer=who, channel="phone",
                 received_at=utcnow(), category="product_quality", severity="major",
                 description="Cracked housings")
    await notify.publish(FeedbackRegistered(**facts, is_complaint=True), fid)
    escalated = await notify.publish(ComplaintEscalated(**facts), fid)
    breached = await notify.publish(SlaBreached(feedback_id=fid, register_no=number, round=1,
                                                due_at=utcnow(), severity="major"), fid)
    alert = await notify.publish(MajorAlert(
        feedback_id=fid, register_no=number, customer=who, description="Cracked housings",
        heads=[Head(unit="production", name="Production head"),
               Head(unit="rd", name="Chen Jie", email=f"chen.{u}@plant.example")]), fid)

    async def mailed() -> bool:
        return all(notify.sink.for_event(e.id) for e in (escalated, breached, alert))
    await eventually(mailed, timeout=WAIT, what="the mails of every event")
    await eventually(lambda: _true(bool(notify.hooks.received(ok_path, breached.id))),
                     timeout=WAIT, what="the ERP's delivery")
    # -- the failing delivery parks; ops see it, the gauge counts it, ops retry it --------
    parked_id = f"{breached.id}:webhook:{mes['id']}"

    async def parked() -> bool:
        n = await notify.notification(parked_id)
        return n is not None and n.status == NotificationStatus.PARKED
    await eventually(parked, timeout=WAIT, what="the MES delivery parked")
    await eventually(lambda: _true(_gauge(svc.registry, "qms_notify_parked", "webhook") == 1),
                     timeout=WAIT, what="the parked gauge")
    listed = ok(await http.get("/notifications", params={"status": "parked"}, headers=ops))
    assert [n["id"] for n in listed["items"]] == [parked_id] and listed["total"] == 1
    log = ok(await http.get(f"/webhooks/{mes['id']}/deliveries", params={"status": "parked"},
                            headers=ops))
    assert [d["id"] for d in log["items"]] == [parked_id]
    assert len(log["items"][0]["attempt_log"]) == 2
    ok(await http.get("/notifications", params={"status": "pending"}, headers=ops))
    ok(await http.get(f"/notifications/{parked_id}", headers=ops))
    notify.hooks.status[failing_path] = 204  # the plant system is fixed
    ok(await http.post(f"/webhooks/{mes['id']}/deliveries/{parked_id}/retry", headers=ops))

    async def sent() -> bool:
        n = await notify.notification(parked_id)
        return n is not None and n.status == NotificationStatus.SENT
    await eventually(sent, timeout=WAIT, what="the retried delivery sent")
    await eventually(lambda: _true(_gauge(svc.registry, "qms_notify_parked", "webhook") == 0),
                     timeout=WAIT, what="the parked gauge back to 0")
    ok(await http.get(f"/webhooks/{erp['id']}", headers=ops))
    # -- configuration: the directory and the customers ------------------------------------
    ok(await http.get("/directory", params={"group": "role:quality"}, headers=ops))
    ok(await http.post("/customers", headers=ops, json={
        "id": f"C-{u}", "name": "Bright Motors", "emails": [], "domains":
        [f"brightmotors-{u}.example"]}), 201)
    ok(await http.get("/customers", headers=ops))
    # -- a complaint by mail from that customer's domain -----------------------------------
    inbox = Inbox(notify.settings, svc.repo("inbound_mail"), svc.repo("customers"),
                  NotifyMetrics(CollectorRegistry()))
    msg = EmailMessage()
    msg["From"] = f"Zhang Min <zhang@brightmotors-{u}.example>"
    msg["To"] = notify.settings.complaints_mailbox
    msg["Subject"] = "Cracked housings again"
    msg["Message-ID"] = f"<{u}@brightmotors.example>"
    msg.set_content("12 of 500 housings are cracked.")
    mail_id = await inbox.receive(msg.as_bytes(), envelope_from=f"zhang@brightmotors-{u}.example",
                                  envelope_to=[notify.settings.complaints_mailbox],
                                  peer="127.0.0.1:2525")
    sales = notify.headers("sales")
    mail = ok(await http.get(f"/mail/{mail_id}", headers=sales))
    assert mail["customer"]["id"] == f"C-{u}"
    assert (await http.get(f"/mail/{mail_id}/raw", headers=sales)).status_code == 200
    # -- the lists of history: a period's records, through `*_days`, then by `_id` ----------
    repo = svc.repo("notifications")
    notify.log.recording = False  # what the lists must say, counted in the store once settled

    async def delivered() -> bool:
        return not await repo.open_work.all()
    await eventually(delivered, timeout=WAIT, what="every notification delivered")
    everyone, told, nobody_told, sent_ones = [await repo.collection.count_documents(q) for q in (
        {}, {"feedback_id": fid}, {"status": "no_recipient"}, {"status": "sent"})]
    notify.log.recording = True
    everything = ok(await http.get("/notifications", headers=ops))
    assert everything["total"] == everyone and everything["period"]
    story = ok(await http.get("/notifications", params={"feedback_id": fid}, headers=ops))
    assert story["total"] == told > 3 and {n["feedback_id"] for n in story["items"]} == {fid}
    nobody = ok(await http.get("/notifications", params={"status": "no_recipient"}, headers=ops))
    assert nobody["total"] == nobody_told >= 5
    since = utcnow() - timedelta(minutes=30)
    sent = ok(await http.get("/notifications", params={"status": "sent", "from": since.isoformat(),
                                                       "page_size": 2}, headers=ops))
    assert sent["total"] == sent_ones and len(sent["items"]) == 2
    assert _at(sent["period"]["start"]) == since
    log = ok(await http.get(f"/webhooks/{mes['id']}/deliveries", headers=ops))
    assert [d["id"] for d in log["items"]] == [parked_id] and log["period"]
    for params, expected in (({"customer_id": f"C-{u}"}, [mail_id]),
                             ({"from_address": f"zhang@brightmotors-{u}.example"}, [mail_id]),
                             ({"unidentified": "true"}, []), ({"held": "false"}, [mail_id]),
                             ({"malformed": "false", "from": since.isoformat()}, [mail_id])):
        listed = ok(await http.get("/mail", params=params, headers=sales))
        assert [m["id"] for m in listed["items"]] == expected, params
    notify.log.recording = False

    assert notify.log.reads, "the listener saw no command: it is not installed"
    unbounded = notify.log.unbounded(bounded_collections=CONFIGURATION)
    assert not unbounded, "reads that grow with history:\n" + "\n".join(
        f"{r.collection}.{r.command} {r.filter}" for r in unbounded)


async def test_p_f_5_a_breach_mail_goes_out_without_a_write_to_claim_it(
        notify: Notify_):
    """The handler adds the notification already taken for its first attempt and hands it to
    the dispatcher: the record's first write after its insert is the outcome (a write fewer
    per notification than a claim, then the outcome)."""
    fid = str(uuid.uuid4())
    breached = await notify.publish(SlaBreached(feedback_id=fid, register_no="CF-2026-000001",
                                                round=1, due_at=utcnow(), severity="major"), fid)

    async def mailed() -> bool:
        return bool(notify.sink.for_event(breached.id))
    await eventually(mailed, timeout=WAIT, what="the breach's mails")
    repo = notify.svc.repo("notifications")
    ids = [n["_id"] for n in await repo.collection.find({"event_id": breached.id}).to_list(None)]
    assert ids, "the breach concerns people"

    async def recorded() -> bool:
        return all(any(i == n for n, _ in WRITES.updates) for i in ids)
    await eventually(recorded, timeout=WAIT, what="each outcome recorded")
    for n_id in ids:
        first = next(u for n, u in WRITES.updates if n == n_id)
        assert first["$set"]["status"] == NotificationStatus.SENT.value, \
            f"{n_id}: its first write after the insert is not its outcome: {first}"
        n = await notify.notification(n_id)
        assert n is not None and n.status == NotificationStatus.SENT and n.attempts == 1


async def test_a_summary_left_behind_by_a_crash_heals_at_the_first_sweep_that_sees_it(
        notify: Notify_):
    svc = notify.svc
    await load_history(svc, 2)
    await eventually(lambda: _quiet(svc), timeout=WAIT,
                     what="the start-up sweep and rebuild to end")
    opened = svc.database["notifications_open"]
    assert await opened.find({}).to_list(None) == [], "history is not open work"
    # A crash between a record's write (sent) and its summary's: still pending, and due.
    stale = (await svc.repo("notifications").collection.find_one({}))["_id"]
    await opened.insert_one({
        "_id": stale, "status": "pending", "channel": "email", "next_attempt_at": utcnow(),
        "created_at": utcnow(), "version": 0})

    async def healed() -> bool:
        return await opened.find_one({"_id": stale}) is None
    await eventually(healed, timeout=WAIT, what="the stale summary dropped by the dispatcher")
    assert notify.sink.mails == [], "nothing was sent again"


async def test_records_from_before_the_default_period_are_listed_when_it_is_asked(
        notify: Notify_):
    svc, ops = notify.svc, notify.headers("ops")
    long_ago = (utcnow() - timedelta(days=svc.settings.infra.history_days + 30)).replace(
        microsecond=0)  # as BSON keeps it
    fid, sender = str(uuid.uuid4()), f"buyer-{uuid.uuid4().hex[:6]}@customer.example"
    for at in (long_ago, utcnow()):
        event = make_event(SlaBreached(feedback_id=fid, register_no="CF-2025-000001", round=1,
                                       due_at=at, severity="normal"), producer="quality",
                           correlation_id=fid, actor=Actor.system("quality"))
        sent = Notification.create(channel=ChannelName.EMAIL, recipient="old@plant.example",
                                   event=event, purpose="sla_breached", body="b", now=at)
        sent.delivered(at, "250 OK")
        await svc.repo("notifications").add(sent)
        await svc.repo("inbound_mail").add(InboundMail(
            id=str(uuid.uuid4()), received_at=at, size=1, raw=b"x", from_address=sender,
            subject="Cracked housings", body="b"))
    await eventually(lambda: _quiet(svc), timeout=WAIT,
                     what="the start-up sweep and rebuild to end")
    around = {"from": (long_ago - timedelta(hours=1)).isoformat(),
              "to": (long_ago + timedelta(hours=1)).isoformat()}

    notify.log.recording = True
    for path, params, headers in (("/notifications", {"feedback_id": fid}, ops),
                                  ("/mail", {"from_address": sender}, notify.headers("sales"))):
        default = ok(await notify.http.get(path, params=params, headers=headers))
        assert [_at(i[TIME[path]]) > long_ago for i in default["items"]] == [True]
        assert _at(default["period"]["start"]) > long_ago
        asked = ok(await notify.http.get(path, params=params | around, headers=headers))
        assert [_at(i[TIME[path]]) for i in asked["items"]] == [long_ago] == \
            [_at(asked["period"]["start"]) + timedelta(hours=1)]
        error = refused(await notify.http.get(path, headers=headers, params={
            "from": around["to"], "to": around["from"]}), 422)
        assert error["details"][0]["loc"] == "query.from"
    notify.log.recording = False
    unbounded = notify.log.unbounded(bounded_collections=CONFIGURATION)
    assert not unbounded, "reads that grow with history:\n" + "\n".join(
        f"{r.collection}.{r.command} {r.filter}" for r in unbounded)


async def test_the_notification_list_reads_its_page_whatever_the_month_holds(notify: Notify_):
    """Ops' default list (the last 31 days, newest first) costs its page: a month of 300
    notifications a day instead of 2 changes its total, not its commands or the documents
    it reads. Both measures ask for the default period's bounds as they were when the test
    began (the default moves with the clock: a record near its start would leave it
    between the measures), and the period's first day, which it cuts, is busy in both
    (whether a page lies astride the start depends on the hour)."""
    svc, ops = notify.svc, notify.headers("ops")
    repo = svc.repo("notifications")
    today = []
    for _ in range(70):  # today's, more than one day page, written by the service
        fid = str(uuid.uuid4())
        event = make_event(SlaBreached(feedback_id=fid, register_no="CF-2026-000001", round=1,
                                       due_at=utcnow(), severity="normal"), producer="quality",
                           correlation_id=fid, actor=Actor.system("quality"))
        sent = Notification.create(channel=ChannelName.EMAIL, recipient="q@plant.example",
                                   event=event, purpose="sla_breached", body="b", now=utcnow())
        sent.delivered(utcnow(), "250 OK")
        await repo.add(sent)
        today.append(sent)
    await eventually(lambda: _quiet(svc), timeout=WAIT, what="the start-up work to end")
    template = today[0].to_document()

    def stored(doc_id: str, at: datetime) -> dict:
        return template | {"_id": doc_id, "created_at": at, "event_id": f"e-{doc_id}"}

    async def cost() -> tuple[list[tuple[str, str]], dict[str, int], list[str], int]:
        notify.log.reads.clear()
        REPLIES.counts.clear()
        notify.log.recording = REPLIES.recording = True
        page = ok(await notify.http.get("/notifications", headers=ops, params=period))
        notify.log.recording = REPLIES.recording = False
        commands = [(r.collection, r.command) for r in notify.log.reads
                    if r.collection in ("notifications", "notifications_days")]
        return commands, dict(REPLIES.counts), [n["id"] for n in page["items"]], page["total"]

    listed = Period.of(None, None, default_days=svc.settings.infra.history_days)
    period = {"from": listed.start.isoformat(), "to": listed.end.isoformat()}
    first_day, month = pages_at_size.first_day_and_the_rest(listed, utcnow())
    loaded = await pages_at_size.load_period(repo.collection, repo.days, first_day, 300,
                                            "first", stored)
    loaded += await pages_at_size.load_period(repo.collection, repo.days, month, 2, "quiet",
                                              stored, around_start=False)
    commands, read, page, total = await cost()
    busy = await pages_at_size.load_period(repo.collection, repo.days, month, 300, "busy",
                                           stored, around_start=False)
    commands_after, read_after, page_after, total_after = await cost()

    assert total == len(today) + loaded and total_after == total + busy, "every one counted"
    assert page_after == page == [n.id for n in reversed(today)][:len(page)]
    assert commands_after == commands, "the same commands, busy month or quiet"
    assert read_after["day documents"] == read["day documents"], (read, read_after)
    assert read_after["day entries"] <= read["day entries"] + PAGE_SIZE, (read, read_after)
    assert read_after["records"] == read["records"] == len(page)


TIME = {"/notifications": "created_at", "/mail": "received_at"}  # what each list orders by


def _at(text: str) -> datetime:
    at = datetime.fromisoformat(text)
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


async def _quiet(svc: Service) -> bool:
    return svc.settled()


async def _true(value: bool) -> bool:
    return value


def _gauge(registry: CollectorRegistry, name: str, channel: str) -> float | None:
    for family in registry.collect():
        for s in family.samples:
            if s.name == name and s.labels.get("channel") == channel:
                return s.value
    return None
