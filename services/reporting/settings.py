"""Settings of the reporting service (environment prefix `QMS_REPORTING_`)."""

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="QMS_REPORTING_", extra="ignore")

    http_port: int = 8004
