"""Every event of the complaint procedure: the public, versioned interface.

Routing key = event type. Plant systems bind their own queue to the exchange
and read these payloads; a breaking change gets a new version, never an edit.
Every event's envelope carries `correlation_id` = the feedback id.
"""

from datetime import datetime
from typing import Literal

from pydantic import Field

from shared.events import Contract, contract
from shared.vocabulary import (
    AttachmentMeta,
    Category,
    Channel,
    Customer,
    DispositionType,
    Head,
    LongText,
    Money,
    Name,
    NoActionOutcome,
    Product,
    Quantity,
    ReturnedSample,
    Severity,
    ShortText,
    UnitName,
)

# ---------------------------------------------------------------- intake (Sales)


class FeedbackFacts(Contract):
    """What Sales registered about a feedback (shared by several events)."""

    feedback_id: str = Field(..., description="Internal id (UUID)")
    register_no: str = Field(..., examples=["CF-2026-000123"], description="Said on the phone")
    customer: Customer
    channel: Channel
    received_at: datetime
    category: Category
    severity: Severity
    product: Product | None = None
    quantity_affected: Quantity | None = None
    description: LongText
    estimated_loss: Money | None = None


@contract("feedback.registered")
class FeedbackRegistered(FeedbackFacts):
    """P-F.1, P-5.1, P-5.2, P-5.4.1: a feedback entered the Customer Feedback Register."""

    is_complaint: bool = Field(..., description="False for a suggestion")


@contract("feedback.classified")
class FeedbackClassified(Contract):
    """P-5.2: Sales (re)classified a feedback, e.g. one that arrived by mail from an
    unidentified sender; consumers replace what `feedback.registered` said."""

    feedback_id: str
    register_no: str
    customer: Customer
    category: Category
    severity: Severity
    is_complaint: bool
    product: Product | None = None


@contract("feedback.evidence_added")
class EvidenceAdded(Contract):
    """P-5.3.1: a photo/document or a returned sample was added to the record."""

    feedback_id: str
    register_no: str
    attachment: AttachmentMeta | None = None
    sample: ReturnedSample | None = None


@contract("feedback.replied_directly")
class RepliedDirectly(Contract):
    """P-F.2 yes, P-5.3.3: Sales handled it and answered the customer without a form."""

    feedback_id: str
    register_no: str
    category: Category
    reply: LongText


@contract("complaint.escalated")
class ComplaintEscalated(FeedbackFacts):
    """P-F.2 no, P-5.3.1: Sales opened a Complaint Handling Form for Quality."""

    attachments: list[AttachmentMeta] = Field(default_factory=list)
    samples: list[ReturnedSample] = Field(default_factory=list)
    note: LongText | None = Field(None, description="What Sales asks of Quality")
    form_opened_at: datetime | None = Field(
        None, description="When Sales opened the form (a paper form may be entered later); "
        "the 3-day clock starts here. Absent: when the event occurred.")


@contract("feedback.customer_replied")
class CustomerReplied(Contract):
    """P-F.4: Sales sent the reply (built on Quality's record) to the customer."""

    feedback_id: str
    register_no: str
    reply: LongText
    replied_at: datetime
    report: AttachmentMeta | None = Field(
        None, description="The issued Complaint Handling Report (PDF) sent with the reply, "
        "kept in the attachment store by its sha256; absent in events from before reports "
        "were attached")


@contract("feedback.satisfaction_recorded")
class SatisfactionRecorded(Contract):
    """P-F.4: the customer's answer to the reply."""

    feedback_id: str
    register_no: str
    satisfied: bool
    comment: LongText | None = None


@contract("feedback.closed")
class FeedbackClosed(Contract):
    """P-F.4 yes: the customer is satisfied; records are kept, the case closes."""

    feedback_id: str
    register_no: str
    closed_at: datetime
    had_form: bool


@contract("complaint.reopened")
class ComplaintReopened(Contract):
    """P-F.4 no: the customer is not satisfied; back to handling."""

    feedback_id: str
    register_no: str
    comment: LongText | None = None
    reopen_count: int = Field(..., ge=1)
    had_form: bool = Field(..., description="True: back to Quality; False: back to Sales")


@contract("complaint.returned_to_quality")
class ComplaintReturned(Contract):
    """P-F.4 "Sales reviews it": Quality's record is inadequate; Sales sends it back to
    Quality before replying. Not a reopen: the customer has not seen it."""

    feedback_id: str
    register_no: str
    round: int = Field(..., ge=1, description="The round whose record is sent back")
    reason: LongText = Field(..., description="What the record lacks")


@contract("feedback.withdrawn")
class FeedbackWithdrawn(Contract):
    """P-5.4.2: nothing is deleted; a record registered in error is withdrawn with a reason."""

    feedback_id: str
    register_no: str
    reason: LongText


# ---------------------------------------------------------------- quality


@contract("complaint.accepted")
class ComplaintAccepted(Contract):
    """P-F.5: Quality received the form; the 3-day clock starts (again, on a reopen)."""

    feedback_id: str
    register_no: str
    round: int = Field(..., ge=1, description="1, then +1 on each reopen")
    received_at: datetime
    due_at: datetime
    at_risk_at: datetime
    severity: Severity
    trigger: Literal["form", "reopened", "returned"] | None = Field(
        None, description="What started the round: the form, a customer reopen (P-F.4 not "
        "satisfied) or Sales returning the record (`complaint.returned_to_quality`)")


@contract("complaint.major_alert")
class MajorAlert(Contract):
    """P-5.3.5: a major complaint; these heads are summoned now to review it."""

    feedback_id: str
    register_no: str
    customer: Customer
    product: Product | None = None
    description: LongText
    heads: list[Head]


@contract("complaint.responsibility_assigned")
class ResponsibilityAssigned(Contract):
    """P-F.3, P-3.2: cause analysis done; the responsible units and what is asked of them."""

    feedback_id: str
    register_no: str
    round: int
    preliminary_cause: LongText
    defect_code: str
    customer_id: str
    product_code: str | None = None
    units: list["UnitRequest"]
    # The complaint as the units need to see it (P-3.3, P-5.3.2 "with the same
    # attachments"); optional so events published before they existed still parse.
    customer_name: Name | None = Field(None, description="The customer's name only: "
                                       "Sales alone talks to the customer (P-3.1)")
    severity: Severity | None = None
    product: Product | None = Field(None, description="Code, name, lot, order, delivery note")
    quantity_affected: Quantity | None = None
    description: LongText | None = Field(None, description="The customer's complaint")
    defect_name: LongText | None = None
    attachments: list[AttachmentMeta] = Field(default_factory=list)
    samples: list[ReturnedSample] = Field(default_factory=list)


class UnitRequest(Contract):
    unit: UnitName
    request: LongText = Field(..., description="What Quality asks of this unit")
    action_id: str = Field(..., description="Id of the action request capa opens for it")


ResponsibilityAssigned.model_rebuild()


@contract("complaint.countermeasures_verified")
class CountermeasuresVerified(Contract):
    """Quality accepted a unit's countermeasures."""

    feedback_id: str
    action_id: str
    unit: UnitName
    note: LongText | None = None


@contract("complaint.countermeasures_rejected")
class CountermeasuresRejected(Contract):
    """Quality rejected a unit's countermeasures; the request goes back to the unit."""

    feedback_id: str
    action_id: str
    unit: UnitName
    reason: LongText


class UnitOutcome(Contract):
    unit: UnitName
    action_id: str
    root_cause: LongText
    countermeasures: list[LongText]
    disposition: "Disposition | None" = None


class Disposition(Contract):
    """P-5.3.2: what happens to the goods, how many, at what cost."""

    type: DispositionType
    quantity: Quantity
    cost: Money | None = None
    note: ShortText | None = None


UnitOutcome.model_rebuild()


@contract("complaint.resolution_ready")
class ResolutionReady(Contract):
    """The quality record handed to Sales (P-5.3.1); stops the 3-day clock (P-F.5)."""

    feedback_id: str
    register_no: str
    round: int
    cause: LongText
    defect_code: str
    outcomes: list[UnitOutcome]
    summary: LongText = Field(..., description="Quality's conclusion for Sales")
    received_at: datetime
    resolved_at: datetime
    due_at: datetime
    met_deadline: bool
    outcome: NoActionOutcome | None = Field(
        None, description="Set when Quality concluded without corrective action (the "
        "complaint is not the plant's fault; `outcomes` is then empty)")


@contract("complaint.sla_at_risk")
class SlaAtRisk(Contract):
    """P-F.5: the 3-day deadline is near and the quality record is not with Sales yet."""

    feedback_id: str
    register_no: str
    round: int
    due_at: datetime
    severity: Severity


@contract("complaint.sla_breached")
class SlaBreached(Contract):
    """P-F.5: the 3-day deadline passed while the case was open."""

    feedback_id: str
    register_no: str
    round: int
    due_at: datetime
    severity: Severity


@contract("complaint.recurrence_detected")
class RecurrenceDetected(Contract):
    """P-5.3.4: the same kind of complaint came back (or stays unimproved): open a CAPA."""

    kind: str = Field(..., examples=["customer:C-1001|defect:D03"])
    reason: str = Field(..., examples=["recurred", "unimproved"])
    feedback_ids: list[str]
    defect_code: str
    customer_id: str | None = None
    product_code: str | None = None


# ---------------------------------------------------------------- capa


@contract("action.requested")
class ActionRequested(Contract):
    """P-3.3: an action request opened for a responsible unit."""

    action_id: str
    feedback_id: str
    register_no: str
    unit: UnitName
    request: LongText
    round: int


@contract("action.countermeasures_proposed")
class CountermeasuresProposed(Contract):
    """P-3.3, P-5.3.2: the unit's investigation and proposed countermeasures."""

    action_id: str
    feedback_id: str
    unit: UnitName
    containment: LongText
    root_cause: LongText
    root_cause_category: str = Field(..., examples=["method"], description="4M/6M")
    corrective: list[LongText]
    preventive: list[LongText]
    disposition: Disposition | None = None


@contract("action.completed")
class ActionCompleted(Contract):
    """The unit carried out every corrective and preventive action."""

    action_id: str
    feedback_id: str
    unit: UnitName
    completed_at: datetime


@contract("capa.opened")
class CapaOpened(Contract):
    """P-5.3.4: a formal CAPA under the Corrective and Preventive Action Control Procedure."""

    capa_id: str
    number: str = Field(..., examples=["CAPA-2026-0007"])
    source: str = Field(..., examples=["recurrence", "manual"])
    kind: str | None = None
    feedback_ids: list[str]
    title: ShortText
    owner_unit: UnitName | None = None
    owner_confirmed: bool = Field(True, description="False: the owner unit is the default a "
                                  "recurrence gave it (the unit responsible for its complaints), "
                                  "until Quality confirms it (`capa.owner_assigned`)")


@contract("capa.effectiveness_verified")
class CapaEffectivenessVerified(Contract):
    capa_id: str
    effective: bool
    criteria: LongText
    evaluation: LongText
    verifier: str
    feedback_ids: list[str]


@contract("capa.closed")
class CapaClosed(Contract):
    capa_id: str
    kind: str | None = None
    feedback_ids: list[str]
    closed_at: datetime


@contract("capa.withdrawn")
class CapaWithdrawn(Contract):
    """A CAPA opened in error or overtaken is withdrawn with a reason (never deleted);
    for its kind it counts as no longer open, like a closed one."""

    capa_id: str
    number: str
    kind: str | None = None
    feedback_ids: list[str]
    reason: LongText
    withdrawn_at: datetime


@contract("capa.owner_assigned")
class CapaOwnerAssigned(Contract):
    """Quality named (or changed) the unit that owns a CAPA's plan; the same unit as before
    confirms the default a recurrence gave it."""

    capa_id: str
    number: str
    owner_unit: UnitName
    previous_owner_unit: UnitName | None = None
    feedback_ids: list[str]


# ---------------------------------------------------------------- notify (inbound mail)


@contract("mail.received")
class MailReceived(Contract):
    """P-5.1: a mail (or a fax forwarded by a fax-to-mail gateway) reached the complaints box.

    Intake registers it as a feedback (channel email or fax), or, when the subject
    names an existing register number, adds it to that record's history."""

    mail_id: str = Field(..., description="Id of the stored raw message in notify")
    from_address: str
    from_name: str | None = None
    subject: LongText
    body: LongText = Field(..., description="Text body (HTML reduced to text)")
    received_at: datetime
    is_fax: bool = False
    customer: Customer | None = Field(None, description="Matched by address or domain; None: "
                                      "an unidentified customer for Sales to assign")
    register_no: str | None = Field(None, description="A register number found in the subject")
    attachments: list[AttachmentMeta] = Field(default_factory=list)
    malformed: bool = Field(False, description="Could not be parsed fully; raw kept in notify")


# ---------------------------------------------------------------- notify (its own deliveries)


class NotificationFacts(Contract):
    """One notification (one message to one recipient over one channel, because of one
    event) as notify tells it: what was sent, to whom, for which event. Never a webhook's
    secret, nor the message body (`GET /notifications/{id}` has it, for those allowed)."""

    notification_id: str = Field(..., description="Id in notify's log: `GET /notifications/"
                                 "{id}` (ops, manager, auditor)")
    cause_event_id: str = Field(..., description="The event this notification was about "
                                "(also the envelope's `causation_id`)")
    cause_event_type: str = Field(..., examples=["complaint.sla_breached"])
    channel: Literal["email", "webhook"]
    recipient: str = Field(..., description="The e-mail address, or the webhook "
                           "subscription's id", examples=["quality@plant.example"])
    recipient_name: ShortText | None = Field(None, description="The person, or the "
                                             "subscribed plant system's name")
    target: str | None = Field(None, description="Webhooks: the URL, without user info, "
                               "query or fragment", examples=["https://erp.plant.example/qms"])
    purpose: str = Field(..., description="The mail's template, or `webhook`",
                         examples=["sla_breached", "customer_reply", "webhook"])
    feedback_id: str = Field(..., description="The causing event's correlation id (the "
                             "feedback id; a mail id for `mail.received`)")
    register_no: str | None = None
    attempts: int = Field(..., ge=1, description="Delivery attempts so far, manual retries "
                          "included")


@contract("notification.sent")
class NotificationSent(NotificationFacts):
    """A notification was delivered: the SMTP server or the plant system accepted it.

    Published once per notification, also when a manual retry delivers a parked one."""

    sent_at: datetime
    status_code: int | None = Field(None, description="HTTP status (webhooks) or SMTP code")


@contract("notification.failed")
class NotificationFailed(NotificationFacts):
    """Notify gave up on a notification: parked after its retry limit, or refused
    permanently. Not published for a failed attempt that is still retried. Ops may retry
    it by hand (`POST /notifications/{id}/retry`): `notification.sent` follows if it works,
    another `notification.failed` if it is given up again."""

    failed_at: datetime
    last_error: LongText = Field(..., description="The last attempt's error or answer")
    status_code: int | None = Field(None, description="HTTP status (webhooks) or SMTP code "
                                    "of the last attempt")
    permanent: bool = Field(..., description="Refused for good (the SMTP server refused "
                            "the recipient; the subscription was deleted or deactivated) "
                            "rather than given up after the retry limit")
    parked: bool = Field(..., description="Kept for a manual retry (`POST /notifications/"
                         "{id}/retry`)")
