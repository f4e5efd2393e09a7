"""Settings of the web console (environment prefix `QMS_CONSOLE_`)."""

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings

Language = Literal["zh", "en"]


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="QMS_CONSOLE_", extra="ignore")

    http_port: int = 8000
    dev_signin: bool = Field(
        False, description="Offer the development sign-in page (pick a person and a role; it "
        "signs an HS256 development token). `make up` turns it on; never in a deployment, "
        "where an auth proxy forwards the person's access token.")
    session_secret: SecretStr | None = Field(
        None, description="Signs the session cookie; unset: a random one per process (every "
        "restart then signs everyone out). Set it where several replicas serve.")
    session_max_age_s: int = Field(12 * 3600, ge=60, description="A session's longest life.")
    intake_url: str = "http://127.0.0.1:8001"
    quality_url: str = "http://127.0.0.1:8002"
    capa_url: str = "http://127.0.0.1:8003"
    reporting_url: str = "http://127.0.0.1:8004"
    notify_url: str = "http://127.0.0.1:8005"
    plant_timezone: str = Field("Asia/Shanghai", description="Dates and times are shown here.")
    default_language: Language = Field(
        "zh", description="When neither the person's choice nor Accept-Language says.")
    vocabulary_ttl_s: float = Field(
        60.0, ge=0, description="How long the services' word lists (`GET /vocabulary`: "
        "units, defect codes, categories, statuses and their labels) are kept before they "
        "are read again.")
    live: bool = Field(True, description="Consume the domain events for live page updates.")

    def service_urls(self) -> dict[str, str]:
        return {"intake": self.intake_url, "quality": self.quality_url,
                "capa": self.capa_url, "reporting": self.reporting_url,
                "notify": self.notify_url}
