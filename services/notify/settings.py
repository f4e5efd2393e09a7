"""Settings of the notify service (environment prefix `QMS_NOTIFY_`).

Lists are JSON in the environment, e.g.
`QMS_NOTIFY_FAX_SENDER_DOMAINS='["fax.plant.example","efax.example"]'`.
"""

import ipaddress
import ssl
from enum import StrEnum
from pathlib import Path
from typing import Self

from pydantic import BaseModel, Field, FilePath, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from services.notify.domain import EmailAddress, Group
from shared.settings import ServiceSettings
from shared.units import DEFAULT_UNITS
from shared.vocabulary import Language

# What intake accepts as evidence (it sniffs the same types), so a stored file is usable there.
ALLOWED_TYPES = [
    "application/pdf", "image/jpeg", "image/png", "image/tiff", "image/gif", "image/webp",
    "image/heic", "text/plain",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
]


class SmtpSecurity(StrEnum):
    NONE = "none"          # plain SMTP (a local relay)
    STARTTLS = "starttls"  # port 587: upgrade with STARTTLS (required)
    TLS = "tls"            # port 465: TLS from the first byte


class SeedEntry(BaseModel):
    """A directory entry written at first start (edit them afterwards through the API)."""

    email: EmailAddress
    name: str = Field(..., min_length=1, max_length=200)
    language: Language = Language.ZH
    groups: list[Group] = Field(..., min_length=1)


def _default_directory() -> list[SeedEntry]:
    entries = [
        SeedEntry(email="quality@plant.example", name="Quality department",
                  groups=["role:quality"]),
        SeedEntry(email="manager@plant.example", name="Plant manager", groups=["role:manager"]),
        SeedEntry(email="sales@plant.example", name="Sales", groups=["role:sales"]),
    ]
    for unit in DEFAULT_UNITS:
        entries.append(SeedEntry(email=f"{unit}@plant.example", name=f"{unit} (unit mailbox)",
                                 groups=[f"unit:{unit}"]))
        entries.append(SeedEntry(email=f"{unit}.head@plant.example", name=f"{unit} head",
                                 groups=[f"head:{unit}"]))
    return entries


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="QMS_NOTIFY_", extra="ignore")

    http_port: int = 8005

    # -- outbound e-mail ---------------------------------------------------
    smtp_host: str = Field("127.0.0.1", description="The SMTP server notify sends through")
    smtp_port: int = Field(25, ge=1, le=65535)
    smtp_security: SmtpSecurity = Field(SmtpSecurity.NONE,
                                        description="none | starttls (587) | tls (465)")
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_ca_file: FilePath | None = Field(
        None, description="PEM file of the CA(s) that signed the SMTP server's certificate (a "
                          "company CA), trusted in addition to the system's CAs")
    smtp_validate_certs: bool = Field(True, description="Check the SMTP server's certificate "
                                                        "and name (keep it on; use smtp_ca_file)")
    smtp_timeout_s: float = Field(30.0, gt=0)
    mail_from: str = Field("QMS <qms@plant.example>", description="From: of every mail")
    company_name: str = Field("Plant", description="Signs the mails")
    default_language: Language = Field(Language.ZH,
                                       description="For a recipient whose language is unknown")
    display_timezone: str = Field("Asia/Shanghai", description="Times in mails are shown here")

    # -- retries (both channels) ---------------------------------------------
    email_max_attempts: int = Field(20, ge=1, description="Then the mail is parked")
    email_backoff_base_s: float = Field(30.0, gt=0, description="First retry after this long")
    email_backoff_max_s: float = Field(3600.0, gt=0, description="Retries never wait longer")
    webhook_max_attempts: int = Field(8, ge=1, description="Then the delivery is parked")
    webhook_backoff_base_s: float = Field(10.0, gt=0)
    webhook_backoff_max_s: float = Field(1800.0, gt=0)
    webhook_timeout_s: float = Field(10.0, gt=0)
    dispatch_interval_s: float = Field(1.0, gt=0, description="How often due retries are looked "
                                                               "for")
    dispatch_batch: int = Field(50, ge=1)
    dispatch_concurrency: int = Field(8, ge=1)
    dispatch_lease_s: float = Field(120.0, gt=0, description="An attempt cut off by a crash is "
                                                              "retried after this long")

    # -- the directory -------------------------------------------------------
    directory_seed: list[SeedEntry] = Field(default_factory=_default_directory)

    # -- inbound e-mail and fax ------------------------------------------------
    inbound_enabled: bool = True
    inbound_host: str = Field("127.0.0.1", description="Where the inbound SMTP endpoint listens")
    inbound_port: int = Field(2525, ge=1, le=65535)
    inbound_hostname: str = Field("qms.plant.example", description="Said in the SMTP greeting")
    inbound_bind_retry_s: float = Field(5.0, gt=0, description="Retry binding a taken port")
    complaints_mailbox: str = Field("complaints@plant.example",
                                    description="The only recipient accepted (550 for others)")
    max_message_bytes: int = Field(10 * 1024 * 1024, ge=1024,
                                   description="SMTP SIZE limit; larger mail gets 552")
    max_attachment_bytes: int = Field(10 * 1024 * 1024, ge=1)
    allowed_attachment_types: list[str] = Field(default_factory=lambda: list(ALLOWED_TYPES))
    fax_sender_domains: list[str] = Field(
        default_factory=lambda: ["fax.plant.example"],
        description="Mail from these domains is a fax forwarded by a fax-to-mail gateway")
    fax_subject_prefixes: list[str] = Field(
        default_factory=lambda: ["Fax from", "FAX:", "传真"],
        description="A subject starting with one of these is a fax")
    attachment_dir: Path = Field(Path("var/attachments"),
                                 description="Shared with intake: `<dir>/<sha[:2]>/<sha>`")

    @field_validator("complaints_mailbox")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.strip().lower()

    @field_validator("fax_sender_domains")
    @classmethod
    def _lower_all(cls, value: list[str]) -> list[str]:
        return [v.strip().lower() for v in value if v.strip()]

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.smtp_ca_file is not None:
            try:
                ssl.create_default_context(cafile=str(self.smtp_ca_file))
            except (ssl.SSLError, OSError) as exc:
                raise ValueError(f"smtp_ca_file {self.smtp_ca_file} is not a readable PEM file "
                                 f"of CA certificates: {exc}") from exc
        if (self.smtp_security == SmtpSecurity.NONE and self.smtp_password is not None
                and not _is_loopback(self.smtp_host)):
            # A login over plain SMTP sends the password readable to the network.
            raise ValueError(f"smtp_password is set but smtp_security is none: the password "
                             f"would cross the network to {self.smtp_host} unencrypted; use "
                             f"starttls (port 587) or tls (465)")
        if self.email_backoff_base_s > self.email_backoff_max_s:
            raise ValueError("email_backoff_base_s must not exceed email_backoff_max_s")
        if self.webhook_backoff_base_s > self.webhook_backoff_max_s:
            raise ValueError("webhook_backoff_base_s must not exceed webhook_backoff_max_s")
        if self.dispatch_lease_s <= max(self.smtp_timeout_s, self.webhook_timeout_s):
            raise ValueError("dispatch_lease_s must be longer than the SMTP and webhook "
                             "timeouts, or a slow attempt could be made twice")
        return self


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
