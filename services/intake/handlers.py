"""Events intake applies: Quality's acceptance (due time) and its record for Sales.

Idempotent: the effect and the event id are written in one update
(`Repository.apply_event`), so a redelivery changes nothing.
"""

from collections.abc import Callable

from services.intake.domain import Feedback
from shared.contracts import ComplaintAccepted, ResolutionReady
from shared.events import Contract, Envelope
from shared.service import Service

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
