"""Notify on real servers: mail out through an SMTP server of the test's own, webhooks to an
HTTP receiver that checks signatures, complaints in through notify's SMTP endpoint.

Only notify and reporting run here (reporting binds `#`, so every event is routable).
Upstream events are published straight to the exchange, as the other services would.
"""

import hashlib
import json
import socket
import threading
import uuid
from datetime import datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import aio_pika
import aiosmtplib
import httpx
import pytest
from aiosmtpd.controller import Controller
from prometheus_client.parser import text_string_to_metric_families

from services.notify.domain import verify_signature
from shared.contracts import (
    ActionRequested,
    ComplaintEscalated,
    CustomerReplied,
    FeedbackRegistered,
    MajorAlert,
    RepliedDirectly,
    ResolutionReady,
    SlaAtRisk,
    SlaBreached,
    UnitOutcome,
)
from shared.events import Actor, make_event, utcnow
from shared.settings import InfraSettings
from shared.vocabulary import Customer, Head, Product
from tests.conftest import test_namespace
from tests.e2e.harness import LOGS, ROOT, System, free_port
from tests.e2e.harness import EventTap as PlantQueue
from tests.support import eventually, ok

MAILBOX = "complaints@plant.example"
FAX_DOMAIN = "faxgw.example"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n"
TIFF = b"II*\x00\x08\x00\x00\x00" + b"\x00" * 64


# ---------------------------------------------------------------- test servers


class MailSink:
    """An SMTP server receiving what notify sends; it can be stopped to play 'SMTP down'."""

    def __init__(self, port: int):
        self.port = port
        self.mails: list[tuple[list[str], EmailMessage]] = []
        self._lock = threading.Lock()
        self._controller: Controller | None = None

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 - aiosmtpd hook
        msg = BytesParser(policy=policy.default).parsebytes(envelope.content)
        with self._lock:
            self.mails.append((list(envelope.rcpt_tos), msg))
        return "250 OK"

    def start(self) -> None:
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller:
            self._controller.stop()
            self._controller = None

    def for_event(self, event_id: str) -> dict[str, list[EmailMessage]]:
        """Mails of one event by recipient address."""
        out: dict[str, list[EmailMessage]] = {}
        with self._lock:
            for rcpts, msg in self.mails:
                if msg["X-QMS-Event-Id"] == event_id:
                    for r in rcpts:
                        out.setdefault(r.lower(), []).append(msg)
        return out


class HookReceiver:
    """A plant system: records every POST; answers what the test says per path."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[dict[str, Any]] = []
        self.status: dict[str, int] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server hook
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append({"path": self.path, "headers": dict(self.headers),
                                          "body": body})
                self.send_response(receiver.status.get(self.path, 200))
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def received(self, path: str, event_id: str | None = None) -> list[dict[str, Any]]:
        return [r for r in list(self.requests) if r["path"] == path
                and (event_id is None or r["headers"].get("X-QMS-Event-Id") == event_id)]


class EventTap:
    """Our own queue on the system's exchange: what notify publishes."""

    def __init__(self, namespace: str):
        self.namespace = namespace
        self.events: list[dict[str, Any]] = []
        self._conn: aio_pika.abc.AbstractRobustConnection | None = None

    async def start(self, *keys: str) -> None:
        self._conn = await aio_pika.connect_robust(InfraSettings().amqp_url.get_secret_value())
        channel = await self._conn.channel()
        exchange = await channel.declare_exchange(f"{self.namespace}.events",
                                                  aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        for key in keys:
            await queue.bind(exchange, routing_key=key)
        await queue.consume(self._on_message)

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            self.events.append(json.loads(message.body))

    def mail_from(self, address: str) -> list[dict[str, Any]]:
        return [e for e in self.events
                if e["type"] == "mail.received" and e["payload"]["from_address"] == address]

    async def stop(self) -> None:
        if self._conn:
            await self._conn.close()


@pytest.fixture(scope="module")
async def ntf():
    sink = MailSink(free_port())
    sink.start()
    hooks = HookReceiver()
    inbound = free_port()
    namespace = test_namespace("ntf")
    attachments = ROOT / "var" / "test-attachments" / namespace
    system = System(namespace, services=("notify", "reporting"), env={
        "QMS_MAX_ATTEMPTS": "10",
        "QMS_NOTIFY_SMTP_HOST": "127.0.0.1",
        "QMS_NOTIFY_SMTP_PORT": str(sink.port),
        "QMS_NOTIFY_SMTP_TIMEOUT_S": "2",
        "QMS_NOTIFY_INBOUND_PORT": str(inbound),
        "QMS_NOTIFY_COMPLAINTS_MAILBOX": MAILBOX,
        "QMS_NOTIFY_ATTACHMENT_DIR": str(attachments),
        "QMS_NOTIFY_MAX_MESSAGE_BYTES": "300000",
        "QMS_NOTIFY_MAX_ATTACHMENT_BYTES": "100000",
        "QMS_NOTIFY_FAX_SENDER_DOMAINS": json.dumps([FAX_DOMAIN]),
        "QMS_NOTIFY_EMAIL_MAX_ATTEMPTS": "500",
        "QMS_NOTIFY_EMAIL_BACKOFF_BASE_S": "0.2",
        "QMS_NOTIFY_EMAIL_BACKOFF_MAX_S": "0.5",
        "QMS_NOTIFY_WEBHOOK_MAX_ATTEMPTS": "3",
        "QMS_NOTIFY_WEBHOOK_BACKOFF_BASE_S": "0.2",
        "QMS_NOTIFY_WEBHOOK_BACKOFF_MAX_S": "0.5",
        "QMS_NOTIFY_WEBHOOK_TIMEOUT_S": "2",
        "QMS_NOTIFY_DISPATCH_INTERVAL_S": "0.2",
        "QMS_NOTIFY_DISPATCH_LEASE_S": "3",
    })
    await system.start()
    tap = EventTap(namespace)
    await tap.start("mail.received")
    env = Ntf(system, sink, hooks, tap, inbound, attachments)
    yield env
    await tap.stop()
    await system.stop()
    hooks.server.shutdown()
    sink.stop()


class Ntf:
    def __init__(self, system: System, sink: MailSink, hooks: HookReceiver, tap: EventTap,
                 inbound_port: int, attachments):
        self.system, self.sink, self.hooks, self.tap = system, sink, hooks, tap
        self.inbound_port = inbound_port
        self.attachments = attachments

    def client(self, role: str):
        return self.system.client("notify", role, sub=f"{role}.tester")

    async def send_mail(self, msg: EmailMessage | bytes, sender: str | None = None,
                        recipients: list[str] | None = None):
        if isinstance(msg, bytes):
            return await aiosmtplib.send(msg, sender=sender, recipients=recipients or [MAILBOX],
                                         hostname="127.0.0.1", port=self.inbound_port)
        return await aiosmtplib.send(msg, hostname="127.0.0.1", port=self.inbound_port)

    async def published(self, address: str) -> dict[str, Any]:
        [event] = await eventually(lambda: _async(self.tap.mail_from(address)),
                                   what=f"mail.received from {address}")
        return event

    async def mails(self, event_id: str, *addresses: str) -> dict[str, list[EmailMessage]]:
        async def arrived():
            got = self.sink.for_event(event_id)
            return got if all(a in got for a in addresses) else None
        return await eventually(arrived, what=f"mails of {event_id} to {addresses}")

    async def metric(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples with these labels, from notify's /metrics."""
        async with self.system.client("notify", None) as anon:
            text = (await anon.get("/metrics")).text
        return sum(sample.value for family in text_string_to_metric_families(text)
                   for sample in family.samples
                   if sample.name == name and labels.items() <= sample.labels.items())

    async def handled(self, event_type: str) -> float:
        """How many deliveries of this type notify has handled (its consumer's counter)."""
        return await self.metric("qms_events_consumed_total", service="notify",
                                 type=event_type, outcome="applied")

    async def notifications(self, **params: str) -> list[dict[str, Any]]:
        async with self.client("ops") as ops:
            resp = await ops.get("/notifications", params=params)
            assert resp.status_code == 200, resp.text
            return resp.json()["items"]


async def _async(value):
    return value


def uid() -> str:
    return uuid.uuid4().hex[:10]


def customer(u: str, *, language: str = "zh", email: str | None = None) -> Customer:
    return Customer(id=f"C-{u}", name=f"Bright Motors {u}", contact_person="Zhang Min",
                    email=email, language=language)


def register_no() -> str:
    return f"CF-2026-{uuid.uuid4().int % 1_000_000:06d}"


# ---------------------------------------------------------------- inbound: P-5.1


async def test_p_5_1_email_complaint_with_attachment_is_kept_and_published(ntf):
    u = uid()
    async with ntf.client("sales") as sales:
        ok(await sales.post("/customers", json={
            "id": f"C-{u}", "name": f"Bright Motors {u}", "contact_person": "Zhang Min",
            "language": "en", "domains": [f"bright-{u}.example"]}))
    sender = f"zhang.min@bright-{u}.example"
    pdf = PDF + u.encode()
    msg = EmailMessage()
    msg["From"] = f"Zhang Min <{sender}>"
    msg["To"] = MAILBOX
    msg["Subject"] = "Cracked housings in lot L2026-11-03"
    msg.set_content("12 of 500 housings HSG-220 are cracked at the boss.\nPhotos attached.")
    msg.add_attachment(pdf, maintype="application", subtype="pdf", filename="8D-report.pdf")
    msg.add_attachment(b"MZ\x90\x00binary", maintype="application", subtype="x-msdownload",
                       filename="tool.exe")
    await ntf.send_mail(msg)

    event = await ntf.published(sender)
    p = event["payload"]
    assert event["correlation_id"] == p["mail_id"] and event["producer"] == "notify"
    assert p["customer"]["id"] == f"C-{u}" and p["customer"]["email"] == sender
    assert p["customer"]["language"] == "en"
    assert p["from_name"] == "Zhang Min" and p["is_fax"] is False and p["malformed"] is False
    assert p["subject"] == "Cracked housings in lot L2026-11-03" and p["register_no"] is None
    assert "are cracked at the boss" in p["body"]
    assert "tool.exe" in p["body"] and "not accepted" in p["body"]  # Sales sees what was left
    [att] = p["attachments"]
    sha = hashlib.sha256(pdf).hexdigest()
    assert att["sha256"] == sha and att["content_type"] == "application/pdf"
    assert att["filename"] == "8D-report.pdf" and att["size"] == len(pdf)
    # The bytes are in the store intake shares, at <dir>/<sha[:2]>/<sha>.
    assert (ntf.attachments / sha[:2] / sha).read_bytes() == pdf

    async with ntf.client("sales") as sales:
        listed = ok(await sales.get("/mail", params={"customer_id": f"C-{u}"}))
        assert [m["id"] for m in listed["items"]] == [p["mail_id"]]
        mail = ok(await sales.get(f"/mail/{p['mail_id']}"))
        assert mail["rejected_attachments"][0]["filename"] == "tool.exe"
        assert mail["envelope_to"] == [MAILBOX] and mail["history"][0]["action"] == "received"


async def test_p_5_1_fax_from_a_fax_to_mail_gateway_is_a_fax_from_an_unidentified_customer(ntf):
    u = uid()
    sender = f"gateway-{u}@{FAX_DOMAIN}"
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = MAILBOX
    msg["Subject"] = "Fax from +86 755 8888 0000 (2 pages)"
    msg.set_content("")
    msg.add_attachment(TIFF + u.encode(), maintype="application", subtype="octet-stream",
                       filename="fax-0001.tif")
    await ntf.send_mail(msg)

    p = (await ntf.published(sender))["payload"]
    assert p["is_fax"] is True and p["customer"] is None and p["malformed"] is False
    [att] = p["attachments"]
    assert att["content_type"] == "image/tiff"  # from the content, not the gateway's label
    async with ntf.client("ops") as ops:
        unidentified = ok(await ops.get("/mail", params={"unidentified": "true",
                                                         "is_fax": "true"}))
        assert p["mail_id"] in [m["id"] for m in unidentified["items"]]


async def test_p_5_1_a_mail_quoting_a_register_number_names_that_record(ntf):
    u = uid()
    sender = f"buyer-{u}@elsewhere.example"
    number = register_no()
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = MAILBOX
    msg["Subject"] = f"回复：关于您的反馈 {number} 的答复"
    msg.set_content("<html><body><p>Not solved.</p><p>The <b>same</b> crack again.</p>"
                    "<script>track()</script></body></html>", subtype="html")
    await ntf.send_mail(msg)

    p = (await ntf.published(sender))["payload"]
    assert p["register_no"] == number
    assert p["body"] == "Not solved.\n\nThe same crack again."  # HTML reduced to text


async def test_p_5_1_malformed_mail_is_kept_raw_and_flagged_for_sales(ntf):
    u = uid()
    sender = f"broken-{u}@elsewhere.example"
    raw = (f"From: {sender}\r\nTo: {MAILBOX}\r\nSubject: parts missing {u}\r\n"
           "Content-Type: multipart/mixed; boundary=NEVER-THERE\r\n\r\n"
           "The housings are cracked, see the photo.\r\n").encode()
    await ntf.send_mail(raw, sender=sender)

    p = (await ntf.published(sender))["payload"]
    assert p["malformed"] is True
    assert "housings are cracked" in p["body"]  # what could be read is still there for Sales
    async with ntf.client("sales") as sales:
        flagged = ok(await sales.get("/mail", params={"malformed": "true"}))
        assert p["mail_id"] in [m["id"] for m in flagged["items"]]
        mail = ok(await sales.get(f"/mail/{p['mail_id']}"))
        assert mail["problems"]
        kept = await sales.get(f"/mail/{p['mail_id']}/raw")
        assert kept.status_code == 200 and kept.headers["content-type"] == "message/rfc822"
        assert kept.content == raw
    assert await ntf.metric("qms_notify_inbound_mails_total", malformed="true") >= 1


async def test_p_5_1_the_same_mail_delivered_twice_is_kept_and_announced_once(ntf):
    u = uid()
    sender = f"twice-{u}@elsewhere.example"
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, MAILBOX, f"Late delivery {u}"
    msg["Message-ID"] = f"<{u}.retry@elsewhere.example>"
    msg.set_content("Order SO-88123 is two days late.")
    # The sending server never saw our 250 and sends the same message again.
    _, first = await ntf.send_mail(msg)
    _, again = await ntf.send_mail(msg)
    assert first == again  # "queued as <the same mail id>"

    p = (await ntf.published(sender))["payload"]  # one mail.received: one feedback in intake
    assert p["mail_id"] in first
    async with ntf.client("sales") as sales:
        listed = ok(await sales.get("/mail", params={"from_address": sender}))
        assert [m["id"] for m in listed["items"]] == [p["mail_id"]]
        mail = ok(await sales.get(f"/mail/{p['mail_id']}"))
    assert [h["action"] for h in mail["history"]] == ["received", "received_again"]
    assert len(ntf.tap.mail_from(sender)) == 1


async def test_p_5_1_an_out_of_office_answer_is_kept_for_sales_not_registered(ntf):
    u = uid()
    sender = f"away-{u}@elsewhere.example"
    away = EmailMessage()
    away["From"], away["To"], away["Subject"] = sender, MAILBOX, "Automatic reply: out of office"
    away["Auto-Submitted"] = "auto-replied"
    away.set_content("I am out of the office until Monday.")
    await ntf.send_mail(away)
    real = EmailMessage()  # then the same person writes, sent after the automatic answer
    real["From"], real["To"], real["Subject"] = sender, MAILBOX, f"Wrong labels {u}"
    real.set_content("The labels on lot L7 are wrong.")
    await ntf.send_mail(real)

    p = (await ntf.published(sender))["payload"]  # only the person's mail reaches intake
    assert p["subject"] == f"Wrong labels {u}"
    async with ntf.client("sales") as sales:
        held = ok(await sales.get("/mail", params={"held": "true", "from_address": sender}))
        [kept] = held["items"]
        assert kept["auto_reply"] is True and kept["subject"] == "Automatic reply: out of office"
        mail = ok(await sales.get(f"/mail/{kept['id']}"))
        assert "not registered as feedback" in mail["history"][0]["note"]
        assert "out of the office" in mail["body"]
    assert len(ntf.tap.mail_from(sender)) == 1


async def test_p_5_1_only_the_complaints_mailbox_and_bounded_sizes_are_accepted(ntf):
    msg = EmailMessage()
    msg["From"] = "someone@elsewhere.example"
    msg["To"] = "ceo@plant.example"
    msg["Subject"] = "hello"
    msg.set_content("hi")
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        await ntf.send_mail(msg)
    assert refused.value.recipients[0].code == 550

    big = EmailMessage()
    big["From"] = "someone@elsewhere.example"
    big["To"] = MAILBOX
    big["Subject"] = "too big"
    big.set_content("x" * 400_000)
    with pytest.raises(aiosmtplib.SMTPResponseException) as too_big:
        await ntf.send_mail(big)
    assert too_big.value.code == 552


# ---------------------------------------------------------------- outbound e-mail


async def test_p_5_3_1_quality_told_of_the_form_the_unit_of_its_action_sales_of_the_record(ntf):
    u = uid()
    fid, number = str(uuid.uuid4()), register_no()
    cust = customer(u)
    escalated = await ntf.system.publish(ComplaintEscalated(
        feedback_id=fid, register_no=number, customer=cust, channel="email",
        received_at=utcnow(), category="product_quality", severity="normal",
        product=Product(code="HSG-220", lot="L2026-11-03"), description="Cracked housings",
        note="Please analyse"), correlation_id=fid)
    form = (await ntf.mails(escalated.id, "quality@plant.example"))["quality@plant.example"]
    action = await ntf.system.publish(ActionRequested(
        action_id=f"A-{u}", feedback_id=fid, register_no=number, unit="production",
        request="Check the mould", round=1), correlation_id=fid)
    now = utcnow()
    ready = await ntf.system.publish(ResolutionReady(
        feedback_id=fid, register_no=number, round=1, cause="Worn mould", defect_code="D03",
        outcomes=[UnitOutcome(unit="production", action_id=f"A-{u}", root_cause="Worn mould",
                              countermeasures=["Replace the mould"])],
        summary="Mould replaced, stock sorted", received_at=now, resolved_at=now,
        due_at=now + timedelta(days=3), met_deadline=True), correlation_id=fid)

    assert number in form[0]["Subject"] and "新客诉处理单" in form[0]["Subject"]  # zh by default
    assert "Cracked housings" in form[0].get_content()
    unit = await ntf.mails(action.id, "production@plant.example")
    assert "Check the mould" in unit["production@plant.example"][0].get_content()
    sales = (await ntf.mails(ready.id, "sales@plant.example"))["sales@plant.example"]
    assert "Mould replaced" in sales[0].get_content() and cust.name in sales[0].get_content()

    async def recorded():
        [r] = await ntf.notifications(event_id=action.id)
        return r if r["status"] == "sent" else None
    record = await eventually(recorded, what="the notification recorded as sent")
    assert record["attempts"] == 1 and record["recipient"] == "production@plant.example"
    assert record["purpose"] == "action_requested" and record["feedback_id"] == fid


async def test_p_5_3_5_major_complaint_mails_each_head_at_once_in_their_language(ntf):
    u = uid()
    rd_head = f"rd.head.{u}@plant.example"
    async with ntf.client("ops") as ops:
        ok(await ops.post("/directory", json={"email": rd_head, "name": "Dr. Smith",
                                              "language": "en", "groups": ["head:rd"]}))
    fid, number = str(uuid.uuid4()), register_no()
    alert = await ntf.system.publish(MajorAlert(
        feedback_id=fid, register_no=number, customer=customer(u),
        description="Line stop at the customer", heads=[
            Head(unit="rd", name="Dr. Smith", email=rd_head),
            Head(unit="engineering", name="Eng head", email=f"eng.head.{u}@plant.example"),
            Head(unit="production", name="Production head")]), correlation_id=fid)

    got = await ntf.mails(alert.id, rd_head, f"eng.head.{u}@plant.example",
                          "production.head@plant.example")
    assert "MAJOR complaint" in got[rd_head][0]["Subject"]  # the directory says: English
    assert got[rd_head][0]["Content-Language"] == "en"
    assert "重大客诉" in got[f"eng.head.{u}@plant.example"][0]["Subject"]  # unknown: default zh
    # A head without an address is reached through the directory's `head:<unit>`.
    assert number in got["production.head@plant.example"][0]["Subject"]


async def test_p_5_3_5_a_head_on_leave_is_replaced_by_the_units_deputy(ntf):
    u = uid()
    unit, head, deputy = f"lab-{u}", f"lab.head.{u}@plant.example", f"lab.deputy.{u}@plant.example"
    async with ntf.client("ops") as ops:
        for email, name in ((head, "Lab head"), (deputy, "Lab deputy")):
            ok(await ops.post("/directory", json={"email": email, "name": name,
                                                  "language": "en", "groups": [f"head:{unit}"]}))
        ok(await ops.patch(f"/directory/{head}", json={"active": False}))  # on leave
    fid, number = str(uuid.uuid4()), register_no()
    alert = await ntf.system.publish(MajorAlert(
        feedback_id=fid, register_no=number, customer=customer(u), description="Line stop",
        heads=[Head(unit=unit, name="Lab head", email=head)]), correlation_id=fid)
    got = await ntf.mails(alert.id, deputy)
    assert number in got[deputy][0]["Subject"]
    records = await ntf.notifications(event_id=alert.id)
    assert [r["recipient"] for r in records] == [deputy]  # the head on leave is not mailed


async def test_p_f_5_at_risk_and_breach_mail_quality_and_the_managers(ntf):
    u = uid()
    manager = f"deputy.{u}@plant.example"
    async with ntf.client("ops") as ops:
        ok(await ops.post("/directory", json={"email": manager, "name": "Deputy manager",
                                              "language": "en", "groups": ["role:manager"]}))
    fid, number = str(uuid.uuid4()), register_no()
    due = utcnow() + timedelta(hours=2)
    risk = await ntf.system.publish(SlaAtRisk(feedback_id=fid, register_no=number, round=1,
                                              due_at=due, severity="normal"), correlation_id=fid)
    breach = await ntf.system.publish(SlaBreached(feedback_id=fid, register_no=number, round=1,
                                                  due_at=due, severity="normal"),
                                      correlation_id=fid)
    everyone = ("quality@plant.example", "manager@plant.example", manager)
    at_risk = await ntf.mails(risk.id, *everyone)
    breached = await ntf.mails(breach.id, *everyone)
    assert "三天规则即将逾期" in at_risk["quality@plant.example"][0]["Subject"]
    assert "3-day rule BREACHED" in breached[manager][0]["Subject"]
    assert number in breached["manager@plant.example"][0]["Subject"]

    async with ntf.client("ops") as ops:  # the deputy leaves: no more mail, the entry stays
        ok(await ops.patch(f"/directory/{manager}", json={"active": False}))
        entry = ok(await ops.get(f"/directory/{manager}"))
        assert [h["action"] for h in entry["history"]] == ["added", "updated"]


async def a_breach_delivered_twice(ntf):
    """A major complaint's 3-day breach that the broker delivers to notify twice; returned
    once notify has handled both copies."""
    fid = str(uuid.uuid4())
    breach = make_event(SlaBreached(feedback_id=fid, register_no=register_no(), round=1,
                                    due_at=utcnow(), severity="major"),
                        producer="quality", correlation_id=fid, actor=Actor.system("quality"))
    handled_before = await ntf.handled("complaint.sla_breached")
    await ntf.system.publish_envelope(breach)
    await ntf.system.publish_envelope(breach)  # the broker delivers it again

    async def both_handled():
        return await ntf.handled("complaint.sla_breached") >= handled_before + 2
    await eventually(both_handled, what="notify handling both copies")
    return breach


async def test_p_f_5_a_redelivered_event_sends_no_second_mail(ntf):
    breach = await a_breach_delivered_twice(ntf)
    got = await ntf.mails(breach.id, "quality@plant.example", "manager@plant.example")

    async def all_sent():
        records = await ntf.notifications(event_id=breach.id)
        return records if all(r["status"] == "sent" for r in records) else None
    records = await eventually(all_sent, what="the notifications sent")
    # One record per recipient, each sent once: nothing else can produce a mail.
    assert sorted(r["recipient"] for r in records) == ["manager@plant.example",
                                                       "quality@plant.example"]
    assert [r["attempts"] for r in records] == [1, 1]
    assert len(got["quality@plant.example"]) == 1 and len(got["manager@plant.example"]) == 1
    assert {a: len(m) for a, m in ntf.sink.for_event(breach.id).items()} == {
        "quality@plant.example": 1, "manager@plant.example": 1}


async def test_p_f_4_the_reply_reaches_the_customer_in_their_language_whatever_the_order(ntf):
    u = uid()
    fid, number = str(uuid.uuid4()), register_no()
    address = f"buyer.{u}@customer.example"
    # The reply arrives before the registration that says who the customer is: retried.
    reply = await ntf.system.publish(CustomerReplied(
        feedback_id=fid, register_no=number, reply="The mould was replaced on 20 Nov.",
        replied_at=utcnow()), correlation_id=fid)
    await ntf.system.publish(FeedbackRegistered(
        feedback_id=fid, register_no=number, customer=customer(u, language="en", email=address),
        channel="phone", received_at=utcnow(), category="product_quality", severity="normal",
        description="Cracked housings", is_complaint=True), correlation_id=fid)

    [mail] = (await ntf.mails(reply.id, address))[address]
    assert mail["Subject"] == f"Re: your feedback {number}"
    assert "The mould was replaced on 20 Nov." in mail.get_content()
    assert mail["Reply-To"] == MAILBOX  # the customer's answer comes back to the register


async def test_p_f_2_a_direct_reply_by_sales_reaches_the_customer_once(ntf):
    u = uid()
    fid, number = str(uuid.uuid4()), register_no()
    address = f"planner.{u}@customer.example"
    await ntf.system.publish(FeedbackRegistered(
        feedback_id=fid, register_no=number, customer=customer(u, language="en", email=address),
        channel="phone", received_at=utcnow(), category="delivery", severity="normal",
        description="40 pieces missing from the delivery", is_complaint=True),
        correlation_id=fid)
    reply = make_event(RepliedDirectly(
        feedback_id=fid, register_no=number, category="delivery",
        reply="The missing 40 pieces leave our warehouse on Monday."),
        producer="intake", correlation_id=fid, actor=Actor(sub="wang.fang", roles=("sales",)))
    handled_before = await ntf.handled("feedback.replied_directly")
    await ntf.system.publish_envelope(reply)
    await ntf.system.publish_envelope(reply)  # the broker delivers it again

    async def both_handled():
        return await ntf.handled("feedback.replied_directly") >= handled_before + 2
    await eventually(both_handled, what="notify handling both copies")
    [mail] = (await ntf.mails(reply.id, address))[address]
    assert mail["Subject"] == f"Re: your feedback {number}"  # English: the customer's language
    assert "The missing 40 pieces leave our warehouse on Monday." in mail.get_content()
    assert "about the delivery" in mail.get_content()
    assert mail["Reply-To"] == MAILBOX  # their answer comes back to the register

    async def sent():
        records = await ntf.notifications(event_id=reply.id)
        return records if records and records[0]["status"] == "sent" else None
    [record] = await eventually(sent, what="the reply recorded as sent")
    assert record["purpose"] == "direct_reply" and record["recipient"] == address
    assert record["attempts"] == 1 and record["feedback_id"] == fid
    assert len(ntf.sink.for_event(reply.id)[address]) == 1


async def test_p_f_4_a_customer_without_an_e_mail_address_is_recorded_as_not_told(ntf):
    u = uid()
    fid, number = str(uuid.uuid4()), register_no()
    await ntf.system.publish(FeedbackRegistered(
        feedback_id=fid, register_no=number, customer=customer(u),  # phoned in, no e-mail
        channel="phone", received_at=utcnow(), category="product_quality", severity="normal",
        description="Cracked housings", is_complaint=True), correlation_id=fid)
    reply = make_event(CustomerReplied(
        feedback_id=fid, register_no=number, reply="更换了模具。", replied_at=utcnow()),
        producer="intake", correlation_id=fid, actor=Actor(sub="wang.fang", roles=("sales",)))
    handled_before = await ntf.handled("feedback.customer_replied")
    await ntf.system.publish_envelope(reply)
    await ntf.system.publish_envelope(reply)

    async def both_handled():
        return await ntf.handled("feedback.customer_replied") >= handled_before + 2
    await eventually(both_handled, what="notify handling both copies")
    # The manager asks "was the customer told?": no, and why, once.
    async with ntf.client("manager") as manager:
        page = ok(await manager.get("/notifications", params={"feedback_id": fid}))
        [record] = page["items"]
        assert record["status"] == "no_recipient" and record["purpose"] == "customer_reply"
        assert record["event_id"] == reply.id and record["recipient"] == f"customer:C-{u}"
        assert "no e-mail address" in record["reason"] and record["attempts"] == 0
        full = ok(await manager.get(f"/notifications/{record['id']}"))
    assert "更换了模具。" in full["body"]  # what to tell them by phone or letter
    assert ntf.sink.for_event(reply.id) == {}
    async with ntf.client("ops") as ops:
        refused = await ops.post(f"/notifications/{record['id']}/retry")
        assert refused.status_code == 409 and "nobody" in refused.json()["error"]["message"]


async def test_p_5_3_5_smtp_down_the_alert_is_retried_and_delivered_once_it_is_back(ntf):
    u = uid()
    head = f"prod.head.{u}@plant.example"
    fid, number = str(uuid.uuid4()), register_no()
    ntf.sink.stop()  # the SMTP server is down
    try:
        alert = await ntf.system.publish(MajorAlert(
            feedback_id=fid, register_no=number, customer=customer(u),
            description="Safety recall risk", heads=[Head(unit="production", name="P. Head",
                                                          email=head)]), correlation_id=fid)

        async def retrying():
            records = await ntf.notifications(event_id=alert.id)
            return records if records and records[0]["attempts"] >= 2 else None
        [record] = await eventually(retrying, what="failed attempts while SMTP is down")
        assert record["status"] == "pending" and "unreachable" in record["last_error"]
        # The retries live in the database: a crash of notify loses none of them.
        await ntf.system.restart("notify", kill=True)
    finally:
        ntf.sink.start()  # back up

    got = await ntf.mails(alert.id, head)
    assert len(got[head]) == 1

    async def sent():
        [r] = await ntf.notifications(event_id=alert.id)
        return r if r["status"] == "sent" else None
    record = await eventually(sent, what="the notification recorded as sent")
    assert record["attempts"] >= 3 and record["last_error"] is None
    async with ntf.client("manager") as manager:  # managers read everything
        full = ok(await manager.get(f"/notifications/{record['id']}"))
    assert [a["ok"] for a in full["attempt_log"]][-1] is True
    assert not any(a["ok"] for a in full["attempt_log"][:-1])
    assert await ntf.metric("qms_notify_notifications_total", channel="email",
                            outcome="sent") >= 1


# ---------------------------------------------------------------- webhooks for plant systems


async def test_p_f_5_breach_is_pushed_to_a_subscribed_plant_system_signed(ntf):
    path = f"/erp/{uid()}"
    async with ntf.client("ops") as ops:
        sub = ok(await ops.post("/webhooks", json={"name": "ERP", "url": ntf.hooks.url(path),
                                                   "event_types": ["complaint.*"]}))
        secret = sub["secret"]
        assert len(secret) >= 16 and "secret" not in ok(await ops.get(f"/webhooks/{sub['id']}"))
    fid, number = str(uuid.uuid4()), register_no()
    registered = await ntf.system.publish(FeedbackRegistered(
        feedback_id=fid, register_no=number, customer=customer(uid()), channel="phone",
        received_at=utcnow(), category="delivery", severity="normal", description="Late",
        is_complaint=True), correlation_id=fid)
    breach = await ntf.system.publish(SlaBreached(feedback_id=fid, register_no=number, round=1,
                                                  due_at=utcnow(), severity="normal"),
                                      correlation_id=fid)

    [request] = await eventually(lambda: _async(ntf.hooks.received(path, breach.id)),
                                 what="the signed POST")
    headers, body = request["headers"], request["body"]
    assert verify_signature(secret, headers["X-QMS-Timestamp"], body,
                            headers["X-QMS-Signature"])
    assert not verify_signature("some-other-secret-0000", headers["X-QMS-Timestamp"], body,
                                headers["X-QMS-Signature"])
    envelope = json.loads(body)
    assert envelope["id"] == breach.id and envelope["type"] == "complaint.sla_breached"
    assert envelope["payload"]["register_no"] == number
    assert ntf.hooks.received(path, registered.id) == []  # not subscribed to feedback.*

    async def logged():
        async with ntf.client("ops") as ops:
            log = ok(await ops.get(f"/webhooks/{sub['id']}/deliveries",
                                   params={"status": "sent"}))
        return [d for d in log["items"] if d["event_id"] == breach.id]
    [delivery] = await eventually(logged, what="the delivery in the subscription's log")
    assert delivery["attempt_log"][0]["status_code"] == 200 and delivery["attempts"] == 1
    async with ntf.client("ops") as ops:
        ok(await ops.patch(f"/webhooks/{sub['id']}", json={"active": False}))


async def test_p_f_5_a_failing_plant_system_is_retried_parked_then_retried_by_hand(ntf):
    path = f"/mes/{uid()}"
    ntf.hooks.status[path] = 500
    async with ntf.client("ops") as ops:
        sub = ok(await ops.post("/webhooks", json={
            "name": "MES", "url": ntf.hooks.url(path), "event_types": ["complaint.sla_at_risk"],
            "secret": "mes-shared-secret-0123456789"}))
    fid = str(uuid.uuid4())
    risk = await ntf.system.publish(SlaAtRisk(feedback_id=fid, register_no=register_no(),
                                              round=1, due_at=utcnow(), severity="normal"),
                                    correlation_id=fid)

    async def parked():
        async with ntf.client("ops") as ops:
            log = ok(await ops.get(f"/webhooks/{sub['id']}/deliveries",
                                   params={"status": "parked"}))
        return [d for d in log["items"] if d["event_id"] == risk.id]
    [delivery] = await eventually(parked, what="the delivery parked after the limit")
    assert delivery["attempts"] == 3  # QMS_NOTIFY_WEBHOOK_MAX_ATTEMPTS
    assert [a["status_code"] for a in delivery["attempt_log"]] == [500, 500, 500]
    times = [datetime.fromisoformat(a["at"]) for a in delivery["attempt_log"]]
    assert times == sorted(times)
    assert len(ntf.hooks.received(path, risk.id)) == 3

    async def parked_metric():
        return (await ntf.metric("qms_notify_webhook_deliveries_total", outcome="parked") >= 1
                and await ntf.metric("qms_notify_parked", channel="webhook") >= 1)
    await eventually(parked_metric, what="parked deliveries in /metrics")

    retry_url = f"/webhooks/{sub['id']}/deliveries/{delivery['id']}/retry"
    async with ntf.client("sales") as sales:
        assert (await sales.post(retry_url)).status_code == 403  # only ops
    ntf.hooks.status[path] = 204  # the plant system is fixed
    async with ntf.client("ops") as ops:
        retried = ok(await ops.post(retry_url))
        assert retried["status"] == "pending"

    async def delivered():
        async with ntf.client("ops") as ops:
            d = ok(await ops.get(f"/notifications/{delivery['id']}"))
        return d if d["status"] == "sent" else None
    done = await eventually(delivered, what="the delivery after the manual retry")
    assert done["attempts"] == 4
    assert [h["action"] for h in done["history"]] == ["created", "parked", "retry_requested",
                                                      "sent"]
    async with ntf.client("ops") as ops:
        again = await ops.post(f"/notifications/{delivery['id']}/retry")
        assert again.status_code == 409 and "parked" in again.json()["error"]["message"]
        ok(await ops.patch(f"/webhooks/{sub['id']}", json={"active": False}))


# ---------------------------------------------------------------- notify's own facts


async def test_a_delivered_mail_is_announced_once_as_notification_sent(ntf):
    """A plant system (or ops) bound to `notification.*` learns each delivery once, even when
    the event that caused the mail was delivered to notify twice."""
    async with PlantQueue(ntf.system, "notification.*") as plant:
        breach = await a_breach_delivered_twice(ntf)
        fid, number = breach.correlation_id, breach.payload["register_no"]
        await ntf.mails(breach.id, "quality@plant.example", "manager@plant.example")
        await plant.wait("notification.sent", count=2, cause_event_id=breach.id)
        await _after_a_later_delivery(ntf, plant)  # anything twice would be here by now

        sent = [e for e in plant.of("notification.sent", fid)
                if e.payload["cause_event_id"] == breach.id]
        assert sorted(e.payload["recipient"] for e in sent) == ["manager@plant.example",
                                                                "quality@plant.example"]
        records = {r["id"]: r for r in await ntf.notifications(event_id=breach.id)}
        for event in sent:
            p = event.payload
            assert event.producer == "notify" and event.causation_id == breach.id
            assert p["notification_id"] in records and p["channel"] == "email"
            assert p["cause_event_type"] == "complaint.sla_breached"
            assert p["purpose"] == "sla_breached" and p["register_no"] == number
            assert p["attempts"] == 1 and p["feedback_id"] == fid
        assert plant.of("notification.failed", fid) == []


async def test_a_parked_webhook_is_announced_once_as_notification_failed(ntf):
    """Ops learn that a plant system was given up on (not of each failed attempt), and of
    the delivery once a manual retry gets it through."""
    path = f"/supplier/{uid()}"
    called = f"{path}?key=portal-api-key"  # the receiver sees the path with its query
    ntf.hooks.status[called] = 500
    secret = "portal-shared-secret-0123456789"
    async with PlantQueue(ntf.system, "notification.*") as plant:
        async with ntf.client("ops") as ops:
            sub = ok(await ops.post("/webhooks", json={
                "name": "Supplier portal", "url": ntf.hooks.url(called),
                "event_types": ["complaint.sla_at_risk"], "secret": secret}))
        fid = str(uuid.uuid4())
        risk = await ntf.system.publish(SlaAtRisk(feedback_id=fid, register_no=register_no(),
                                                  round=1, due_at=utcnow(),
                                                  severity="normal"), correlation_id=fid)

        # (the mails to Quality and the managers about the same event are announced too)
        [failed] = await plant.wait("notification.failed", cause_event_id=risk.id,
                                    channel="webhook")
        p = failed.payload
        assert failed.correlation_id == fid and failed.causation_id == risk.id
        assert p["channel"] == "webhook" and p["recipient"] == sub["id"]
        assert p["recipient_name"] == "Supplier portal" and p["purpose"] == "webhook"
        assert p["target"] == ntf.hooks.url(path)  # no query: it may hold a key
        assert p["attempts"] == 3 and p["parked"] is True and p["permanent"] is False
        assert p["status_code"] == 500 and "500" in p["last_error"]
        raw = failed.model_dump_json()
        assert secret not in raw and "portal-api-key" not in raw
        assert len(ntf.hooks.received(called, risk.id)) == 3  # 3 attempts, 1 announcement

        ntf.hooks.status[called] = 204  # the portal is fixed; ops retry by hand
        async with ntf.client("ops") as ops:
            ok(await ops.post(f"/webhooks/{sub['id']}/deliveries/{p['notification_id']}/retry"))
        [sent] = await plant.wait("notification.sent", notification_id=p["notification_id"])
        assert sent.payload["attempts"] == 4 and sent.payload["status_code"] == 204
        await _after_a_later_delivery(ntf, plant)
        about_it = [e.type for e in plant.seen
                    if e.payload["notification_id"] == p["notification_id"]]
        assert about_it == ["notification.failed", "notification.sent"]
        async with ntf.client("ops") as ops:
            ok(await ops.patch(f"/webhooks/{sub['id']}", json={"active": False}))


async def _after_a_later_delivery(ntf, plant: PlantQueue) -> None:
    """Wait for the announcement of a mail caused after the ones under test: a second copy of
    theirs would have been published by the same relay before it."""
    fid, u = str(uuid.uuid4()), uid()
    later = await ntf.system.publish(ActionRequested(
        action_id=f"A-{u}", feedback_id=fid, register_no=register_no(), unit="production",
        request="Barrier", round=1), correlation_id=fid)
    await plant.wait("notification.sent", cause_event_id=later.id)


# ---------------------------------------------------------------- roles (P-3)


async def test_p_3_only_ops_manage_plant_systems_and_the_directory(ntf):
    async with ntf.client("sales") as sales, ntf.client("quality") as quality, \
            ntf.client("auditor") as auditor:
        refused = await sales.post("/webhooks", json={
            "name": "x", "url": "http://127.0.0.1:9/x", "event_types": ["#"]})
        assert refused.status_code == 403
        assert (await quality.patch("/directory/quality@plant.example",
                                    json={"language": "en"})).status_code == 403
        seeded = ok(await auditor.get("/directory", params={"group": "role:quality"}))
        assert [e["email"] for e in seeded["items"]] == ["quality@plant.example"]
        assert seeded["items"][0]["language"] == "zh"  # nothing changed by the refusal
        assert (await auditor.post("/customers", json={"id": "C-X", "name": "X"})).status_code \
            == 403
    async with ntf.client("ops") as ops:
        bad = await ops.post("/webhooks", json={"name": "x", "url": "ftp://example/x",
                                                "event_types": ["complaint.*"]})
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid"
        bad = await ops.post("/directory", json={"email": "x@plant.example", "name": "X",
                                                 "groups": ["boss"]})
        assert bad.status_code == 422




# ---------------------------------------------------------------- readiness


async def test_p_5_1_not_ready_while_the_inbound_smtp_port_is_taken():
    port = free_port()
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", port))
    squatter.listen()
    namespace = test_namespace(f"ntfport{uid()}")
    system = System(namespace, services=("notify",), env={
        "QMS_NOTIFY_INBOUND_PORT": str(port), "QMS_NOTIFY_INBOUND_BIND_RETRY_S": "0.3"})
    system._spawn("notify")  # started by hand: System.start waits for a ready service
    try:
        async def readyz():
            try:
                async with system.client("notify", None) as anon:
                    return (await anon.get("/readyz")).json()
            except httpx.HTTPError:
                return None  # not serving HTTP yet

        async def refused():
            body = await readyz()
            return body if body and "taken" in body["checks"].get("inbound_smtp", "") else None
        body = await eventually(refused, timeout=60, what="/readyz naming the taken port")
        assert body["status"] == "not ready" and body["checks"]["database"] == "ok"
        assert f"not listening on 127.0.0.1:{port}: port {port} is taken" in \
            body["checks"]["inbound_smtp"]
        async with system.client("notify", None) as anon:
            assert (await anon.get("/readyz")).status_code == 503
        log = (LOGS / f"{namespace}-notify.log").read_text()
        assert f"not listening on 127.0.0.1:{port}" in log and "taken" in log

        squatter.close()  # the other program lets go of the port

        async def ready():
            async with system.client("notify", None) as anon:
                return (await anon.get("/readyz")).status_code == 200
        await eventually(ready, timeout=30, what="/readyz 200 once the port is free")
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port) as smtp:
            code, _ = await smtp.noop()
            assert code == 250  # the complaints mailbox answers
    finally:
        squatter.close()
        await system.stop()
