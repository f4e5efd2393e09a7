"""Events capa consumes from Quality, each applied once whatever the redeliveries.

- `complaint.responsibility_assigned` → one action request per responsible unit
  (ids chosen by Quality, so a redelivery finds them and creates nothing);
- `complaint.countermeasures_verified` / `_rejected` → accepted / returned;
- `complaint.recurrence_detected` → a formal CAPA (id derived from the event id);
- from Sales: `feedback.withdrawn` → the complaint's open action requests are withdrawn;
  `feedback.evidence_added` → the evidence reaches its open action requests too.
"""

import asyncio
import logging
from collections.abc import Callable
from uuid import NAMESPACE_URL, uuid5

from pymongo.errors import DuplicateKeyError

from services.capa.domain import (
    ENDED_CAPA_STATUSES,
    OPEN_ACTION_STATUSES,
    ActionRequest,
    Capa,
)
from services.capa.settings import Settings
from shared.contracts import (
    CountermeasuresRejected,
    CountermeasuresVerified,
    EvidenceAdded,
    FeedbackWithdrawn,
    RecurrenceDetected,
    ResponsibilityAssigned,
)
from shared.errors import Conflict
from shared.events import Actor, Contract, Envelope, utcnow
from shared.service import Service
from shared.store import AlreadyExists, Repository

log = logging.getLogger("qms.capa")

ACTIONS = "actions"
CAPAS = "capas"
WITHDRAWN = "withdrawn_feedback"  # complaints Sales withdrew: for assignments arriving later
CAPA_IDS = uuid5(NAMESPACE_URL, "qms:capa:recurrence")


class UnknownActionRequest(Exception):
    """Quality decided on an action request capa never opened: retry, then the DLQ for ops."""


def capa_id_for(event_id: str) -> str:
    """The CAPA a recurrence event opens: the same id however often the event arrives."""
    return str(uuid5(CAPA_IDS, event_id))


async def add_numbered(repo: Repository[Capa], make: Callable[[str], Capa]) -> Capa:
    """Add the CAPA `make` builds with the next free `CAPA-<year>-<4 digits>`."""
    year = utcnow().year
    return await repo.add_numbered(f"CAPA-{year}", lambda n: make(f"CAPA-{year}-{n:04d}"))


def register(service: Service, settings: Settings) -> None:
    recurrence_lock = asyncio.Lock()  # rare events: one at a time, so one CAPA per kind

    @service.consumer.on("complaint.responsibility_assigned")
    async def on_responsibility_assigned(event: Envelope, payload: Contract) -> None:
        assert isinstance(payload, ResponsibilityAssigned)
        repo = service.repo(ACTIONS)
        # Sales' withdrawal and Quality's assignment travel separately and may arrive in
        # either order: a request for a complaint already withdrawn opens withdrawn.
        withdrawn = await service.database[WITHDRAWN].find_one({"_id": payload.feedback_id})
        for unit in payload.units:
            if await repo.get(unit.action_id) is not None:
                continue  # a redelivery: this unit's request exists already
            request = ActionRequest.open(unit, payload, event.actor, event.id)
            if withdrawn is not None:
                request.withdraw(withdrawn["reason"], Actor.model_validate(withdrawn["actor"]),
                                 withdrawn["event_id"])
            try:
                await repo.add(request)
            except AlreadyExists:
                pass

    async def decide(event: Envelope, action_id: str,
                     apply: Callable[[ActionRequest], None]) -> None:
        try:
            applied = await service.repo(ACTIONS).apply_event(action_id, event, apply)
        except Conflict as exc:
            # Retrying cannot change the state (e.g. Quality decided twice): keep the record
            # as it is and say so in the log.
            log.warning("%s on action request %s ignored: %s", event.type, action_id, exc)
            return
        if applied is None:
            raise UnknownActionRequest(f"action request {action_id} does not exist")

    @service.consumer.on("complaint.countermeasures_verified")
    async def on_verified(event: Envelope, payload: Contract) -> None:
        assert isinstance(payload, CountermeasuresVerified)
        await decide(event, payload.action_id,
                     lambda action: action.accept(payload.note, event.actor, event.id))

    @service.consumer.on("complaint.countermeasures_rejected")
    async def on_rejected(event: Envelope, payload: Contract) -> None:
        assert isinstance(payload, CountermeasuresRejected)
        await decide(event, payload.action_id,
                     lambda action: action.reject(payload.reason, event.actor, event.id))

    @service.consumer.on("complaint.recurrence_detected")
    async def on_recurrence(event: Envelope, payload: Contract) -> None:
        assert isinstance(payload, RecurrenceDetected)
        repo = service.repo(CAPAS)
        capa_id = capa_id_for(event.id)
        async with recurrence_lock:
            if await repo.collection.count_documents({"applied_events": event.id}, limit=1):
                return  # a redelivery: the CAPA was opened (or linked) already
            if settings.link_recurrence_to_open_capa:
                open_one = await repo.collection.find_one(
                    {"kind": payload.kind,
                     "status": {"$nin": [s.value for s in ENDED_CAPA_STATUSES]}},
                    projection={"_id": 1})
                if open_one is not None:
                    await repo.apply_event(open_one["_id"], event,
                                           lambda c: c.link(payload, event.actor, event.id))
                    return
            try:
                await add_numbered(repo, lambda number: Capa.from_recurrence(
                    capa_id, number, payload, event.actor, event.id))
            except AlreadyExists:
                pass

    async def on_open_requests(feedback_id: str, event: Envelope,
                               apply: Callable[[ActionRequest], None]) -> None:
        """Apply a Sales event to every open action request of the complaint (each once)."""
        repo = service.repo(ACTIONS)
        open_ones = await repo.collection.find(
            {"feedback_id": feedback_id,
             "status": {"$in": [s.value for s in OPEN_ACTION_STATUSES]}},
            projection={"_id": 1}).to_list(None)
        for doc in open_ones:
            await repo.apply_event(doc["_id"], event, apply)

    @service.consumer.on("feedback.withdrawn")
    async def on_feedback_withdrawn(event: Envelope, payload: Contract) -> None:
        assert isinstance(payload, FeedbackWithdrawn)
        try:  # remembered for requests whose assignment arrives after the withdrawal
            await service.database[WITHDRAWN].insert_one({
                "_id": payload.feedback_id, "reason": payload.reason, "event_id": event.id,
                "actor": event.actor.model_dump(mode="json"), "at": event.occurred_at})
        except DuplicateKeyError:
            pass  # a redelivery
        await on_open_requests(payload.feedback_id, event,
                               lambda a: a.withdraw(payload.reason, event.actor, event.id))

    @service.consumer.on("feedback.evidence_added")
    async def on_evidence_added(event: Envelope, payload: Contract) -> None:
        assert isinstance(payload, EvidenceAdded)
        await on_open_requests(payload.feedback_id, event,
                               lambda a: a.add_evidence(payload, event.actor, event.id))
