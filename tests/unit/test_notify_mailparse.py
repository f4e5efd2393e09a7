"""Reading inbound mail (P-5.1): sender, subject, text, attachments; never an exception."""

from email.message import EmailMessage

import pytest

from services.notify.mailparse import (
    MAX_TEXT,
    Limits,
    Refused,
    compose_body,
    detect_type,
    find_register_no,
    html_to_text,
    is_fax,
    mail_key,
    normalised_message_id,
    parse_mail,
    safe_filename,
)
from services.notify.settings import ALLOWED_TYPES

LIMITS = Limits(max_attachment_bytes=1000, allowed_types=frozenset(ALLOWED_TYPES))
PDF = b"%PDF-1.4\nsome pdf\n%%EOF\n"


def message(**headers: str) -> EmailMessage:
    msg = EmailMessage()
    for name, value in {"From": "Zhang Min <Zhang@Bright.example>", "To": "complaints@x.example",
                        "Subject": "Cracked housings"}.items() | headers.items():
        msg[name.replace("_", "-")] = value
    return msg


def test_plain_mail_with_an_html_alternative_and_attachments():
    msg = message()
    msg.set_content("The housings crack.\n")
    msg.add_alternative("<p>The <b>housings</b> crack.</p>", subtype="html")
    msg.add_attachment(PDF, maintype="application", subtype="octet-stream", filename="8D.pdf")
    msg.add_attachment(b"MZ\x90", maintype="application", subtype="x-msdownload",
                       filename="tool.exe")
    msg.add_attachment(b"%PDF" + b"x" * 2000, maintype="application", subtype="pdf",
                       filename="huge.pdf")
    parsed = parse_mail(msg.as_bytes(), envelope_from=None, limits=LIMITS)
    assert (parsed.from_address, parsed.from_name) == ("zhang@bright.example", "Zhang Min")
    assert parsed.subject == "Cracked housings" and parsed.body == "The housings crack."
    assert [(a.filename, a.content_type) for a in parsed.attachments] == \
        [("8D.pdf", "application/pdf")]  # sniffed, whatever the label said
    assert [(r.filename, r.reason) for r in parsed.refused] == [
        ("tool.exe", "type application/x-msdownload not allowed"),
        ("huge.pdf", "larger than 1000 bytes")]
    assert not parsed.malformed


def test_html_only_mail_is_reduced_to_text():
    msg = message()
    msg.set_content("<html><head><title>t</title><style>p{}</style></head><body>"
                    "<p>Line one</p><p>Line&nbsp;two &amp; more</p><script>x()</script>"
                    "</body></html>", subtype="html")
    parsed = parse_mail(msg.as_bytes(), envelope_from=None, limits=LIMITS)
    assert parsed.body == "Line one\n\nLine\xa0two & more"


@pytest.mark.parametrize(("raw", "problem"), [
    (b"no headers at all, just text\r\n", "no message headers"),
    (b"From: a@b.example\r\nContent-Type: multipart/mixed; boundary=X\r\n\r\ntext only\r\n",
     "multipart message without valid parts"),
    (b"From: not-an-address\r\nSubject: x\r\n\r\nbody\r\n", "invalid From address"),
    (b"From: a@b.example\r\nContent-Type: text/plain; charset=x-unknown\r\n\r\nbody\r\n",
     "body not decodable"),
])
def test_malformed_mail_is_flagged_not_rejected(raw, problem):
    parsed = parse_mail(raw, envelope_from="Sender@Env.example", limits=LIMITS)
    assert parsed.malformed and any(problem in p for p in parsed.problems)
    assert parsed.from_address in ("a@b.example", "sender@env.example")
    assert "\x00" not in parsed.body


def test_a_bare_pdf_message_is_an_attachment():
    msg = message()
    msg.set_content(PDF, maintype="application", subtype="pdf", filename="fax.pdf")
    parsed = parse_mail(msg.as_bytes(), envelope_from=None, limits=LIMITS)
    assert [a.filename for a in parsed.attachments] == ["fax.pdf"] and parsed.body == ""


def test_register_number_and_fax_recognition():
    assert find_register_no("回复：关于您的反馈 CF-2026-000123 的答复") == "CF-2026-000123"
    assert find_register_no("CF-26-123 is not one") is None
    # Past 999,999 in a year the number grows a digit; intake accepts it, so must the mailbox.
    assert find_register_no("Re: CF-2026-1000001 again") == "CF-2026-1000001"
    assert is_fax("gw@fax.plant.example", "anything", ["fax.plant.example"], [])
    assert is_fax("gw@eu.fax.plant.example", "", ["fax.plant.example"], [])
    assert is_fax("someone@x.example", "Fwd: Fax from +86 755", [], ["Fax from"])
    assert is_fax("someone@x.example", "传真：订单", [], ["传真"])
    assert not is_fax("someone@x.example", "About the fax machine", [], ["Fax from"])


def test_body_is_bounded_and_says_what_was_left_out():
    body = compose_body("x" * (MAX_TEXT + 10), [Refused("a.exe", "application/x", 3, "no")])
    assert len(body) <= MAX_TEXT
    assert "body truncated" in body and body.endswith("not accepted: no]")


def test_types_come_from_the_content_then_the_name():
    assert detect_type(b"\x89PNG\r\n\x1a\n....", "application/octet-stream", "x") == "image/png"
    assert detect_type(b"plain", "application/octet-stream", "notes.txt") == "text/plain"
    assert detect_type(b"plain", "text/csv", "x.csv") == "text/csv"
    assert safe_filename("../../etc/passwd\x07", "f") == "passwd"
    assert safe_filename(None, "attachment-1") == "attachment-1"


def test_html_to_text_keeps_paragraphs():
    assert html_to_text("<div>a</div><div>b<br>c</div>") == "a\n\nb\nc"


# ---------------------------------------------------------------- the same mail twice, auto-replies


def _parsed(body: str = "The housings crack.", *, received: str | None = None,
            sender: str | None = None, **headers: str):
    msg = message(Message_ID="<Abc.123@Bright.Example>", **headers)
    if sender:
        msg.replace_header("From", sender)
    msg.set_content(body)
    raw = msg.as_bytes()
    if received:  # a relay on the way adds its trace header: the bytes differ
        raw = f"Received: from {received}\r\n".encode() + raw
    return parse_mail(raw, envelope_from=None, limits=LIMITS)


def test_the_same_mail_delivered_twice_has_one_key_whatever_the_relays_added():
    first, again = _parsed(received="mx1.example"), _parsed(received="mx2.example")
    assert mail_key(first) is not None and mail_key(first) == mail_key(again)
    assert normalised_message_id(" <Abc.123@Bright.Example> ") == "Abc.123@bright.example"
    # A sender that reuses one Message-ID for every mail loses none of them.
    assert mail_key(_parsed("Another lot cracked.")) != mail_key(first)
    assert mail_key(_parsed(sender="other@elsewhere.example")) != mail_key(first)
    no_id = message()
    no_id.set_content("x")
    assert mail_key(parse_mail(no_id.as_bytes(), envelope_from=None, limits=LIMITS)) is None


@pytest.mark.parametrize(("headers", "automatic"), [
    ({"Auto_Submitted": "auto-replied"}, True),
    ({"Auto_Submitted": "auto-generated; owner-email=x@y.example"}, True),
    ({"Auto_Submitted": "no"}, False),
    ({"Precedence": "bulk"}, True),
    ({"Precedence": "Auto_Reply"}, True),
    ({"Precedence": "junk"}, True),
    ({"Precedence": "list"}, False),
    ({"X_Autoreply": "yes"}, True),
    ({}, False),
])
def test_automatic_answers_are_recognised(headers, automatic):
    assert _parsed(**headers).auto_reply is automatic
