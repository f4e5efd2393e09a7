"""P-F.4 / P-5.3.1 on the real services: Sales replies with the issued Complaint Handling
Report, and the customer's mail carries that PDF byte for byte.

The five services run as processes on the real broker and database; notify sends through an
SMTP server of the test's own. One test carries the whole step: Quality approves the report
reporting builds, Sales issues it, replies with it, and the customer's mail carries exactly
the issued revision's bytes. The others put a small valid PDF in the attachment store
(reporting stores the issued one there in the same way).
"""

import hashlib
import uuid
from email.message import EmailMessage
from typing import Any

import pytest

from shared.contracts import CustomerReplied, FeedbackRegistered
from shared.events import utcnow
from shared.vocabulary import AttachmentMeta, Customer
from tests.conftest import test_namespace
from tests.e2e.flow import Flow, new_customer
from tests.e2e.harness import ROOT, Actors, EventTap, System, free_port
from tests.e2e.test_notify import MailSink
from tests.support import eventually, ok, refused


def tiny_pdf(text: str) -> bytes:
    """A one-page PDF with a line of text, with a correct cross-reference table."""
    stream = f"BT /F1 14 Tf 72 760 Td ({text}) Tj ET".encode()
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
               b"/Resources << /Font << /F1 5 0 R >> >> >>",
               b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)
    return bytes(out)


class Env:
    def __init__(self, system: System, sink: MailSink):
        self.system, self.sink = system, sink
        self.store = ROOT / "var" / "test-attachments" / system.namespace

    def put(self, data: bytes) -> str:
        """Into the attachment store, as reporting puts an issued report."""
        sha = hashlib.sha256(data).hexdigest()
        path = self.store / sha[:2] / sha
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return sha

    async def notifications(self, **params: str) -> list[dict[str, Any]]:
        async with self.system.client("notify", "ops", sub="ops.tester") as ops:
            return ok(await ops.get("/notifications", params=params))["items"]

    async def notification(self, notification_id: str) -> dict[str, Any]:
        async with self.system.client("notify", "ops", sub="ops.tester") as ops:
            return ok(await ops.get(f"/notifications/{notification_id}"))

    async def mail(self, event_id: str, address: str) -> EmailMessage:
        async def arrived():
            return self.sink.for_event(event_id).get(address)
        [mail] = await eventually(arrived, what=f"the mail of {event_id} to {address}")
        return mail


@pytest.fixture(scope="module")
async def env():
    sink = MailSink(free_port())
    sink.start()
    system = System(test_namespace("rpt"), services=("intake", "quality", "capa", "notify",
                                                     "reporting"),
                    env={"QMS_NOTIFY_SMTP_HOST": "127.0.0.1",
                         "QMS_NOTIFY_SMTP_PORT": str(sink.port),
                         "QMS_NOTIFY_SMTP_TIMEOUT_S": "2",
                         "QMS_NOTIFY_EMAIL_MAX_ATTEMPTS": "3",
                         "QMS_NOTIFY_EMAIL_BACKOFF_BASE_S": "0.2",
                         "QMS_NOTIFY_EMAIL_BACKOFF_MAX_S": "0.5",
                         "QMS_NOTIFY_DISPATCH_INTERVAL_S": "0.2",
                         "QMS_NOTIFY_WEBHOOK_TIMEOUT_S": "2",
                         "QMS_NOTIFY_DISPATCH_LEASE_S": "3"})
    await system.start()
    yield Env(system, sink)
    await system.stop()
    sink.stop()


@pytest.fixture
async def actors(env):
    a = Actors(env.system)
    yield a
    await a.aclose()


def the_attachment(mail: EmailMessage) -> tuple[str, str | None, bytes]:
    [part] = list(mail.iter_attachments())
    return part.get_content_type(), part.get_filename(), part.get_content()


async def test_p_5_3_1_p_f_4_the_reply_mail_carries_the_issued_report_byte_identical(
        env, actors):
    customer = new_customer("zh")
    fb = await Flow(actors).handle_quality_complaint(customer=customer)
    number = fb["register_no"]
    pdf = tiny_pdf(f"Complaint Handling Report {number} rev 1")
    sha = env.put(pdf)

    replied = ok(await actors.sales.post(f"/feedback/{number}/reply", json={
        "reply": "模具已更换，库存已全部挑选。",
        "report": {"sha256": sha, "filename": f"{number}-rev1.pdf"}}))
    report = replied["customer_reply"]["report"]
    assert replied["status"] == "replied"
    assert (report["sha256"], report["size"], report["filename"], report["content_type"]) == \
        (sha, len(pdf), f"{number}-rev1.pdf", "application/pdf")
    assert report["uploaded_by"] == "wang.fang"  # the Sales person who issued the reply

    async def sent():
        found = [n for n in await env.notifications(feedback_id=fb["id"])
                 if n["purpose"] == "customer_reply" and n["status"] == "sent"]
        return found
    [record] = await eventually(sent, what="the reply recorded as sent")
    mail = await env.mail(record["event_id"], customer["email"])
    assert the_attachment(mail) == ("application/pdf", f"{number}-rev1.pdf", pdf)
    text = mail.get_body(("plain",)).get_content()
    assert "模具已更换" in text and f"随函附上我方的客诉处理报告 {number}-rev1.pdf" in text
    full = await env.notification(record["id"])
    assert [a["sha256"] for a in full["attachments"]] == [sha]  # what went out, on record


async def test_p_5_3_1_p_f_4_quality_approves_sales_issues_and_the_customer_gets_that_pdf(
        env, actors):
    """The whole step on the real services: the report reporting issued is the one mailed."""
    customer = new_customer("en")
    fb = await Flow(actors).handle_quality_complaint(customer=customer)
    number = fb["register_no"]
    reporting = env.system
    async with reporting.client("reporting", "quality", sub="li.wei") as quality, \
            reporting.client("reporting", "sales", sub="wang.fang") as sales:
        async def drafted() -> dict | None:
            resp = await quality.get(f"/documents/complaint-reports/{number}")
            body = resp.json() if resp.status_code == 200 else {}
            return body if {"D6", "D8"} <= set(body.get("sections", [])) else None
        state = await eventually(drafted, timeout=30, what="the report with the verification")
        sha = state["content_sha256"]
        ok(await quality.post(f"/documents/complaint-reports/{number}/approve",
                              json={"content_sha256": sha}), 201)
        issued = ok(await sales.post(f"/documents/complaint-reports/{number}/issue",
                                     json={"content_sha256": sha}), 201)
        rev1 = await sales.get(f"/documents/complaint-reports/{number}/revisions/1.pdf")
        assert rev1.status_code == 200 and rev1.content.startswith(b"%PDF")

    replied = ok(await actors.sales.post(f"/feedback/{number}/reply", json={
        "reply": "The die was replaced; all stock was sorted.", "report": issued["pdf"]}))
    assert replied["customer_reply"]["report"]["sha256"] == \
        hashlib.sha256(rev1.content).hexdigest()

    async def sent():
        return [n for n in await env.notifications(feedback_id=fb["id"])
                if n["purpose"] == "customer_reply" and n["status"] == "sent"]
    [record] = await eventually(sent, what="the reply recorded as sent")
    mail = await env.mail(record["event_id"], customer["email"])
    assert the_attachment(mail) == ("application/pdf", f"{number}-rev1.pdf", rev1.content)


async def test_p_f_4_a_report_that_is_not_a_stored_pdf_is_refused_with_422(env, actors):
    fb = await Flow(actors).handle_quality_complaint(customer=new_customer("en"))
    number = fb["register_no"]
    unknown = hashlib.sha256(uuid.uuid4().bytes).hexdigest()
    error = refused(await actors.sales.post(f"/feedback/{number}/reply", json={
        "reply": "Our answer", "report": unknown}), 422)
    assert error["details"][0]["loc"] == "body.report.sha256"
    assert unknown in error["message"] and "not in the attachment store" in error["message"]

    photo = env.put(b"\x89PNG\r\n\x1a\n" + uuid.uuid4().bytes)  # evidence, not a report
    error = refused(await actors.sales.post(f"/feedback/{number}/reply", json={
        "reply": "Our answer", "report": {"sha256": photo, "filename": "report.pdf"}}), 422)
    assert error["details"][0]["loc"] == "body.report.sha256"
    assert "image/png, not a PDF" in error["message"]

    error = refused(await actors.sales.post(f"/feedback/{number}/reply", json={
        "reply": "Our answer", "report": {"sha256": photo, "filename": "report.docx"}}), 422)
    assert error["details"][0]["loc"] == "body.report.filename"

    # Nothing was replied: the record still waits for Sales' answer.
    after = ok(await actors.sales.get(f"/feedback/{number}"))
    assert after["status"] == "quality_record_ready" and after["customer_reply"] is None


async def test_p_5_3_1_a_report_missing_from_notifys_store_is_retried_parked_and_sent_once_back(
        env):
    u = uuid.uuid4().hex[:10]
    fid, number = str(uuid.uuid4()), f"CF-2026-{uuid.uuid4().int % 1_000_000:06d}"
    address = f"buyer.{u}@customer.example"
    pdf = tiny_pdf(f"Complaint Handling Report {number} rev 1")
    report = AttachmentMeta(sha256=hashlib.sha256(pdf).hexdigest(),
                            filename=f"{number}-rev1.pdf", content_type="application/pdf",
                            size=len(pdf), uploaded_by="wang.fang", uploaded_at=utcnow())
    async with EventTap(env.system, "notification.failed") as tap:
        await env.system.publish(FeedbackRegistered(
            feedback_id=fid, register_no=number, channel="phone", received_at=utcnow(),
            customer=Customer(id=f"C-{u}", name=f"Bright Motors {u}", email=address,
                              language="en"),
            category="product_quality", severity="normal", description="Cracked housings",
            is_complaint=True), correlation_id=fid)
        # Intake checked the file, but notify's store does not have it (another volume).
        reply = await env.system.publish(CustomerReplied(
            feedback_id=fid, register_no=number, reply="The mould was replaced.",
            replied_at=utcnow(), report=report), correlation_id=fid)

        failed = await tap.wait_for("notification.failed", fid)
    assert failed.payload["purpose"] == "customer_reply" and failed.payload["attempts"] == 3
    assert "is missing from the attachment store" in failed.payload["last_error"]
    assert f"{number}-rev1.pdf" in failed.payload["last_error"]
    [record] = await env.notifications(event_id=reply.id)
    assert record["status"] == "parked" and report.sha256 in record["last_error"]
    assert env.sink.for_event(reply.id) == {}  # never sent without the report

    env.put(pdf)  # ops restores the file, then retries by hand
    async with env.system.client("notify", "ops", sub="ops.tester") as ops:
        ok(await ops.post(f"/notifications/{record['id']}/retry"))
    mail = await env.mail(reply.id, address)
    assert the_attachment(mail) == ("application/pdf", f"{number}-rev1.pdf", pdf)
    assert "Attached is our Complaint Handling Report" in \
        mail.get_body(("plain",)).get_content()
    assert len(env.sink.for_event(reply.id)[address]) == 1
