"""Settings of the quality service (environment prefix `QMS_QUALITY_`)."""

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="QMS_QUALITY_", extra="ignore")

    http_port: int = 8002
