"""Typed settings: infrastructure under `QMS_`, each service's own under `QMS_<SERVICE>_`."""

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The HS256 secret of development tokens (`make token`), known to everyone who has read this
# file: set QMS_JWT_SECRET (or QMS_JWKS_URL) anywhere real.
DEV_JWT_SECRET = "qms-development-secret-change-me-0123456789"


class InfraSettings(BaseSettings):
    """What every service shares: where the broker and database are, and the auth secret."""

    model_config = SettingsConfigDict(env_prefix="QMS_", extra="ignore")

    amqp_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    mongo_url: SecretStr = SecretStr("mongodb://127.0.0.1:27017/")
    namespace: str = Field(
        "qms",
        pattern=r"^[a-z][a-z0-9_]{0,30}$",
        description="Prefix of the exchange, queues and databases; tests use a unique one.",
    )
    jwt_secret: SecretStr = SecretStr(DEV_JWT_SECRET)
    jwks_url: str | None = Field(None, description="Production: verify RS256 tokens here.")
    jwt_audience: str | None = Field(
        None, description="The `aud` the identity provider writes into tokens for this system; "
                          "when set, tokens for other audiences are refused. Production: set it "
                          "(a token carrying an `aud` is refused while this is unset).")
    jwt_issuer: str | None = Field(None, description="Production: the identity provider's `iss`.")
    token_max_lifetime_s: int = Field(
        24 * 3600, ge=60, description="The longest a token may live (its `exp` minus its "
        "`iat`; without `iat`, `exp` minus now): a longer-lived token is refused with 401, "
        "development and production tokens alike.")
    max_attempts: int = Field(5, ge=1, description="Deliveries of an event before the DLQ.")
    retry_delay_ms: int = Field(2000, ge=10, description="Wait before a failed event is retried.")
    consumer_prefetch: int = Field(
        8, ge=1, le=1000, description="Events a service handles at once (the broker's prefetch "
        "per consumer). Handlers mostly wait on the database, so more in flight means more "
        "throughput, until the database is the limit.")
    relay_interval_s: float = Field(1.0, gt=0, description="How soon events the broker "
                                    "refused are offered again.")
    stall_after_s: float = Field(
        120.0, gt=0, description="An event handled this long is logged at ERROR with where its "
        "handler waits, and counted (`shared.stallwatch`): its queue waits meanwhile.")
    relay_sweep_interval_s: float = Field(
        60.0, gt=0, description="How often the relay sweeps for events a crash (or a dead "
        "instance) left unpublished; also done at every start. The sweep reads the marks of "
        "unpublished events (`outbox_due`), not the history: saves hand their documents to "
        "the relay directly.")
    history_days: int = Field(
        31, ge=1, le=3660, description="The period a list of history covers when it is asked "
        "for none (e.g. `GET /cases` without `from`/`to`): the last this many days. A list "
        "reads its period's records, so a longer period is slower, never the whole history.")
    history_max_days: int = Field(
        400, ge=1, le=36600, description="The longest period one list of history may be asked "
        "for (a longer one is refused with 422): each asks for its period's records.")
    max_body_bytes: int = Field(1_000_000, ge=1024)
    log_level: str = "INFO"

    @field_validator("jwks_url", "jwt_audience", "jwt_issuer", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: str | None) -> str | None:
        # Compose and Kubernetes pass unset options as empty strings.
        return value or None


class ServiceSettings(BaseSettings):
    """Base of a service's settings; subclasses set `env_prefix` to `QMS_<SERVICE>_`."""

    model_config = SettingsConfigDict(extra="ignore")

    http_host: str = "127.0.0.1"
    http_port: int = 8000
    amqp_url: SecretStr | None = Field(None, description="This service's own broker user "
                                       "(least privilege); default: QMS_AMQP_URL")
    mongo_url: SecretStr | None = Field(None, description="This service's own database user; "
                                        "default: QMS_MONGO_URL")
    infra: InfraSettings = Field(default_factory=InfraSettings)

    @property
    def broker_url(self) -> str:
        return (self.amqp_url or self.infra.amqp_url).get_secret_value()

    @property
    def database_url(self) -> str:
        return (self.mongo_url or self.infra.mongo_url).get_secret_value()
