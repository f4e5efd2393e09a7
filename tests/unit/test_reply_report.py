"""P-F.4 / P-5.3.1: the reply to the customer carries the issued Complaint Handling Report.

Intake checks the PDF is in the attachment store; the contract carries it (old events
without it still parse); notify attaches the very bytes, or does not send the mail.
"""

import hashlib
from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.intake.api import CustomerReplyBody, ReportRef, _stored_report
from services.notify.channels import DeliveryFailed, EmailChannel
from services.notify.domain import ChannelName, Notification, RetryPolicy
from services.notify.handlers import Recipient, _attachments
from services.notify.settings import Settings
from services.notify.templates import Renderer
from shared.attachments import AttachmentStore
from shared.auth import Principal
from shared.contracts import CustomerReplied
from shared.errors import Invalid
from shared.events import Actor, make_event, parse_event
from shared.vocabulary import AttachmentMeta, Language
from tests.unit.test_intake_domain import SALES, quality_ready, register

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
SHA = hashlib.sha256(PDF).hexdigest()
REPORT = AttachmentMeta(sha256=SHA, filename="CF-2026-000123-rev1.pdf",
                        content_type="application/pdf", size=len(PDF), uploaded_by="wang.fang",
                        uploaded_at=T0)
SALES_PRINCIPAL = Principal(sub="wang.fang", name="Wang Fang", roles=("sales",))


def replied(report: AttachmentMeta | None = None) -> CustomerReplied:
    return CustomerReplied(feedback_id="f-1", register_no="CF-2026-000123",
                           reply="We replaced the mould.", replied_at=T0, report=report)


# ---------------------------------------------------------------- the contract


def test_p_f_4_a_reply_event_from_before_reports_still_parses_without_one():
    old = make_event(replied(), producer="intake", correlation_id="f-1",
                     actor=Actor(sub="wang.fang")).model_dump(mode="json")
    del old["payload"]["report"]  # as published before the field existed
    _, payload = parse_event(old)
    assert isinstance(payload, CustomerReplied) and payload.report is None


def test_p_5_3_1_a_reply_event_carries_the_report_through_the_wire():
    event = make_event(replied(REPORT), producer="intake", correlation_id="f-1",
                       actor=Actor(sub="wang.fang"))
    _, payload = parse_event(event.model_dump_json())
    assert isinstance(payload, CustomerReplied) and payload.report == REPORT


# ---------------------------------------------------------------- intake


def test_p_5_3_1_the_reply_record_its_event_and_history_carry_the_report():
    fb = register()
    fb.escalate(SALES)
    quality_ready(fb)
    fb.reply_to_customer("Here is our analysis", SALES, report=REPORT)
    assert fb.customer_reply is not None and fb.customer_reply.report == REPORT
    event = fb.pending_events[-1]
    assert event.type == "feedback.customer_replied"
    assert event.payload["report"]["sha256"] == SHA
    assert fb.history[-1].changes["report"]["filename"] == "CF-2026-000123-rev1.pdf"
    again = type(fb).model_validate(fb.to_document())  # stored and read back
    assert again.customer_reply is not None and again.customer_reply.report == REPORT


def test_p_f_4_a_reply_body_takes_the_report_as_an_object_or_just_its_sha256():
    short = CustomerReplyBody.model_validate({"reply": "x", "report": SHA.upper()})
    assert short.report is not None and short.report.sha256 == SHA
    assert short.report.filename is None
    full = CustomerReplyBody.model_validate({"reply": "x", "report": {
        "sha256": SHA, "filename": "C:\\reports\\CF-2026-000123-rev1.pdf"}})
    assert full.report is not None and full.report.filename == "CF-2026-000123-rev1.pdf"
    assert CustomerReplyBody.model_validate({"reply": "x"}).report is None
    issued = {"sha256": SHA, "size": len(PDF), "filename": "CF-2026-000123-rev1.pdf",
              "issued_at": "2026-11-20T08:00:00Z"}  # reporting's answer to the issue, as is
    from_issue = CustomerReplyBody.model_validate({"reply": "x", "report": issued}).report
    assert from_issue == ReportRef(sha256=SHA, filename="CF-2026-000123-rev1.pdf")


@pytest.mark.parametrize("report, loc, msg", [
    ("not-a-hash", ("report", "sha256"), "pattern"),
    ({"sha256": SHA, "filename": "report.docx"}, ("report", "filename"), "must end in .pdf"),
    ({"filename": "x.pdf"}, ("report", "sha256"), "Field required"),
])
def test_p_f_4_a_malformed_report_reference_says_which_field(report, loc, msg):
    with pytest.raises(ValidationError) as caught:
        CustomerReplyBody.model_validate({"reply": "x", "report": report})
    [error] = caught.value.errors()
    assert error["loc"] == loc and msg in error["msg"]


def test_p_5_3_1_intake_takes_a_stored_pdf_with_its_size_and_a_default_name(tmp_path: Path):
    store = AttachmentStore(tmp_path)
    store.put_bytes(PDF)
    body = CustomerReplyBody.model_validate({"reply": "x", "report": SHA})
    assert body.report is not None
    meta = _stored_report(store, body.report, "CF-2026-000123", SALES_PRINCIPAL)
    assert (meta.sha256, meta.size, meta.content_type) == (SHA, len(PDF), "application/pdf")
    assert meta.filename == "CF-2026-000123-report.pdf" and meta.uploaded_by == "wang.fang"


@pytest.mark.parametrize("content, expected", [
    (None, "not in the attachment store"), (PNG, "image/png, not a PDF"),
    (b"plain words", "of no recognised type, not a PDF"), ("damaged", "damaged")])
def test_p_5_3_1_intake_refuses_a_report_that_is_not_a_stored_pdf(tmp_path: Path, content,
                                                                    expected):
    store = AttachmentStore(tmp_path)
    sha = SHA
    if isinstance(content, bytes):
        sha = store.put_bytes(content)
    elif content == "damaged":  # the bytes at the name are no longer what was stored
        store.put_bytes(PDF)
        store.path(SHA).write_bytes(PDF + b"tampered")
    body = CustomerReplyBody.model_validate({"reply": "x", "report": sha})
    assert body.report is not None
    with pytest.raises(Invalid) as caught:
        _stored_report(store, body.report, "CF-2026-000123", SALES_PRINCIPAL)
    assert expected in caught.value.message and sha in caught.value.message
    assert caught.value.details[0]["loc"] == "body.report.sha256"


# ---------------------------------------------------------------- notify


@pytest.mark.parametrize("language, says", [
    (Language.EN, "Attached is our Complaint Handling Report CF-2026-000123-rev1.pdf"),
    (Language.ZH, "随函附上我方的客诉处理报告 CF-2026-000123-rev1.pdf")])
def test_p_5_3_1_the_reply_mail_mentions_the_attached_report_in_the_customers_language(
        language, says):
    def body(report: AttachmentMeta | None) -> str:
        payload = replied(report)
        event = make_event(payload, producer="intake", correlation_id="f-1",
                           actor=Actor(sub="t"))
        return Renderer().render("customer_reply", language, {
            "p": payload, "event": event, "case": None, "company": "Plant",
            "recipient": Recipient("zhang@bright.example", "Zhang Min", language)})[1]
    assert says in body(REPORT)
    assert "CF-2026-000123-rev1.pdf" not in body(None)  # no report, no word of one


def notification(report: AttachmentMeta | None = REPORT) -> Notification:
    payload = replied(report)
    event = make_event(payload, producer="intake", correlation_id="f-1", actor=Actor(sub="t"))
    return Notification.create(channel=ChannelName.EMAIL, recipient="zhang@bright.example",
                               event=event, purpose="customer_reply", subject="Re: CF",
                               body="Our answer.\n", now=T0, recipient_name="Zhang Min",
                               language=Language.EN, attachments=_attachments(payload))


def test_p_5_3_1_notify_keeps_the_report_with_the_notification():
    n = notification()
    assert n.attachments == [REPORT]
    assert Notification.model_validate(n.to_document()).attachments == [REPORT]
    assert notification(None).attachments == []


def test_p_5_3_1_the_mail_carries_the_report_byte_identical(tmp_path: Path):
    store = AttachmentStore(tmp_path)
    store.put_bytes(PDF)
    channel = EmailChannel(Settings(attachment_dir=tmp_path), store)
    n = notification()
    sent = message_from_bytes(channel.message(n, channel.files(n)).as_bytes(),
                              policy=policy.default)
    [part] = list(sent.iter_attachments())
    assert part.get_content_type() == "application/pdf"
    assert part.get_filename() == "CF-2026-000123-rev1.pdf"
    assert part.get_content() == PDF
    assert sent["Content-Language"] == "en"  # on the mail, not moved into its text part
    assert "Our answer." in sent.get_body(("plain",)).get_content()


@pytest.mark.parametrize("damage, says", [("missing", "is missing from"),
                                          ("altered", "is damaged")])
async def test_p_5_3_1_no_report_in_the_store_no_mail_and_the_attempt_says_why(
        tmp_path: Path, damage, says):
    store = AttachmentStore(tmp_path)
    if damage == "altered":
        store.put_bytes(PDF)
        store.path(SHA).write_bytes(PDF.replace(b"Catalog", b"Catalogue"))
    # An SMTP port nobody listens on: the attempt must fail on the file, before connecting.
    channel = EmailChannel(Settings(attachment_dir=tmp_path, smtp_port=9), store)
    n = notification()
    with pytest.raises(DeliveryFailed) as caught:
        await channel.send(n)
    error = str(caught.value)
    assert not caught.value.permanent  # retried: the file may be restored
    assert says in error and SHA in error and "CF-2026-000123-rev1.pdf" in error
    assert "not sent without it" in error
    # Retried, then parked with `notification.failed` saying so (for ops to restore + retry).
    policy_ = RetryPolicy(max_attempts=2, base_s=1, max_s=1)
    assert n.failed(T0, error, policy_) is False and n.status == "pending"
    assert n.failed(T0, error, policy_) is True and n.status == "parked"
    failed = n.pending_events[-1]
    assert failed.type == "notification.failed" and says in failed.payload["last_error"]
