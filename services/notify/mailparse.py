"""Reading an inbound message with the stdlib `email` package (policy=default). Pure, no I/O.

Nothing here raises on bad input: what cannot be read is listed in `problems`,
which makes the mail `malformed` (kept and flagged for Sales, never dropped).
"""

import hashlib
import mimetypes
import re
import unicodedata
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from html.parser import HTMLParser

from shared.attachments import HEAD_BYTES, is_utf8_text, sniff
from shared.vocabulary import EMAIL_PATTERN, REGISTER_NO_PATTERN

REGISTER_NO = re.compile(rf"\b{REGISTER_NO_PATTERN}\b")
EMAIL = re.compile(EMAIL_PATTERN)
MAX_TEXT = 20_000  # the contract's LongText
MAX_SUBJECT = 998  # RFC 5322 line length
GENERIC = {"", "application/octet-stream", "binary/octet-stream", "application/x-download"}
CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
# RFC 3834 `Precedence` values that mark an automatic answer, not a person writing
AUTOMATIC_PRECEDENCE = {"bulk", "auto_reply", "junk"}


@dataclass(frozen=True)
class Limits:
    max_attachment_bytes: int
    allowed_types: frozenset[str]


@dataclass
class Attachment:
    filename: str
    content_type: str
    data: bytes


@dataclass
class Refused:
    filename: str
    content_type: str
    size: int
    reason: str


@dataclass
class ParsedMail:
    from_address: str
    from_name: str | None
    subject: str
    body: str
    message_id: str | None = None
    auto_reply: bool = False
    attachments: list[Attachment] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def malformed(self) -> bool:
        return bool(self.problems)


def parse_mail(raw: bytes, *, envelope_from: str | None, limits: Limits) -> ParsedMail:
    """Sender, subject, text body (HTML reduced to text) and the accepted attachments."""
    problems: list[str] = []
    try:
        msg = BytesParser(policy=policy.default).parsebytes(raw)
    except Exception as exc:  # noqa: BLE001 - a broken message is kept, not rejected
        return ParsedMail(from_address=_fallback_sender(envelope_from), from_name=None,
                          subject="", body=clean_text(raw.decode("utf-8", "replace")),
                          problems=[f"unreadable message: {exc}"])
    assert isinstance(msg, EmailMessage)
    if not raw.strip() or not msg.keys():
        problems.append("no message headers")
    address, name = _sender(msg, problems)
    parsed = ParsedMail(
        from_address=address or _fallback_sender(envelope_from), from_name=name,
        subject=_header(msg, "Subject", problems)[:MAX_SUBJECT],
        body="", message_id=_header(msg, "Message-ID", problems)[:300] or None,
        auto_reply=is_auto_reply(msg), problems=problems)
    if msg.get_content_maintype() == "multipart" and not msg.is_multipart():
        # a multipart without its boundaries: the text is all we can offer Sales
        payload = _decoded(msg)
        parsed.body = clean_text(payload.decode("utf-8", "replace")).strip()
        body_part = None
        problems.append("multipart message without valid parts")
    else:
        body_part = _body_part(msg, problems)
        parsed.body = _text_of(body_part, problems) if body_part is not None else ""
        _collect_attachments(msg, body_part, limits, parsed)
    for part in msg.walk():
        for defect in part.defects:
            problems.append(f"{type(defect).__name__}: {defect}".strip(": "))
    if body_part is None and not parsed.attachments and not problems:
        # a bare non-text message: its content is the only thing there is
        problems.append("no text body and no attachment")
    return parsed


def is_auto_reply(msg: EmailMessage) -> bool:
    """An out-of-office or other automatic answer (RFC 3834 and the common vendor headers)."""
    def value(name: str) -> str:
        try:
            return str(msg.get(name) or "").strip().lower()
        except Exception:  # noqa: BLE001 - an unreadable header says nothing
            return ""

    submitted = value("Auto-Submitted")
    return bool((submitted and submitted.split(";")[0].strip() != "no")
                or value("Precedence") in AUTOMATIC_PRECEDENCE
                or value("X-Autoreply") or value("X-Autorespond"))


def mail_key(parsed: ParsedMail) -> str | None:
    """What makes two deliveries the same mail: its Message-ID, and (so that a sender reusing
    one Message-ID for every mail loses none) its sender and content. None without one."""
    message_id = normalised_message_id(parsed.message_id)
    if message_id is None:
        return None
    content = hashlib.sha256()
    for part in (parsed.subject, parsed.body, *(hashlib.sha256(a.data).hexdigest()
                                                 for a in parsed.attachments)):
        content.update(part.encode("utf-8", "surrogatepass") + b"\x00")
    return f"{message_id}\n{parsed.from_address.lower()}\n{content.hexdigest()}"


def normalised_message_id(value: str | None) -> str | None:
    """`<Local@Domain>` → `local@domain`-ish: brackets and spaces off, the domain lowercased
    (the local part is case-sensitive by the RFC, so it is kept)."""
    found = re.search(r"<([^<>]+)>", value or "")
    text = "".join((found.group(1) if found else (value or "")).split())
    if not text:
        return None
    local, at, domain = text.rpartition("@")
    return f"{local}@{domain.lower()}" if at else text


def find_register_no(subject: str) -> str | None:
    found = REGISTER_NO.search(subject or "")
    return found.group(0) if found else None


def is_fax(from_address: str, subject: str, sender_domains: list[str],
           subject_prefixes: list[str]) -> bool:
    """A fax-to-mail gateway is known by its sender domain or its subject prefix."""
    domain = from_address.rsplit("@", 1)[-1].lower() if "@" in from_address else ""
    if any(domain == d or domain.endswith("." + d) for d in sender_domains):
        return True
    subject = re.sub(r"^\s*((re|fw|fwd|aw|wg|转发|回复)\s*[:：]\s*)*", "", subject or "",
                      flags=re.IGNORECASE)
    return any(subject.lower().startswith(p.lower()) for p in subject_prefixes if p)


def compose_body(body: str, refused: list[Refused]) -> str:
    """The body for Sales: bounded, and saying which attachments were not accepted."""
    notes = [f"[notify: attachment {r.filename!r} ({r.content_type}, {r.size} bytes) "
             f"not accepted: {r.reason}]" for r in refused]
    tail = ("\n\n" + "\n".join(notes)) if notes else ""
    room = MAX_TEXT - len(tail)
    if len(body) > room:
        marker = "\n[notify: body truncated; the full message is kept]"
        body = body[:max(room - len(marker), 0)] + marker
    return (body + tail)[:MAX_TEXT]


def clean_text(text: str) -> str:
    """No NUL or other control characters (storage and the contract refuse them)."""
    return CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


def html_to_text(html: str) -> str:
    parser = _TextExtractor()
    try:
        parser.feed(html)
        parser.close()
    except Exception as exc:  # noqa: BLE001 - HTMLParser is lenient; keep what we have
        parser.parts.append(f"\n[notify: HTML partly unreadable: {exc}]")
    text = "".join(parser.parts)
    text = re.sub(r"[ \t\f\v]+", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def detect_type(data: bytes, declared: str, filename: str) -> str:
    """The type from the content (magic bytes) first, then the declaration, then the name."""
    sniffed = sniff(data[:HEAD_BYTES], data)
    if sniffed:
        return sniffed
    declared = (declared or "").lower()
    if declared in GENERIC:
        guessed, _ = mimetypes.guess_type(filename)
        return guessed or "application/octet-stream"
    return declared


def safe_filename(raw: str | None, fallback: str) -> str:
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C").strip()
    return name[:200] or fallback


# ---------------------------------------------------------------- internals


class _TextExtractor(HTMLParser):
    BLOCKS = frozenset({"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6",
                        "table", "blockquote", "pre", "hr"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in ("script", "style", "head", "title"):
            self._skip += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "head", "title"):
            self._skip = max(0, self._skip - 1)
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def _fallback_sender(envelope_from: str | None) -> str:
    if envelope_from and EMAIL.match(envelope_from):
        return envelope_from.lower()
    return "unknown@invalid.invalid"


def _header(msg: EmailMessage, name: str, problems: list[str]) -> str:
    try:
        value = msg.get(name)
        return clean_text(" ".join(str(value).split())) if value is not None else ""
    except Exception as exc:  # noqa: BLE001
        problems.append(f"unreadable {name} header: {exc}")
        return ""


def _sender(msg: EmailMessage, problems: list[str]) -> tuple[str | None, str | None]:
    try:
        header = msg.get("From")
        addresses = header.addresses if header is not None else ()
    except Exception as exc:  # noqa: BLE001
        problems.append(f"unreadable From header: {exc}")
        return None, None
    if not addresses:
        problems.append("no From address")
        return None, None
    first = addresses[0]
    address = (first.addr_spec or "").lower()
    if not EMAIL.match(address) or len(address) > 254:
        problems.append(f"invalid From address {address[:100]!r}")
        return None, None
    return address, clean_text(first.display_name)[:200] or None


def _body_part(msg: EmailMessage, problems: list[str]) -> EmailMessage | None:
    try:
        part = msg.get_body(preferencelist=("plain", "html"))
    except Exception as exc:  # noqa: BLE001
        problems.append(f"no readable body: {exc}")
        return None
    if part is not None and part.get_content_disposition() == "attachment":
        return None
    return part  # type: ignore[return-value]


def _decoded(part: EmailMessage) -> bytes:
    """The bytes of a part that is not multipart (the only kind decode=True gives bytes for)."""
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


def _text_of(part: EmailMessage, problems: list[str]) -> str:
    try:
        text = part.get_content()
    except (LookupError, UnicodeError, AssertionError, ValueError) as exc:
        problems.append(f"body not decodable ({exc}); shown as UTF-8 with replacements")
        payload = part.get_payload(decode=True) or b""
        text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else str(payload)
    if not isinstance(text, str):
        text = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    if part.get_content_type() == "text/html":
        text = html_to_text(text)
    return clean_text(text).strip()


def _collect_attachments(msg: EmailMessage, body_part: EmailMessage | None, limits: Limits,
                         parsed: ParsedMail) -> None:
    count = 0
    for part in msg.walk():
        if part.is_multipart() or part is body_part:
            continue  # containers (incl. message/rfc822), and the body itself
        filename = _filename(part, parsed.problems)
        disposition = part.get_content_disposition()
        is_text = part.get_content_maintype() == "text"
        if is_text and not filename and disposition != "attachment":
            continue  # the other alternative of the body, or inline text
        if part is msg and is_text:
            continue  # a single-part text message: that is the body
        count += 1
        name = safe_filename(filename, f"attachment-{count}")
        try:
            data = _decoded(part)
        except Exception as exc:  # noqa: BLE001
            parsed.problems.append(f"attachment {name!r} not decodable: {exc}")
            continue
        declared = part.get_content_type()
        _accept(Attachment(name, detect_type(data, declared, name), data), limits, parsed)


def _filename(part: EmailMessage, problems: list[str]) -> str | None:
    try:
        return part.get_filename()
    except Exception as exc:  # noqa: BLE001
        problems.append(f"unreadable attachment name: {exc}")
        return None


def _accept(att: Attachment, limits: Limits, parsed: ParsedMail) -> None:
    size = len(att.data)
    reason = None
    if size == 0:
        reason = "empty file"
    elif size > limits.max_attachment_bytes:
        reason = f"larger than {limits.max_attachment_bytes} bytes"
    elif att.content_type not in limits.allowed_types:
        reason = f"type {att.content_type} not allowed"
    elif att.content_type == "text/plain" and not is_utf8_text(att.data):
        reason = "text that is not UTF-8"
    if reason:
        parsed.refused.append(Refused(att.filename, att.content_type, size, reason))
    else:
        parsed.attachments.append(att)


