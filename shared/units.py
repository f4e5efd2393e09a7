"""The plant's responsible units (P-3.2) and their heads: the defaults every service's
settings start from (quality's units and heads, capa's heads, notify's directory seed).

Each service keeps its own settings (no service asks another at run time); these are only
where they start, so that one list is written once.
"""

from pydantic import BaseModel, Field

from shared.vocabulary import Head

# code -> (zh-Hans, en): the units and their labels, in the order a form lists them.
UNIT_LABELS: dict[str, tuple[str, str]] = {
    "production": ("生产部", "Production"),
    "engineering": ("工程部", "Engineering"),
    "rd": ("研发部", "R&D"),
    "purchasing": ("采购部", "Purchasing"),
    "logistics": ("物流部", "Logistics"),
    "supplier": ("供应商", "Supplier"),
    "warehouse": ("仓库", "Warehouse"),
    "quality": ("质量部", "Quality"),
}
DEFAULT_UNITS: list[str] = list(UNIT_LABELS)


class UnitHead(BaseModel):
    """The head of a unit: summoned for a major complaint (P-5.3.5), and the default owner
    of a CAPA whose complaints the unit was responsible for (P-5.3.4)."""

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


def default_heads() -> dict[str, list[UnitHead]]:
    """A fresh copy of the default heads (a settings default)."""
    return {unit: list(heads) for unit, heads in DEFAULT_HEADS.items()}


def head_of(heads: dict[str, list[UnitHead]], unit: str) -> Head | None:
    """The unit's (first) head, or None when none is configured."""
    found = heads.get(unit) or []
    return Head(unit=unit, name=found[0].name, email=found[0].email) if found else None
