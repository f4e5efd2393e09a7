"""Notify's pure domain: notifications and their retries, webhook subscriptions, the
recipient directory, the customer directory, inbound mail and the case read model.

No broker, database or web framework here: the handlers, the dispatcher and the API
load these aggregates through the kit's Repository and call their methods.
"""

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import AfterValidator, BaseModel, Field

from shared.contracts import MailReceived, NotificationFailed, NotificationSent
from shared.domain import Aggregate
from shared.errors import Conflict, Invalid
from shared.events import Actor, Envelope, once_id
from shared.vocabulary import (
    EMAIL_PATTERN,
    AttachmentMeta,
    Category,
    Customer,
    Language,
    Product,
    Severity,
)

PRODUCER = "notify"
SYSTEM = Actor.system(PRODUCER)
EmailAddress = Annotated[str, Field(max_length=254, pattern=EMAIL_PATTERN,
                                    examples=["quality@plant.example"]),
                         AfterValidator(lambda v: v.strip().lower())]
GROUP_RE = re.compile(r"^(role|unit|head):[a-z][a-z0-9_\-]*$")
Group = Annotated[str, Field(pattern=GROUP_RE.pattern, max_length=80,
                             description="`role:<quality|sales|manager|ops>`, `unit:<unit>` "
                                         "(the unit's mailbox) or `head:<unit>`",
                             examples=["role:quality"])]
TOPIC_SEGMENT = r"(?:\*|#|[a-z0-9_]+)"
TOPIC_RE = re.compile(rf"^{TOPIC_SEGMENT}(?:\.{TOPIC_SEGMENT})*$")
TopicPattern = Annotated[str, Field(pattern=TOPIC_RE.pattern, max_length=100,
                                    description="An event type, or a pattern: `*` is one word, "
                                                "`#` any number of words",
                                    examples=["complaint.*"])]
DOMAIN_RE = r"^[a-z0-9]([a-z0-9\-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9\-]*[a-z0-9])?)+$"
MailDomain = Annotated[str, AfterValidator(lambda v: v.strip().lower()),
                       Field(max_length=253, pattern=DOMAIN_RE, examples=["brightmotors.example"])]


# ---------------------------------------------------------------- topics and signatures


def topic_matches(pattern: str, event_type: str) -> bool:
    """AMQP topic semantics: `*` matches exactly one word, `#` zero or more."""

    def match(p: list[str], t: list[str]) -> bool:
        if not p:
            return not t
        if p[0] == "#":
            return any(match(p[1:], t[i:]) for i in range(len(t) + 1))
        if not t:
            return False
        return (p[0] == "*" or p[0] == t[0]) and match(p[1:], t[1:])

    return match(pattern.split("."), event_type.split("."))


def webhook_signature(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256 over `<timestamp>.<body>` (the receiver recomputes it)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify_signature(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    return hmac.compare_digest(webhook_signature(secret, timestamp, body), signature)


# ---------------------------------------------------------------- notifications


class NotificationStatus(StrEnum):
    PENDING = "pending"  # waiting for its (next) attempt
    SENT = "sent"        # delivered: the SMTP server or the plant system accepted it
    PARKED = "parked"    # gave up after the limit (or a permanent refusal): manual retry
    NO_RECIPIENT = "no_recipient"  # nobody could be told (see `reason`); never attempted


class ChannelName(StrEnum):
    EMAIL = "email"
    WEBHOOK = "webhook"


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: base, 2·base, 4·base … capped; parked after `max_attempts`."""

    max_attempts: int
    base_s: float
    max_s: float

    def delay(self, attempt: int) -> timedelta:
        return timedelta(seconds=min(self.base_s * 2 ** max(attempt - 1, 0), self.max_s))


class Attempt(BaseModel):
    at: datetime
    ok: bool
    detail: str | None = Field(None, description="The server's answer, or the error")
    status_code: int | None = Field(None, description="HTTP status (webhooks) or SMTP code")
    duration_ms: int = 0


def _text(value: str | None, limit: int) -> str | None:
    """Free text fit for a contract (bounded, no NUL): what a server answered is not ours."""
    return (value.replace("\x00", "")[:limit] or None) if value else None


def public_url(url: str) -> str:
    """A URL fit to publish: without user info (a password), query or fragment (a token)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # IPv6
    try:
        port = parts.port
    except ValueError:
        port = None
    return urlunsplit((parts.scheme, f"{host}:{port}" if port else host, parts.path, "", ""))


def notification_id(event_id: str, channel: str, recipient: str) -> str:
    """Deterministic: the same event never notifies the same recipient twice."""
    return f"{event_id}:{channel}:{recipient.lower()}"


NOBODY = "no_recipient"  # the recipient part of the id when nobody could be told


class Notification(Aggregate):
    """One message to one recipient over one channel, because of one event."""

    producer: ClassVar[str] = PRODUCER

    channel: ChannelName
    recipient: str = Field(..., description="E-mail address, or the webhook subscription id")
    recipient_name: str | None = None
    purpose: str = Field(..., examples=["sla_breached", "webhook"])
    event_id: str
    event_type: str
    feedback_id: str = Field(..., description="The event's correlation id (the feedback id)")
    register_no: str | None = None
    language: Language | None = None
    subject: str | None = None
    body: str = Field(..., description="The mail text, or the webhook's JSON body")
    target: str | None = Field(None, description="Webhook URL when created (informational)")
    attachments: list[AttachmentMeta] = Field(
        default_factory=list, description="Files sent with the mail, read from the attachment "
        "store by sha256 at each attempt (the issued Complaint Handling Report)")
    status: NotificationStatus = NotificationStatus.PENDING
    reason: str | None = Field(None, description="Why nobody was told (status no_recipient)")
    attempts: int = Field(0, description="All attempts so far")
    round_attempts: int = Field(0, description="Attempts since creation or the last manual retry")
    next_attempt_at: datetime | None = None
    last_error: str | None = None
    created_at: datetime
    sent_at: datetime | None = None
    attempt_log: list[Attempt] = Field(default_factory=list)

    @classmethod
    def create(cls, *, channel: ChannelName, recipient: str, event: Envelope, purpose: str,
               body: str, now: datetime, subject: str | None = None,
               recipient_name: str | None = None, language: Language | None = None,
               register_no: str | None = None, target: str | None = None,
               attachments: list[AttachmentMeta] | None = None) -> "Notification":
        n = cls(id=notification_id(event.id, channel, recipient), channel=channel,
                recipient=recipient.lower() if channel == ChannelName.EMAIL else recipient,
                recipient_name=recipient_name, purpose=purpose, event_id=event.id,
                event_type=event.type, feedback_id=event.correlation_id,
                register_no=register_no or event.payload.get("register_no"), language=language,
                subject=subject, body=body, target=target, created_at=now, next_attempt_at=now,
                attachments=attachments or [])
        created: dict[str, Any] = {"channel": channel.value, "recipient": n.recipient,
                                   "purpose": purpose}
        if n.attachments:
            created["attachments"] = [a.filename for a in n.attachments]
        n.log(SYSTEM, "created", created, event_id=event.id)
        return n

    @classmethod
    def nobody(cls, *, channel: ChannelName, audience: str, reason: str, event: Envelope,
               purpose: str, body: str, now: datetime, subject: str | None = None,
               language: Language | None = None, register_no: str | None = None
               ) -> "Notification":
        """The record that nobody could be told, and why: one per event, never attempted.

        `audience` says who was meant (`customer:C-1001`, `role:quality`); the body is what
        they would have read, so someone can pass it on by other means."""
        n = cls(id=notification_id(event.id, channel, NOBODY), channel=channel,
                recipient=audience, purpose=purpose, event_id=event.id, event_type=event.type,
                feedback_id=event.correlation_id,
                register_no=register_no or event.payload.get("register_no"), language=language,
                subject=subject, body=body, status=NotificationStatus.NO_RECIPIENT,
                reason=reason, created_at=now, next_attempt_at=None)
        n.log(SYSTEM, "no_recipient", {"channel": channel.value, "audience": audience,
                                       "purpose": purpose}, note=reason, event_id=event.id)
        return n

    def is_due(self, now: datetime) -> bool:
        return (self.status == NotificationStatus.PENDING and self.next_attempt_at is not None
                and self.next_attempt_at <= now)

    def claim(self, now: datetime, lease: timedelta) -> bool:
        """Take it for one attempt. Pushing `next_attempt_at` out by the lease means an
        attempt cut off by a crash is simply due again later (the state is in the database)."""
        if not self.is_due(now):
            return False
        self.next_attempt_at = now + lease
        return True

    @property
    def correlation_id(self) -> str:
        return self.feedback_id  # the story of the complaint the causing event belongs to

    def delivered(self, now: datetime, detail: str | None = None,
                  status_code: int | None = None, duration_ms: int = 0) -> None:
        """Record a successful attempt and announce it (`notification.sent`, in the same
        write): once per notification, also when a manual retry delivers a parked one."""
        first = self.status != NotificationStatus.SENT
        self._attempted(Attempt(at=now, ok=True, detail=detail, status_code=status_code,
                                duration_ms=duration_ms))
        self.status = NotificationStatus.SENT
        self.sent_at = now
        self.next_attempt_at = None
        self.last_error = None
        self.log(SYSTEM, "sent", {"status": self.status.value, "attempts": self.attempts},
                 note=detail)
        if first:  # a late attempt whose lease had run out delivered it again: told once
            self.emit(NotificationSent(**self._facts(), sent_at=now, status_code=status_code),
                      SYSTEM, causation_id=self.event_id,
                      event_id=once_id("notification.sent", self.id))

    def failed(self, now: datetime, error: str, policy: RetryPolicy, *, permanent: bool = False,
               status_code: int | None = None, duration_ms: int = 0) -> bool:
        """Record a failed attempt; back off, or park at the limit. True when parked.

        Only giving up is announced (`notification.failed`, in the same write as the
        parking): a failed attempt that will be retried is no fact for anyone outside (the
        attempt log and the metrics have it), and announcing each would flood the exchange
        while an SMTP server is down."""
        self._attempted(Attempt(at=now, ok=False, detail=error[:1000], status_code=status_code,
                                duration_ms=duration_ms))
        if self.status in (NotificationStatus.SENT, NotificationStatus.PARKED):
            return False  # a late attempt (its lease had run out) after the outcome: moot
        self.last_error = error[:1000]
        if permanent or self.round_attempts >= policy.max_attempts:
            self.status = NotificationStatus.PARKED
            self.next_attempt_at = None
            why = "refused permanently" if permanent else \
                f"gave up after {self.round_attempts} attempts"
            self.log(SYSTEM, "parked", {"status": self.status.value, "attempts": self.attempts},
                     note=f"{why}: {self.last_error}")
            # One per round of attempts: a manual retry given up again is a new fact.
            self.emit(NotificationFailed(**self._facts(), failed_at=now,
                                         last_error=_text(self.last_error, 1000) or "",
                                         status_code=status_code,
                                         permanent=permanent, parked=True),
                      SYSTEM, causation_id=self.event_id,
                      event_id=once_id("notification.failed", self.id, self.attempts))
            return True
        self.next_attempt_at = now + policy.delay(self.round_attempts)
        return False

    def _facts(self) -> dict[str, Any]:
        """What `notification.sent` and `.failed` say of this notification (no body, no
        secret: a webhook's URL without user info or query)."""
        return {"notification_id": self.id, "cause_event_id": self.event_id,
                "cause_event_type": self.event_type, "channel": self.channel.value,
                "recipient": self.recipient,
                "recipient_name": _text(self.recipient_name, 200),
                "target": public_url(self.target) if self.target else None,
                "purpose": self.purpose, "feedback_id": self.feedback_id,
                "register_no": self.register_no, "attempts": self.attempts}

    def retry(self, actor: Actor, now: datetime) -> None:
        """Manual retry (ops): a parked notification gets a fresh round of attempts."""
        if self.status != NotificationStatus.PARKED:
            raise Conflict(f"Only a parked notification can be retried; this one is "
                           f"{self.status.value}"
                           + (" and will be retried automatically."
                              if self.status == NotificationStatus.PENDING else
                              f" ({self.reason}): there is nobody to send it to."
                              if self.status == NotificationStatus.NO_RECIPIENT else "."))
        self.status = NotificationStatus.PENDING
        self.round_attempts = 0
        self.next_attempt_at = now
        self.log(actor, "retry_requested", {"status": self.status.value})

    def _attempted(self, attempt: Attempt) -> None:
        self.attempts += 1
        self.round_attempts += 1
        self.attempt_log.append(attempt)


# ---------------------------------------------------------------- webhook subscriptions


class Subscription(Aggregate):
    """A plant system (ERP, MES, supplier portal) that receives events by signed webhook."""

    producer: ClassVar[str] = PRODUCER

    name: str
    url: str
    secret: str = Field(..., description="HMAC key; never returned by the API after creation")
    event_types: list[str]
    active: bool = True
    created_at: datetime

    @classmethod
    def create(cls, *, id: str, name: str, url: str, secret: str, event_types: list[str],
               actor: Actor, now: datetime) -> "Subscription":
        sub = cls(id=id, name=name, url=url, secret=secret,
                  event_types=_unique_patterns(event_types), created_at=now)
        sub.log(actor, "subscribed", {"name": name, "url": url, "event_types": sub.event_types})
        return sub

    def wants(self, event_type: str) -> bool:
        return self.active and any(topic_matches(p, event_type) for p in self.event_types)

    def update(self, actor: Actor, *, name: str | None = None, url: str | None = None,
               event_types: list[str] | None = None, secret: str | None = None,
               active: bool | None = None) -> bool:
        changes: dict[str, Any] = {}
        if name is not None and name != self.name:
            self.name = changes["name"] = name
        if url is not None and url != self.url:
            self.url = changes["url"] = url
        if event_types is not None:
            patterns = _unique_patterns(event_types)
            if patterns != self.event_types:
                self.event_types = changes["event_types"] = patterns
        if secret is not None and secret != self.secret:
            self.secret = secret
            changes["secret"] = "(rotated)"  # the history never holds the secret itself
        if active is not None and active != self.active:
            self.active = changes["active"] = active
        if not changes:
            return False
        self.log(actor, "updated", changes)
        return True


OWN_FACTS = "notification"  # notify's own events: never delivered by webhook (see handlers)


def _unique_patterns(patterns: list[str]) -> list[str]:
    out = list(dict.fromkeys(patterns))
    if not out:
        raise Invalid("A subscription needs at least one event type.",
                      [{"loc": "body.event_types", "msg": "at least one event type"}])
    own = [i for i, p in enumerate(out) if p.split(".")[0] == OWN_FACTS]
    if own:
        # Accepting it would promise deliveries that never come.
        raise Invalid(f"{out[own[0]]!r}: notify does not deliver its own notification.* events "
                      "by webhook (that would announce each delivery without end); bind a "
                      "queue to the events exchange to receive them.",
                      [{"loc": f"body.event_types.{i}", "msg": "notify's own events"}
                       for i in own])
    return out


# ---------------------------------------------------------------- the recipient directory


class DirectoryEntry(Aggregate):
    """A mailbox or a person (id = the e-mail address) and the groups it belongs to."""

    producer: ClassVar[str] = PRODUCER

    email: str
    name: str
    language: Language = Language.ZH
    groups: list[str] = Field(default_factory=list)
    active: bool = True

    @classmethod
    def create(cls, *, email: str, name: str, language: Language, groups: list[str],
               actor: Actor) -> "DirectoryEntry":
        email = email.lower()
        entry = cls(id=email, email=email, name=name, language=language,
                    groups=list(dict.fromkeys(groups)))
        entry.log(actor, "added", {"name": name, "language": language.value,
                                   "groups": entry.groups})
        return entry

    def update(self, actor: Actor, *, name: str | None = None, language: Language | None = None,
               groups: list[str] | None = None, active: bool | None = None) -> bool:
        changes: dict[str, Any] = {}
        if name is not None and name != self.name:
            self.name = changes["name"] = name
        if language is not None and language != self.language:
            self.language = language
            changes["language"] = language.value
        if groups is not None and list(dict.fromkeys(groups)) != self.groups:
            self.groups = changes["groups"] = list(dict.fromkeys(groups))
        if active is not None and active != self.active:
            self.active = changes["active"] = active
        if not changes:
            return False
        self.log(actor, "updated", changes)
        return True


# ---------------------------------------------------------------- the customer directory


class CustomerEntry(Aggregate):
    """A customer and the addresses / domains its mail comes from (inbound matching)."""

    producer: ClassVar[str] = PRODUCER

    name: str
    contact_person: str | None = None
    language: Language = Language.ZH
    emails: list[str] = Field(default_factory=list)
    domains: list[str] = Field(default_factory=list)
    active: bool = True

    @classmethod
    def create(cls, *, id: str, name: str, contact_person: str | None, language: Language,
               emails: list[str], domains: list[str], actor: Actor) -> "CustomerEntry":
        c = cls(id=id, name=name, contact_person=contact_person, language=language,
                emails=_lower_unique(emails), domains=_lower_unique(domains))
        c.log(actor, "added", {"name": name, "emails": c.emails, "domains": c.domains})
        return c

    def update(self, actor: Actor, **values: Any) -> bool:
        changes: dict[str, Any] = {}
        for field in ("name", "contact_person", "language", "emails", "domains", "active"):
            if field not in values or values[field] is None:
                continue
            value = values[field]
            if field in ("emails", "domains"):
                value = _lower_unique(value)
            if value != getattr(self, field):
                setattr(self, field, value)
                changes[field] = value.value if isinstance(value, Language) else value
        if not changes:
            return False
        self.log(actor, "updated", changes)
        return True

    def as_customer(self, sender: str | None) -> Customer:
        """The contract's customer, with the address the mail actually came from."""
        valid = sender and re.match(EMAIL_PATTERN, sender) and len(sender) <= 254
        email = sender if valid else None
        return Customer(id=self.id, name=self.name, contact_person=self.contact_person,
                        email=email, language=self.language)


def _lower_unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(v.strip().lower() for v in values))


def sender_domain(address: str) -> str:
    return address.rsplit("@", 1)[-1].lower() if "@" in address else ""


# ---------------------------------------------------------------- inbound mail


class RejectedAttachment(BaseModel):
    filename: str
    content_type: str
    size: int
    reason: str


class InboundMail(Aggregate):
    """A message the complaints mailbox received: the raw bytes first, then what was parsed."""

    producer: ClassVar[str] = PRODUCER

    received_at: datetime
    envelope_from: str | None = None
    envelope_to: list[str] = Field(default_factory=list)
    peer: str | None = None
    size: int
    raw: bytes = Field(..., description="The message exactly as received")
    message_id: str | None = None
    from_address: str
    from_name: str | None = None
    subject: str
    body: str
    is_fax: bool = False
    customer: Customer | None = None
    register_no: str | None = None
    attachments: list[AttachmentMeta] = Field(default_factory=list)
    rejected_attachments: list[RejectedAttachment] = Field(default_factory=list)
    malformed: bool = False
    problems: list[str] = Field(default_factory=list, description="What could not be parsed")
    auto_reply: bool = Field(False, description="An automatic answer (out-of-office…)")
    held: bool = Field(False, description="Not passed to intake: an auto-reply naming no "
                                          "register number, kept for Sales to look at")

    @property
    def correlation_id(self) -> str:
        return self.id  # no feedback yet: intake opens (or finds) it from this mail

    @classmethod
    def receive(cls, *, id: str, raw: bytes, received_at: datetime, fields: dict[str, Any],
                customer: Customer | None, attachments: list[AttachmentMeta],
                rejected: list[RejectedAttachment]) -> "InboundMail":
        """Keep the message and announce it (`mail.received`) in the same write.

        An auto-reply (out-of-office, vacation notice) naming no register number is kept but
        not announced: it is no complaint, and intake would open a feedback for it."""
        mail = cls(id=id, raw=raw, size=len(raw), received_at=received_at, customer=customer,
                   attachments=attachments, rejected_attachments=rejected, **fields)
        mail.held = mail.auto_reply and mail.register_no is None
        held_note = "automatic reply naming no register number: kept for Sales, " \
                    "not registered as feedback"
        mail.log(SYSTEM, "received", {"from": mail.from_address, "is_fax": mail.is_fax,
                                      "malformed": mail.malformed,
                                      "auto_reply": mail.auto_reply,
                                      "customer": customer.id if customer else None,
                                      "register_no": mail.register_no,
                                      "attachments": len(attachments)},
                 note="; ".join(mail.problems + ([held_note] if mail.held else [])) or None)
        if mail.held:
            return mail
        mail.emit(MailReceived(
            mail_id=id, from_address=mail.from_address, from_name=mail.from_name,
            subject=mail.subject, body=mail.body, received_at=received_at, is_fax=mail.is_fax,
            customer=customer, register_no=mail.register_no, attachments=attachments,
            malformed=mail.malformed), SYSTEM)
        return mail

    def received_again(self, *, envelope_to: list[str], peer: str | None) -> None:
        """The same message once more (a retry after a lost `250`, or via another alias):
        noted, never registered twice."""
        self.log(SYSTEM, "received_again", {"envelope_to": envelope_to, "peer": peer},
                 note="the same message (Message-ID, sender, content) was delivered again")


# ---------------------------------------------------------------- what notify knows of a case


class CaseView(Aggregate):
    """Facts of one feedback kept from earlier events (they may arrive in any order)."""

    producer: ClassVar[str] = PRODUCER

    register_no: str | None = None
    customer: Customer | None = None
    category: Category | None = None
    severity: Severity | None = None
    product: Product | None = None
    description: str | None = None
    classified: bool = Field(False, description="Sales (re)classified it: that customer holds")

    def remember(self, **facts: Any) -> None:
        for key, value in facts.items():
            # a registration redelivered after Sales' classification must not undo it
            if value is not None and not (self.classified and key in CLASSIFIED_FACTS):
                setattr(self, key, value)

    def reclassify(self, **facts: Any) -> None:
        """`feedback.classified` replaces what the registration said (e.g. for a mail from
        an unidentified sender): the customer a reply goes to, and their language."""
        for key, value in facts.items():
            if value is not None:
                setattr(self, key, value)
        self.classified = True


CLASSIFIED_FACTS = ("customer", "category", "severity")
