"""Settings of the intake service (environment prefix `QMS_INTAKE_`)."""

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="QMS_INTAKE_", extra="ignore")

    http_port: int = 8001
    attachment_dir: Path = Field(
        Path("var/attachments"),
        description="Attachment store: files kept by sha256 as `<dir>/<sha[:2]>/<sha>`.")
    max_attachment_bytes: int = Field(
        25 * 1024 * 1024, ge=1, description="Largest evidence file accepted (413 above it).")
    clock_skew_s: int = Field(
        120, ge=0, description="How far in the future `received_at` may lie (clock skew).")
