"""Events intake applies: Quality's acceptance (due time), its record for Sales, a case
Quality found major (P-5.3.5), and
complaints that arrived by mail or fax (from notify's inbound endpoint).

Idempotent: the effect and the event id are written in one update
(`Repository.apply_event`), so a redelivery changes nothing.
"""

from collections.abc import Callable
from uuid import UUID, uuid5

from services.intake import numbers
from services.intake.domain import Feedback, register_number
from shared.contracts import (
    ComplaintAccepted,
    MailReceived,
    MajorAlert,
    ResolutionReady,
    ResponsibilityAssigned,
)
from shared.events import Contract, Envelope
from shared.service import Service
from shared.store import AlreadyExists

# A mail always maps to the same feedback id, so a redelivered mail registers nothing new.
MAIL_NS = UUID("0d7c3a52-2f7e-4b8e-9f57-5e3f1c9b6a21")

FEEDBACK = "feedback"


class UnknownFeedback(LookupError):
    """The event names a feedback this register does not (yet) hold: retried, then DLQ."""


def register(service: Service) -> None:
    async def apply(feedback_id: str, event: Envelope,
                    effect: Callable[[Feedback], None]) -> None:
        if await service.repo(FEEDBACK).apply_event(feedback_id, event, effect) is None:
            raise UnknownFeedback(f"feedback {feedback_id} is not in the register")

    @service.consumer.on("complaint.accepted")
    async def quality_accepted(event: Envelope, payload: Contract) -> None:
        assert isinstance(payload, ComplaintAccepted)
        await apply(payload.feedback_id, event, lambda fb: fb.quality_accepted(payload, event))

    @service.consumer.on("complaint.resolution_ready")
    async def resolution_ready(event: Envelope, payload: Contract) -> None:
        assert isinstance(payload, ResolutionReady)
        await apply(payload.feedback_id, event,
                    lambda fb: fb.quality_record_ready(payload, event))

    @service.consumer.on("complaint.responsibility_assigned")
    async def units_assigned(event: Envelope, payload: Contract) -> None:
        assert isinstance(payload, ResponsibilityAssigned)
        await apply(payload.feedback_id, event, lambda fb: fb.units_assigned(payload, event))

    @service.consumer.on("complaint.major_alert")
    async def major_alert(event: Envelope, payload: Contract) -> None:
        assert isinstance(payload, MajorAlert)
        await apply(payload.feedback_id, event, lambda fb: fb.major_flagged(payload, event))

    @service.consumer.on("mail.received")
    async def mail_received(event: Envelope, payload: Contract) -> None:
        assert isinstance(payload, MailReceived)
        repo = service.repo(FEEDBACK)
        if payload.register_no:
            known = await numbers.feedback_id(repo, payload.register_no)
            if known is not None:
                await apply(known, event, lambda fb: fb.mail_followup(payload, event.actor))
                return
        fid = str(uuid5(MAIL_NS, payload.mail_id))
        if await repo.get(fid) is not None:
            return  # a redelivery: registered already
        year = payload.received_at.year

        def from_mail(number: int) -> Feedback:
            fb = Feedback.from_mail(payload, id=fid, register_no=register_number(year, number),
                                    actor=event.actor)
            fb.mark_applied(event.id)
            return fb

        try:  # the number is claimed in `register_numbers` before the feedback is written
            await repo.add_numbered(f"CF-{year}", from_mail)
        except AlreadyExists:
            return  # another delivery of the same mail won the race
