"""The pure projection: events of the procedure -> read-model rows -> monthly contributions.

Three kinds of rows, each keyed so that every event touches exactly one row:
- `FeedbackRow` (id = feedback id): one line of the Customer Feedback Register (P-5.4.1);
- `CapaRow` (id = CAPA id): CAPAs opened and closed (P-5.3.4);
- `RecurrenceRow` (id = the event id): one detected recurrence (P-5.3.4).

A row is a fold of its events that does not depend on their order: every fact
is stored where it belongs (per round, per reopen, per answer) and the status is
derived from the timestamps of the facts. So an event that overtakes
`feedback.registered` is applied to a placeholder row (upsert by feedback id)
and the row ends up the same whatever the order.

`contributions(row)` is what one row adds to the monthly counters (P-F.6), a
pure function of the row. The monthly documents therefore always equal the sum
of the rows' contributions: a change to a row posts the difference (a `Delta`),
and a rebuild simply recomputes them.

Nothing here imports FastAPI, FastStream or PyMongo.
"""

import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar, Protocol, cast
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field, model_validator

from shared import contracts as c
from shared.domain import Aggregate, bson_safe
from shared.events import Contract, Envelope
from shared.vocabulary import Severity

MONTHLY = "monthly"            # per-month counters of the statistics table
MONTHLY_OPEN = "monthly_open"  # per-month receipts/closures by received day (open-case ages)
CUSTOMER_NAMES = "customer_names"  # the latest name stated for each customer id
OPEN_WORK = "open_work"        # what the gauges need of each open complaint, form and CAPA
UNASSIGNED = "(unassigned)"    # loss not yet attributed to a responsible unit
SPLIT = "split|fb"             # feedbacks whose counters tell estimated loss and direct answers
ALL = "all"

# {"<collection>/<YYYY-MM>": {counter key: value}}, e.g. {"monthly/2026-11": {"fb": 1}}
Contribution = dict[str, dict[str, int]]


class RowKind(StrEnum):
    FEEDBACK = "feedback"
    CAPA = "capa"
    RECURRENCE = "recurrence"


class Status(StrEnum):
    """Where a feedback stands in the procedure, as the register shows it."""

    AWAITING_REGISTRATION = "awaiting_registration"  # events arrived before the registration
    REGISTERED = "registered"
    REPLIED_DIRECTLY = "replied_directly"            # P-F.2 yes
    WITH_QUALITY = "with_quality"                    # P-F.2 no: a form is with Quality
    QUALITY_RECORD_READY = "quality_record_ready"    # P-F.5: Quality handed its record to Sales
    CUSTOMER_REPLIED = "customer_replied"            # P-F.4
    REOPENED = "reopened"                            # P-F.4 not satisfied
    CLOSED = "closed"
    WITHDRAWN = "withdrawn"


# On the same second, the later step of the procedure wins.
_STEP = {s: i for i, s in enumerate([
    Status.REGISTERED, Status.REPLIED_DIRECTLY, Status.WITH_QUALITY, Status.QUALITY_RECORD_READY,
    Status.CUSTOMER_REPLIED, Status.REOPENED])}


# ------------------------------------------------------------------ keys, months, seconds


def esc(value: str) -> str:
    """A value as part of a field name: no '.', no leading '$', no NUL, no '|' (our separator)."""
    return (value.replace("%", "%25").replace(".", "%2E").replace("$", "%24")
            .replace("\x00", "%00").replace("|", "%7C"))


def unesc(value: str) -> str:
    return (value.replace("%7C", "|").replace("%00", "\x00").replace("%24", "$")
            .replace("%2E", ".").replace("%25", "%"))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)


def epoch(at: datetime) -> int:
    """Whole seconds since 1970 (sub-second parts dropped, so stored and live values agree:
    the database keeps milliseconds)."""
    return (at - _EPOCH) // _SECOND


def seconds_between(start: datetime, end: datetime) -> int:
    return max(0, epoch(end) - epoch(start))


def local_day(at: datetime, tz: ZoneInfo) -> date:
    return at.astimezone(tz).date()


def month_of(at: datetime, tz: ZoneInfo) -> str:
    day = local_day(at, tz)
    return f"{day.year:04d}-{day.month:02d}"


def part(collection: str, month: str) -> str:
    return f"{collection}/{month}"


def split_part(key: str) -> tuple[str, str]:
    collection, month = key.split("/", 1)
    return collection, month


# ------------------------------------------------------------------ rows


class Cost(BaseModel):
    """A loss amount attributed to a unit, in cents of one currency (exact)."""

    unit: str
    currency: str
    cents: int


class Round(BaseModel):
    """One 3-day clock (P-F.5): round 1, then +1 on each reopen that goes back to Quality."""

    round: int
    received_at: datetime | None = None
    due_at: datetime | None = None
    at_risk_at: datetime | None = None
    severity: str | None = None
    defect_code: str | None = None
    units: list[str] = Field(default_factory=list)
    resolved_at: datetime | None = None
    met_deadline: bool | None = None
    at_risk: bool = False
    breached: bool = False
    costs: list[Cost] = Field(default_factory=list)

    @property
    def is_breach(self) -> bool:
        return self.breached or self.met_deadline is False


class Answer(BaseModel):
    event_id: str
    at: datetime
    satisfied: bool


class Reopen(BaseModel):
    count: int
    at: datetime


class Classification(BaseModel):
    """What Sales said in a `feedback.classified` (P-5.2)."""

    event_id: str
    at: datetime
    customer_id: str
    customer_name: str
    category: str
    severity: str
    is_complaint: bool
    product_code: str | None = None
    product_name: str | None = None
    product_lot: str | None = None


class Delta(BaseModel):
    """What one applied event changed in the monthly counters, waiting to be posted."""

    id: str = Field(..., description="The event id (one event changes one row)")
    parts: Contribution


class ReadRow(Aggregate):
    """Base of the read-model rows: the applied event ids, the posted contribution, deltas.

    Stored as its filterable fields (`fields`) plus one JSON text (`body`) with the rest:
    FerretDB v1 reads and writes a document field by field, and a row with its rounds,
    answers and contribution has about 150 of them (measured: 5 ms per row on a scan)."""

    producer: ClassVar[str] = "reporting"
    keeps_history: ClassVar[bool] = False  # rows are rebuilt from events, never logged
    kind: ClassVar[RowKind]
    fields: ClassVar[frozenset[str]] = frozenset({"has_pending"})

    contrib: Contribution = Field(default_factory=dict)
    pending: list[Delta] = Field(default_factory=list)
    has_pending: bool = False

    @model_validator(mode="before")
    @classmethod
    def _unpack(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("body"), str):
            data = {k: v for k, v in data.items() if k != "body"} | json.loads(data["body"])
        return data

    def to_document(self) -> dict[str, Any]:
        top = {*self.fields, "id", "version"}
        doc = bson_safe(self.model_dump(mode="python", by_alias=True, include=top))
        doc["body"] = self.model_dump_json(exclude=top)
        return doc

    def contributions(self, tz: ZoneInfo) -> Contribution:
        raise NotImplementedError

    def derive(self, tz: ZoneInfo) -> None:
        """Recompute derived fields after a change (status, flags)."""


class FeedbackRow(ReadRow):
    """One line of the Customer Feedback Register (P-5.4.1)."""

    kind: ClassVar[RowKind] = RowKind.FEEDBACK
    fields: ClassVar[frozenset[str]] = frozenset({
        "has_pending", "status", "open", "form_open", "registered", "register_no",
        "is_complaint", "category", "channel", "severity", "customer_id", "product_code",
        "units", "defect_code", "received_at", "form_opened_at", "quality_record_at",
        "closed_at", "reopen_count"})

    registered: bool = False
    register_no: str | None = None
    is_complaint: bool | None = None
    customer_id: str | None = None
    customer_name: str | None = None
    channel: str | None = None
    category: str | None = None
    severity: str | None = None
    product_code: str | None = None
    product_name: str | None = None
    product_lot: str | None = None
    quantity_affected: int | None = None
    description: str | None = None
    estimated_loss: Cost | None = None
    received_at: datetime | None = None
    registered_at: datetime | None = None
    escalated_at: datetime | None = None
    replied_directly_at: datetime | None = None
    reply_times: list[datetime] = Field(default_factory=list)
    major_alert_at: datetime | None = None
    closed_at: datetime | None = None
    withdrawn_at: datetime | None = None
    withdraw_reason: str | None = None
    rounds: list[Round] = Field(default_factory=list)
    reopens: list[Reopen] = Field(default_factory=list)
    answers: list[Answer] = Field(default_factory=list)
    evidence: int = 0
    capa_ids: list[str] = Field(default_factory=list, description="CAPAs opened for it (P-5.3.4)")
    classification: Classification | None = Field(
        None, description="The latest feedback.classified: it wins over the registration")
    # derived (kept in the document so the register can filter and sort on them)
    status: Status = Status.AWAITING_REGISTRATION
    open: bool = False
    form_open: bool = False
    defect_code: str | None = None
    units: list[str] = Field(default_factory=list)
    form_opened_at: datetime | None = None
    quality_record_at: datetime | None = None
    first_reply_at: datetime | None = None
    reopen_count: int = 0

    # -- facts ---------------------------------------------------------------
    def round(self, number: int) -> Round:
        for r in self.rounds:
            if r.round == number:
                return r
        r = Round(round=number)
        self.rounds.append(r)
        self.rounds.sort(key=lambda x: x.round)
        return r

    @property
    def current_round(self) -> Round | None:
        return self.rounds[-1] if self.rounds else None

    def take_facts(self, facts: c.FeedbackFacts) -> None:
        self.register_no = facts.register_no
        self.customer_id = facts.customer.id
        self.customer_name = facts.customer.name
        self.channel = facts.channel.value
        self.category = facts.category.value
        self.severity = facts.severity.value
        if facts.product is not None:
            self.product_code = facts.product.code
            self.product_name = facts.product.name
            self.product_lot = facts.product.lot
        self.quantity_affected = facts.quantity_affected
        self.description = facts.description[:2000]
        self.received_at = facts.received_at
        if facts.estimated_loss is not None:
            self.estimated_loss = Cost(unit=UNASSIGNED, currency=facts.estimated_loss.currency,
                                       cents=cents(facts.estimated_loss.amount))
        self.take_classification()

    def take_classification(self) -> None:
        """A (re)classification replaces what the registration said, whatever the order."""
        k = self.classification
        if k is None:
            return
        self.customer_id, self.customer_name = k.customer_id, k.customer_name
        self.category, self.severity, self.is_complaint = k.category, k.severity, k.is_complaint
        self.product_code, self.product_name, self.product_lot = \
            k.product_code, k.product_name, k.product_lot

    def loss_items(self) -> list[Cost]:
        """The loss: every quality record's disposition costs; else the estimate at registration."""
        return self.actual_costs() or self.estimate_items()

    def actual_costs(self) -> list[Cost]:
        return [cost for r in self.rounds for cost in r.costs]

    def estimate_items(self) -> list[Cost]:
        """The estimate at registration, attributed to the units Quality named in the latest
        round that names any (a reassignment in a later round moves it), split evenly in
        cents, the remainder to the first unit (alphabetical, so every fold agrees);
        "(unassigned)" until responsibility is assigned."""
        est = self.estimated_loss
        if est is None or not est.cents:
            return []
        named = [r.units for r in self.rounds if r.units]
        units = named[-1] if named else [UNASSIGNED]
        share, rest = divmod(est.cents, len(units))
        return [Cost(unit=u, currency=est.currency, cents=share + (rest if i == 0 else 0))
                for i, u in enumerate(units)]

    def loss_by_currency(self) -> dict[str, int]:
        total: dict[str, int] = defaultdict(int)
        for cost in self.loss_items():
            total[cost.currency] += cost.cents
        return dict(total)

    # -- derived -------------------------------------------------------------
    def round_severity(self, r: Round) -> str | None:
        """A round still open when Quality flagged the complaint major is a major one."""
        if self.major_alert_at is not None and (r.resolved_at is None
                                                or r.resolved_at > self.major_alert_at):
            return Severity.MAJOR.value
        return r.severity or self.severity

    def derive(self, tz: ZoneInfo) -> None:
        if self.major_alert_at is not None:  # P-5.3.5: Quality's flag wins over registration
            self.severity = Severity.MAJOR.value
        self.status = self._status()
        live = self.registered and self.closed_at is None and self.withdrawn_at is None
        self.open = bool(live and self.is_complaint)
        current = self.current_round
        self.form_open = bool(live and current is not None and current.received_at is not None
                              and current.resolved_at is None)
        with_code = [r for r in self.rounds if r.defect_code]
        self.defect_code = with_code[-1].defect_code if with_code else None
        self.units = sorted({u for r in self.rounds for u in r.units})
        first = self.rounds[0] if self.rounds else None
        self.form_opened_at = self.escalated_at or (first.received_at if first else None)
        resolved = [r.resolved_at for r in self.rounds if r.resolved_at]
        self.quality_record_at = max(resolved) if resolved else None
        self.first_reply_at = min(self.reply_times) if self.reply_times else None
        self.reopen_count = max((r.count for r in self.reopens), default=0)

    def _status(self) -> Status:
        if self.withdrawn_at is not None:
            return Status.WITHDRAWN
        if self.closed_at is not None:
            return Status.CLOSED
        if not self.registered:
            return Status.AWAITING_REGISTRATION
        steps: list[tuple[datetime | None, Status]] = [
            (self.registered_at, Status.REGISTERED),
            (self.replied_directly_at, Status.REPLIED_DIRECTLY),
            (self.escalated_at, Status.WITH_QUALITY),
            *[(r.received_at, Status.WITH_QUALITY) for r in self.rounds],
            *[(r.resolved_at, Status.QUALITY_RECORD_READY) for r in self.rounds],
            *[(t, Status.CUSTOMER_REPLIED) for t in self.reply_times
              if t != self.replied_directly_at],
            *[(r.at, Status.REOPENED) for r in self.reopens],
        ]
        known = [(epoch(at), _STEP[s], s) for at, s in steps if at is not None]
        return max(known)[2] if known else Status.REGISTERED

    # -- statistics (P-F.6) -------------------------------------------------------
    def contributions(self, tz: ZoneInfo) -> Contribution:
        """What this feedback adds to the monthly counters; nothing until it is registered,
        nothing once withdrawn (registered in error)."""
        if not self.registered or self.withdrawn_at is not None or self.received_at is None:
            return {}
        out = _Acc(tz)
        month = month_of(self.received_at, tz)
        complaint = bool(self.is_complaint)
        out.add(MONTHLY, month, "fb")
        if complaint:
            out.add(MONTHLY, month, "cp")
        for dim, values in self._dimensions().items():
            for value in values:
                out.add(MONTHLY, month, f"fb|{dim}|{esc(value)}")
                if complaint:
                    out.add(MONTHLY, month, f"cp|{dim}|{esc(value)}")
        # Marks the month's counters as holding the figures below (the direct answers, the
        # estimated part of the loss): months posted before them lack it (statistics.py).
        out.add(MONTHLY, month, SPLIT)
        if self.replied_directly_at is not None:  # P-F.2 yes, P-5.3.3
            out.add(MONTHLY, month, "direct|fb")
            if complaint:
                out.add(MONTHLY, month, "direct|cp")
        estimate = not self.actual_costs()
        for cost in self.loss_items():
            dims = [("total", ALL), ("category", self.category), ("unit", cost.unit),
                    ("customer", self.customer_id), ("defect_code", self.defect_code)]
            for dim, member in dims:
                if member:
                    key = f"{dim}|{esc(member)}|{cost.currency}"
                    out.add(MONTHLY, month, f"loss|{key}", cost.cents)
                    if estimate:  # actual = loss - estimated
                        out.add(MONTHLY, month, f"lossest|{key}", cost.cents)
        if self.form_opened_at is not None:
            out.add_at(self.form_opened_at, "forms")
        for r in self.rounds:
            self._round_contributions(out, r)
        if self.first_reply_at is not None:
            secs = seconds_between(self.received_at, self.first_reply_at)
            out.add_at(self.first_reply_at, "rp|n")
            out.add_at(self.first_reply_at, "rp|sec", secs)
            out.add_at(self.first_reply_at, f"rp|min|{secs // 60}")
        if self.closed_at is not None:
            out.add_at(self.closed_at, "closed")
        for reopen in self.reopens:
            out.add_at(reopen.at, "reopens")
        for answer in self.answers:
            out.add_at(answer.at, "sat|n")
            if answer.satisfied:
                out.add_at(answer.at, "sat|yes")
        if complaint:  # open cases by age: receipts and closures by the day received
            received = local_day(self.received_at, tz).isoformat()
            out.add(MONTHLY_OPEN, month, f"recv|{received}")
            if self.closed_at is not None:
                out.add(MONTHLY_OPEN, month_of(self.closed_at, tz), f"closed|{received}")
        return out.result()

    def _dimensions(self) -> dict[str, list[str]]:
        return {
            "category": [self.category] if self.category else [],
            "channel": [self.channel] if self.channel else [],
            "severity": [self.severity] if self.severity else [],
            "customer": [self.customer_id] if self.customer_id else [],
            "product": [self.product_code] if self.product_code else [],
            "defect_code": [self.defect_code] if self.defect_code else [],
            "unit": list(self.units),
        }

    def _round_contributions(self, out: "_Acc", r: Round) -> None:
        if r.resolved_at is not None and r.received_at is not None:
            secs = seconds_between(r.received_at, r.resolved_at)
            out.add_at(r.resolved_at, "qr|n")
            if r.met_deadline:
                out.add_at(r.resolved_at, "qr|met")
            out.add_at(r.resolved_at, "qr|sec", secs)
            out.add_at(r.resolved_at, f"qr|min|{secs // 60}")
        due = r.due_at or r.resolved_at
        # Timeliness (P-F.5) in the month of the deadline, once it is decided: the record came
        # (in time or late), or the deadline passed without one (counts as not met).
        if due is not None and (r.resolved_at is not None or r.breached):
            out.add_at(due, "tl|n")
            if r.resolved_at is not None and r.met_deadline:
                out.add_at(due, "tl|met")
        if r.is_breach and due is not None:
            out.add_at(due, "br|n")
            out.add_at(due, f"br|severity|{esc(self.round_severity(r) or 'unknown')}")


class CapaRow(ReadRow):
    kind: ClassVar[RowKind] = RowKind.CAPA
    fields: ClassVar[frozenset[str]] = frozenset({"has_pending", "open"})

    number: str | None = None
    source: str | None = None
    kind_key: str | None = None
    title: str | None = None
    owner_unit: str | None = None
    feedback_ids: list[str] = Field(default_factory=list)
    opened_at: datetime | None = None
    closed_at: datetime | None = None
    withdrawn_at: datetime | None = None
    effective: bool | None = None
    open: bool = False

    def derive(self, tz: ZoneInfo) -> None:
        self.open = (self.opened_at is not None and self.closed_at is None
                     and self.withdrawn_at is None)

    def contributions(self, tz: ZoneInfo) -> Contribution:
        # A withdrawn CAPA stays counted as opened (it was) and counts as withdrawn in the
        # month it was withdrawn; never as closed.
        out = _Acc(tz)
        if self.opened_at is not None:
            out.add_at(self.opened_at, "capa|opened")
        if self.closed_at is not None:
            out.add_at(self.closed_at, "capa|closed")
        if self.withdrawn_at is not None:
            out.add_at(self.withdrawn_at, "capa|withdrawn")
        return out.result()


class RecurrenceRow(ReadRow):
    kind: ClassVar[RowKind] = RowKind.RECURRENCE

    kind_key: str | None = None
    reason: str | None = None
    feedback_ids: list[str] = Field(default_factory=list)
    defect_code: str | None = None
    customer_id: str | None = None
    product_code: str | None = None
    detected_at: datetime | None = None

    def contributions(self, tz: ZoneInfo) -> Contribution:
        out = _Acc(tz)
        if self.detected_at is not None:
            out.add_at(self.detected_at, "rec|n")
            if self.defect_code:
                out.add_at(self.detected_at, f"rec|defect_code|{esc(self.defect_code)}")
        return out.result()


ROW_MODELS: dict[RowKind, type[ReadRow]] = {
    RowKind.FEEDBACK: FeedbackRow, RowKind.CAPA: CapaRow, RowKind.RECURRENCE: RecurrenceRow}


class _Acc:
    """Accumulates counters per (collection, month)."""

    def __init__(self, tz: ZoneInfo):
        self.tz = tz
        self.parts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def add(self, collection: str, month: str, key: str, value: int = 1) -> None:
        if value:
            self.parts[part(collection, month)][key] += value

    def add_at(self, at: datetime, key: str, value: int = 1) -> None:
        self.add(MONTHLY, month_of(at, self.tz), key, value)

    def result(self) -> Contribution:
        return {p: dict(v) for p, v in self.parts.items() if v}


def cents(amount: Any) -> int:
    """Money amounts have at most 2 decimals (vocabulary.Amount): cents are exact integers."""
    return int(amount * 100)


def difference(new: Contribution, old: Contribution) -> Contribution:
    """new - old, without zero entries."""
    out: Contribution = {}
    for key in new.keys() | old.keys():
        a, b = new.get(key, {}), old.get(key, {})
        diff = {k: a.get(k, 0) - b.get(k, 0) for k in a.keys() | b.keys()}
        diff = {k: v for k, v in diff.items() if v}
        if diff:
            out[key] = diff
    return out


def add_into(total: dict[str, dict[str, int]], contrib: Contribution) -> None:
    for key, counters in contrib.items():
        bucket = total.setdefault(key, {})
        for k, v in counters.items():
            bucket[k] = bucket.get(k, 0) + v


# ------------------------------------------------------------------ customer names


class OpenWork(BaseModel):
    """What the gauges of open work (`metrics.LiveState`) need of one row: the open
    complaint (severity, received), the form on the 3-day clock (severity of its round,
    at risk at, due at), the open CAPA.

    Kept in its own small read model (`open_work`, one document per row with open work, none
    for the others) beside the register, so the periodic refresh of the gauges reads the
    open work, not the whole register (FerretDB v1 decodes every row for a filter on
    `open`). A pure function of the row: written after the row, again on a redelivery, and
    built from the rows by a rebuild and when a replica takes over."""

    kind: RowKind
    row_id: str
    case: tuple[str, datetime] | None = None
    form: tuple[str, datetime | None, datetime | None] | None = None
    capa: bool = False

    @classmethod
    def of(cls, row: "ReadRow") -> "OpenWork":
        work = cls(kind=row.kind, row_id=row.id)
        if isinstance(row, FeedbackRow):
            if row.open and row.received_at is not None:
                work.case = (row.severity or "normal", row.received_at)
            current = row.current_round
            if row.form_open and current is not None:
                work.form = (row.round_severity(current) or "normal", current.at_risk_at,
                             current.due_at)
        elif isinstance(row, CapaRow):
            work.capa = row.open
        return work

    @property
    def key(self) -> str:
        return f"{self.kind.value}:{self.row_id}"

    @property
    def is_open(self) -> bool:
        return self.case is not None or self.form is not None or self.capa

    def to_document(self) -> dict[str, Any]:
        # Times as ISO text, as in a row's body: they validate back to the very same instant.
        return {"_id": self.key} | self.model_dump(mode="json")

    @classmethod
    def of_document(cls, doc: dict[str, Any]) -> "OpenWork":
        return cls.model_validate({k: v for k, v in doc.items() if k != "_id"})


class CustomerName(BaseModel):
    """A customer's name as an event stated it; the table (P-F.6) shows the latest one next to
    the customer id.

    Names are not counters: they sit beside the monthly counters in their own small read
    model (one document per customer id), which keeps the statement with the highest `rank`.
    That is a maximum, so applying a statement twice or in any order gives the same document,
    live as in a rebuild."""

    id: str = Field(..., description="The customer id")
    name: str
    said_at: int = Field(..., description="Whole seconds since 1970 of the stating event")
    event_id: str

    @property
    def rank(self) -> tuple[int, str]:
        """Later wins; on the same second, the greater event id (arbitrary, but the same
        everywhere)."""
        return self.said_at, self.event_id

    def to_document(self) -> dict[str, Any]:
        return {"_id": self.id, "name": self.name, "said_at": self.said_at,
                "event_id": self.event_id}

    @classmethod
    def of_document(cls, doc: dict[str, Any]) -> "CustomerName":
        return cls(id=doc["_id"], name=doc["name"], said_at=doc["said_at"],
                   event_id=doc["event_id"])


def customer_name_of(env: Envelope, payload: Contract) -> CustomerName | None:
    """The name an event states for a customer id: Sales' registration and (re)classification
    (P-5.2). Events that copy a feedback's facts later (the form, a major alert, the units'
    requests) repeat what was said then, so they would bring an old name back."""
    if isinstance(payload, c.FeedbackRegistered | c.FeedbackClassified):
        return CustomerName(id=payload.customer.id, name=payload.customer.name,
                            said_at=epoch(env.occurred_at), event_id=env.id)
    return None


def latest(current: CustomerName | None, said: CustomerName) -> bool:
    """Whether `said` replaces `current` (None: nothing known yet)."""
    return current is None or said.rank > current.rank


def customer_names(events: Iterable[tuple[Envelope, Contract]]) -> dict[str, CustomerName]:
    """The latest name of every customer id (rebuild, benchmark, the unit tests)."""
    out: dict[str, CustomerName] = {}
    for env, payload in events:
        said = customer_name_of(env, payload)
        if said is not None and latest(out.get(said.id), said):
            out[said.id] = said
    return out


# ------------------------------------------------------------------ applying events

Apply = Callable[[Any, Envelope, Any], None]
_APPLY: dict[str, tuple[RowKind, Apply]] = {}


def _on(event_type: str, kind: RowKind = RowKind.FEEDBACK) -> Callable[[Apply], Apply]:
    def register(fn: Apply) -> Apply:
        _APPLY[event_type] = (kind, fn)
        return fn
    return register


class _AboutCapa(Protocol):
    capa_id: str


class _AboutFeedback(Protocol):
    feedback_id: str


# The events that normally come first to their row: the projection inserts the row straight
# away (no lookup; FerretDB v1 scans the collection for a lookup by `_id`) and looks it up
# only when it exists already (a redelivery, or an event that overtook this one).
STARTS_ROW = frozenset({"feedback.registered", "capa.opened", "complaint.recurrence_detected"})


def target_of(env: Envelope, payload: Contract) -> tuple[RowKind, str] | None:
    """The one row an event changes, or None when it only goes into the history."""
    entry = _APPLY.get(env.type)
    if entry is None:
        return None
    kind = entry[0]
    if kind is RowKind.RECURRENCE:
        return kind, env.id
    # Every contract `_on` files under a CAPA row carries `capa_id`, every other `feedback_id`.
    if kind is RowKind.CAPA:
        return kind, cast(_AboutCapa, payload).capa_id
    return kind, cast(_AboutFeedback, payload).feedback_id


# Events that also concern feedback rows other than their own row: a CAPA names the
# complaints it was opened for. event type -> (the feedback ids it names, its effect on each)
_LINKS: dict[str, tuple[Callable[[Any], list[str]], Apply]] = {}


def linked_feedback(env: Envelope, payload: Contract) -> list[str]:
    """The feedback rows an event also concerns, beside its own row (`target_of`)."""
    entry = _LINKS.get(env.type)
    return list(dict.fromkeys(entry[0](payload))) if entry else []


def apply_link(row: ReadRow, env: Envelope, payload: Contract, tz: ZoneInfo,
               derive: bool = True) -> bool:
    """Apply an event to a feedback row it names (`linked_feedback`) once."""
    return _once(_LINKS[env.type][1], row, env, payload, tz, derive)


def apply(row: ReadRow, env: Envelope, payload: Contract, tz: ZoneInfo,
          derive: bool = True) -> bool:
    """Apply one event once. Returns False when the row has applied it already."""
    return _once(_APPLY[env.type][1], row, env, payload, tz, derive)


def _once(effect: Apply, row: ReadRow, env: Envelope, payload: Contract, tz: ZoneInfo,
          derive: bool) -> bool:
    if row.has_applied(env.id):
        return False
    effect(row, env, payload)
    row.mark_applied(env.id)
    if derive:
        row.derive(tz)
    return True


def settle(row: ReadRow, delta_id: str, tz: ZoneInfo) -> Delta | None:
    """Recompute the row's contribution; queue the difference to post to the monthly counters."""
    new = row.contributions(tz)
    diff = difference(new, row.contrib)
    row.contrib = new
    if diff:
        delta = Delta(id=delta_id, parts=diff)
        row.pending.append(delta)
    row.has_pending = bool(row.pending)
    return row.pending[-1] if diff else None


def fold(events: Iterable[tuple[Envelope, Contract]], tz: ZoneInfo
         ) -> dict[tuple[RowKind, str], ReadRow]:
    """Rows from scratch (rebuild, benchmark): apply every event, then settle each row once."""
    rows: dict[tuple[RowKind, str], ReadRow] = {}
    for env, payload in events:
        target = target_of(env, payload)
        if target is None:
            continue
        row = rows.get(target)
        if row is None:
            row = rows[target] = ROW_MODELS[target[0]](id=target[1])
        apply(row, env, payload, tz, derive=False)
        for feedback_id in linked_feedback(env, payload):
            key = (RowKind.FEEDBACK, feedback_id)
            linked = rows.get(key)
            if linked is None:
                linked = rows[key] = FeedbackRow(id=feedback_id)
            apply_link(linked, env, payload, tz, derive=False)
    for row in rows.values():
        row.derive(tz)
        row.contrib = row.contributions(tz)
        row.pending, row.has_pending = [], False
    return rows


def monthly_totals(rows: Iterable[ReadRow]) -> dict[str, dict[str, int]]:
    """The monthly documents that the rows' contributions add up to."""
    total: dict[str, dict[str, int]] = {}
    for row in rows:
        add_into(total, row.contrib)
    return total


# -- feedback events (intake) -----------------------------------------------------


@_on("feedback.registered")
def _registered(row: FeedbackRow, env: Envelope, p: c.FeedbackRegistered) -> None:
    row.is_complaint = p.is_complaint
    row.take_facts(p)
    row.registered = True
    row.registered_at = env.occurred_at


@_on("feedback.classified")
def _classified(row: FeedbackRow, env: Envelope, p: c.FeedbackClassified) -> None:
    current = row.classification
    if current is not None and (epoch(current.at), current.event_id) > (epoch(env.occurred_at),
                                                                        env.id):
        return  # an older classification arriving late
    row.classification = Classification(
        event_id=env.id, at=env.occurred_at, customer_id=p.customer.id,
        customer_name=p.customer.name, category=p.category.value, severity=p.severity.value,
        is_complaint=p.is_complaint, product_code=p.product.code if p.product else None,
        product_name=p.product.name if p.product else None,
        product_lot=p.product.lot if p.product else None)
    row.register_no = row.register_no or p.register_no
    row.take_classification()


@_on("complaint.escalated")
def _escalated(row: FeedbackRow, env: Envelope, p: c.ComplaintEscalated) -> None:
    if not row.registered:  # the form carries the facts too; the registration will confirm them
        if row.classification is None:
            row.is_complaint = True  # a form is opened for complaints only
        row.take_facts(p)
    opened = p.form_opened_at or env.occurred_at  # a paper form may be entered later
    row.escalated_at = min(filter(None, [row.escalated_at, opened]))
    row.evidence += len(p.attachments) + len(p.samples)


@_on("feedback.evidence_added")
def _evidence(row: FeedbackRow, env: Envelope, p: c.EvidenceAdded) -> None:
    row.evidence += 1


@_on("feedback.replied_directly")
def _replied_directly(row: FeedbackRow, env: Envelope, p: c.RepliedDirectly) -> None:
    row.replied_directly_at = env.occurred_at
    row.reply_times.append(env.occurred_at)


@_on("feedback.customer_replied")
def _customer_replied(row: FeedbackRow, env: Envelope, p: c.CustomerReplied) -> None:
    row.reply_times.append(p.replied_at)


@_on("feedback.satisfaction_recorded")
def _satisfaction(row: FeedbackRow, env: Envelope, p: c.SatisfactionRecorded) -> None:
    row.answers.append(Answer(event_id=env.id, at=env.occurred_at, satisfied=p.satisfied))
    row.answers.sort(key=lambda a: (a.at, a.event_id))


@_on("feedback.closed")
def _closed(row: FeedbackRow, env: Envelope, p: c.FeedbackClosed) -> None:
    row.closed_at = p.closed_at


@_on("complaint.reopened")
def _reopened(row: FeedbackRow, env: Envelope, p: c.ComplaintReopened) -> None:
    if all(r.count != p.reopen_count for r in row.reopens):
        row.reopens.append(Reopen(count=p.reopen_count, at=env.occurred_at))
        row.reopens.sort(key=lambda r: r.count)


@_on("feedback.withdrawn")
def _withdrawn(row: FeedbackRow, env: Envelope, p: c.FeedbackWithdrawn) -> None:
    row.withdrawn_at = env.occurred_at
    row.withdraw_reason = p.reason[:2000]
    row.register_no = row.register_no or p.register_no


# -- quality ------------------------------------------------------------------------


@_on("complaint.accepted")
def _accepted(row: FeedbackRow, env: Envelope, p: c.ComplaintAccepted) -> None:
    r = row.round(p.round)
    r.received_at, r.due_at, r.at_risk_at = p.received_at, p.due_at, p.at_risk_at
    r.severity = p.severity.value
    row.register_no = row.register_no or p.register_no


@_on("complaint.major_alert")
def _major(row: FeedbackRow, env: Envelope, p: c.MajorAlert) -> None:
    # At registration or later (Quality's POST /cases/{ref}/major): either way the complaint
    # is major from now on (`derive`); its counters move from its old severity to major.
    first = [t for t in (row.major_alert_at, env.occurred_at) if t is not None]
    row.major_alert_at = min(first)


@_on("complaint.responsibility_assigned")
def _responsibility(row: FeedbackRow, env: Envelope, p: c.ResponsibilityAssigned) -> None:
    r = row.round(p.round)
    r.defect_code = p.defect_code
    r.units = sorted(set(r.units) | {u.unit for u in p.units})


@_on("complaint.resolution_ready")
def _resolution(row: FeedbackRow, env: Envelope, p: c.ResolutionReady) -> None:
    r = row.round(p.round)
    r.received_at = r.received_at or p.received_at
    r.due_at = p.due_at
    r.resolved_at = p.resolved_at
    r.met_deadline = p.met_deadline
    r.defect_code = p.defect_code
    r.units = sorted(set(r.units) | {o.unit for o in p.outcomes})
    r.costs = [Cost(unit=o.unit, currency=o.disposition.cost.currency,
                    cents=cents(o.disposition.cost.amount))
               for o in p.outcomes
               if o.disposition is not None and o.disposition.cost is not None
               and o.disposition.cost.amount > 0]


@_on("complaint.sla_at_risk")
def _at_risk(row: FeedbackRow, env: Envelope, p: c.SlaAtRisk) -> None:
    r = row.round(p.round)
    r.at_risk, r.due_at = True, r.due_at or p.due_at
    r.severity = r.severity or p.severity.value


@_on("complaint.sla_breached")
def _breached(row: FeedbackRow, env: Envelope, p: c.SlaBreached) -> None:
    r = row.round(p.round)
    r.breached, r.due_at = True, r.due_at or p.due_at
    r.severity = r.severity or p.severity.value


# Facts the register shows nothing of, kept on the row (their ids in `applied_events`) so that
# the Complaint Handling Report (`dossier`) reads them back from the history by `_id`.
def _kept_for_the_report(row: FeedbackRow, env: Envelope, p: Contract) -> None:
    """Nothing to change on the row: recording the event id is the point."""


for _kept in ("action.countermeasures_proposed", "action.completed",
              "complaint.countermeasures_verified", "complaint.countermeasures_rejected",
              "complaint.returned_to_quality"):
    _on(_kept)(_kept_for_the_report)


# -- capa --------------------------------------------------------------------------


@_on("action.requested")
def _action_requested(row: FeedbackRow, env: Envelope, p: c.ActionRequested) -> None:
    r = row.round(p.round)
    r.units = sorted(set(r.units) | {p.unit})
    row.register_no = row.register_no or p.register_no


@_on("complaint.recurrence_detected", RowKind.RECURRENCE)
def _recurrence(row: RecurrenceRow, env: Envelope, p: c.RecurrenceDetected) -> None:
    row.kind_key, row.reason, row.feedback_ids = p.kind, p.reason, list(p.feedback_ids)
    row.defect_code, row.customer_id, row.product_code = p.defect_code, p.customer_id, \
        p.product_code
    row.detected_at = env.occurred_at


@_on("capa.opened", RowKind.CAPA)
def _capa_opened(row: CapaRow, env: Envelope, p: c.CapaOpened) -> None:
    row.number, row.source, row.kind_key, row.title = p.number, p.source, p.kind, p.title
    row.owner_unit, row.feedback_ids = p.owner_unit, list(p.feedback_ids)
    row.opened_at = env.occurred_at


def _capa_of_feedback(row: FeedbackRow, env: Envelope, p: c.CapaOpened) -> None:
    if p.capa_id not in row.capa_ids:
        row.capa_ids.append(p.capa_id)


_LINKS["capa.opened"] = (lambda p: p.feedback_ids, _capa_of_feedback)


@_on("capa.effectiveness_verified", RowKind.CAPA)
def _capa_verified(row: CapaRow, env: Envelope, p: c.CapaEffectivenessVerified) -> None:
    row.effective = p.effective


@_on("capa.closed", RowKind.CAPA)
def _capa_closed(row: CapaRow, env: Envelope, p: c.CapaClosed) -> None:
    row.closed_at = p.closed_at


@_on("capa.owner_assigned", RowKind.CAPA)
def _capa_owner(row: CapaRow, env: Envelope, p: c.CapaOwnerAssigned) -> None:
    row.owner_unit = p.owner_unit


@_on("capa.withdrawn", RowKind.CAPA)
def _capa_withdrawn(row: CapaRow, env: Envelope, p: c.CapaWithdrawn) -> None:
    # Opened in error: no longer open, and not a closure either (it fixed nothing).
    row.withdrawn_at = p.withdrawn_at
