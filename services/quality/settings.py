"""Settings of the quality service (environment prefix `QMS_QUALITY_`).

Durations accept ISO 8601 (`P3D`, `PT8S`) or seconds; lists and dicts are JSON,
e.g. `QMS_QUALITY_HOLIDAYS='["2026-10-01","2026-10-02"]'`.
"""

from datetime import date, timedelta
from typing import Self

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings
from shared.vocabulary import Head

DEFAULT_CATALOGUE: dict[str, str] = {
    "D01": "Dimensional",
    "D02": "Surface / cosmetic",
    "D03": "Functional failure",
    "D04": "Material",
    "D05": "Packaging / labelling",
    "D06": "Contamination / foreign matter",
    "D07": "Assembly",
    "D08": "Documents / certificates",
    "D09": "Wrong part / quantity",
    "D99": "Other",
}

DEFAULT_UNITS: list[str] = ["production", "engineering", "rd", "purchasing", "logistics",
                            "supplier", "warehouse", "quality"]


class UnitHead(BaseModel):
    """A person to summon for a major complaint (P-5.3.5)."""

    name: str = Field(..., min_length=1, max_length=200)
    email: str | None = None


DEFAULT_HEADS: dict[str, list[UnitHead]] = {
    "production": [UnitHead(name="Production head", email="production.head@plant.example")],
    "engineering": [UnitHead(name="Engineering head", email="engineering.head@plant.example")],
    "rd": [UnitHead(name="R&D head", email="rd.head@plant.example")],
    "purchasing": [UnitHead(name="Purchasing head", email="purchasing.head@plant.example")],
    "logistics": [UnitHead(name="Logistics head", email="logistics.head@plant.example")],
    "warehouse": [UnitHead(name="Warehouse head", email="warehouse.head@plant.example")],
    "quality": [UnitHead(name="Quality manager", email="quality.manager@plant.example")],
}


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
    defect_catalogue: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_CATALOGUE))
    units: list[str] = Field(default_factory=lambda: list(DEFAULT_UNITS))
    unit_heads: dict[str, list[UnitHead]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_HEADS.items()})
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

    def heads_to_summon(self) -> list[Head]:
        """P-5.3.5: the heads of the units a major complaint summons, in configured order."""
        return [Head(unit=unit, name=h.name, email=h.email)
                for unit in self.major_summon_units for h in self.unit_heads.get(unit, [])]
