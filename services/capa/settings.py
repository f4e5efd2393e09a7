"""Settings of the capa service (environment prefix `QMS_CAPA_`)."""

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="QMS_CAPA_", extra="ignore")

    http_port: int = 8003
