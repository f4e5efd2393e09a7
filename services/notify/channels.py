"""Channel plugins: every way notify reaches someone, behind one interface.

A channel makes one attempt to deliver one notification and says how it went:
it returns `Delivered`, or raises `DeliveryFailed` (transient: retried with
backoff; `permanent`: parked at once). Retries, records and metrics are the
dispatcher's business, so a new channel (SMS, WeCom…) is one small class.
"""

import asyncio
import hashlib
import ssl
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, parseaddr

import aiosmtplib
import httpx

from services.notify.domain import ChannelName, Notification, Subscription, webhook_signature
from services.notify.rules import TO_CUSTOMER
from services.notify.settings import Settings, SmtpSecurity
from shared.attachments import AttachmentStore, DamagedFile
from shared.events import utcnow
from shared.vocabulary import AttachmentMeta


@dataclass(frozen=True)
class Delivered:
    detail: str | None = None
    status_code: int | None = None


class DeliveryFailed(Exception):
    def __init__(self, message: str, *, permanent: bool = False, status_code: int | None = None):
        super().__init__(message)
        self.permanent = permanent
        self.status_code = status_code


class Channel(ABC):
    name: ChannelName

    @abstractmethod
    async def send(self, notification: Notification) -> Delivered:
        """One attempt. Raise DeliveryFailed when it did not get through."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections at shutdown."""


# ---------------------------------------------------------------- e-mail


class EmailChannel(Channel):
    """SMTP through aiosmtplib: plain, STARTTLS or implicit TLS, optional login."""

    name = ChannelName.EMAIL

    def __init__(self, settings: Settings, store: AttachmentStore | None = None):
        self.s = settings
        self.store = store or AttachmentStore(settings.attachment_dir)
        self.from_name, self.from_address = parseaddr(settings.mail_from)
        self.domain = self.from_address.rsplit("@", 1)[-1] or "qms.local"
        self.server = f"{settings.smtp_host}:{settings.smtp_port}"

    def files(self, n: Notification) -> dict[str, bytes]:
        """The bytes of the mail's attachments by sha256, checked against it. Blocking.

        A missing or damaged file fails the attempt (retried, then parked): the customer
        never gets the reply without the report it announces."""
        out: dict[str, bytes] = {}
        for meta in n.attachments:
            try:
                out[meta.sha256] = self.store.read(meta.sha256)
            except FileNotFoundError:
                raise DeliveryFailed(self._unusable(n, meta, "is missing from")) from None
            except DamagedFile:
                raise DeliveryFailed(self._unusable(
                    n, meta, "is damaged (its content no longer matches its sha256) in")
                ) from None
        return out

    def _unusable(self, n: Notification, meta: AttachmentMeta, state: str) -> str:
        return (f"attachment {meta.filename} (sha256 {meta.sha256}) {state} the attachment "
                f"store {self.store.root}: the mail is not sent without it; put the file back "
                f"and it goes with the next attempt (POST /notifications/{n.id}/retry once "
                "parked)")

    def message(self, n: Notification, files: Mapping[str, bytes] | None = None) -> EmailMessage:
        """The mail; `files` holds the attachments' bytes by sha256 (from `files(n)`)."""
        msg = EmailMessage()
        msg["From"] = formataddr((self.from_name, self.from_address))
        msg["To"] = formataddr((n.recipient_name or "", n.recipient))
        msg["Subject"] = n.subject or ""
        msg["Date"] = format_datetime(utcnow())
        # Stable per notification: a resend after a crash is recognisable as the same mail.
        digest = hashlib.sha256(n.id.encode()).hexdigest()[:32]
        msg["Message-ID"] = f"<{digest}@{self.domain}>"
        msg["X-QMS-Event-Id"] = n.event_id
        msg["X-QMS-Event-Type"] = n.event_type
        msg["X-QMS-Notification-Id"] = n.id
        if n.register_no:
            msg["X-QMS-Register-No"] = n.register_no
        if n.purpose in TO_CUSTOMER:
            msg["Reply-To"] = self.s.complaints_mailbox  # answers come back to the register
        else:
            msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to us
        msg.set_content(n.body, charset="utf-8")
        for meta in n.attachments:
            maintype, _, subtype = meta.content_type.partition("/")
            msg.add_attachment((files or {})[meta.sha256], maintype=maintype,
                               subtype=subtype or "octet-stream", filename=meta.filename)
        if n.language:  # after the parts: making a mail multipart moves Content-* headers
            msg["Content-Language"] = n.language.value
        return msg

    async def send(self, n: Notification) -> Delivered:
        s = self.s
        files = await asyncio.to_thread(self.files, n) if n.attachments else {}
        try:
            errors, answer = await aiosmtplib.send(
                self.message(n, files), sender=self.from_address, recipients=[n.recipient],
                hostname=s.smtp_host, port=s.smtp_port, username=s.smtp_username,
                password=s.smtp_password.get_secret_value() if s.smtp_password else None,
                use_tls=s.smtp_security == SmtpSecurity.TLS,
                start_tls=s.smtp_security == SmtpSecurity.STARTTLS,
                validate_certs=s.smtp_validate_certs,
                cert_bundle=str(s.smtp_ca_file) if s.smtp_ca_file else None,
                timeout=s.smtp_timeout_s)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            raise DeliveryFailed(f"recipient refused: {exc}", status_code=codes[0] if codes
                                 else None, permanent=all(c >= 500 for c in codes)) from exc
        except aiosmtplib.SMTPAuthenticationError as exc:
            # Retried like any failure (ops may fix the password); the password is never said.
            raise DeliveryFailed(f"SMTP login as {s.smtp_username!r} refused by {self.server}: "
                                 f"{exc.code} {exc.message} (check QMS_NOTIFY_SMTP_USERNAME "
                                 f"and QMS_NOTIFY_SMTP_PASSWORD)", status_code=exc.code) from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise DeliveryFailed(f"SMTP {exc.code}: {exc.message}", status_code=exc.code) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            untrusted = _certificate_error(exc)
            if untrusted is not None:
                raise DeliveryFailed(
                    f"TLS certificate of SMTP server {self.server} not trusted: "
                    f"{untrusted.verify_message or untrusted} (if the server's certificate is "
                    f"signed by the company's own CA, give that CA in QMS_NOTIFY_SMTP_CA_FILE)"
                ) from exc
            if isinstance(exc, (ConnectionError, TimeoutError)) \
                    or not isinstance(exc, aiosmtplib.SMTPException):
                raise DeliveryFailed(f"SMTP server {self.server} unreachable: "
                                     f"{type(exc).__name__}: {exc}") from exc
            # Connected, but the session could not go on (no STARTTLS, no AUTH offered…).
            raise DeliveryFailed(f"SMTP server {self.server} ({s.smtp_security.value}): "
                                 f"{type(exc).__name__}: {exc}") from exc
        if errors:
            refused = "; ".join(f"{k}: {v.code} {v.message}" for k, v in errors.items())
            raise DeliveryFailed(f"recipient refused: {refused}", permanent=True)
        return Delivered(detail=answer[:300])


def _certificate_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The refused server certificate behind an SMTP failure (aiosmtplib wraps it), if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


# ---------------------------------------------------------------- webhooks


SubscriptionLookup = Callable[[str], Awaitable[Subscription | None]]


class WebhookChannel(Channel):
    """POSTs the event envelope, signed: HMAC-SHA256 over `<timestamp>.<body>`."""

    name = ChannelName.WEBHOOK

    def __init__(self, lookup: SubscriptionLookup, timeout_s: float):
        self.lookup = lookup
        self.client = httpx.AsyncClient(timeout=timeout_s, follow_redirects=False,
                                        headers={"User-Agent": "qms-notify/1.0"})

    async def send(self, n: Notification) -> Delivered:
        sub = await self.lookup(n.recipient)
        if sub is None:
            raise DeliveryFailed(f"subscription {n.recipient} does not exist", permanent=True)
        if not sub.active:
            raise DeliveryFailed(f"subscription {sub.name!r} is inactive", permanent=True)
        body = n.body.encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-QMS-Timestamp": timestamp,
            "X-QMS-Signature": webhook_signature(sub.secret, timestamp, body),
            "X-QMS-Event-Id": n.event_id,
            "X-QMS-Event-Type": n.event_type,
            "X-QMS-Delivery-Id": n.id,
        }
        try:
            response = await self.client.post(sub.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc or 'no answer'}") from exc
        if 200 <= response.status_code < 300:
            return Delivered(detail=f"HTTP {response.status_code}",
                             status_code=response.status_code)
        raise DeliveryFailed(f"HTTP {response.status_code}: {response.text[:200]}",
                             status_code=response.status_code)

    async def close(self) -> None:
        await self.client.aclose()
