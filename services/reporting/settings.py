"""Settings of the reporting service (environment prefix `QMS_REPORTING_`)."""

from pathlib import Path
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
    defect_labels: dict[str, tuple[str, str]] = Field(
        default_factory=dict, description="Defect code -> [Chinese, English] name, shown with "
        "the code in reports and charts, over the default catalogue's names: set it as quality's "
        "QMS_QUALITY_DEFECT_CATALOGUE(_ZH).")
    timeliness_target: float = Field(
        0.95, gt=0, le=1, description="Share of the forms due whose quality record came "
                                      "within 3 days, drawn as the timeliness chart's target.")

    # -- documents (the Complaint Handling Report) ---------------------------------------
    company_name: str = Field("QMS Manufacturing Co., Ltd.", min_length=1, max_length=200,
                              description="The company named in every document's letterhead.")
    company_logo: Path | None = Field(None, description="A PNG or JPEG drawn beside the name "
                                      "in the letterhead (none: the name alone).")
    cjk_font: Path = Field(Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),
                           description="TrueType font (or collection) that sets the documents, "
                                       "Chinese and Latin: Debian's fonts-wqy-microhei.")
    cjk_font_index: int = Field(0, ge=0, le=15, description="The face within a collection.")
    attachment_dir: Path = Field(
        Path("var/attachments"), description="Where issued PDFs are kept by sha256, as "
        "`<dir>/<sha[:2]>/<sha>`: the attachment store intake and notify use.")
    max_verify_bytes: int = Field(20 * 1024 * 1024, ge=1024, description="Largest PDF "
                                  "`POST /documents/verify` accepts (413 above it).")

    # -- records retention (P-5.4.2) ------------------------------------------------------
    retention_years: dict[str, int] = Field(
        default_factory=lambda: {"complaint": 10, "complaint_report": 10, "monthly_report": 10},
        description="Years each record type is kept after it ends (a complaint: its closure "
        "or withdrawal; its report: that or its last issue, the later; a monthly report: its "
        "month), 1..100. JSON, e.g. {\"complaint\": 10, \"complaint_report\": 15}; a type "
        "left out keeps 10.")
    retention_clock_offset_days: int = Field(
        0, ge=0, le=36_600, description="Days the retention clock runs ahead of the real one. "
        "For rehearsing a disposal on a test system only: every disposal records it.")

    @field_validator("retention_years")
    @classmethod
    def _known_retention(cls, value: dict[str, int]) -> dict[str, int]:
        known = ("complaint", "complaint_report", "monthly_report")
        for kind, years in value.items():
            if kind not in known:
                raise ValueError(f"unknown record type {kind!r} (one of {', '.join(known)})")
            if not 1 <= years <= 100:
                raise ValueError(f"{kind}: {years} years is outside 1..100")
        return {kind: value.get(kind, 10) for kind in known}

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value
