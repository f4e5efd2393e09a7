"""Settings of the reporting service (environment prefix `QMS_REPORTING_`)."""

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="QMS_REPORTING_", extra="ignore")

    http_port: int = 8004
    timezone: str = Field(
        "UTC",
        description="IANA time zone in which months and days are counted (e.g. Asia/Shanghai). "
                    "The read models are built with it: run a rebuild after changing it.")
    export_max_rows: int = Field(200_000, ge=1,
                                 description="Most register rows one CSV/XLSX export may hold.")
    max_range_months: int = Field(60, ge=1, description="Longest period of one statistics query.")
    gauges_refresh_interval_s: float = Field(
        60, gt=0, description="How often the open-case and open-form gauges are recomputed from "
                              "the database (a standby replica applies no events).")
    timeliness_target: float = Field(
        0.95, gt=0, le=1, description="Share of the forms due whose quality record came "
                                      "within 3 days, drawn as the timeliness chart's target.")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value
