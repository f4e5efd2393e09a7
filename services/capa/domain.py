"""The capa domain, pure: action requests to responsible units and formal CAPAs.

- `ActionRequest` (P-3.3, P-5.3.2): what Quality asks of one responsible unit; the
  unit investigates (containment, 5-why root cause, corrective and preventive
  actions, disposition), submits to Quality, and carries the actions out once
  Quality has verified them.
- `Capa` (P-5.3.4): the formal corrective and preventive action of the
  *Corrective and Preventive Action Control Procedure*: root cause, action plan,
  implementation, and an effectiveness check that must be positive before it closes.

No FastAPI, FastStream or PyMongo here: methods check the procedure's rules,
raise `Conflict`/`Forbidden`/`NotFound`, log history and emit events.
"""

from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, ClassVar, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from services.capa.complaint import ComplaintContext
from shared.contracts import (
    ActionCompleted,
    ActionRequested,
    CapaClosed,
    CapaEffectivenessVerified,
    CapaOpened,
    CapaOwnerAssigned,
    CapaWithdrawn,
    CountermeasuresProposed,
    Disposition,
    EvidenceAdded,
    RecurrenceDetected,
    ResponsibilityAssigned,
    UnitRequest,
)
from shared.domain import Aggregate
from shared.errors import Conflict, Forbidden, NotFound
from shared.events import Actor, utcnow
from shared.vocabulary import (
    Head,
    IsoDate,
    KeptIsoDate,
    LongText,
    Name,
    NoNul,
    ShortText,
    UnitName,
)

PRODUCER = "capa"
MAX_ITEMS = 50

Why: TypeAlias = Annotated[str, Field(min_length=1, max_length=2000), NoNul]
Description: TypeAlias = Annotated[str, Field(min_length=1, max_length=2000), NoNul]
Statement: TypeAlias = Annotated[str, Field(min_length=1, max_length=20_000), NoNul]
Title: TypeAlias = Annotated[str, Field(min_length=1, max_length=200), NoNul]
FeedbackRef: TypeAlias = Annotated[str, Field(min_length=1, max_length=64), NoNul]


class CapaAggregate(Aggregate):
    producer: ClassVar[str] = PRODUCER


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _is_quality(actor: Actor) -> bool:
    return "quality" in actor.roles


# ------------------------------------------------------------------ vocabulary


class RootCauseCategory(StrEnum):
    """4M/6M (Ishikawa) category of a root cause."""

    MAN = "man"
    MACHINE = "machine"
    MATERIAL = "material"
    METHOD = "method"
    MEASUREMENT = "measurement"
    ENVIRONMENT = "environment"


class ActionStatus(StrEnum):
    REQUESTED = "requested"  # opened for the unit; it drafts its investigation
    PROPOSED = "proposed"    # submitted to Quality
    ACCEPTED = "accepted"    # Quality verified it; the unit implements the actions
    COMPLETED = "completed"  # every corrective and preventive action is done
    RETURNED = "returned"    # Quality rejected it; the unit revises and submits again
    WITHDRAWN = "withdrawn"  # the complaint was withdrawn; nothing more is asked of the unit


# Still asking something of the unit (a withdrawal ends these, not a completed one).
OPEN_ACTION_STATUSES = (ActionStatus.REQUESTED, ActionStatus.PROPOSED, ActionStatus.ACCEPTED,
                        ActionStatus.RETURNED)


class ItemKind(StrEnum):
    CORRECTIVE = "corrective"
    PREVENTIVE = "preventive"


class ItemStatus(StrEnum):
    OPEN = "open"
    DONE = "done"


class RootCause(BaseModel):
    """A 5-why analysis: the whys, the 4M/6M category and the root cause in one sentence."""

    model_config = ConfigDict(extra="forbid")

    five_whys: list[Why] = Field(
        default_factory=list, max_length=5, description="1 to 5 successive whys",
        examples=[["Housing cracked", "Wall too thin at the rib", "Mould cavity 2 worn"]])
    category: RootCauseCategory | None = Field(None, examples=["machine"])
    statement: LongText | None = Field(
        None, examples=["Worn cavity 2 of mould M-17 gives a 0.4 mm thin wall at the rib."])


class ItemInput(BaseModel):
    """A corrective or preventive action as the unit proposes it."""

    model_config = ConfigDict(extra="forbid")

    description: Description = Field(..., examples=["Replace the insert of cavity 2 of M-17"])
    owner: Name = Field(..., examples=["Zhao Lei"])
    due_date: IsoDate = Field(..., examples=["2026-12-15"])


class ActionItem(ItemInput):
    due_date: KeptIsoDate = Field(..., examples=["2026-12-15"])  # as stored: any year reads
    no: int = Field(..., ge=1, description="Number within its list, from 1")
    status: ItemStatus = ItemStatus.OPEN
    done_at: datetime | None = None
    done_by: str | None = None
    note: ShortText | None = None

    def as_text(self) -> str:
        return f"{self.description} ({self.owner}, {self.due_date.isoformat()})"


def _numbered(items: list[ItemInput]) -> list[ActionItem]:
    return [ActionItem(no=i, **item.model_dump()) for i, item in enumerate(items, start=1)]


class Rejection(BaseModel):
    reason: LongText
    at: datetime
    by: str = Field(..., description="Who in Quality rejected it")
    event_id: str | None = None


class Withdrawal(BaseModel):
    """Why a record was withdrawn, when and by whom (nothing is deleted, P-5.4.2)."""

    reason: str
    at: datetime
    by: str


def _refuse_if_withdrawn(what: str, action: str, withdrawal: Withdrawal | None) -> None:
    if withdrawal is not None:
        raise Conflict(f"Cannot {action}: {what} was withdrawn on {withdrawal.at:%Y-%m-%d %H:%M} "
                       f"UTC by {withdrawal.by} ({withdrawal.reason}); it accepts no further "
                       f"changes.")


class InvestigationDraft(BaseModel):
    """The unit's investigation; every field is optional and only the fields sent are changed."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "containment": "Stopped shipment of lot L2026-11-03; 100% sorting of stock at the plant.",
        "root_cause": {"five_whys": ["Housing cracked", "Wall too thin at the rib",
                                     "Mould cavity 2 worn"],
                       "category": "machine",
                       "statement": "Worn cavity 2 of mould M-17 gives a thin wall at the rib."},
        "corrective": [{"description": "Replace the insert of cavity 2 of M-17",
                        "owner": "Zhao Lei", "due_date": "2026-12-15"}],
        "preventive": [{"description": "Add wall thickness to the mould PM checklist",
                        "owner": "Sun Mei", "due_date": "2026-12-31"}],
        "disposition": {"type": "rework", "quantity": 480,
                        "cost": {"amount": "3600.00", "currency": "CNY"},
                        "note": "Rework at customer site"},
    }]})

    containment: LongText | None = Field(None, description="The immediate (containment) action")
    root_cause: RootCause | None = None
    corrective: list[ItemInput] | None = Field(None, max_length=MAX_ITEMS)
    preventive: list[ItemInput] | None = Field(None, max_length=MAX_ITEMS)
    disposition: Disposition | None = Field(
        None, description="P-5.3.2: return, rework, sorting, scrap or concession")


# ------------------------------------------------------------------ action request


class ActionRequest(CapaAggregate):
    """What Quality asks of one responsible unit for one complaint (P-3.3, P-5.3.2)."""

    feedback_id: str
    register_no: str
    unit: UnitName
    request: LongText
    round: int = 1
    complaint: ComplaintContext = Field(default_factory=ComplaintContext)
    status: ActionStatus = ActionStatus.REQUESTED
    containment: str | None = None
    root_cause: RootCause = Field(default_factory=RootCause)
    corrective: list[ActionItem] = Field(default_factory=list)
    preventive: list[ActionItem] = Field(default_factory=list)
    disposition: Disposition | None = None
    rejections: list[Rejection] = Field(default_factory=list)
    requested_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    submitted_at: datetime | None = None
    accepted_at: datetime | None = None
    completed_at: datetime | None = None
    withdrawal: Withdrawal | None = None

    @property
    def correlation_id(self) -> str:
        return self.feedback_id

    @classmethod
    def open(cls, unit: UnitRequest, assigned: ResponsibilityAssigned, actor: Actor,
             event_id: str) -> "ActionRequest":
        """A new request for `unit`, from Quality's responsibility assignment."""
        action = cls(id=unit.action_id, feedback_id=assigned.feedback_id,
                     register_no=assigned.register_no, unit=unit.unit, request=unit.request,
                     round=assigned.round, complaint=ComplaintContext.of(assigned))
        action.log(actor, "requested", {"unit": unit.unit, "request": unit.request,
                                        "round": assigned.round}, event_id=event_id)
        action.mark_applied(event_id)
        action.emit(ActionRequested(action_id=action.id, feedback_id=action.feedback_id,
                                    register_no=action.register_no, unit=action.unit,
                                    request=action.request, round=action.round),
                    actor, causation_id=event_id)
        return action

    # -- rules -------------------------------------------------------------
    def check_unit(self, actor: Actor) -> None:
        """P-3.3: only the people of the responsible unit act on its request."""
        if "unit" not in actor.roles or actor.unit != self.unit:
            mine = f"unit {actor.unit!r}" if actor.unit else "no unit"
            raise Forbidden(f"This action request belongs to unit {self.unit!r}; you are {mine}.")

    def _require(self, action: str, *allowed: ActionStatus) -> None:
        _refuse_if_withdrawn("the action request", action, self.withdrawal)
        if self.status not in allowed:
            raise Conflict(f"Cannot {action}: the action request is {self.status.value!r}; "
                           f"allowed only when {' or '.join(repr(s.value) for s in allowed)}.")

    def missing(self) -> list[dict[str, str]]:
        """What the investigation still lacks before it can go to Quality."""
        rc = self.root_cause
        checks = [
            ("containment", bool((self.containment or "").strip()),
             "the containment (immediate action) is missing"),
            ("root_cause.statement", bool((rc.statement or "").strip()),
             "the root cause statement is missing"),
            ("root_cause.category", rc.category is not None,
             "the root cause category (4M/6M) is missing"),
            ("root_cause.five_whys", bool(rc.five_whys), "at least one 'why' is needed"),
            ("corrective", bool(self.corrective), "at least one corrective action is needed"),
            ("preventive", bool(self.preventive), "at least one preventive action is needed"),
        ]
        return [{"loc": loc, "msg": msg} for loc, ok, msg in checks if not ok]

    # -- the unit ----------------------------------------------------------
    def draft(self, draft: InvestigationDraft, actor: Actor) -> None:
        """Save the unit's investigation draft (only the fields sent)."""
        self.check_unit(actor)
        self._require("change the investigation", ActionStatus.REQUESTED, ActionStatus.RETURNED)
        sent = draft.model_fields_set
        changes: dict[str, Any] = {}
        if "containment" in sent:
            self.containment = draft.containment
        if "root_cause" in sent:
            self.root_cause = draft.root_cause or RootCause()
        if "corrective" in sent:
            self.corrective = _numbered(draft.corrective or [])
        if "preventive" in sent:
            self.preventive = _numbered(draft.preventive or [])
        if "disposition" in sent:
            self.disposition = draft.disposition
        for name in sorted(sent):
            changes[name] = _jsonable(getattr(self, name))
        self.updated_at = utcnow()
        self.log(actor, "investigation_drafted", changes)

    def submit(self, actor: Actor) -> None:
        """Send the investigation and countermeasures to Quality (P-3.3)."""
        self.check_unit(actor)
        self._require("submit the countermeasures", ActionStatus.REQUESTED, ActionStatus.RETURNED)
        missing = self.missing()
        if missing:
            raise Conflict("The countermeasures cannot be submitted yet: "
                           + "; ".join(m["msg"] for m in missing) + ".", details=missing)
        self.status = ActionStatus.PROPOSED
        self.submitted_at = self.updated_at = utcnow()
        self.log(actor, "countermeasures_proposed", {"status": self.status.value})
        assert self.containment and self.root_cause.statement and self.root_cause.category
        self.emit(CountermeasuresProposed(
            action_id=self.id, feedback_id=self.feedback_id, unit=self.unit,
            containment=self.containment, root_cause=self.root_cause.statement,
            root_cause_category=self.root_cause.category.value,
            corrective=[i.as_text() for i in self.corrective],
            preventive=[i.as_text() for i in self.preventive],
            disposition=self.disposition), actor)

    def complete_item(self, kind: ItemKind, no: int, note: str | None, actor: Actor) -> None:
        """Mark one corrective/preventive action done; all done completes the request."""
        self.check_unit(actor)
        self._require("mark an action done", ActionStatus.ACCEPTED)
        items = self.corrective if kind is ItemKind.CORRECTIVE else self.preventive
        item = next((i for i in items if i.no == no), None)
        if item is None:
            raise NotFound(f"There is no {kind.value} action no. {no} (there are {len(items)}).")
        if item.status is ItemStatus.DONE:
            raise Conflict(f"The {kind.value} action no. {no} is already done "
                           f"(since {item.done_at:%Y-%m-%d %H:%M} UTC).")
        now = utcnow()
        item.status, item.done_at, item.done_by, item.note = ItemStatus.DONE, now, actor.sub, note
        self.updated_at = now
        self.log(actor, "item_done", {"kind": kind.value, "no": no}, note=note)
        if all(i.status is ItemStatus.DONE for i in [*self.corrective, *self.preventive]):
            self.status, self.completed_at = ActionStatus.COMPLETED, now
            self.log(actor, "completed", {"status": self.status.value})
            self.emit(ActionCompleted(action_id=self.id, feedback_id=self.feedback_id,
                                      unit=self.unit, completed_at=now), actor)

    # -- Quality (by event) --------------------------------------------------
    def accept(self, note: str | None, actor: Actor, event_id: str) -> None:
        """Quality verified the countermeasures: the unit implements them."""
        self._require("accept the countermeasures", ActionStatus.PROPOSED)
        self.status = ActionStatus.ACCEPTED
        self.accepted_at = self.updated_at = utcnow()
        self.log(actor, "countermeasures_verified", {"status": self.status.value}, note=note,
                 event_id=event_id)

    def reject(self, reason: str, actor: Actor, event_id: str) -> None:
        """Quality rejected the countermeasures: back to the unit, with the reason."""
        self._require("return the countermeasures", ActionStatus.PROPOSED)
        now = utcnow()
        self.status, self.updated_at = ActionStatus.RETURNED, now
        self.rejections.append(Rejection(reason=reason, at=now, by=actor.sub, event_id=event_id))
        self.log(actor, "countermeasures_rejected", {"status": self.status.value}, note=reason,
                 event_id=event_id)

    # -- Sales (by event) ------------------------------------------------------
    def withdraw(self, reason: str, actor: Actor, event_id: str) -> None:
        """The complaint was withdrawn: an open request ends; a completed one stays as it was."""
        if self.status not in OPEN_ACTION_STATUSES:
            return
        now = utcnow()
        self.withdrawal = Withdrawal(reason=reason, at=now, by=actor.sub)
        self.status, self.updated_at = ActionStatus.WITHDRAWN, now
        self.log(actor, "withdrawn", {"status": self.status.value}, note=reason,
                 event_id=event_id)

    def add_evidence(self, evidence: EvidenceAdded, actor: Actor, event_id: str) -> None:
        """Evidence Sales added after the request opened reaches the unit too (P-5.3.2)."""
        if self.status not in OPEN_ACTION_STATUSES:
            return
        added = self.complaint.add_evidence(evidence)
        if added:
            self.updated_at = utcnow()
            self.log(actor, "evidence_added", added, event_id=event_id)


# ------------------------------------------------------------------ formal CAPA


def most_responsible(units_per_complaint: list[list[str]]) -> str | None:
    """P-5.3.4: the unit Quality held responsible for most of the recurring complaints
    (each complaint counts a unit once; a tie goes to the unit named first), or None."""
    counts: dict[str, int] = {}
    for units in units_per_complaint:
        for unit in dict.fromkeys(units):
            counts[unit] = counts.get(unit, 0) + 1
    return max(counts, key=lambda u: counts[u]) if counts else None


class CapaStatus(StrEnum):
    OPEN = "open"                # opened; needs a root cause and an action plan
    PLANNED = "planned"          # root cause and >= 1 action (again, after an ineffective check)
    IMPLEMENTED = "implemented"  # the plan was carried out; effectiveness to be verified
    EFFECTIVE = "effective"      # verified effective; may close
    CLOSED = "closed"
    WITHDRAWN = "withdrawn"      # opened in error or overtaken; kept with the reason


# No longer open: a recurrence of the kind opens a new CAPA rather than joining these.
ENDED_CAPA_STATUSES = (CapaStatus.CLOSED, CapaStatus.WITHDRAWN)


class CapaSource(StrEnum):
    RECURRENCE = "recurrence"  # P-5.3.4, opened automatically
    MANUAL = "manual"          # opened by Quality


class CapaCreate(BaseModel):
    """A CAPA Quality opens by hand."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "title": "Cracked housings HSG-220 at several customers",
        "description": "Three customers reported cracked housings from mould M-17 in Q4.",
        "owner_unit": "production",
        "feedback_ids": ["0b6f3c5e-5d4e-4a43-9a53-2f2b0a1d9c11"],
    }]})

    title: Title = Field(..., description="What the CAPA is about")
    description: LongText = ""
    owner_unit: UnitName | None = Field(None, description="The unit that owns the plan")
    feedback_ids: list[FeedbackRef] = Field(default_factory=list, max_length=200)


class CapaRootCause(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "statement": "Mould M-17 has no wear check in its preventive maintenance plan.",
        "category": "method",
        "five_whys": ["Housings crack", "Wall thin at the rib", "Cavity worn",
                      "Wear not checked", "PM plan has no wear item"],
    }]})

    statement: Statement
    category: RootCauseCategory
    five_whys: list[Why] = Field(default_factory=list, max_length=5)


class CapaPlan(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "actions": [{"description": "Add a cavity wear check to the PM plan of all moulds",
                     "owner": "Sun Mei", "due_date": "2027-01-31"}],
    }]})

    actions: list[ItemInput] = Field(..., min_length=1, max_length=MAX_ITEMS)


class CapaAction(ItemInput):
    due_date: KeptIsoDate = Field(..., examples=["2027-01-31"])  # as stored: any year reads
    no: int = Field(..., ge=1)


class Implementation(BaseModel):
    note: LongText
    at: datetime
    by: str


class EffectivenessInput(BaseModel):
    """The effectiveness check (P-5.3.4): criteria, evaluation window, evaluation, result."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "criteria": "No cracked-housing complaint from any customer for 3 months",
        "window_from": "2027-02-01", "window_to": "2027-04-30",
        "evaluation": "0 complaints of this kind in the window; 12 lots shipped.",
        "effective": True,
    }]})

    criteria: Statement
    # Within the kit's years: the window's end is computed with (a year 9999 overflowed)
    window_from: IsoDate
    window_to: IsoDate
    evaluation: Statement
    effective: bool

    @field_validator("window_to")
    @classmethod
    def _window_in_order(cls, value: date, info: ValidationInfo) -> date:
        start = info.data.get("window_from")
        if start is not None and value < start:
            raise ValueError("the evaluation window must not end before it starts")
        return value


class EffectivenessCheck(EffectivenessInput):
    window_from: KeptIsoDate  # as stored: any year reads
    window_to: KeptIsoDate
    verifier: str
    at: datetime


class WithdrawInput(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"reason": "Opened twice for the same problem; handled under CAPA-2026-0007."}]})

    reason: Annotated[LongText, Field(min_length=1)] = Field(
        ..., description="Why the CAPA is withdrawn (kept on the record)")


class OwnerInput(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"unit": "production"}]})

    unit: UnitName = Field(..., description="The unit that owns the plan from now on")


class Capa(CapaAggregate):
    """A formal CAPA under the Corrective and Preventive Action Control Procedure (P-5.3.4)."""

    number: str
    source: CapaSource
    title: str
    description: str = ""
    kind: str | None = None
    reason: str | None = Field(None, description="For a recurrence: recurred or unimproved")
    defect_code: str | None = None
    customer_id: str | None = None
    product_code: str | None = None
    feedback_ids: list[str] = Field(default_factory=list)
    owner_unit: str | None = None
    owner: Head | None = Field(None, description="Who owns the plan: the owner unit's head")
    owner_confirmed: bool = Field(False, description="Quality named (or confirmed) the owner; "
                                  "false while it is the default a recurrence gave it")
    status: CapaStatus = CapaStatus.OPEN
    withdrawal: Withdrawal | None = None
    root_cause: CapaRootCause | None = None
    actions: list[CapaAction] = Field(default_factory=list)
    implementations: list[Implementation] = Field(default_factory=list)
    verifications: list[EffectivenessCheck] = Field(default_factory=list)
    opened_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    closed_at: datetime | None = None

    @model_validator(mode="before")
    @classmethod
    def _owner_named_by_quality(cls, data: Any) -> Any:
        """Not said (a CAPA Quality opened by hand, or one stored before defaults existed):
        an owner unit there is one Quality named."""
        if isinstance(data, dict) and "owner_confirmed" not in data:
            return data | {"owner_confirmed": data.get("owner_unit") is not None}
        return data

    @property
    def correlation_id(self) -> str:
        return self.feedback_ids[-1] if self.feedback_ids else self.id

    # -- opening -----------------------------------------------------------
    @classmethod
    def from_recurrence(cls, capa_id: str, number: str, recurrence: RecurrenceDetected,
                        actor: Actor, event_id: str, owner_unit: str | None = None,
                        owner: Head | None = None) -> "Capa":
        """P-5.3.4: opened on a recurrence. `owner_unit`, `owner`: the default owner (the
        unit responsible for the recurring complaints, and its head) until Quality confirms
        or changes it."""
        title = f"Recurring complaint ({recurrence.reason}): {recurrence.kind}"
        capa = cls(id=capa_id, number=number, source=CapaSource.RECURRENCE, title=title[:200],
                   description=(f"The same kind of complaint ({recurrence.kind}, defect "
                                f"{recurrence.defect_code}) {recurrence.reason}; "
                                f"complaints: {', '.join(recurrence.feedback_ids)}."),
                   kind=recurrence.kind, reason=recurrence.reason,
                   defect_code=recurrence.defect_code, customer_id=recurrence.customer_id,
                   product_code=recurrence.product_code,
                   feedback_ids=list(dict.fromkeys(recurrence.feedback_ids)),
                   owner_unit=owner_unit, owner=owner, owner_confirmed=False)
        capa.mark_applied(event_id)
        capa._opened(actor, event_id)
        return capa

    @classmethod
    def by_hand(cls, capa_id: str, number: str, create: CapaCreate, actor: Actor,
                owner: Head | None = None) -> "Capa":
        """Quality opens it; an owner unit it names is confirmed (`owner`: that unit's head)."""
        capa = cls(id=capa_id, number=number, source=CapaSource.MANUAL, title=create.title,
                   description=create.description, owner_unit=create.owner_unit,
                   owner=owner if create.owner_unit else None,
                   owner_confirmed=create.owner_unit is not None,
                   feedback_ids=list(dict.fromkeys(create.feedback_ids)))
        capa._opened(actor, None)
        return capa

    def _opened(self, actor: Actor, event_id: str | None) -> None:
        self.log(actor, "opened", {"number": self.number, "source": self.source.value,
                                   "title": self.title, "feedback_ids": self.feedback_ids,
                                   "owner_unit": self.owner_unit,
                                   "owner": _jsonable(self.owner),
                                   "owner_confirmed": self.owner_confirmed}, event_id=event_id)
        self.emit(CapaOpened(capa_id=self.id, number=self.number, source=self.source.value,
                             kind=self.kind, feedback_ids=self.feedback_ids, title=self.title,
                             owner_unit=self.owner_unit, owner_confirmed=self.owner_confirmed),
                  actor, causation_id=event_id)

    def link(self, recurrence: RecurrenceDetected, actor: Actor, event_id: str) -> None:
        """The same kind came back while this CAPA is still open: link the complaints."""
        new = [f for f in recurrence.feedback_ids if f not in self.feedback_ids]
        self.feedback_ids.extend(new)
        self.updated_at = utcnow()
        self.log(actor, "recurrence_linked", {"feedback_ids": new, "reason": recurrence.reason},
                 event_id=event_id)

    # -- rules ---------------------------------------------------------------
    def check_editor(self, actor: Actor) -> None:
        """Root cause, plan and implementation: Quality, or the people of the owner unit."""
        if _is_quality(actor):
            return
        if "unit" in actor.roles and self.owner_unit and actor.unit == self.owner_unit:
            return
        owner = f"Quality or unit {self.owner_unit!r}" if self.owner_unit else "Quality"
        raise Forbidden(f"Only {owner} may change CAPA {self.number}.")

    def _require(self, action: str, *allowed: CapaStatus, why: str = "") -> None:
        _refuse_if_withdrawn(f"CAPA {self.number}", action, self.withdrawal)
        if self.status not in allowed:
            raise Conflict(f"Cannot {action}: CAPA {self.number} is {self.status.value!r}; "
                           f"allowed only when {' or '.join(repr(s.value) for s in allowed)}."
                           + (f" {why}" if why else ""))

    def _maybe_planned(self, actor: Actor) -> None:
        if self.status is CapaStatus.OPEN and self.root_cause is not None and self.actions:
            self.status = CapaStatus.PLANNED
            self.log(actor, "planned", {"status": self.status.value})

    # -- the plan ------------------------------------------------------------
    def set_root_cause(self, root_cause: CapaRootCause, actor: Actor) -> None:
        self.check_editor(actor)
        self._require("change the root cause", CapaStatus.OPEN, CapaStatus.PLANNED)
        self.root_cause = root_cause
        self.updated_at = utcnow()
        self.log(actor, "root_cause_set", {"root_cause": root_cause.model_dump(mode="json")})
        self._maybe_planned(actor)

    def set_plan(self, plan: CapaPlan, actor: Actor) -> None:
        self.check_editor(actor)
        self._require("change the action plan", CapaStatus.OPEN, CapaStatus.PLANNED)
        self.actions = [CapaAction(no=i, **a.model_dump()) for i, a in
                        enumerate(plan.actions, start=1)]
        self.updated_at = utcnow()
        self.log(actor, "plan_set", {"actions": [a.model_dump(mode="json") for a in self.actions]})
        self._maybe_planned(actor)

    def implemented(self, note: str, actor: Actor) -> None:
        self.check_editor(actor)
        self._require("record the implementation", CapaStatus.PLANNED,
                      why="It needs a root cause and at least one action first.")
        now = utcnow()
        self.implementations.append(Implementation(note=note, at=now, by=actor.sub))
        self.status, self.updated_at = CapaStatus.IMPLEMENTED, now
        self.log(actor, "implemented", {"status": self.status.value}, note=note)

    # -- Quality ---------------------------------------------------------------
    def verify_effectiveness(self, check: EffectivenessInput, actor: Actor) -> None:
        """Effective: may close. Ineffective: the plan reopens, the check stays on record."""
        if not _is_quality(actor):
            raise Forbidden("Only Quality verifies the effectiveness of a CAPA (P-3.2).")
        self._require("verify effectiveness", CapaStatus.IMPLEMENTED,
                      why="Effectiveness is verified after the plan is implemented.")
        now = utcnow()
        if check.window_to >= now.date():
            # A result judged before the window is over says nothing about effectiveness.
            raise Conflict(f"The evaluation window ends on {check.window_to.isoformat()}: the "
                           f"effectiveness of CAPA {self.number} can be evaluated from "
                           f"{(check.window_to + timedelta(days=1)).isoformat()} on.")
        self.verifications.append(EffectivenessCheck(**check.model_dump(), verifier=actor.sub,
                                                     at=now))
        self.status = CapaStatus.EFFECTIVE if check.effective else CapaStatus.PLANNED
        self.updated_at = now
        self.log(actor, "effectiveness_verified",
                 {"effective": check.effective, "status": self.status.value},
                 note=check.evaluation)
        self.emit(CapaEffectivenessVerified(
            capa_id=self.id, effective=check.effective, criteria=check.criteria,
            evaluation=check.evaluation, verifier=actor.sub, feedback_ids=self.feedback_ids),
            actor)

    def close(self, actor: Actor) -> None:
        if not _is_quality(actor):
            raise Forbidden("Only Quality closes a CAPA.")
        _refuse_if_withdrawn(f"CAPA {self.number}", "close it", self.withdrawal)
        if self.status is not CapaStatus.EFFECTIVE:
            raise Conflict(f"A CAPA cannot close without an effective verification: CAPA "
                           f"{self.number} is {self.status.value!r}.")
        now = utcnow()
        self.status, self.closed_at, self.updated_at = CapaStatus.CLOSED, now, now
        self.log(actor, "closed", {"status": self.status.value})
        self.emit(CapaClosed(capa_id=self.id, kind=self.kind, feedback_ids=self.feedback_ids,
                             closed_at=now), actor)

    def withdraw(self, reason: str, actor: Actor) -> None:
        """Opened in error or overtaken: withdrawn with the reason, never deleted (P-5.4.2)."""
        if not _is_quality(actor):
            raise Forbidden("Only Quality withdraws a CAPA (P-3.2).")
        _refuse_if_withdrawn(f"CAPA {self.number}", "withdraw it", self.withdrawal)
        if self.status is CapaStatus.CLOSED:
            raise Conflict(f"Cannot withdraw CAPA {self.number}: it closed on "
                           f"{self.closed_at:%Y-%m-%d} after an effective verification.")
        now = utcnow()
        self.withdrawal = Withdrawal(reason=reason, at=now, by=actor.sub)
        self.status, self.updated_at = CapaStatus.WITHDRAWN, now
        self.log(actor, "withdrawn", {"status": self.status.value}, note=reason)
        self.emit(CapaWithdrawn(capa_id=self.id, number=self.number, kind=self.kind,
                                feedback_ids=self.feedback_ids, reason=reason,
                                withdrawn_at=now), actor)

    def assign_owner(self, unit: str, actor: Actor, head: Head | None = None) -> bool:
        """Quality names the unit that owns the plan (`head`: its head, the owner); its people
        may then work on it. Naming the default owner's unit confirms it."""
        if not _is_quality(actor):
            raise Forbidden("Only Quality assigns the owner unit of a CAPA (P-3.2).")
        self._require("change the owner unit", CapaStatus.OPEN, CapaStatus.PLANNED,
                      CapaStatus.IMPLEMENTED, CapaStatus.EFFECTIVE)
        if unit == self.owner_unit and self.owner_confirmed:
            return False  # already the owner: nothing to record
        previous, self.owner_unit, self.updated_at = self.owner_unit, unit, utcnow()
        self.owner, self.owner_confirmed = head, True
        self.log(actor, "owner_assigned", {"owner_unit": unit, "previous_owner_unit": previous,
                                           "owner": _jsonable(head), "owner_confirmed": True})
        self.emit(CapaOwnerAssigned(capa_id=self.id, number=self.number, owner_unit=unit,
                                    previous_owner_unit=previous,
                                    feedback_ids=self.feedback_ids), actor)
        return True
