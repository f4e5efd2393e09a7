"""Settings of the quality service (environment prefix `QMS_QUALITY_`).

Durations accept ISO 8601 (`P3D`, `PT8S`) or seconds; lists and dicts are JSON,
e.g. `QMS_QUALITY_HOLIDAYS='["2026-10-01","2026-10-02"]'`.
"""

from datetime import date, timedelta
from typing import Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from shared.defects import DEFAULT_DEFECT_LABELS
from shared.settings import ServiceSettings
from shared.units import DEFAULT_UNITS, UNIT_LABELS, UnitHead, default_heads
from shared.vocabulary import Head

DEFAULT_CATALOGUE: dict[str, str] = {code: en for code, (_, en) in
                                     DEFAULT_DEFECT_LABELS.items()}


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="QMS_QUALITY_", extra="ignore")

    http_port: int = 8002
    deadline: timedelta = Field(timedelta(days=3),
                                description="P-F.5: the quality record is due this long after "
                                            "the form was received")
    at_risk_after: timedelta = Field(timedelta(days=2),
                                     description="The case is flagged at risk after this long")
    sla_check_interval_s: float = Field(30.0, gt=0, description="How often the clock is checked")
    working_days_only: bool = Field(False, description="Count only working days (no weekends "
                                                       "or holidays) towards the deadline")
    holidays: list[date] = Field(default_factory=list, description="Days not counted")
    calendar_timezone: str = Field("UTC", description="Where a working day starts and ends, "
                                                      "e.g. Asia/Shanghai")
    recurrence_count: int = Field(3, ge=2, description="P-5.3.4: the n-th occurrence of the same "
                                                       "kind (it came back after the earlier "
                                                       "ones were handled) opens a CAPA")
    unimproved_after: timedelta = Field(timedelta(days=30),
                                        description="P-5.3.4: a case not resolved this long after "
                                                    "it was received opens a CAPA")
    defect_catalogue: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_CATALOGUE),
                                             description="Defect code -> its name (English)")
    defect_catalogue_zh: dict[str, str] = Field(
        default_factory=dict, description="Defect code -> its name in Chinese (the word list "
        "`defect_codes`); the defaults' Chinese names serve codes whose English name is the "
        "default's, any other code without one shows its English name")
    units: list[str] = Field(default_factory=lambda: list(DEFAULT_UNITS))
    unit_labels: dict[str, tuple[str, str]] = Field(
        default_factory=dict, description="Unit -> [Chinese, English] label, beyond the default "
        "units' own (the word list `units`), e.g. {\"tooling\": [\"模具部\", \"Tooling\"]}")
    unit_heads: dict[str, list[UnitHead]] = Field(default_factory=default_heads)
    major_summon_units: list[str] = Field(default_factory=lambda: ["rd", "engineering",
                                                                   "production"])

    @field_validator("deadline", "at_risk_after", "unimproved_after")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be a positive duration")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.at_risk_after >= self.deadline:
            raise ValueError("at_risk_after must be shorter than the deadline")
        if not self.defect_catalogue:
            raise ValueError("defect_catalogue must name at least one defect code")
        unknown = [u for u in self.major_summon_units if u not in self.units]
        if unknown:
            raise ValueError(f"major_summon_units {unknown} are not in units {self.units}")
        return self

    def defect_labels(self) -> dict[str, tuple[str, str]]:
        """Each code of the catalogue -> (zh-Hans, en), in the catalogue's order."""
        defaults = {code: zh for code, (zh, en) in DEFAULT_DEFECT_LABELS.items()
                    if self.defect_catalogue.get(code) == en}
        zh = defaults | self.defect_catalogue_zh
        return {code: (zh.get(code, en), en) for code, en in self.defect_catalogue.items()}

    def unit_word_labels(self) -> dict[str, tuple[str, str]]:
        """Each configured unit -> (zh-Hans, en); a unit without labels is its own label."""
        labels = UNIT_LABELS | self.unit_labels
        return {unit: labels.get(unit, (unit, unit)) for unit in self.units}

    def heads_to_summon(self) -> list[Head]:
        """P-5.3.5: the heads of the units a major complaint summons, in configured order."""
        return [Head(unit=unit, name=h.name, email=h.email)
                for unit in self.major_summon_units for h in self.unit_heads.get(unit, [])]
