"""Complaints by e-mail and fax (P-5.1): the inbound SMTP endpoint and what it does with a mail.

The endpoint (aiosmtpd) runs in the service's own event loop, so a message is
stored with the service's database client: attachment files first (by sha256,
the layout intake shares), then ONE insert holding the raw message, what was
parsed from it, and the `mail.received` event for the outbox. Only then does the
sender get `250`; if the insert fails it gets `451` and sends again later.

A mail's id comes from its Message-ID (with its sender and content), so the same mail
delivered twice (a retry after a lost `250`, or via two aliases) is stored and
announced once; intake keys the feedback on that id too.
"""

import asyncio
import errno
import logging
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4, uuid5

from aiosmtpd.smtp import SMTP, Envelope, Session

from services.notify.context import add_once
from services.notify.domain import CustomerEntry, InboundMail, RejectedAttachment, sender_domain
from services.notify.mailparse import (
    Limits,
    ParsedMail,
    compose_body,
    find_register_no,
    is_fax,
    mail_key,
    parse_mail,
)
from services.notify.metrics import NotifyMetrics
from services.notify.settings import Settings
from shared.attachments import AttachmentStore
from shared.events import utcnow
from shared.store import Repository
from shared.vocabulary import AttachmentMeta, Customer

log = logging.getLogger("qms.notify.inbound")
# Never change it: stored mails and intake's feedback ids are derived from it.
MAIL_ID_NS = UUID("6b0f6c0e-8d35-4f2e-a3f4-1c2d9e7b5a40")


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
        now = utcnow()
        try:
            mail = await self._read(raw, now, envelope_from)
        except Exception as exc:  # noqa: BLE001 - never drop a mail: keep it raw and flagged
            mail = self._unreadable(str(uuid4()), raw, now, envelope_from, exc)
            log.error("could not read mail %s; kept raw and flagged: %s", mail.id, exc,
                      exc_info=exc)
        mail.envelope_from = envelope_from
        mail.envelope_to = envelope_to
        mail.peer = peer
        if await add_once(self.mails, mail) is None:
            await self.mails.change(mail.id, lambda m: m.received_again(
                envelope_to=envelope_to, peer=peer))
            self.metrics.inbound_duplicates.inc()
            log.info("mail %s from %s delivered again (Message-ID %s): kept once", mail.id,
                     mail.from_address, mail.message_id)
            return mail.id
        self.metrics.inbound.labels("fax" if mail.is_fax else "email",
                                    str(mail.malformed).lower()).inc()
        log.info("mail %s from %s stored (fax=%s, malformed=%s, auto_reply=%s, held=%s, "
                 "customer=%s, register_no=%s)", mail.id, mail.from_address, mail.is_fax,
                 mail.malformed, mail.auto_reply, mail.held,
                 mail.customer.id if mail.customer else None, mail.register_no)
        return mail.id

    async def _read(self, raw: bytes, now: datetime, envelope_from: str | None) -> InboundMail:
        parsed = await asyncio.to_thread(parse_mail, raw, envelope_from=envelope_from,
                                         limits=self.limits)
        key = mail_key(parsed)
        mail_id = str(uuid5(MAIL_ID_NS, key)) if key else str(uuid4())
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
            "auto_reply": parsed.auto_reply,
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
        """By exact address first, then by the sender's domain; None: unidentified.

        The customer directory is master data kept by Sales: its size follows the plant's
        customers, not the complaints on record, so reading it (the `emails` and `domains`
        indexes on MongoDB; the whole small collection on FerretDB) costs the same with 100
        or 100,000 complaints."""
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


class Listening:
    """Whether the inbound endpoint listens: a readiness check (/readyz says 503 until it
    does, so `make up` and a load balancer see a complaints mailbox that receives nothing)."""

    def __init__(self, host: str, port: int):
        self.where = f"{host}:{port}"
        self.port = port
        self.problem: str | None = f"inbound SMTP endpoint not listening on {self.where} yet"

    async def check(self) -> str:
        return "ok" if self.problem is None else f"down: {self.problem}"

    def cannot_bind(self, exc: OSError, retry_s: float) -> str:
        why = {errno.EADDRINUSE: f"port {self.port} is taken by another process",
               errno.EACCES: f"no permission to listen on port {self.port}",
               errno.EADDRNOTAVAIL: "the address is not one of this machine's"}.get(
            exc.errno or 0, str(exc))
        self.problem = f"inbound SMTP endpoint not listening on {self.where}: {why} " \
                       f"({exc.strerror or exc}); retrying every {retry_s:g}s"
        return self.problem


class InboundServer:
    """Listens while the service runs. A taken port is retried (and logged), not fatal:
    outbound notifications keep working meanwhile; /readyz (503) and /metrics say it is not
    listening."""

    def __init__(self, settings: Settings, inbox: Inbox, metrics: NotifyMetrics,
                 listening: Listening):
        self.s = settings
        self.metrics = metrics
        self.listening = listening
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
                log.error("%s; complaints by mail are not received meanwhile",
                          self.listening.cannot_bind(exc, self.s.inbound_bind_retry_s))
                await asyncio.sleep(self.s.inbound_bind_retry_s)
        self.listening.problem = None
        self.metrics.inbound_listening.set(1)
        log.info("inbound SMTP endpoint listening on %s for <%s>", where,
                 self.s.complaints_mailbox)
        try:
            await asyncio.Event().wait()  # until the service stops (cancelled)
        finally:
            self.listening.problem = f"inbound SMTP endpoint on {where} stopped"
            self.metrics.inbound_listening.set(0)
            self.server.close()
            self.server = None
