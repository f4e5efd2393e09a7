"""Reporting consumes every event on the exchange: it keeps the history, append-only, and
projects the event into the read models.

The history is what a rebuild of the read models replays; an event is stored
once, whatever the redeliveries (its id is the document id). The projection is
idempotent too (see `readmodels`), and waits at the gate while the read models
recover (before this replica's first event: it has just become the one writer) or
are rebuilt.
"""

from pymongo.errors import DuplicateKeyError

from services.reporting.readmodels import HISTORY
from services.reporting.views import Views
from shared.batching import insert
from shared.events import Contract, Envelope
from shared.service import Service


def register(service: Service, views: Views) -> None:
    @service.consumer.on_any
    async def on_event(event: Envelope, payload: Contract) -> None:
        await views.take_over()
        await keep_history(service, event)
        async with views.gate.shared():
            result = await views.models.project(event, payload)
        if result is not None:
            views.metrics.observe(event, payload, result)
            for hook in views.row_hooks:  # records retention: a closure starts the period
                await hook(result.row)


async def keep_history(service: Service, event: Envelope) -> None:
    doc = event.model_dump(mode="python") | {"_id": event.id}
    try:
        await insert(service.database[HISTORY], doc)
    except DuplicateKeyError:
        pass  # a redelivery: already kept
