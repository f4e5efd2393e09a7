"""Settings of the notify service (environment prefix `QMS_NOTIFY_`)."""

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="QMS_NOTIFY_", extra="ignore")

    http_port: int = 8005
