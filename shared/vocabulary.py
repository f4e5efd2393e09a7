"""The procedure's shared vocabulary: value types used by contracts and services alike.

Text fields are validated so a customer's text cannot break storage (no NUL,
bounded length) and money is a decimal string in a currency (no float drift).
"""

import re
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, TypeAlias

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


# Every free text: bounded, and no NUL. Spelled out per alias rather than built by a
# function, because a type checker cannot see through a call in an annotation.
NoNul = AfterValidator(_no_nul)
ShortText: TypeAlias = Annotated[str, Field(min_length=0, max_length=200), NoNul]
Name: TypeAlias = Annotated[str, Field(min_length=1, max_length=200), NoNul]
LongText: TypeAlias = Annotated[str, Field(min_length=0, max_length=20_000), NoNul]
Code = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-/]*$")]
UnitName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_\-]*$",
                                description="A responsible unit, e.g. `production`")]
Amount = Annotated[Decimal, Field(ge=0, max_digits=14, decimal_places=2),
                   PlainSerializer(lambda d: str(d), return_type=str, when_used="json")]
# A count of pieces (affected, returned, disposed of): bounded, so no number overflows what
# the database stores (BSON's 64-bit integers); no complaint concerns a billion pieces.
QUANTITY_MAX = 1_000_000_000
Quantity = Annotated[int, Field(ge=0, le=QUANTITY_MAX)]

# Dates and times people send: ISO 8601 text only (pydantic would read a number, `0` or
# `0.5`, as a Unix timestamp) with a year from 2000 to 2099 (years 1 and 9999 overflow the
# periods' arithmetic; this plant has no complaint from before 2000). ASCII digits only.
YEARS = "with a year from 2000 to 2099"
ISO_DATE = r"^20[0-9]{2}-[0-9]{2}-[0-9]{2}$"
ISO_DATETIME = (r"^20[0-9]{2}-[0-9]{2}-[0-9]{2}"
                r"([Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?([Zz]|[+-][0-9]{2}:?[0-9]{2})?)?$")
ISO_MONTH = r"^20[0-9]{2}-(0[1-9]|1[0-2])$"
# A date kept in records and events (read back on every load): ISO text, any year, so what
# was stored before the bounds above still reads.
ISO_DATE_ANY_YEAR = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"


def _iso_text(pattern: str, expected: str) -> BeforeValidator:
    compiled = re.compile(pattern)

    def check(value: object) -> object:
        if isinstance(value, date):  # set by code, not sent: already a date
            return value
        if not isinstance(value, str) or not compiled.fullmatch(value):
            raise PydanticCustomError("iso_8601", f"Input should be {expected}")
        return value
    return BeforeValidator(check)


_DATETIME_CHECK = _iso_text(ISO_DATETIME, f"a date and time in ISO 8601 {YEARS}, "
                                          "e.g. 2026-11-20T09:30:00+08:00")
IsoDate = Annotated[date, _iso_text(ISO_DATE, f"a date in ISO 8601 {YEARS}, e.g. 2026-11-20"),
                    WithJsonSchema({"type": "string", "format": "date", "pattern": ISO_DATE})]
KeptIsoDate = Annotated[date, _iso_text(ISO_DATE_ANY_YEAR, "a date in ISO 8601, e.g. "
                                                             "2026-11-20"),
                        WithJsonSchema({"type": "string", "format": "date",
                                        "pattern": ISO_DATE_ANY_YEAR})]
# A month of the statistics, e.g. `2026-11` (the pattern first, so the schema shows it).
IsoMonth = Annotated[str, StringConstraints(pattern=ISO_MONTH),
                     _iso_text(ISO_MONTH, "a month YYYY-MM from 2000-01 to 2099-12, e.g. 2026-11")]
IsoDateTime = Annotated[datetime, _DATETIME_CHECK, WithJsonSchema(
    {"type": "string", "format": "date-time", "pattern": ISO_DATETIME})]
AwareIsoDateTime = Annotated[AwareDatetime, _DATETIME_CHECK, WithJsonSchema(
    {"type": "string", "format": "date-time", "pattern": ISO_DATETIME})]


EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"  # one rule for every address we keep
# A register number as people say it (`CF-2026-000123`; a seventh digit after 999,999).
REGISTER_NO_PATTERN = r"CF-\d{4}-\d{6,}"


class Category(StrEnum):
    """P-5.2: how a feedback is classified."""

    PRODUCT_QUALITY = "product_quality"  # P-5.2.1
    DELIVERY = "delivery"                # P-5.2.2
    SERVICE = "service_documents"        # P-5.2.3
    OTHER = "other"
    SUGGESTION = "suggestion"            # not a complaint


class Channel(StrEnum):
    """P-5.1: how the feedback reached us."""

    PHONE = "phone"
    FAX = "fax"
    EMAIL = "email"
    LETTER = "letter"
    VISIT = "visit"
    PROACTIVE = "proactive"  # raised by a salesperson
    WEB = "web"


class Severity(StrEnum):
    NORMAL = "normal"
    MAJOR = "major"  # P-5.3.5: affects the customer's production or functional safety


class Language(StrEnum):
    ZH = "zh"
    EN = "en"


class DispositionType(StrEnum):
    """P-5.3.2: what happens to the goods."""

    RETURN = "return"
    REWORK = "rework"
    SORTING = "sorting"
    SCRAP = "scrap"
    CONCESSION = "concession"


class NoActionOutcome(StrEnum):
    """Why Quality concluded a complaint without corrective action (not the plant's fault)."""

    NOT_JUSTIFIED = "not_justified"      # the product or service met what was agreed
    NO_FAULT_FOUND = "no_fault_found"    # the defect could not be found or reproduced
    CUSTOMER_MISUSE = "customer_misuse"  # caused by handling or use at the customer


class Value(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Money(Value):
    amount: Amount = Field(..., examples=["1250.00"])
    currency: str = Field("CNY", pattern=r"^[A-Z]{3}$", examples=["CNY"])


class Customer(Value):
    id: Code = Field(..., examples=["C-1001"])
    name: Name = Field(..., examples=["Shenzhen Bright Motors Co."])
    contact_person: ShortText | None = Field(None, examples=["Zhang Min"])
    email: Annotated[str, Field(max_length=254, pattern=EMAIL_PATTERN)] | None = \
        Field(None, examples=["zhang.min@brightmotors.example"])
    phone: Annotated[str, Field(max_length=40, pattern=r"^[0-9+()\-\s]{3,40}$")] | None = \
        Field(None, examples=["+86 755 1234 5678"])
    language: Language = Language.ZH


class Product(Value):
    code: Code = Field(..., examples=["HSG-220"])
    name: ShortText | None = Field(None, examples=["Motor housing 220"])
    lot: Code | None = Field(None, examples=["L2026-11-03"])
    order_no: Code | None = Field(None, examples=["SO-88123"])
    delivery_note: Code | None = Field(None, examples=["DN-55190"])


class AttachmentMeta(Value):
    sha256: str = Field(..., pattern=r"^[0-9a-f]{64}$")
    filename: ShortText
    content_type: str
    size: int = Field(..., ge=0)
    uploaded_by: str
    uploaded_at: datetime


class ReturnedSample(Value):
    quantity: int = Field(..., ge=1, le=QUANTITY_MAX, examples=[12])
    received_on: KeptIsoDate = Field(..., examples=["2026-11-20"])
    location: ShortText = Field(..., min_length=1, examples=["QA lab shelf B3"])
    note: ShortText | None = None


class ReturnedSampleInput(ReturnedSample):
    """A returned sample as Sales notes it: received in the kit's years (one kept in a record
    or an event reads with any year)."""

    received_on: IsoDate = Field(..., examples=["2026-11-20"])

    def kept(self) -> ReturnedSample:
        """As records and events keep it (equal to the same sample noted before)."""
        return ReturnedSample(**self.model_dump())


class Head(Value):
    """A unit head to summon for a major complaint (P-5.3.5)."""

    unit: UnitName
    name: Name
    email: str | None = None
