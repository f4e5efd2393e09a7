"""Complaints by e-mail and fax (P-5.1): the inbound SMTP endpoint and what it does with a mail.

The endpoint (aiosmtpd) runs in the service's own event loop, so a message is
stored with the service's database client: attachment files first (by sha256,
the layout intake shares), then ONE insert holding the raw message, what was
parsed from it, and the `mail.received` event for the outbox. Only then does the
sender get `250`; if the insert fails it gets `451` and sends again later.
"""

import asyncio
import logging
from datetime import datetime
from typing import Any
from uuid import uuid4

from aiosmtpd.smtp import SMTP, Envelope, Session

from services.notify.domain import CustomerEntry, InboundMail, RejectedAttachment, sender_domain
from services.notify.mailparse import (
    Limits,
    ParsedMail,
    compose_body,
    find_register_no,
    is_fax,
    parse_mail,
)
from services.notify.metrics import NotifyMetrics
from services.notify.settings import Settings
from shared.attachments import AttachmentStore
from shared.events import utcnow
from shared.store import Repository
from shared.vocabulary import AttachmentMeta, Customer

log = logging.getLogger("qms.notify.inbound")


class Inbox:
    """Turns a received message into a stored InboundMail that announces `mail.received`."""

    def __init__(self, settings: Settings, mails: Repository[InboundMail],
                 customers: Repository[CustomerEntry], metrics: NotifyMetrics):
        self.s = settings
        self.mails = mails
        self.customers = customers
        self.metrics = metrics
        self.store = AttachmentStore(settings.attachment_dir)
        self.limits = Limits(settings.max_attachment_bytes,
                             frozenset(t.lower() for t in settings.allowed_attachment_types))

    async def receive(self, raw: bytes, *, envelope_from: str | None,
                      envelope_to: list[str], peer: str | None) -> str:
        mail_id = str(uuid4())
        now = utcnow()
        try:
            mail = await self._read(mail_id, raw, now, envelope_from)
        except Exception as exc:  # noqa: BLE001 - never drop a mail: keep it raw and flagged
            log.error("could not read mail %s; kept raw and flagged: %s", mail_id, exc,
                      exc_info=exc)
            mail = self._unreadable(mail_id, raw, now, envelope_from, exc)
        mail.envelope_from = envelope_from
        mail.envelope_to = envelope_to
        mail.peer = peer
        await self.mails.add(mail)
        self.metrics.inbound.labels("fax" if mail.is_fax else "email",
                                    str(mail.malformed).lower()).inc()
        log.info("mail %s from %s stored (fax=%s, malformed=%s, customer=%s, register_no=%s)",
                 mail_id, mail.from_address, mail.is_fax, mail.malformed,
                 mail.customer.id if mail.customer else None, mail.register_no)
        return mail_id

    async def _read(self, mail_id: str, raw: bytes, now: datetime,
                    envelope_from: str | None) -> InboundMail:
        parsed = await asyncio.to_thread(parse_mail, raw, envelope_from=envelope_from,
                                         limits=self.limits)
        attachments = [await self._keep(att.data, att.filename, att.content_type, parsed, now)
                       for att in parsed.attachments]
        customer = await self.match_customer(parsed.from_address)
        return InboundMail.receive(
            id=mail_id, raw=raw, received_at=now, customer=customer, attachments=attachments,
            rejected=[RejectedAttachment(filename=r.filename, content_type=r.content_type,
                                         size=r.size, reason=r.reason) for r in parsed.refused],
            fields=self._fields(parsed))

    def _fields(self, parsed: ParsedMail) -> dict[str, Any]:
        return {
            "message_id": parsed.message_id, "from_address": parsed.from_address,
            "from_name": parsed.from_name, "subject": parsed.subject,
            "body": compose_body(parsed.body, parsed.refused),
            "is_fax": is_fax(parsed.from_address, parsed.subject, self.s.fax_sender_domains,
                             self.s.fax_subject_prefixes),
            "register_no": find_register_no(parsed.subject),
            "malformed": parsed.malformed, "problems": [p[:300] for p in parsed.problems[:50]],
        }

    async def _keep(self, data: bytes, filename: str, content_type: str, parsed: ParsedMail,
                    now: datetime) -> AttachmentMeta:
        sha = await asyncio.to_thread(self.store.put_bytes, data)
        return AttachmentMeta(sha256=sha, filename=filename, content_type=content_type,
                              size=len(data), uploaded_by=f"mail:{parsed.from_address}",
                              uploaded_at=now)

    def _unreadable(self, mail_id: str, raw: bytes, now: datetime, envelope_from: str | None,
                    exc: Exception) -> InboundMail:
        sender = (envelope_from or "").lower()
        if "@" not in sender or len(sender) > 254:
            sender = "unknown@invalid.invalid"
        return InboundMail.receive(
            id=mail_id, raw=raw, received_at=now, customer=None, attachments=[], rejected=[],
            fields={"from_address": sender, "subject": "", "malformed": True,
                    "body": "[notify: this message could not be read; the raw message is kept]",
                    "problems": [f"could not read the message: {type(exc).__name__}: {exc}"[:300]]})

    async def match_customer(self, address: str) -> Customer | None:
        """By exact address first, then by the sender's domain; None: unidentified."""
        coll = self.customers.collection
        doc = await coll.find_one({"active": True, "emails": address.lower()}, sort=[("_id", 1)])
        domain = sender_domain(address)
        if doc is None and domain:
            doc = await coll.find_one({"active": True, "domains": domain}, sort=[("_id", 1)])
        if doc is None:
            return None
        return CustomerEntry.model_validate(doc).as_customer(address.lower())


class _Handler:
    """aiosmtpd hooks: only the complaints mailbox is accepted."""

    def __init__(self, settings: Settings, inbox: Inbox, metrics: NotifyMetrics):
        self.mailbox = settings.complaints_mailbox
        self.inbox = inbox
        self.metrics = metrics

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,  # noqa: N802
                          address: str, rcpt_options: list[str]) -> str:
        if address.strip().lower() != self.mailbox:
            self.metrics.inbound_refused.labels("recipient").inc()
            return f"550 5.1.1 <{address}>: no such mailbox here; complaints go to " \
                   f"<{self.mailbox}>"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session,  # noqa: N802
                          envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        peer = session.peer
        try:
            mail_id = await self.inbox.receive(
                raw, envelope_from=envelope.mail_from, envelope_to=list(envelope.rcpt_tos),
                peer=f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer))
        except Exception as exc:  # noqa: BLE001 - the sender keeps it and tries again
            self.metrics.inbound_refused.labels("failure").inc()
            log.error("could not store an inbound mail: %s", exc, exc_info=exc)
            return "451 4.3.0 Could not store the message now; please try again later"
        return f"250 2.0.0 OK: queued as {mail_id}"


class InboundServer:
    """Listens while the service runs. A taken port is retried (and logged), not fatal:
    outbound notifications keep working meanwhile, and /metrics says it is not listening."""

    def __init__(self, settings: Settings, inbox: Inbox, metrics: NotifyMetrics):
        self.s = settings
        self.metrics = metrics
        self.handler = _Handler(settings, inbox, metrics)
        self.server: asyncio.AbstractServer | None = None

    def _protocol(self) -> SMTP:
        return SMTP(self.handler, data_size_limit=self.s.max_message_bytes,
                    hostname=self.s.inbound_hostname, ident="QMS notify",
                    enable_SMTPUTF8=True, decode_data=False,
                    loop=asyncio.get_running_loop())

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        where = f"{self.s.inbound_host}:{self.s.inbound_port}"
        while self.server is None:
            try:
                self.server = await loop.create_server(self._protocol, self.s.inbound_host,
                                                       self.s.inbound_port)
            except OSError as exc:
                log.error("inbound SMTP endpoint cannot listen on %s (%s); retrying in %ss",
                          where, exc, self.s.inbound_bind_retry_s)
                await asyncio.sleep(self.s.inbound_bind_retry_s)
        self.metrics.inbound_listening.set(1)
        log.info("inbound SMTP endpoint listening on %s for <%s>", where,
                 self.s.complaints_mailbox)
        try:
            await asyncio.Event().wait()  # until the service stops (cancelled)
        finally:
            self.metrics.inbound_listening.set(0)
            self.server.close()
            self.server = None
