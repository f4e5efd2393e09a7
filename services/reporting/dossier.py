"""The Complaint Handling Report's content (P-5.3.1), folded from one complaint's events.

8D-style: D1 the team, D2 the problem and its evidence, D3 containment, D4 root cause, D5
corrective actions, D6 their verification, D7 preventive actions and the CAPA, D8 closure.
Built on demand from the events the register row names (`FeedbackRow.applied_events`, read
back from the history by `_id`): nothing is written per event for it. The content is a pure
function of the events, so its canonical JSON and that text's sha256 are what a signature
signs (`documents`): the same events give the same hash, a new fact gives another.

Pure: no database, broker or web framework.
"""

import hashlib
import json
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from shared import contracts as c
from shared.events import Actor, Contract, Envelope
from shared.vocabulary import Language, Product, Severity


class Person(BaseModel):
    name: str = Field(..., description="The name the token carried, else the user id")
    sub: str
    unit: str | None = None

    @classmethod
    def of(cls, actor: Actor) -> "Person":
        return cls(name=actor.name or actor.sub, sub=actor.sub, unit=actor.unit)


class Head(BaseModel):
    unit: str
    name: str


class Team(BaseModel):
    """D1: who handled the complaint."""

    sales: list[Person] = Field(default_factory=list)
    quality: list[Person] = Field(default_factory=list)
    units: list[str] = Field(default_factory=list, description="Responsible units")
    unit_people: list[Person] = Field(default_factory=list)
    heads: list[Head] = Field(default_factory=list, description="Summoned for a major "
                              "complaint (P-5.3.5)")


class Evidence(BaseModel):
    """D2: a photo or document, or returned nonconforming samples (P-5.3.1)."""

    kind: Literal["attachment", "sample"]
    filename: str | None = None
    content_type: str | None = None
    size: int | None = None
    sha256: str | None = None
    quantity: int | None = None
    received_on: date | None = None
    location: str | None = None
    note: str | None = None


class DispositionFacts(BaseModel):
    type: str
    quantity: int
    cost: str | None = Field(None, description="Amount and currency, e.g. `860.00 CNY`")
    note: str | None = None


class Verification(BaseModel):
    accepted: bool
    note: str | None = None
    by: Person
    at: datetime


class UnitAnswer(BaseModel):
    """One responsible unit's answer in one round (P-3.3, P-5.3.2): the latest proposal."""

    unit: str
    action_id: str
    request: str | None = None
    containment: str | None = None
    root_cause: str | None = None
    root_cause_category: str | None = None
    corrective: list[str] = Field(default_factory=list)
    preventive: list[str] = Field(default_factory=list)
    disposition: DispositionFacts | None = None
    proposed_by: Person | None = None
    proposed_at: datetime | None = None
    verification: Verification | None = None
    completed_at: datetime | None = None


class Round(BaseModel):
    """One round with Quality: the form, then one per reopen or return (P-F.4)."""

    round: int
    trigger: str | None = Field(None, examples=["form", "reopened", "returned"])
    reason: str | None = Field(None, description="The customer's comment on a reopen, or "
                               "what Sales found lacking on a return")
    received_at: datetime | None = None
    due_at: datetime | None = None
    preliminary_cause: str | None = None
    defect_code: str | None = None
    defect_name: str | None = None
    answers: list[UnitAnswer] = Field(default_factory=list)
    resolved_at: datetime | None = None
    met_deadline: bool | None = None
    cause: str | None = None
    summary: str | None = None
    outcome: str | None = Field(None, description="Concluded without corrective action")


class CapaLink(BaseModel):
    """D7: a formal CAPA opened for this complaint (P-5.3.4)."""

    capa_id: str
    number: str
    title: str
    status: Literal["open", "closed", "withdrawn"] = "open"
    effective: bool | None = None


class Closure(BaseModel):
    closed_at: datetime
    satisfied: bool = True


class Dossier(BaseModel):
    """What the Complaint Handling Report says; every field a fact from the events."""

    feedback_id: str
    register_no: str | None = None
    language: Language = Language.ZH
    customer_id: str | None = None
    customer_name: str | None = None
    contact_person: str | None = None
    product: Product | None = None
    category: str | None = None
    severity: str | None = None
    channel: str | None = None
    received_at: datetime | None = None
    quantity_affected: int | None = None
    description: str | None = None
    form_opened_at: datetime | None = None
    form_note: str | None = None
    team: Team = Field(default_factory=Team)
    evidence: list[Evidence] = Field(default_factory=list)
    rounds: list[Round] = Field(default_factory=list)
    capas: list[CapaLink] = Field(default_factory=list)
    closure: Closure | None = None

    # -- which sections the complaint has (the others are left out) --------------------
    def answers(self) -> list[tuple[Round, UnitAnswer]]:
        return [(r, a) for r in self.rounds for a in r.answers]

    def has(self, section: str) -> bool:
        answers = [a for _, a in self.answers()]
        return {
            "D1": bool(self.team.quality or self.team.units or self.team.heads),
            "D2": True,
            "D3": any(a.containment for a in answers),
            "D4": any(r.preliminary_cause or r.cause for r in self.rounds)
            or any(a.root_cause for a in answers),
            "D5": any(a.corrective or a.disposition for a in answers),
            "D6": any(a.verification for a in answers),
            "D7": any(a.preventive for a in answers) or bool(self.capas),
            "D8": any(r.resolved_at for r in self.rounds) or self.closure is not None,
        }[section]

    def canonical(self) -> str:
        """The exact text a signature signs: sorted keys, no spaces, UTF-8 as is."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True,
                          separators=(",", ":"), ensure_ascii=False)

    def sha256(self) -> str:
        return hashlib.sha256(self.canonical().encode()).hexdigest()


SECTIONS = ("D1", "D2", "D3", "D4", "D5", "D6", "D7", "D8")


# ------------------------------------------------------------------ the fold


class _Fold:
    def __init__(self, feedback_id: str):
        self.d = Dossier(feedback_id=feedback_id)
        self.rounds: dict[int, Round] = {}
        self.action_round: dict[str, int] = {}  # action id -> its round
        self.answers: dict[str, UnitAnswer] = {}  # action id -> the unit's answer
        self.reopen_comments: dict[int, str | None] = {}  # reopen count -> comment
        self.returns: list[str] = []

    def round(self, number: int) -> Round:
        if number not in self.rounds:
            self.rounds[number] = Round(round=number)
        return self.rounds[number]

    def answer(self, action_id: str, unit: str) -> UnitAnswer:
        if action_id not in self.answers:
            self.answers[action_id] = UnitAnswer(unit=unit, action_id=action_id)
        return self.answers[action_id]

    def person(self, people: list[Person], actor: Actor) -> None:
        if actor.roles == ("system",):
            return
        if all(p.sub != actor.sub for p in people):
            people.append(Person.of(actor))

    def facts(self, p: c.FeedbackFacts) -> None:
        d = self.d
        d.register_no = p.register_no
        self.customer(p.customer)
        d.channel, d.category = p.channel.value, p.category.value
        d.severity = p.severity.value if d.severity != Severity.MAJOR.value else d.severity
        d.product, d.received_at = p.product, p.received_at
        d.quantity_affected, d.description = p.quantity_affected, p.description

    def customer(self, customer: Any) -> None:
        d = self.d
        d.customer_id, d.customer_name = customer.id, customer.name
        d.contact_person, d.language = customer.contact_person, customer.language

    def evidence(self, attachments: Iterable[Any], samples: Iterable[Any]) -> None:
        known = {(e.kind, e.sha256, e.received_on, e.location) for e in self.d.evidence}
        for a in attachments:
            if ("attachment", a.sha256, None, None) not in known:
                self.d.evidence.append(Evidence(kind="attachment", filename=a.filename,
                                                content_type=a.content_type, size=a.size,
                                                sha256=a.sha256))
        for s in samples:
            if ("sample", None, s.received_on, s.location) not in known:
                self.d.evidence.append(Evidence(kind="sample", quantity=s.quantity,
                                                received_on=s.received_on,
                                                location=s.location, note=s.note))

    def apply(self, env: Envelope, p: Contract) -> None:  # noqa: C901 - one branch per event
        d, team = self.d, self.d.team
        if isinstance(p, c.FeedbackRegistered):
            self.facts(p)
        elif isinstance(p, c.FeedbackClassified):
            self.customer(p.customer)
            d.category, d.product = p.category.value, p.product or d.product
            d.severity = p.severity.value if d.severity != Severity.MAJOR.value else d.severity
        elif isinstance(p, c.ComplaintEscalated):
            if d.register_no is None:
                self.facts(p)
            d.form_opened_at = p.form_opened_at or env.occurred_at
            d.form_note = p.note
            self.person(team.sales, env.actor)
            self.evidence(p.attachments, p.samples)
        elif isinstance(p, c.EvidenceAdded):
            self.evidence([p.attachment] if p.attachment else [],
                          [p.sample] if p.sample else [])
        elif isinstance(p, c.ComplaintAccepted):
            r = self.round(p.round)
            r.received_at, r.due_at = p.received_at, p.due_at
            r.trigger = p.trigger or r.trigger
        elif isinstance(p, c.MajorAlert):
            d.severity = Severity.MAJOR.value
            for head in p.heads:
                if all((h.unit, h.name) != (head.unit, head.name) for h in team.heads):
                    team.heads.append(Head(unit=head.unit, name=head.name))
        elif isinstance(p, c.ResponsibilityAssigned):
            r = self.round(p.round)
            r.preliminary_cause, r.defect_code = p.preliminary_cause, p.defect_code
            r.defect_name = p.defect_name
            self.person(team.quality, env.actor)
            for u in p.units:
                self.action_round[u.action_id] = p.round
                self.answer(u.action_id, u.unit).request = u.request
                if u.unit not in team.units:
                    team.units.append(u.unit)
        elif isinstance(p, c.ActionRequested):
            self.action_round.setdefault(p.action_id, p.round)
            self.answer(p.action_id, p.unit).request = p.request
            if p.unit not in team.units:
                team.units.append(p.unit)
        elif isinstance(p, c.CountermeasuresProposed):
            a = self.answer(p.action_id, p.unit)
            a.containment, a.root_cause = p.containment, p.root_cause
            a.root_cause_category = p.root_cause_category
            a.corrective, a.preventive = list(p.corrective), list(p.preventive)
            a.disposition = _disposition(p.disposition)
            a.proposed_by, a.proposed_at = Person.of(env.actor), env.occurred_at
            a.verification = None  # a new proposal awaits its own verification
            self.person(team.unit_people, env.actor)
        elif isinstance(p, c.CountermeasuresVerified | c.CountermeasuresRejected):
            accepted = isinstance(p, c.CountermeasuresVerified)
            note = p.note if isinstance(p, c.CountermeasuresVerified) else p.reason
            self.answer(p.action_id, p.unit).verification = Verification(
                accepted=accepted, note=note, by=Person.of(env.actor), at=env.occurred_at)
            self.person(team.quality, env.actor)
        elif isinstance(p, c.ActionCompleted):
            self.answer(p.action_id, p.unit).completed_at = p.completed_at
        elif isinstance(p, c.ResolutionReady):
            r = self.round(p.round)
            r.received_at = r.received_at or p.received_at
            r.resolved_at, r.due_at, r.met_deadline = p.resolved_at, p.due_at, p.met_deadline
            r.cause, r.summary, r.defect_code = p.cause, p.summary, p.defect_code
            r.outcome = p.outcome.value if p.outcome else None
            for o in p.outcomes:  # the record as Quality handed it over wins
                self.action_round.setdefault(o.action_id, p.round)
                a = self.answer(o.action_id, o.unit)
                a.root_cause = o.root_cause
                a.disposition = _disposition(o.disposition) or a.disposition
            self.person(team.quality, env.actor)
        elif isinstance(p, c.ComplaintReopened):
            self.reopen_comments[p.reopen_count] = p.comment
            d.closure = None
        elif isinstance(p, c.ComplaintReturned):
            self.returns.append(p.reason)
        elif isinstance(p, c.FeedbackClosed):
            d.closure = Closure(closed_at=p.closed_at)
        elif isinstance(p, c.CustomerReplied):
            self.person(team.sales, env.actor)

    def result(self, capas: Iterable[CapaLink]) -> Dossier:
        d = self.d
        for action_id, answer in self.answers.items():
            self.round(self.action_round.get(action_id, 1)).answers.append(answer)
        reopens = iter(self.reopen_comments[k] for k in sorted(self.reopen_comments))
        returns = iter(self.returns)
        for number in sorted(self.rounds):
            r = self.rounds[number]
            r.answers.sort(key=lambda a: (a.unit, a.action_id))
            if r.trigger == "reopened":
                r.reason = next(reopens, None)
            elif r.trigger == "returned":
                r.reason = next(returns, None)
            d.rounds.append(r)
        d.capas = sorted(capas, key=lambda x: x.number)
        return d


def _disposition(disp: c.Disposition | None) -> DispositionFacts | None:
    if disp is None:
        return None
    cost = f"{disp.cost.amount} {disp.cost.currency}" if disp.cost is not None else None
    return DispositionFacts(type=disp.type.value, quantity=disp.quantity, cost=cost,
                            note=disp.note)


def fold(feedback_id: str, events: Iterable[tuple[Envelope, Contract]],
         capas: Iterable[CapaLink] = ()) -> Dossier:
    """The report's content from the complaint's events (any order: sorted here by time)."""
    f = _Fold(feedback_id)
    for env, payload in sorted(events, key=lambda e: (e[0].occurred_at, e[0].id)):
        f.apply(env, payload)
    return f.result(capas)


def capa_link(capa_id: str, number: str | None, title: str | None, closed: bool,
              withdrawn: bool, effective: bool | None) -> CapaLink:
    status: Literal["open", "closed", "withdrawn"] = \
        "withdrawn" if withdrawn else "closed" if closed else "open"
    return CapaLink(capa_id=capa_id, number=number or capa_id, title=title or "",
                    status=status, effective=effective)
