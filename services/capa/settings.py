"""Settings of the capa service (environment prefix `QMS_CAPA_`)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings
from shared.units import UnitHead, default_heads


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="QMS_CAPA_", extra="ignore")

    http_port: int = 8003
    link_recurrence_to_open_capa: bool = Field(
        True, description="A recurrence of a kind whose CAPA is not closed yet links its "
                          "complaints to that CAPA instead of opening a second one.")
    metrics_interval_s: float = Field(60.0, gt=0, description="How often the open-CAPA and "
                                      "overdue-action gauges are recomputed")
    unit_heads: dict[str, list[UnitHead]] = Field(
        default_factory=default_heads, description="Each unit's head: the default owner of a "
        "CAPA a recurrence opens for complaints that unit was responsible for, and the owner "
        "when Quality names the unit (JSON, as quality's `unit_heads`)")
