"""Reporting consumes every event on the exchange and keeps the history, append-only.

The history is what a rebuild of the read models replays; an event is stored
once, whatever the redeliveries (its id is the document id).
"""

from pymongo.errors import DuplicateKeyError

from shared.events import Contract, Envelope
from shared.service import Service


def register(service: Service) -> None:
    @service.consumer.on_any
    async def keep_history(event: Envelope, _payload: Contract) -> None:
        doc = event.model_dump(mode="python") | {"_id": event.id}
        try:
            await service.db["event_history"].insert_one(doc)
        except DuplicateKeyError:
            pass  # a redelivery: already kept
