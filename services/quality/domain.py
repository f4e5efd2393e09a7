"""The Complaint Handling Form as Quality works it: pure rules, no I/O.

A `Case` is created when Sales escalates a feedback (P-5.3.1) and lives through
rounds: each round has its own 3-day clock (P-F.5), analysis, responsible units
and, at the end, the quality record handed to Sales (or Quality's conclusion that no
corrective action is needed). A reopen (P-F.4 "not satisfied") or Sales returning an
inadequate record starts a new round; earlier rounds are kept as they were.
"""

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field

from services.quality.clock import Clock, ClockPolicy, clock_view
from shared.contracts import (
    ActionCompleted,
    CapaClosed,
    CapaOpened,
    ComplaintAccepted,
    ComplaintEscalated,
    ComplaintReopened,
    ComplaintReturned,
    CountermeasuresProposed,
    CountermeasuresRejected,
    CountermeasuresVerified,
    Disposition,
    EvidenceAdded,
    FeedbackClosed,
    FeedbackWithdrawn,
    MajorAlert,
    RecurrenceDetected,
    ResolutionReady,
    ResponsibilityAssigned,
    SlaAtRisk,
    SlaBreached,
    UnitOutcome,
    UnitRequest,
)
from shared.domain import Aggregate
from shared.errors import Conflict, Invalid
from shared.events import Actor, once_id
from shared.vocabulary import (
    AttachmentMeta,
    Category,
    Channel,
    Customer,
    Head,
    Money,
    NoActionOutcome,
    Product,
    ReturnedSample,
    Severity,
)

SERVICE = "quality"
SYSTEM = Actor.system(SERVICE)
MAX_TEXT = 20_000


class CaseStatus(StrEnum):
    OPEN = "open"                      # Quality analysing
    AWAITING_UNITS = "awaiting_units"  # responsibility assigned, countermeasures awaited
    RESOLVED = "resolved"              # the quality record went to Sales; the clock stopped
    CLOSED = "closed"                  # the customer is satisfied (feedback.closed)
    WITHDRAWN = "withdrawn"            # registered in error; nothing deleted


RUNNING = (CaseStatus.OPEN, CaseStatus.AWAITING_UNITS)  # the clock runs
# Not finished: Quality works it, or its record is with Sales until the customer is satisfied.
# What `cases_open` keeps (bounded by open work); closed and withdrawn cases are history.
OPEN_WORK = RUNNING + (CaseStatus.RESOLVED,)


class UnitStatus(StrEnum):
    REQUESTED = "requested"      # Quality asked; the unit investigates
    PROPOSED = "proposed"        # countermeasures await Quality's verification
    REJECTED = "rejected"        # sent back with a reason; the unit reworks them
    ACCEPTED = "accepted"        # Quality verified them
    IMPLEMENTED = "implemented"  # the unit carried out every action


def kinds_of(customer_id: str, product_code: str | None, defect_code: str) -> list[str]:
    """P-5.3.4: the kinds a complaint belongs to: (customer or product) + defect."""
    kinds = [f"customer:{customer_id}|defect:{defect_code}"]
    if product_code:
        kinds.append(f"product:{product_code}|defect:{defect_code}")
    return kinds


def action_id_for(register_no: str, unit: str, round_no: int) -> str:
    return f"{register_no}-{unit}-r{round_no}"


def check_assignment(defect_code: str, units: list[str], catalogue: dict[str, str],
                     known_units: list[str]) -> None:
    """The defect code must be in the catalogue; units known and named once (P-F.3)."""
    details: list[dict[str, str]] = []
    if defect_code not in catalogue:
        details.append({"loc": "body.defect_code",
                        "msg": f"unknown defect code {defect_code!r}; known codes: "
                               f"{', '.join(sorted(catalogue))}"})
    if not units:
        details.append({"loc": "body.units", "msg": "name at least one responsible unit"})
    seen: set[str] = set()
    for i, unit in enumerate(units):
        if unit not in known_units:
            details.append({"loc": f"body.units.{i}.unit",
                            "msg": f"unknown unit {unit!r}; known units: {', '.join(known_units)}"})
        elif unit in seen:
            details.append({"loc": f"body.units.{i}.unit", "msg": f"unit {unit!r} named twice"})
        seen.add(unit)
    if details:
        raise Invalid(f"Invalid request: {details[0]['loc']}: {details[0]['msg']}", details)


# ------------------------------------------------------------------ parts of a case


class SiteVisit(BaseModel):
    """P-5.3.1: Quality follows the case up at the customer or on site."""

    visited_at: datetime
    location: str
    participants: list[str]
    findings: str
    recorded_by: str
    recorded_at: datetime


class MajorReview(BaseModel):
    """P-5.3.5: the heads' review meeting and the solution drafted for the customer."""

    held_at: datetime
    participants: list[str]
    decisions: str
    drafted_solution: str
    recorded_by: str
    recorded_at: datetime


class MajorHandling(BaseModel):
    """P-5.3.5: why the case is major, who was summoned, and their reviews."""

    flagged_at: datetime
    flagged_by: str
    reason: str | None = None
    heads: list[Head] = Field(default_factory=list)
    alerted_at: datetime | None = None
    reviews: list[MajorReview] = Field(default_factory=list)


class FollowUp(BaseModel):
    """P-5.3.4: Quality keeps tracking after the case was handled."""

    checked_at: datetime
    recurred: bool
    note: str | None = None
    recorded_by: str
    recorded_at: datetime


class Proposal(BaseModel):
    """What the unit proposed (P-3.3, P-5.3.2)."""

    containment: str
    root_cause: str
    root_cause_category: str
    corrective: list[str] = Field(default_factory=list)
    preventive: list[str] = Field(default_factory=list)
    disposition: Disposition | None = None
    proposed_at: datetime


class Rejection(BaseModel):
    reason: str
    at: datetime
    by: str


class UnitEntry(BaseModel):
    """One responsible unit in one round: what is asked, what it proposed, Quality's verdict."""

    unit: str
    request: str
    action_id: str
    requested_at: datetime | None = Field(
        None, description="When Quality asked: capa opens the action request moments later "
        "(until it has, `GET /actions/{action_id}` answers 404); none on entries from before")
    status: UnitStatus = UnitStatus.REQUESTED
    proposal: Proposal | None = None
    proposals: int = 0
    rejections: list[Rejection] = Field(default_factory=list)
    verified_at: datetime | None = None
    verified_by: str | None = None
    verification_note: str | None = None
    implemented_at: datetime | None = None

    @property
    def awaiting_verification(self) -> bool:
        return self.proposal is not None and self.verified_at is None and \
            self.status in (UnitStatus.PROPOSED, UnitStatus.IMPLEMENTED)

    def outcome(self) -> UnitOutcome:
        p = self.proposal
        assert p is not None  # only verified entries, which have a proposal
        measures = [f"Containment: {p.containment}"] if p.containment else []
        measures += [f"Corrective: {c}" for c in p.corrective]
        measures += [f"Preventive: {c}" for c in p.preventive]
        return UnitOutcome(unit=self.unit, action_id=self.action_id, root_cause=p.root_cause,
                           countermeasures=measures, disposition=p.disposition)


class Round(BaseModel):
    """One pass through Quality: its clock, analysis, units and quality record."""

    number: int
    received_at: datetime
    due_at: datetime
    at_risk_at: datetime
    reopen_comment: str | None = None
    returned_reason: str | None = Field(None, description="Sales sent the record back "
                                        "(P-F.4 review); not a customer reopen")
    resolved_at: datetime | None = None
    stopped_at: datetime | None = None
    at_risk_flagged_at: datetime | None = None
    breached_flagged_at: datetime | None = None
    preliminary_cause: str | None = None
    defect_code: str | None = None
    defect_name: str | None = None
    assigned_at: datetime | None = None
    assigned_by: str | None = None
    units: list[UnitEntry] = Field(default_factory=list)
    outcome: NoActionOutcome | None = Field(None, description="Concluded without corrective "
                                            "action: not the plant's fault")
    summary: str | None = None
    record: ResolutionReady | None = None

    def clock(self, now: datetime) -> Clock:
        return clock_view(received_at=self.received_at, due_at=self.due_at,
                          at_risk_at=self.at_risk_at, resolved_at=self.resolved_at,
                          stopped_at=self.stopped_at, now=now)

    @property
    def running(self) -> bool:
        return self.resolved_at is None and self.stopped_at is None

    def unit(self, name: str) -> UnitEntry | None:
        return next((u for u in self.units if u.unit == name), None)

    def by_action(self, action_id: str) -> UnitEntry | None:
        return next((u for u in self.units if u.action_id == action_id), None)


class CapaLink(BaseModel):
    capa_id: str
    number: str | None = None
    opened_at: datetime
    closed_at: datetime | None = None


# ------------------------------------------------------------------ the aggregate


class Case(Aggregate):
    """The Complaint Handling Form; `_id` = the feedback id."""

    producer: ClassVar[str] = SERVICE

    register_no: str
    customer: Customer
    product: Product | None = None
    channel: Channel
    category: Category
    severity: Severity
    description: str
    quantity_affected: int | None = None
    estimated_loss: Money | None = None
    feedback_received_at: datetime
    note: str | None = None
    attachments: list[AttachmentMeta] = Field(default_factory=list)
    samples: list[ReturnedSample] = Field(default_factory=list)
    status: CaseStatus = CaseStatus.OPEN
    rounds: list[Round] = Field(default_factory=list)
    major: MajorHandling | None = None
    site_visits: list[SiteVisit] = Field(default_factory=list)
    follow_ups: list[FollowUp] = Field(default_factory=list)
    capas: list[CapaLink] = Field(default_factory=list)
    kinds: list[str] = Field(default_factory=list, description="P-5.3.4 kinds it counted in")
    unimproved_flagged_at: datetime | None = None
    closed_at: datetime | None = None
    withdrawn_reason: str | None = None

    # -- reading ---------------------------------------------------------------
    @property
    def current(self) -> Round:
        return self.rounds[-1]

    @property
    def round_no(self) -> int:
        return self.current.number

    @property
    def defect_code(self) -> str | None:
        """The latest defect code Quality determined, in any round."""
        return next((r.defect_code for r in reversed(self.rounds) if r.defect_code), None)

    @property
    def open_capas(self) -> list[CapaLink]:
        return [c for c in self.capas if c.closed_at is None]

    def clock(self, now: datetime) -> Clock:
        return self.current.clock(now)

    def _require(self, allowed: tuple[CaseStatus, ...], doing: str) -> None:
        if self.status in allowed:
            return
        why = {
            CaseStatus.OPEN: "it is still being analysed (no responsibility assigned yet)",
            CaseStatus.AWAITING_UNITS: f"responsibility was already assigned in round "
                                       f"{self.round_no}; the units' countermeasures are awaited",
            CaseStatus.RESOLVED: "the quality record already went to Sales; a reopen by Sales "
                                 "starts a new round",
            CaseStatus.CLOSED: "the case is closed",
            CaseStatus.WITHDRAWN: "the feedback was withdrawn",
        }[self.status]
        raise Conflict(f"Cannot {doing} on case {self.register_no} ({self.status}): {why}.")

    # -- the form arrives (P-5.3.1, P-F.5, P-5.3.5) -----------------------------------
    @classmethod
    def receive(cls, form: ComplaintEscalated, *, event_id: str, actor: Actor, now: datetime,
                policy: ClockPolicy, heads: list[Head]) -> "Case":
        case = cls(
            id=form.feedback_id, register_no=form.register_no, customer=form.customer,
            product=form.product, channel=form.channel, category=form.category,
            severity=form.severity, description=form.description,
            quantity_affected=form.quantity_affected, estimated_loss=form.estimated_loss,
            feedback_received_at=form.received_at, note=form.note,
            attachments=list(form.attachments), samples=list(form.samples),
        )
        case._start_round(1, now, policy, event_id, trigger="form")
        case.log(actor, "received", {"status": case.status, "round": 1,
                                     "due_at": case.current.due_at}, event_id=event_id,
                 note=form.note)
        if form.severity == Severity.MAJOR:
            case._alert_major(SYSTEM, now, heads, "registered as major by Sales", event_id)
        case.mark_applied(event_id)
        return case

    def _start_round(self, number: int, now: datetime, policy: ClockPolicy,
                     causation_id: str | None, *,
                     trigger: Literal["form", "reopened", "returned"],
                     reopen_comment: str | None = None,
                     returned_reason: str | None = None) -> None:
        rnd = Round(number=number, received_at=now, due_at=policy.due_at(now),
                    at_risk_at=policy.at_risk_at(now), reopen_comment=reopen_comment,
                    returned_reason=returned_reason)
        self.rounds.append(rnd)
        self.status = CaseStatus.OPEN
        self.emit(ComplaintAccepted(feedback_id=self.id, register_no=self.register_no,
                                    round=number, received_at=rnd.received_at, due_at=rnd.due_at,
                                    at_risk_at=rnd.at_risk_at, severity=self.severity,
                                    trigger=trigger),
                  SYSTEM, causation_id)

    # -- major complaint (P-5.3.5) ---------------------------------------------------
    def _alert_major(self, actor: Actor, now: datetime, heads: list[Head], reason: str | None,
                     causation_id: str | None) -> None:
        self.severity = Severity.MAJOR
        self.major = MajorHandling(flagged_at=now, flagged_by=actor.sub, reason=reason,
                                   heads=heads, alerted_at=now)
        self.emit(MajorAlert(feedback_id=self.id, register_no=self.register_no,
                             customer=self.customer, product=self.product,
                             description=self.description, heads=heads), actor, causation_id)
        self.log(actor, "major_alert", {"severity": self.severity,
                                        "heads": [h.name for h in heads]}, note=reason)

    def flag_major(self, reason: str, heads: list[Head], actor: Actor, now: datetime) -> None:
        if self.major is not None:
            raise Conflict(f"Case {self.register_no} is already major; its heads were summoned "
                           f"at {self.major.alerted_at:%Y-%m-%d %H:%M} UTC.")
        self._require(RUNNING + (CaseStatus.RESOLVED,), "flag the case major")
        self._alert_major(actor, now, heads, reason, None)

    def record_major_review(self, review: MajorReview, actor: Actor) -> None:
        if self.major is None:
            raise Conflict(f"Case {self.register_no} is not major; a major review (P-5.3.5) is "
                           f"held only for major complaints (flag it major first).")
        self._require(RUNNING + (CaseStatus.RESOLVED, CaseStatus.CLOSED), "record a major review")
        self.major.reviews.append(review)
        self.log(actor, "major_review_recorded", {"held_at": review.held_at,
                                                  "participants": review.participants},
                 note=review.decisions)

    # -- follow up (P-5.3.1, P-5.3.4) -----------------------------------------------
    def record_site_visit(self, visit: SiteVisit, actor: Actor) -> None:
        self._require(RUNNING + (CaseStatus.RESOLVED,), "record a site visit")
        self.site_visits.append(visit)
        self.log(actor, "site_visit_recorded", {"visited_at": visit.visited_at,
                                                "location": visit.location},
                 note=visit.findings)

    def record_follow_up(self, follow_up: FollowUp, actor: Actor) -> None:
        if self.status not in (CaseStatus.RESOLVED, CaseStatus.CLOSED):
            raise Conflict(f"Cannot record a follow-up check on case {self.register_no} "
                           f"({self.status}): follow-ups track a handled complaint, after the "
                           f"quality record went to Sales.")
        self.follow_ups.append(follow_up)
        self.log(actor, "follow_up_recorded", {"checked_at": follow_up.checked_at,
                                               "recurred": follow_up.recurred},
                 note=follow_up.note)

    # -- analysis and responsibility (P-F.3, P-3.2) ------------------------------------
    def assign_responsibility(self, *, preliminary_cause: str, defect_code: str,
                              defect_name: str, units: list[tuple[str, str]], actor: Actor,
                              now: datetime) -> None:
        self._require((CaseStatus.OPEN,), "assign responsibility")
        rnd = self.current
        rnd.preliminary_cause, rnd.defect_code, rnd.defect_name = \
            preliminary_cause, defect_code, defect_name
        rnd.assigned_at, rnd.assigned_by = now, actor.sub
        rnd.units = [UnitEntry(unit=u, request=req, requested_at=now,
                               action_id=action_id_for(self.register_no, u, rnd.number))
                     for u, req in units]
        self.status = CaseStatus.AWAITING_UNITS
        for kind in kinds_of(self.customer.id, self.product.code if self.product else None,
                             defect_code):
            if kind not in self.kinds:
                self.kinds.append(kind)
        self.emit(ResponsibilityAssigned(
            feedback_id=self.id, register_no=self.register_no, round=rnd.number,
            preliminary_cause=preliminary_cause, defect_code=defect_code,
            customer_id=self.customer.id, product_code=self.product.code if self.product else None,
            units=[UnitRequest(unit=e.unit, request=e.request, action_id=e.action_id)
                   for e in rnd.units],
            # the complaint as the units need to see it (P-5.3.2 "with the same attachments")
            customer_name=self.customer.name, severity=self.severity, product=self.product,
            quantity_affected=self.quantity_affected, description=self.description,
            defect_name=defect_name, attachments=list(self.attachments),
            samples=list(self.samples)), actor)
        self.log(actor, "responsibility_assigned",
                 {"status": self.status, "defect_code": defect_code,
                  "units": [e.unit for e in rnd.units]}, note=preliminary_cause)

    # -- the units answer (P-3.3, P-5.3.2) --------------------------------------------
    def _entry_for_action(self, action_id: str) -> UnitEntry | None:
        entry = self.current.by_action(action_id)
        return entry if entry is not None and self.status in RUNNING else None

    def record_proposal(self, proposed: CountermeasuresProposed, *, actor: Actor,
                        now: datetime, event_id: str) -> None:
        entry = self._entry_for_action(proposed.action_id)
        if entry is None or entry.verified_at is not None:
            self.log(actor, "proposal_ignored", {"action_id": proposed.action_id},
                     note="not an open request of the current round", event_id=event_id)
            return
        entry.proposal = Proposal(
            containment=proposed.containment, root_cause=proposed.root_cause,
            root_cause_category=proposed.root_cause_category,
            corrective=list(proposed.corrective), preventive=list(proposed.preventive),
            disposition=proposed.disposition, proposed_at=now)
        entry.proposals += 1
        entry.status = UnitStatus.PROPOSED
        self.log(actor, "countermeasures_proposed", {"unit": entry.unit, "status": entry.status,
                                                     "proposal": entry.proposals},
                 note=proposed.root_cause, event_id=event_id)

    def record_completion(self, completed: ActionCompleted, *, actor: Actor,
                          event_id: str) -> None:
        entry = self.current.by_action(completed.action_id)
        if entry is None:
            self.log(actor, "completion_ignored", {"action_id": completed.action_id},
                     note="not a request of the current round", event_id=event_id)
            return
        entry.status = UnitStatus.IMPLEMENTED
        entry.implemented_at = completed.completed_at
        self.log(actor, "countermeasures_implemented", {"unit": entry.unit,
                                                        "status": entry.status},
                 event_id=event_id)

    # -- verification and the quality record (P-5.3.1, P-F.5) -----------------------------
    def verify(self, *, unit: str, accepted: bool, reason: str | None, summary: str | None,
               actor: Actor, now: datetime) -> None:
        self._require((CaseStatus.AWAITING_UNITS,), "verify countermeasures")
        rnd = self.current
        entry = rnd.unit(unit)
        if entry is None:
            raise Conflict(f"{unit!r} is not a responsible unit of round {rnd.number} of case "
                           f"{self.register_no} (units: {', '.join(u.unit for u in rnd.units)}).")
        if not entry.awaiting_verification:
            raise Conflict(f"{unit!r} has no countermeasures waiting for verification on case "
                           f"{self.register_no} (its status is {entry.status}).")
        if summary:
            rnd.summary = summary
        if not accepted:
            if not reason:
                raise Invalid("A rejection needs a reason the unit can act on.",
                              [{"loc": "body.reason", "msg": "required when rejecting"}])
            entry.status = UnitStatus.REJECTED
            entry.rejections.append(Rejection(reason=reason, at=now, by=actor.sub))
            self.emit(CountermeasuresRejected(feedback_id=self.id, action_id=entry.action_id,
                                              unit=unit, reason=reason), actor)
            self.log(actor, "countermeasures_rejected", {"unit": unit, "status": entry.status},
                     note=reason)
            return
        entry.status = UnitStatus.ACCEPTED
        entry.verified_at, entry.verified_by, entry.verification_note = now, actor.sub, reason
        self.emit(CountermeasuresVerified(feedback_id=self.id, action_id=entry.action_id,
                                          unit=unit, note=reason), actor)
        self.log(actor, "countermeasures_verified", {"unit": unit, "status": entry.status},
                 note=reason)
        if all(e.verified_at is not None for e in rnd.units):
            self._resolve(actor, now)

    def conclude_without_action(self, *, outcome: NoActionOutcome, finding: str,
                                defect_code: str | None, defect_name: str | None,
                                summary: str | None, actor: Actor, now: datetime) -> None:
        """P-F.3: the complaint is not the plant's fault; no unit is asked to act. The
        record goes to Sales as for a handled case and the clock stops (P-F.5)."""
        if self.status == CaseStatus.AWAITING_UNITS:
            open_units = [u.unit for u in self.current.units if u.verified_at is None]
            raise Conflict(f"Cannot conclude case {self.register_no} without corrective action: "
                           f"round {self.round_no} already asked {', '.join(open_units)} to act "
                           f"and their requests are open; verify or reject their "
                           f"countermeasures instead.")
        self._require((CaseStatus.OPEN,), "conclude without corrective action")
        rnd = self.current
        rnd.preliminary_cause, rnd.outcome = finding, outcome
        rnd.defect_code, rnd.defect_name = defect_code, defect_name
        if summary:
            rnd.summary = summary
        self.log(actor, "concluded_without_action",
                 {"outcome": outcome, "defect_code": defect_code}, note=finding)
        self._resolve(actor, now)

    def return_from_sales(self, returned: ComplaintReturned, *, actor: Actor, now: datetime,
                          policy: ClockPolicy, event_id: str) -> None:
        """P-F.4 review: Sales found the record inadequate. A new round with its own clock
        (the form is with Quality again), kept apart from customer reopens."""
        if self.status != CaseStatus.RESOLVED or returned.round != self.round_no:
            self.log(actor, "return_noted", {"round": returned.round}, note=returned.reason,
                     event_id=event_id)
            return
        self._start_round(self.round_no + 1, now, policy, event_id, trigger="returned",
                          returned_reason=returned.reason)
        self.log(actor, "returned_by_sales", {"status": self.status, "round": self.round_no,
                                              "due_at": self.current.due_at},
                 note=returned.reason, event_id=event_id)

    def _resolve(self, actor: Actor, now: datetime) -> None:
        """Every unit's countermeasures are verified (or Quality concluded without action):
        the record goes to Sales; the clock stops."""
        rnd = self.current
        rnd.resolved_at = now
        self.status = CaseStatus.RESOLVED
        met = now <= rnd.due_at
        if not met and rnd.breached_flagged_at is None:
            self._flag_breached(now)  # late by less than a check interval: still a breach
        outcomes = [e.outcome() for e in rnd.units]
        rnd.record = ResolutionReady(
            feedback_id=self.id, register_no=self.register_no, round=rnd.number,
            cause=rnd.preliminary_cause or "", defect_code=rnd.defect_code or "",
            outcomes=outcomes, summary=rnd.summary or self._summary(outcomes),
            received_at=rnd.received_at, resolved_at=now, due_at=rnd.due_at, met_deadline=met,
            outcome=rnd.outcome)
        self.emit(rnd.record, actor)
        self.log(actor, "resolved", {"status": self.status, "resolved_at": now,
                                     "met_deadline": met})

    def _summary(self, outcomes: list[UnitOutcome]) -> str:
        rnd = self.current
        defect = f" Defect {rnd.defect_code} ({rnd.defect_name})." if rnd.defect_code else ""
        parts = [f"Cause: {rnd.preliminary_cause}.{defect}"]
        if rnd.outcome is not None:
            parts.append(f"Concluded without corrective action: {rnd.outcome.value}.")
        for o in outcomes:
            parts.append(f"{o.unit}: root cause {o.root_cause}; countermeasures: "
                         f"{'; '.join(o.countermeasures) or 'none'}.")
        return " ".join(parts)[:MAX_TEXT]

    # -- the 3-day clock and unimproved cases (P-F.5, P-5.3.4) ---------------------------
    def check_clock(self, now: datetime) -> bool:
        """Flag at-risk / breached once per round; True when something changed."""
        rnd = self.current
        if self.status not in RUNNING or not rnd.running:
            return False
        if now > rnd.due_at and rnd.breached_flagged_at is None:
            if rnd.at_risk_flagged_at is None:
                rnd.at_risk_flagged_at = now  # passed unseen; the breach says more
            self._flag_breached(now)
            return True
        if now >= rnd.at_risk_at and rnd.at_risk_flagged_at is None:
            rnd.at_risk_flagged_at = now
            # Deterministic ids: two checker instances flagging the same round publish
            # the same event, which consumers apply once (safe with several instances).
            self.emit(SlaAtRisk(feedback_id=self.id, register_no=self.register_no,
                                round=rnd.number, due_at=rnd.due_at, severity=self.severity),
                      SYSTEM, event_id=once_id(self.id, rnd.number, "sla_at_risk"))
            self.log(SYSTEM, "sla_at_risk", {"round": rnd.number, "due_at": rnd.due_at})
            return True
        return False

    def _flag_breached(self, now: datetime) -> None:
        rnd = self.current
        rnd.breached_flagged_at = now
        self.emit(SlaBreached(feedback_id=self.id, register_no=self.register_no,
                              round=rnd.number, due_at=rnd.due_at, severity=self.severity),
                  SYSTEM, event_id=once_id(self.id, rnd.number, "sla_breached"))
        self.log(SYSTEM, "sla_breached", {"round": rnd.number, "due_at": rnd.due_at})

    def check_unimproved(self, now: datetime, unimproved_after: timedelta) -> bool:
        """P-5.3.4: not resolved long after it was first received: ask for a CAPA, once."""
        first = self.rounds[0].received_at
        defect = self.defect_code
        if (self.status not in RUNNING or self.unimproved_flagged_at is not None
                or defect is None or now < first + unimproved_after or self.open_capas):
            return False
        self.unimproved_flagged_at = now
        product = self.product.code if self.product else None
        self.emit(RecurrenceDetected(kind=kinds_of(self.customer.id, product, defect)[0],
                                     reason="unimproved", feedback_ids=[self.id],
                                     defect_code=defect, customer_id=self.customer.id,
                                     product_code=product),
                  SYSTEM, event_id=once_id(self.id, "unimproved"))
        self.log(SYSTEM, "unimproved", {"since": first, "defect_code": defect})
        return True

    # -- what Sales and the CAPA procedure tell us -------------------------------------
    def add_evidence(self, evidence: EvidenceAdded, *, actor: Actor, event_id: str) -> None:
        changes: dict[str, Any] = {}
        if evidence.attachment and evidence.attachment not in self.attachments:
            self.attachments.append(evidence.attachment)
            changes["attachment"] = evidence.attachment.filename
        if evidence.sample and evidence.sample not in self.samples:
            self.samples.append(evidence.sample)
            changes["sample"] = evidence.sample.location
        self.log(actor, "evidence_added", changes, event_id=event_id)

    def reopen(self, reopened: ComplaintReopened, *, actor: Actor, now: datetime,
               policy: ClockPolicy, event_id: str) -> None:
        if self.status not in (CaseStatus.RESOLVED, CaseStatus.CLOSED):
            self.log(actor, "reopen_noted", {"reopen_count": reopened.reopen_count},
                     note=reopened.comment, event_id=event_id)
            return
        self._start_round(self.round_no + 1, now, policy, event_id, trigger="reopened",
                          reopen_comment=reopened.comment)
        self.closed_at = None
        self.log(actor, "reopened", {"status": self.status, "round": self.round_no,
                                     "due_at": self.current.due_at,
                                     "reopen_count": reopened.reopen_count},
                 note=reopened.comment, event_id=event_id)

    def close(self, closed: FeedbackClosed, *, actor: Actor, event_id: str) -> None:
        if self.status == CaseStatus.WITHDRAWN:
            return self.log(actor, "close_ignored", note="withdrawn", event_id=event_id)
        if self.current.running:
            self.current.stopped_at = closed.closed_at
        self.status, self.closed_at = CaseStatus.CLOSED, closed.closed_at
        self.log(actor, "closed", {"status": self.status}, event_id=event_id)

    def withdraw(self, withdrawn: FeedbackWithdrawn, *, actor: Actor, now: datetime,
                 event_id: str) -> None:
        if self.current.running:
            self.current.stopped_at = now
        self.status, self.withdrawn_reason = CaseStatus.WITHDRAWN, withdrawn.reason
        self.log(actor, "withdrawn", {"status": self.status}, note=withdrawn.reason,
                 event_id=event_id)

    def link_capa(self, opened: CapaOpened, *, actor: Actor, now: datetime,
                  event_id: str) -> None:
        if all(c.capa_id != opened.capa_id for c in self.capas):
            self.capas.append(CapaLink(capa_id=opened.capa_id, number=opened.number,
                                       opened_at=now))
        self.log(actor, "capa_linked", {"capa": opened.number}, event_id=event_id)

    def capa_closed(self, closed: CapaClosed, *, actor: Actor, event_id: str) -> None:
        for link in self.capas:
            if link.capa_id == closed.capa_id:
                link.closed_at = closed.closed_at
        self.log(actor, "capa_closed", {"capa_id": closed.capa_id}, event_id=event_id)

    # -- storage -------------------------------------------------------------------
    def to_document(self) -> dict[str, Any]:
        """BSON-safe state, plus flat copies of the current round for indexed queries."""
        return super().to_document() | self._flat()

    def open_summary(self) -> dict[str, Any] | None:
        """Its line in `cases_open` while it is open work, else None: the fields the clock
        watcher, the gauge and the board filter and sort by, under the names the store uses,
        so one query serves either collection."""
        if self.status not in OPEN_WORK:
            return None
        rnd = self.current
        product = self.product
        return {"register_no": self.register_no, "status": self.status,
                "severity": self.severity,
                "customer": {"id": self.customer.id, "name": self.customer.name},
                "product": {"code": product.code, "name": product.name} if product else None,
                # the board's row (api.CaseRow): the clock as the round keeps it
                "round_received_at": rnd.received_at, "stopped_at": rnd.stopped_at,
                } | self._flat()

    def _flat(self) -> dict[str, Any]:
        rnd = self.current
        stopped = rnd.resolved_at or rnd.stopped_at
        frozen = rnd.clock(stopped) if stopped else None
        return {
            "current_round": rnd.number, "due_at": rnd.due_at, "at_risk_at": rnd.at_risk_at,
            "resolved_at": rnd.resolved_at,
            "at_risk_flagged": rnd.at_risk_flagged_at is not None,
            "breached_flagged": rnd.breached_flagged_at is not None,
            "met_deadline": rnd.record.met_deadline if rnd.record else None,
            "first_received_at": self.rounds[0].received_at,
            "defect_code": self.defect_code, "unit_names": [u.unit for u in rnd.units],
            "unimproved_flagged": self.unimproved_flagged_at is not None,
            # the stopped clock's flags, for the at_risk / breached filters
            "clock_at_risk": frozen.at_risk if frozen else None,
            "clock_breached": frozen.breached if frozen else None,
        }
