"""Notify's mail to a company relay over TLS: STARTTLS (587) and implicit TLS (465) with a
login, against real aiosmtpd servers on loopback whose certificate is signed by a throwaway CA
made here. Each attempt goes through the real dispatcher and is recorded in FerretDB, as in
the running service; only the SMTP servers are the test's own.
"""

import base64
import ipaddress
import logging
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from services.notify.channels import EmailChannel
from services.notify.dispatcher import Dispatcher
from services.notify.domain import ChannelName, Notification, NotificationStatus, RetryPolicy
from services.notify.metrics import NotifyMetrics
from services.notify.settings import Settings
from shared.contracts import SlaBreached
from shared.events import Actor, make_event, utcnow
from shared.store import Repository, mongo_client
from tests.conftest import test_namespace

USER = "qms@plant.example"
PASSWORD = "Relay-Pa55word-never-logged"
WRONG_PASSWORD = "Wrong-Pa55word-never-logged"

# The test relays without STARTTLS (implicit TLS, or none offered on purpose) still ask for a
# login; aiosmtpd warns about that setup, which is what these tests mean to have.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Requiring AUTH while not requiring TLS:UserWarning")


# ---------------------------------------------------------------- certificates


@dataclass(frozen=True)
class Pki:
    ca_file: Path          # what ops put in QMS_NOTIFY_SMTP_CA_FILE
    server: ssl.SSLContext  # the relay's certificate for 127.0.0.1 and localhost
    other_name: ssl.SSLContext  # same CA, but a certificate for smtp.elsewhere.example only


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _server_context(tmp: Path, stem: str, ca_key: ec.EllipticCurvePrivateKey,
                    ca_cert: x509.Certificate, names: list[x509.GeneralName]) -> ssl.SSLContext:
    now = datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name(stem)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (tmp / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / f"{stem}.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp / f"{stem}.pem", tmp / f"{stem}.key")
    return context


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    tmp = tmp_path_factory.mktemp("smtp-pki")
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (x509.CertificateBuilder().subject_name(_name("Plant test CA"))
               .issuer_name(_name("Plant test CA")).public_key(ca_key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(hours=1))
               .not_valid_after(now + timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                            crl_sign=True, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False,
                                            key_agreement=False, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                              critical=False)
               .sign(ca_key, hashes.SHA256()))
    ca_file = tmp / "plant-ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    relay = _server_context(tmp, "relay", ca_key, ca_cert, [
        x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    other = _server_context(tmp, "other", ca_key, ca_cert, [
        x509.DNSName("smtp.elsewhere.example")])
    return Pki(ca_file=ca_file, server=relay, other_name=other)


# ---------------------------------------------------------------- the relay


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Relay:
    """A company relay: login required (LOGIN/PLAIN), records what it saw of each session."""

    port: int
    mails: list[EmailMessage] = field(default_factory=list)
    tls_on_data: list[bool] = field(default_factory=list)  # was the session encrypted?
    users_on_data: list[str] = field(default_factory=list)  # who had logged in
    logins: list[tuple[str, str, bool]] = field(default_factory=list)  # mechanism, user, ok
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 - aiosmtpd hook
        with self._lock:
            self.mails.append(BytesParser(policy=policy.default).parsebytes(envelope.content))
            # The connection's own view (aiosmtpd's session.ssl misses implicit TLS).
            self.tls_on_data.append(server.transport.get_extra_info("ssl_object") is not None)
            self.users_on_data.append(session.auth_data.login.decode()
                                      if isinstance(session.auth_data, LoginPassword) else "")
        return "250 OK queued"

    def authenticate(self, server, session, envelope, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and data.login == USER.encode() \
            and data.password == PASSWORD.encode()
        with self._lock:
            self.logins.append((mechanism, data.login.decode() if isinstance(
                data, LoginPassword) else "?", ok))
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)


def _start(relay: Relay, controller: Controller) -> Controller:
    controller.start()
    return controller


@pytest.fixture
def relays() -> Iterator[Any]:
    """Starts relays on demand; `starttls=True` for port-587 style, else implicit TLS (465)."""
    controllers: list[Controller] = []

    def start(context: ssl.SSLContext, *, starttls: bool, offer_starttls: bool = True,
              mechanisms: tuple[str, ...] = ("LOGIN", "PLAIN")) -> Relay:
        relay = Relay(port=_free_port())
        excluded = [m for m in ("LOGIN", "PLAIN") if m not in mechanisms]
        common: dict[str, Any] = dict(hostname="127.0.0.1", port=relay.port,
                                      authenticator=relay.authenticate, auth_required=True,
                                      auth_exclude_mechanism=excluded)
        if starttls:
            controller = Controller(relay, tls_context=context if offer_starttls else None,
                                    require_starttls=offer_starttls,
                                    auth_require_tls=offer_starttls, **common)
        else:
            # aiosmtpd does not count implicit TLS as TLS for offering AUTH, so it is told to
            # offer it anyway: the whole connection is TLS from the first byte.
            controller = Controller(relay, ssl_context=context, auth_require_tls=False,
                                    **common)
        controllers.append(_start(relay, controller))
        return relay

    yield start
    for controller in controllers:
        controller.stop()


# ---------------------------------------------------------------- notify's side


@pytest.fixture(scope="module")
async def notifications(mongo_url: str) -> AsyncIterator[Repository[Notification]]:
    client = mongo_client(mongo_url)  # as the service makes it
    database = test_namespace("_notify_smtp_tls")
    try:
        yield Repository(client[database]["notifications"], Notification)
    finally:
        await client.drop_database(database)
        await client.close()


def settings(port: int, security: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = dict(smtp_host="127.0.0.1", smtp_port=port, smtp_security=security,
                                  smtp_username=USER, smtp_password=PASSWORD, smtp_timeout_s=5,
                                  mail_from="QMS <qms@plant.example>")
    return Settings(**(values | overrides))


async def deliver(repo: Repository[Notification], s: Settings) -> Notification:
    """One alert mail, attempted once by the dispatcher as the service would; its record."""
    event = make_event(SlaBreached(feedback_id="f-tls", register_no="CF-2026-000042", round=1,
                                   due_at=utcnow(), severity="major"),
                       producer="quality", correlation_id="f-tls", actor=Actor.system("quality"))
    n = Notification.create(channel=ChannelName.EMAIL, recipient="quality@plant.example",
                            event=event, purpose="sla_breached", subject="SLA breached",
                            body="CF-2026-000042 is overdue", now=utcnow(),
                            recipient_name="Quality")
    await repo.add(n)
    dispatcher = Dispatcher(repo, {ChannelName.EMAIL: EmailChannel(s)},
                            {ChannelName.EMAIL: RetryPolicy(3, 30.0, 60.0)},
                            NotifyMetrics(CollectorRegistry()), interval_s=1.0, batch=10,
                            concurrency=1, lease_s=60.0)
    await dispatcher.attempt(n.id)
    recorded = await repo.get(n.id)
    assert recorded is not None
    return recorded


async def raw_record(repo: Repository[Notification], notification_id: str) -> str:
    """The stored document as it is, outbox included."""
    return repr(await repo.collection.find_one({"_id": notification_id}))


def secrets_of(password: str) -> list[str]:
    """The password, and how it travels in AUTH PLAIN and AUTH LOGIN."""
    return [password, base64.b64encode(password.encode()).decode(),
            base64.b64encode(f"\0{USER}\0{password}".encode()).decode()]


def notify_logs(caplog: pytest.LogCaptureFixture) -> str:
    """Everything logged in the test process but by the test's own SMTP server (aiosmtpd)."""
    return "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records
                     if not r.name.startswith("mail.log"))


# ---------------------------------------------------------------- STARTTLS (587)


@pytest.mark.parametrize("mechanism", ["LOGIN", "PLAIN"])
async def test_alert_mail_reaches_the_company_relay_over_starttls_after_login(
        notifications, relays, pki, mechanism):
    relay = relays(pki.server, starttls=True, mechanisms=(mechanism,))
    n = await deliver(notifications, settings(relay.port, "starttls", smtp_ca_file=pki.ca_file))

    assert n.status == NotificationStatus.SENT and n.last_error is None
    [mail] = relay.mails
    assert mail["To"] == "Quality <quality@plant.example>"
    assert mail["X-QMS-Notification-Id"].strip() == n.id
    assert "CF-2026-000042 is overdue" in mail.get_content()
    assert relay.tls_on_data == [True]  # upgraded before anything was said
    assert relay.users_on_data == [USER]
    assert relay.logins == [(mechanism, USER, True)]


async def test_a_wrong_smtp_password_is_a_failed_attempt_retried_later_never_showing_it(
        notifications, relays, pki, caplog):
    caplog.set_level(logging.DEBUG)
    relay = relays(pki.server, starttls=True)
    n = await deliver(notifications, settings(relay.port, "starttls", smtp_ca_file=pki.ca_file,
                                              smtp_password=WRONG_PASSWORD))

    assert relay.mails == [] and relay.logins  # it tried (each mechanism offered), in vain
    assert not any(ok for *_, ok in relay.logins)
    assert n.status == NotificationStatus.PENDING  # retried with backoff, not parked
    assert n.attempts == 1 and n.next_attempt_at is not None
    assert n.next_attempt_at > utcnow() + timedelta(seconds=20)
    assert n.last_error is not None
    assert "login" in n.last_error and USER in n.last_error and "535" in n.last_error
    assert "QMS_NOTIFY_SMTP_PASSWORD" in n.last_error
    [attempt] = n.attempt_log
    assert not attempt.ok and attempt.status_code == 535 and attempt.detail == n.last_error
    assert "failed, will retry" in notify_logs(caplog)  # the dispatcher said so, calmly
    stored, logs = await raw_record(notifications, n.id), notify_logs(caplog)
    for secret in secrets_of(WRONG_PASSWORD) + secrets_of(PASSWORD):
        assert secret not in stored
        assert secret not in logs


async def test_a_relay_that_does_not_offer_starttls_never_gets_the_password_in_clear(
        notifications, relays, pki, caplog):
    relay = relays(pki.server, starttls=True, offer_starttls=False)
    n = await deliver(notifications, settings(relay.port, "starttls", smtp_ca_file=pki.ca_file))

    assert relay.mails == [] and relay.logins == []
    assert n.status == NotificationStatus.PENDING and n.last_error is not None
    assert "STARTTLS" in n.last_error and "unreachable" not in n.last_error


# ---------------------------------------------------------------- implicit TLS (465)


async def test_alert_mail_reaches_the_company_relay_over_implicit_tls_after_login(
        notifications, relays, pki):
    relay = relays(pki.server, starttls=False)
    n = await deliver(notifications, settings(relay.port, "tls", smtp_ca_file=pki.ca_file))

    assert n.status == NotificationStatus.SENT and n.last_error is None
    [mail] = relay.mails
    assert mail["X-QMS-Notification-Id"].strip() == n.id
    assert relay.tls_on_data == [True] and relay.users_on_data == [USER]


# ---------------------------------------------------------------- certificate verification


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_a_relay_certificate_from_an_unknown_ca_is_refused_saying_so(
        notifications, relays, pki, security):
    relay = relays(pki.server, starttls=security == "starttls")
    n = await deliver(notifications, settings(relay.port, security))  # no CA file: by default

    assert relay.mails == [] and relay.logins == []  # the password never left notify
    assert n.status == NotificationStatus.PENDING and n.last_error is not None
    assert "certificate" in n.last_error and "not trusted" in n.last_error
    assert "QMS_NOTIFY_SMTP_CA_FILE" in n.last_error
    assert f"127.0.0.1:{relay.port}" in n.last_error


async def test_a_certificate_for_another_name_is_refused_even_from_the_trusted_ca(
        notifications, relays, pki):
    relay = relays(pki.other_name, starttls=True)
    n = await deliver(notifications, settings(relay.port, "starttls", smtp_ca_file=pki.ca_file))

    assert relay.mails == [] and relay.logins == []
    assert n.status == NotificationStatus.PENDING and n.last_error is not None
    assert "not trusted" in n.last_error and "127.0.0.1" in n.last_error


async def test_the_ca_file_is_taken_from_the_environment(notifications, relays, pki,
                                                         monkeypatch):
    relay = relays(pki.server, starttls=True)
    for name, value in {"QMS_NOTIFY_SMTP_HOST": "127.0.0.1",
                        "QMS_NOTIFY_SMTP_PORT": str(relay.port),
                        "QMS_NOTIFY_SMTP_SECURITY": "starttls",
                        "QMS_NOTIFY_SMTP_USERNAME": USER,
                        "QMS_NOTIFY_SMTP_PASSWORD": PASSWORD,
                        "QMS_NOTIFY_SMTP_CA_FILE": str(pki.ca_file)}.items():
        monkeypatch.setenv(name, value)
    s = Settings()
    assert s.smtp_ca_file == pki.ca_file and s.smtp_validate_certs  # verification stays on

    n = await deliver(notifications, s)
    assert n.status == NotificationStatus.SENT and len(relay.mails) == 1


def test_notify_does_not_start_with_a_ca_file_that_is_missing_or_not_pem(tmp_path):
    with pytest.raises(ValidationError, match="smtp_ca_file"):
        settings(587, "starttls", smtp_ca_file=tmp_path / "missing.pem")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ValidationError, match="not a readable PEM file"):
        settings(587, "starttls", smtp_ca_file=garbage)
