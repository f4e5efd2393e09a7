"""Events capa consumes from Quality, each applied once whatever the redeliveries.

- `complaint.responsibility_assigned` → one action request per responsible unit
  (ids chosen by Quality, so a redelivery finds them and creates nothing);
- `complaint.countermeasures_verified` / `_rejected` → accepted / returned;
- `complaint.recurrence_detected` → a formal CAPA (id derived from the event id), owned by
  default by the unit responsible for most of its complaints (remembered from the
  assignments in `feedback_units`) and that unit's head, until Quality confirms;
- from Sales: `feedback.withdrawn` → the complaint's open action requests are withdrawn;
  `feedback.evidence_added` → the evidence reaches its open action requests too.

Each handler reads by `_id` (records, and small lookup collections keyed by what is looked
up) or reads the open-work collections: on FerretDB any other read would read the whole
history (see `services.capa.open_work`).
"""

import asyncio
import logging
from collections.abc import Callable
from typing import Any
from uuid import NAMESPACE_URL, uuid5

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from services.capa.domain import OPEN_ACTION_STATUSES, ActionRequest, Capa, most_responsible
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
from shared.units import head_of

log = logging.getLogger("qms.capa")

ACTIONS = "actions"
CAPAS = "capas"
WITHDRAWN = "withdrawn_feedback"  # complaints Sales withdrew: for assignments arriving later
NUMBERS = "capa_numbers"  # the capas' lookup (`shared.lookups`): CAPA number -> CAPA id
LINKS = "recurrence_links"  # {_id: event id, capa_id}: the open CAPA a recurrence joined
# {_id: feedback id, units}: the units Quality held responsible for a complaint (every round),
# so a recurrence's CAPA gets its default owner by `_id` reads
FEEDBACK_UNITS = "feedback_units"
CAPA_IDS = uuid5(NAMESPACE_URL, "qms:capa:recurrence")


class UnknownActionRequest(Exception):
    """Quality decided on an action request capa never opened: retry, then the DLQ for ops."""


def capa_id_for(event_id: str) -> str:
    """The CAPA a recurrence event opens: the same id however often the event arrives."""
    return str(uuid5(CAPA_IDS, event_id))


async def add_numbered(repo: Repository[Capa], make: Callable[[str], Capa]) -> Capa:
    """Add the CAPA `make` builds with the next free `CAPA-<year>-<4 digits>`, its number
    claimed in `capa_numbers` first (the collection's lookup, declared in app.py)."""
    year = utcnow().year
    return await repo.add_numbered(f"CAPA-{year}", lambda n: make(f"CAPA-{year}-{n:04d}"))


async def capa_by_number(repo: Repository[Capa], number: str) -> Capa | None:
    """By the lookup entry, then the CAPA: `_id` reads only. Every number is claimed there
    before its CAPA is written, and the start names the older ones once (`shared.lookups`),
    so a number that is not there names no CAPA."""
    return await repo.by_number(number)


def register(service: Service, settings: Settings) -> None:
    recurrence_lock = asyncio.Lock()  # rare events: one at a time, so one CAPA per kind

    @service.consumer.on("complaint.responsibility_assigned")
    async def on_responsibility_assigned(event: Envelope, payload: Contract) -> None:
        assert isinstance(payload, ResponsibilityAssigned)
        await remember_units(service.database[FEEDBACK_UNITS], payload)
        repo = service.repo(ACTIONS)
        # Sales' withdrawal and Quality's assignment travel separately and may arrive in
        # either order: a request for a complaint already withdrawn opens withdrawn.
        withdrawn = await service.database[WITHDRAWN].find_one({"_id": payload.feedback_id})
        for unit in payload.units:
            request = ActionRequest.open(unit, payload, event.actor, event.id)
            if withdrawn is not None:
                request.withdraw(withdrawn["reason"], Actor.model_validate(withdrawn["actor"]),
                                 withdrawn["event_id"])
            try:
                # Not looked up first: a redelivery is rare, and the insert refuses it.
                await repo.add(request)
            except AlreadyExists:
                pass  # a redelivery: this unit's request exists already
        if withdrawn is None:
            # A withdrawal handled meanwhile withdrew the requests it found in `actions_open`;
            # one added after its look is withdrawn here (each applies the withdrawal once).
            late = await service.database[WITHDRAWN].find_one({"_id": payload.feedback_id})
            if late is not None:
                for unit in payload.units:
                    await withdraw_once(repo, unit.action_id, late)

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
        links = service.database[LINKS]
        async with recurrence_lock:
            if await repo.exists(capa_id):
                return  # a redelivery: this event opened its CAPA already
            link = await links.find_one({"_id": event.id})
            if link is None and settings.link_recurrence_to_open_capa:
                open_ones = await repo.kept_open().all({"kind": payload.kind},
                                                     projection={"opened_at": 1})
                if open_ones:
                    oldest = min(open_ones, key=lambda c: (c["opened_at"], c["_id"]))
                    # Which CAPA this event joins, before joining it: a redelivery, even after
                    # that CAPA has closed, joins the same one (once) and opens none.
                    link = {"_id": event.id, "capa_id": oldest["_id"]}
                    try:
                        await links.insert_one(link)
                    except DuplicateKeyError:
                        link = await links.find_one({"_id": event.id})
            if link is not None:
                await repo.apply_event(link["capa_id"], event,
                                       lambda c: c.link(payload, event.actor, event.id))
                return
            unit = await responsible_unit(service.database[FEEDBACK_UNITS],
                                          payload.feedback_ids)
            owner = head_of(settings.unit_heads, unit) if unit else None
            try:
                await add_numbered(repo, lambda number: Capa.from_recurrence(
                    capa_id, number, payload, event.actor, event.id, owner_unit=unit,
                    owner=owner))
            except AlreadyExists:
                pass

    async def on_open_requests(feedback_id: str, event: Envelope,
                               apply: Callable[[ActionRequest], None]) -> None:
        """Apply a Sales event to every open action request of the complaint (each once)."""
        repo = service.repo(ACTIONS)
        open_ones = await repo.kept_open().all({"feedback_id": feedback_id}, projection={"_id": 1})
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


async def remember_units(store: AsyncCollection, assigned: ResponsibilityAssigned) -> None:
    """Add the complaint's responsible units (in the order Quality named them) to what capa
    knows of it: a redelivery adds nothing."""
    units = {"$addToSet": {"units": {"$each": [u.unit for u in assigned.units]}}}
    try:
        await store.update_one({"_id": assigned.feedback_id}, units, upsert=True)
    except DuplicateKeyError:  # two rounds' events raced to create it: it exists now
        await store.update_one({"_id": assigned.feedback_id}, units)


async def responsible_unit(store: AsyncCollection, feedback_ids: list[str]) -> str | None:
    """The unit responsible for most of these complaints (`most_responsible`), by `_id`."""
    docs = {d["_id"]: d.get("units", []) for d in
            await store.find({"_id": {"$in": feedback_ids}}).to_list(None)}
    return most_responsible([docs[f] for f in feedback_ids if f in docs])


async def withdraw_once(repo: Repository[ActionRequest], action_id: str,
                        withdrawn: dict[str, Any]) -> None:
    """Apply Sales' remembered withdrawal to one request, once (as its event would)."""
    event_id = withdrawn["event_id"]
    actor = Actor.model_validate(withdrawn["actor"])

    def once(action: ActionRequest) -> bool | None:
        if action.has_applied(event_id) or action.status not in OPEN_ACTION_STATUSES:
            return False  # withdrawn by the event already, or no longer open: nothing to do
        action.withdraw(withdrawn["reason"], actor, event_id)
        action.mark_applied(event_id)
        return None

    if await repo.exists(action_id):
        await repo.change(action_id, once)
