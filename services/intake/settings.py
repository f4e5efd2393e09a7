"""Settings of the intake service (environment prefix `QMS_INTAKE_`)."""

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="QMS_INTAKE_", extra="ignore")

    http_port: int = 8001
