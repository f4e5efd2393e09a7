"""The Customer Feedback Register (P-F.1, P-5.1, P-5.2, P-5.4): the `Feedback` aggregate.

Pure: no web framework, broker or database. Each command checks the procedure's
rule for the record's current status, changes the state, writes the history
entry (P-5.4.2) and emits the event, all of which the repository saves in one
document update.

    registered ──direct reply──▶ replied ──satisfied──▶ closed
        │                          ▲  │
        └─escalate─▶ with_quality ─┘  └─not satisfied─▶ with_quality (had a form)
                        │  ▲                           ▶ registered   (no form)
          resolution_ready │
                        ▼  │
              quality_record_ready ─reply─▶ replied
                        └─return to quality─▶ with_quality (Sales' review, not a reopen)
    any status but closed ──withdraw──▶ withdrawn
"""

import re
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from shared.contracts import (
    ComplaintAccepted,
    ComplaintEscalated,
    ComplaintReopened,
    ComplaintReturned,
    CustomerReplied,
    EvidenceAdded,
    FeedbackClassified,
    FeedbackClosed,
    FeedbackRegistered,
    FeedbackWithdrawn,
    MailReceived,
    MajorAlert,
    RepliedDirectly,
    ResolutionReady,
    ResponsibilityAssigned,
    SatisfactionRecorded,
    UnitOutcome,
)
from shared.domain import Aggregate
from shared.errors import Conflict, Invalid
from shared.events import Actor, Envelope, utcnow
from shared.vocabulary import (
    EMAIL_PATTERN,
    AttachmentMeta,
    AwareIsoDateTime,
    Category,
    Channel,
    Customer,
    LongText,
    Money,
    NoActionOutcome,
    Product,
    Quantity,
    ReturnedSample,
    Severity,
)

UNIDENTIFIED = "UNIDENTIFIED"  # the customer id of a mail from an unknown sender
EMAIL = re.compile(EMAIL_PATTERN)


def register_number(year: int, sequence: int) -> str:
    """The number people say on the phone: `CF-2026-000123`."""
    return f"CF-{year}-{sequence:06d}"


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


RequiredText = Annotated[str, Field(min_length=1, max_length=20_000),
                         AfterValidator(_not_blank)]


class FeedbackStatus(StrEnum):
    REGISTERED = "registered"                      # P-F.1: in the register, Sales to decide
    WITH_QUALITY = "with_quality"                  # P-F.2 no: Complaint Handling Form open
    QUALITY_RECORD_READY = "quality_record_ready"  # P-5.3.1: Quality handed its record back
    REPLIED = "replied"                            # P-F.4: the customer has our answer
    CLOSED = "closed"                              # P-F.4 yes: satisfied, records kept
    WITHDRAWN = "withdrawn"                        # P-5.4.2: registered in error, kept


# Open work: someone still has to act (the customer's answer included); the rest is history.
OPEN_STATUSES = frozenset(FeedbackStatus) - {FeedbackStatus.CLOSED, FeedbackStatus.WITHDRAWN}


class FormState(StrEnum):
    """Where the Complaint Handling Form is, as far as the register knows from Quality's
    events: the form travels as an event, so Quality has it only once its receipt is back."""

    SENT_TO_QUALITY = "sent_to_quality"      # on its way: Quality has not confirmed it yet
    WITH_QUALITY = "with_quality"            # Quality has it; its 3-day clock runs
    RECORD_WITH_SALES = "record_with_sales"  # Quality handed its record back to Sales
    WITHDRAWN = "withdrawn"                  # the feedback was withdrawn


class FormWhereabouts(BaseModel):
    """Where the form is and since when: `sent_to_quality` right after Sales sends it (Quality's
    `GET /cases/{id}` may still answer 404 then), `with_quality` once Quality's receipt
    (`complaint.accepted`) is back."""

    state: FormState
    since: datetime = Field(..., description="When it got there: sent by Sales, received by "
                            "Quality (its clock's start), or the record handed back")
    round: int = Field(..., ge=1, description="The handling round (1; +1 for each reopen or "
                       "return to Quality)")


class NewFeedback(BaseModel):
    """What Sales enters to register a feedback (P-F.1, P-5.1, P-5.2)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "customer": {"id": "C-1001", "name": "Shenzhen Bright Motors Co.",
                     "contact_person": "Zhang Min", "email": "zhang.min@brightmotors.example",
                     "phone": "+86 755 1234 5678", "language": "zh"},
        "channel": "phone", "received_at": "2026-11-20T09:30:00+08:00",
        "category": "product_quality", "severity": "normal",
        "product": {"code": "HSG-220", "name": "Motor housing 220", "lot": "L2026-11-03",
                    "order_no": "SO-88123", "delivery_note": "DN-55190"},
        "quantity_affected": 40,
        "description": "Housings crack at the mounting boss after the customer's torque test.",
        "estimated_loss": {"amount": "1250.00", "currency": "CNY"}}]})

    customer: Customer
    channel: Channel = Field(..., description="P-5.1: how the feedback reached us")
    received_at: AwareIsoDateTime | None = Field(
        None, description="When the customer raised it (ISO 8601 with a UTC offset); default "
                          "now; not before 2000, never in the future",
        examples=["2026-11-20T09:30:00+08:00"])
    category: Category = Field(..., description="P-5.2 classification")
    severity: Severity = Field(Severity.NORMAL, description="`major` (P-5.3.5): affects the "
                               "customer's production or functional safety; escalated at once")
    product: Product | None = None
    quantity_affected: Quantity | None = Field(None, examples=[40])
    description: RequiredText = Field(..., examples=[
        "Housings crack at the mounting boss after the customer's torque test."])
    estimated_loss: Money | None = None


class Reply(BaseModel):
    text: LongText
    replied_at: datetime
    by: str = Field(..., description="Who sent it (user id)")
    report: AttachmentMeta | None = Field(None, description="The issued Complaint Handling "
                                          "Report (PDF) sent with it (P-5.3.1)")


class Satisfaction(BaseModel):
    satisfied: bool
    comment: LongText | None = None
    at: datetime


class QualityRecord(BaseModel):
    """Quality's record for Sales (P-5.3.1), from `complaint.resolution_ready`."""

    round: int
    cause: LongText
    defect_code: str
    outcomes: list[UnitOutcome] = Field(default_factory=list)
    summary: LongText
    resolved_at: datetime
    met_deadline: bool
    outcome: NoActionOutcome | None = Field(None, description="Set when Quality concluded "
                                            "without corrective action (not the plant's fault)")


# The register starts here: nothing older is a complaint to handle (and a year-1 or 1900
# date made nonsense register numbers, `CF-1900-000001`, or overflowed).
EARLIEST_RECEIVED = datetime(2000, 1, 1, tzinfo=UTC)


def check_registration(new: NewFeedback, now: datetime, skew: timedelta = timedelta(0)) -> None:
    """Rules a registration must meet before it takes a register number."""
    if new.received_at is not None and new.received_at > now + skew:
        raise Invalid("received_at is in the future: a feedback is registered after it arrives.",
                      [{"loc": "body.received_at", "msg": "must not be in the future"}])
    if new.received_at is not None and new.received_at < EARLIEST_RECEIVED:
        raise Invalid("received_at is before 2000-01-01 (UTC): the register holds nothing older.",
                      [{"loc": "body.received_at", "msg": "must not be before 2000-01-01"}])
    if new.category is Category.SUGGESTION and new.severity is Severity.MAJOR:
        # P-5.3.5 defines major by its effect on the customer's production or safety:
        # a suggestion is not a complaint (P-5.2), so it has no severity to escalate.
        raise Invalid("A suggestion is not a complaint and cannot be major (P-5.2, P-5.3.5).",
                      [{"loc": "body.severity", "msg": "a suggestion cannot be major"}])


class Feedback(Aggregate):
    """One entry of the Customer Feedback Register."""

    producer: ClassVar[str] = "intake"

    register_no: str = Field(..., examples=["CF-2026-000123"])
    status: FeedbackStatus = FeedbackStatus.REGISTERED
    customer: Customer
    channel: Channel
    received_at: datetime
    category: Category
    severity: Severity = Severity.NORMAL
    is_complaint: bool
    product: Product | None = None
    quantity_affected: int | None = None
    description: LongText
    estimated_loss: Money | None = None
    attachments: list[AttachmentMeta] = Field(default_factory=list)
    samples: list[ReturnedSample] = Field(default_factory=list)
    has_form: bool = False
    form_opened_at: datetime | None = None
    form: FormWhereabouts | None = Field(None, description="Where the form is, since when")
    quality_round: int | None = None
    quality_due_at: datetime | None = None
    direct_reply: Reply | None = None
    quality_record: QualityRecord | None = None
    customer_reply: Reply | None = None
    satisfaction: Satisfaction | None = None
    reopen_count: int = 0
    returned_to_quality: int = Field(0, description="Records Sales sent back to Quality "
                                     "(P-F.4 review); not reopens")
    responsible_units: list[str] = Field(default_factory=list, description="Units Quality "
                                         "asked to act (P-3.2); their people read the evidence")
    withdrawn_reason: LongText | None = None
    registered_by: str
    created_at: datetime
    updated_at: datetime
    request_fingerprint: str | None = Field(
        None, description="Hash of the registering request, for the Idempotency-Key check")
    needs_triage: bool = Field(False, description="Arrived by mail: Sales still has to check "
                               "the customer and the classification (P-5.2)")
    source_mail_id: str | None = None
    source_mail_from: str | None = Field(None, description="Who sent the mail that opened it")

    @model_validator(mode="before")
    @classmethod
    def _form_of_older_records(cls, data: Any) -> Any:
        """A record stored before `form` was kept: where its form is, from its status (the
        time is the best the record knows)."""
        if not isinstance(data, dict) or data.get("form") is not None or not data.get("has_form"):
            return data
        status, record = data.get("status"), data.get("quality_record")
        since = data.get("updated_at") or data.get("form_opened_at")
        if status == FeedbackStatus.WITHDRAWN:
            state = FormState.WITHDRAWN
        elif status == FeedbackStatus.WITH_QUALITY:
            known = data.get("quality_round") is not None
            state = FormState.WITH_QUALITY if known else FormState.SENT_TO_QUALITY
        else:
            state = FormState.RECORD_WITH_SALES
            if isinstance(record, dict) and record.get("resolved_at"):
                since = record["resolved_at"]
        return data | {"form": {"state": state, "since": since,
                                "round": data.get("quality_round") or 1}}

    # -- registration ------------------------------------------------------
    @classmethod
    def register(cls, *, id: str, register_no: str, new: NewFeedback, actor: Actor,
                 now: datetime | None = None, skew: timedelta = timedelta(0),
                 fingerprint: str | None = None) -> "Feedback":
        """P-F.1: enter it in the register; a major complaint goes to Quality at once."""
        now = now or utcnow()
        check_registration(new, now, skew)
        fb = cls(id=id, register_no=register_no, customer=new.customer, channel=new.channel,
                 received_at=new.received_at or now, category=new.category,
                 severity=new.severity, is_complaint=new.category is not Category.SUGGESTION,
                 product=new.product, quantity_affected=new.quantity_affected,
                 description=new.description, estimated_loss=new.estimated_loss,
                 registered_by=actor.sub, created_at=now, updated_at=now,
                 request_fingerprint=fingerprint)
        event = fb.emit(FeedbackRegistered(**fb._facts(), is_complaint=fb.is_complaint), actor)
        fb.log(actor, "registered", new.model_dump(mode="json") | {
            "register_no": register_no, "received_at": fb.received_at.isoformat(),
            "status": fb.status.value}, event_id=event.id, at=now)
        if fb.severity is Severity.MAJOR:  # P-5.3.5: no waiting for Sales to decide
            fb._open_form(actor, now, "Major complaint (P-5.3.5): escalated at registration.",
                          causation_id=event.id)
        return fb

    @classmethod
    def from_mail(cls, mail: MailReceived, *, id: str, register_no: str,
                  actor: Actor) -> "Feedback":
        """P-5.1: a mail or fax to the complaints box enters the register by itself.

        Sales then checks it (`classify`): the category is `other` until they do, and an
        unknown sender is an unidentified customer carrying the sender's address."""
        customer = mail.customer or Customer(
            id=UNIDENTIFIED, name=(mail.from_name or mail.from_address)[:200],
            email=mail.from_address if EMAIL.match(mail.from_address) else None)
        text = f"{mail.subject}\n\n{mail.body}".strip() or "(empty message)"
        new = NewFeedback(customer=customer, channel=Channel.FAX if mail.is_fax else Channel.EMAIL,
                          received_at=mail.received_at, category=Category.OTHER,
                          description=text[:20_000])
        fb = cls.register(id=id, register_no=register_no, new=new, actor=actor,
                          now=max(utcnow(), mail.received_at))
        fb.needs_triage, fb.source_mail_id = True, mail.mail_id
        fb.source_mail_from = mail.from_address
        for meta in mail.attachments:
            fb.add_attachment(meta, actor)
        if mail.malformed:
            fb.log(actor, "flagged", {"needs_triage": True},
                   note="The mail could not be read fully; its raw message is kept in notify "
                        f"(mail {mail.mail_id}).")
        return fb

    def mail_followup(self, mail: MailReceived, actor: Actor) -> None:
        """A mail naming this register number: kept in the record's history (P-5.4.2).

        Anyone can quote a register number: a sender who is neither the customer nor who
        opened the record by mail is kept in the history but flagged for Sales, and its
        attachments stay with the mail in notify instead of joining the evidence."""
        recognised = self._sender_recognised(mail)
        self._changed(actor, "mail_received", {
            "mail_id": mail.mail_id, "from": mail.from_address, "subject": mail.subject,
            "attachments": [a.filename for a in mail.attachments],
            "sender_recognised": recognised}, note=mail.body[:2000] or None)
        if not recognised:
            self.needs_triage = True
            self.log(actor, "flagged", {"needs_triage": True},
                     note=f"{mail.from_address} is not this record's customer: check the mail "
                          f"(mail {mail.mail_id} in notify) before using what it says.")
        elif self.status not in (FeedbackStatus.CLOSED, FeedbackStatus.WITHDRAWN):
            for meta in mail.attachments:
                self.add_attachment(meta, actor)

    def _sender_recognised(self, mail: MailReceived) -> bool:
        """The customer (as notify matched it, or by address or domain), or whoever sent the
        mail that opened this record."""
        if mail.customer is not None and mail.customer.id == self.customer.id:
            return True
        known = [a.lower() for a in (self.customer.email, self.source_mail_from) if a]
        sender = mail.from_address.lower()
        return sender in known or sender.rpartition("@")[2] in {
            a.rpartition("@")[2] for a in known}

    def classify(self, actor: Actor, *, customer: Customer, category: Category,
                 severity: Severity, product: Product | None) -> None:
        """P-5.2: Sales sets who the customer is and what kind of feedback it is."""
        self._require(FeedbackStatus.REGISTERED, "classify")
        if category is Category.SUGGESTION and severity is Severity.MAJOR:
            raise Invalid("A suggestion cannot be major (P-5.3.5 is about complaints).",
                          [{"loc": "body.severity", "msg": "not for a suggestion"}])
        self.customer, self.category, self.severity = customer, category, severity
        self.product = product or self.product
        self.is_complaint = category is not Category.SUGGESTION
        self.needs_triage = False
        event = self.emit(FeedbackClassified(
            feedback_id=self.id, register_no=self.register_no, customer=customer,
            category=category, severity=severity, is_complaint=self.is_complaint,
            product=self.product), actor)
        self._changed(actor, "classified", {
            "customer": customer.model_dump(mode="json"), "category": category.value,
            "severity": severity.value}, event_id=event.id)
        if severity is Severity.MAJOR:  # P-5.3.5, as at registration
            self._open_form(actor, utcnow(), "Major complaint (P-5.3.5): escalated when "
                            "classified.", causation_id=event.id)

    # -- evidence (P-5.3.1) ------------------------------------------------
    def add_attachment(self, meta: AttachmentMeta, actor: Actor) -> bool:
        """Add a photo or document; the same file (sha256) twice is one entry. False: known."""
        self._require_open("add evidence to")
        if any(a.sha256 == meta.sha256 for a in self.attachments):
            return False
        self.attachments.append(meta)
        event = self.emit(EvidenceAdded(feedback_id=self.id, register_no=self.register_no,
                                        attachment=meta), actor)
        self._changed(actor, "attachment_added", {"attachment": meta.model_dump(mode="json")},
                      event_id=event.id)
        return True

    def add_sample(self, sample: ReturnedSample, actor: Actor) -> bool:
        """Note nonconforming samples the customer returned; the same note twice (a retried
        request) is one entry. False: known."""
        self._require_open("add evidence to")
        if sample in self.samples:
            return False
        self.samples.append(sample)
        event = self.emit(EvidenceAdded(feedback_id=self.id, register_no=self.register_no,
                                        sample=sample), actor)
        self._changed(actor, "sample_added", {"sample": sample.model_dump(mode="json")},
                      event_id=event.id)
        return True

    # -- Sales decides (P-F.2) ---------------------------------------------
    def reply_directly(self, reply: str, actor: Actor, now: datetime | None = None) -> None:
        """P-F.2 yes, P-5.3.3: Sales handles it with the customer, no form."""
        if self.category is Category.PRODUCT_QUALITY:
            raise Conflict("A product-quality complaint needs a Complaint Handling Form "
                           "(P-5.3.1): escalate it to Quality instead of replying directly.")
        self._require(FeedbackStatus.REGISTERED, "reply directly to")
        now = now or utcnow()
        self.direct_reply = Reply(text=reply, replied_at=now, by=actor.sub)
        self.status = FeedbackStatus.REPLIED
        event = self.emit(RepliedDirectly(feedback_id=self.id, register_no=self.register_no,
                                          category=self.category, reply=reply), actor)
        self._changed(actor, "replied_directly", {"status": self.status.value, "reply": reply},
                      event_id=event.id, now=now)

    def escalate(self, actor: Actor, note: str | None = None,
                 now: datetime | None = None, opened_at: datetime | None = None) -> None:
        """P-F.2 no, P-5.3.1: open the Complaint Handling Form for Quality (any complaint).

        `opened_at`: a paper form opened earlier and entered now; the 3-day clock
        (P-F.5) starts then, so entering it late does not hide a breach."""
        if not self.is_complaint:
            # A form starts Quality's 3-day clock and the recurrence count on a *complaint*;
            # a suggestion (P-5.2) has no defect to analyse: Sales answers it directly.
            raise Conflict("A suggestion is not a complaint (P-5.2): there is no Complaint "
                           "Handling Form for it; reply to the customer directly (P-F.2).")
        self._require(FeedbackStatus.REGISTERED, "escalate")
        now = now or utcnow()
        if opened_at is not None and not (self.received_at <= opened_at <= now):
            raise Invalid("form_opened_at must lie between when the feedback was received "
                          f"({self.received_at.isoformat()}) and now.",
                          [{"loc": "body.form_opened_at",
                            "msg": "must not be before received_at nor in the future"}])
        self._open_form(actor, now, note, opened_at=opened_at)

    # -- reply and satisfaction (P-F.4) -------------------------------------
    def reply_to_customer(self, reply: str, actor: Actor, now: datetime | None = None,
                          report: AttachmentMeta | None = None) -> None:
        """P-F.4: Sales reviewed Quality's record and sends the answer to the customer,
        with the issued Complaint Handling Report when there is one (P-5.3.1)."""
        if self.status is not FeedbackStatus.QUALITY_RECORD_READY:
            raise Conflict(f"Quality's record is not ready for {self.register_no} (status "
                           f"{self.status.value}): Sales replies once Quality has handed "
                           "its record back (P-5.3.1, P-F.4).")
        now = now or utcnow()
        self.customer_reply = Reply(text=reply, replied_at=now, by=actor.sub, report=report)
        self.status = FeedbackStatus.REPLIED
        event = self.emit(CustomerReplied(feedback_id=self.id, register_no=self.register_no,
                                          reply=reply, replied_at=now, report=report), actor)
        changes: dict[str, Any] = {"status": self.status.value, "reply": reply}
        if report is not None:
            changes["report"] = report.model_dump(mode="json")
        self._changed(actor, "customer_replied", changes, event_id=event.id, now=now)

    def return_to_quality(self, reason: str, actor: Actor, now: datetime | None = None) -> None:
        """P-F.4 "Sales reviews it": the record is not good enough to answer the customer.

        Back to Quality before the customer saw it: not a reopen (the customer was not asked)."""
        if self.status is not FeedbackStatus.QUALITY_RECORD_READY or self.quality_record is None:
            raise Conflict(f"Cannot return {self.register_no} to Quality: it is "
                           f"{self.status.value}; only a quality record Sales has not yet "
                           "answered the customer with can be sent back (quality_record_ready).")
        now = now or utcnow()
        self.status = FeedbackStatus.WITH_QUALITY
        self.returned_to_quality += 1
        self._form_sent(now)
        event = self.emit(ComplaintReturned(feedback_id=self.id, register_no=self.register_no,
                                            round=self.quality_record.round, reason=reason),
                          actor)
        self._changed(actor, "returned_to_quality", {
            "status": self.status.value, "round": self.quality_record.round,
            "returned_to_quality": self.returned_to_quality}, note=reason,
            event_id=event.id, now=now)

    def record_satisfaction(self, satisfied: bool, comment: str | None, actor: Actor,
                            now: datetime | None = None) -> None:
        """P-F.4: satisfied closes (records kept); not satisfied goes back to handling."""
        self._require(FeedbackStatus.REPLIED, "record the customer's satisfaction for")
        now = now or utcnow()
        self.satisfaction = Satisfaction(satisfied=satisfied, comment=comment, at=now)
        recorded = self.emit(SatisfactionRecorded(
            feedback_id=self.id, register_no=self.register_no, satisfied=satisfied,
            comment=comment), actor)
        if satisfied:
            self.status = FeedbackStatus.CLOSED
            follow = self.emit(FeedbackClosed(feedback_id=self.id, register_no=self.register_no,
                                              closed_at=now, had_form=self.has_form),
                               actor, causation_id=recorded.id)
        else:
            self.reopen_count += 1
            # With a form the case goes back to Quality; without, Sales handles it again.
            self.status = (FeedbackStatus.WITH_QUALITY if self.has_form
                           else FeedbackStatus.REGISTERED)
            if self.has_form:
                self._form_sent(now)
            follow = self.emit(ComplaintReopened(
                feedback_id=self.id, register_no=self.register_no, comment=comment,
                reopen_count=self.reopen_count, had_form=self.has_form),
                actor, causation_id=recorded.id)
        self._changed(actor, "closed" if satisfied else "reopened", {
            "satisfied": satisfied, "comment": comment, "status": self.status.value,
            "reopen_count": self.reopen_count}, note=comment, event_id=follow.id, now=now)

    # -- records control (P-5.4.2) -------------------------------------------
    def withdraw(self, reason: str, actor: Actor, now: datetime | None = None) -> None:
        """Nothing is deleted: a record registered in error is withdrawn with a reason."""
        if self.status is FeedbackStatus.CLOSED:
            raise Conflict(f"{self.register_no} is closed; a closed record is kept as it is "
                           "(P-5.4.2) and cannot be withdrawn.")
        if self.status is FeedbackStatus.WITHDRAWN:
            raise Conflict(f"{self.register_no} is already withdrawn.")
        self.status = FeedbackStatus.WITHDRAWN
        self.withdrawn_reason = reason
        if self.form is not None:
            self.form = FormWhereabouts(state=FormState.WITHDRAWN, since=now or utcnow(),
                                        round=self.form.round)
        event = self.emit(FeedbackWithdrawn(feedback_id=self.id, register_no=self.register_no,
                                            reason=reason), actor)
        self._changed(actor, "withdrawn", {"status": self.status.value, "reason": reason},
                      note=reason, event_id=event.id, now=now)

    # -- Quality's events -----------------------------------------------------
    def quality_accepted(self, payload: ComplaintAccepted, event: Envelope) -> None:
        """P-F.5: Quality received the form; show its due time on the record."""
        if self.quality_round is not None and payload.round < self.quality_round:
            return  # an older round's acceptance arriving late changes nothing
        self.quality_round = payload.round
        self.quality_due_at = payload.due_at
        form = self.form
        if (form is not None and form.state is FormState.SENT_TO_QUALITY
                and payload.round >= form.round):
            self.form = FormWhereabouts(state=FormState.WITH_QUALITY, since=payload.received_at,
                                        round=payload.round)
        self._changed(event.actor, "quality_accepted", {
            "round": payload.round, "quality_due_at": payload.due_at.isoformat()},
            event_id=event.id)

    def quality_record_ready(self, payload: ResolutionReady, event: Envelope) -> None:
        """P-5.3.1: Quality's record is with Sales; only for the case that is with Quality."""
        if self.status is not FeedbackStatus.WITH_QUALITY:
            return  # a duplicate, or the record was withdrawn meanwhile
        if self.quality_record is not None and payload.round <= self.quality_record.round:
            return  # a stale round (before the latest reopen) changes nothing
        self.quality_record = QualityRecord(
            round=payload.round, cause=payload.cause, defect_code=payload.defect_code,
            outcomes=list(payload.outcomes), summary=payload.summary,
            resolved_at=payload.resolved_at, met_deadline=payload.met_deadline,
            outcome=payload.outcome)
        self.status = FeedbackStatus.QUALITY_RECORD_READY
        self.form = FormWhereabouts(state=FormState.RECORD_WITH_SALES, since=payload.resolved_at,
                                    round=payload.round)
        self._changed(event.actor, "quality_record_received", {
            "status": self.status.value, "round": payload.round,
            "defect_code": payload.defect_code, "met_deadline": payload.met_deadline,
            "outcome": payload.outcome.value if payload.outcome else None},
            event_id=event.id)

    def units_assigned(self, payload: ResponsibilityAssigned, event: Envelope) -> None:
        """P-3.2: Quality named the responsible units; they may read this record's evidence
        (P-5.3.2 "with the same attachments")."""
        units = [u.unit for u in payload.units]
        self.responsible_units = sorted(set(self.responsible_units) | set(units))
        self._changed(event.actor, "responsibility_assigned", {
            "units": units, "defect_code": payload.defect_code}, event_id=event.id)

    def major_flagged(self, payload: MajorAlert, event: Envelope) -> None:
        """P-5.3.5: Quality found it major (or confirms a major registration); the register
        says so, so `severity=major` finds it."""
        before = self.severity
        self.severity = Severity.MAJOR
        self._changed(event.actor, "major_alert", {
            "severity": self.severity.value, "was": before.value,
            "heads": [h.name for h in payload.heads]}, event_id=event.id)

    # -- helpers ----------------------------------------------------------------
    def _open_form(self, actor: Actor, now: datetime, note: str | None,
                   causation_id: str | None = None, opened_at: datetime | None = None) -> None:
        self.status = FeedbackStatus.WITH_QUALITY
        self.has_form = True
        self.form_opened_at = opened_at or now
        self.form = FormWhereabouts(state=FormState.SENT_TO_QUALITY, since=now, round=1)
        event = self.emit(ComplaintEscalated(**self._facts(), attachments=list(self.attachments),
                                             samples=list(self.samples), note=note,
                                             form_opened_at=self.form_opened_at),
                          actor, causation_id=causation_id)
        self._changed(actor, "escalated", {"status": self.status.value, "has_form": True,
                                           "form_opened_at": self.form_opened_at.isoformat()},
                      note=note, event_id=event.id, now=now)

    def _form_sent(self, now: datetime) -> None:
        """The form goes back to Quality for a new round (a reopen, or Sales' return)."""
        known = max(self.form.round if self.form else 1, self.quality_round or 1)
        self.form = FormWhereabouts(state=FormState.SENT_TO_QUALITY, since=now, round=known + 1)

    def _facts(self) -> dict[str, Any]:
        return dict(feedback_id=self.id, register_no=self.register_no, customer=self.customer,
                    channel=self.channel, received_at=self.received_at, category=self.category,
                    severity=self.severity, product=self.product,
                    quantity_affected=self.quantity_affected, description=self.description,
                    estimated_loss=self.estimated_loss)

    def _require(self, status: FeedbackStatus, action: str) -> None:
        if self.status is not status:
            raise Conflict(f"Cannot {action} {self.register_no}: it is {self.status.value}, "
                           f"and this needs status {status.value}.")

    def _require_open(self, action: str) -> None:
        if self.status in (FeedbackStatus.CLOSED, FeedbackStatus.WITHDRAWN):
            raise Conflict(f"Cannot {action} {self.register_no}: it is {self.status.value}; "
                           "its records are kept as they are (P-5.4.2).")

    def _changed(self, actor: Actor, action: str, changes: dict[str, Any], *,
                 note: str | None = None, event_id: str | None = None,
                 now: datetime | None = None) -> None:
        now = now or utcnow()
        self.updated_at = now
        self.log(actor, action, changes, note=note, event_id=event_id, at=now)

