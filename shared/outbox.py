"""The outbox relay: publishes the events saved in documents, then marks them sent.

Runs in every service. A crash between publishing and marking only means the
event is published again later: consumers are idempotent by event id, so
several relays (several instances) are safe too.
"""

import asyncio
import logging

from prometheus_client import CollectorRegistry, Counter
from pymongo.asynchronous.collection import AsyncCollection

from shared.messaging import EventPublisher
from shared.store import OUTBOX, PENDING, WriteLocks

log = logging.getLogger("qms.outbox")


class OutboxRelay:
    def __init__(self, service: str, collections: list[AsyncCollection],
                 publisher: EventPublisher, interval_s: float, registry: CollectorRegistry,
                 locks: WriteLocks):
        self.service = service
        self.locks = locks
        self.collections = collections
        self.publisher = publisher
        self.interval_s = interval_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._stopping = False
        self.published = Counter("qms_outbox_published_total", "Events published by the relay",
                                 ["service"], registry=registry)
        self.failures = Counter("qms_outbox_publish_failures_total",
                                "Events the broker refused or could not route (kept pending)",
                                ["service"], registry=registry)

    def notify(self) -> None:
        """A save wrote events: publish them now rather than at the next sweep."""
        self._wake.set()

    async def flush(self) -> int:
        """Publish every pending event, oldest document first; returns how many were sent."""
        total = 0
        for coll in self.collections:
            cursor = coll.find({PENDING: True}, projection={OUTBOX: 1})
            async for doc in cursor:
                total += await self._publish_document(coll, doc)
        return total

    async def _publish_document(self, coll: AsyncCollection, doc: dict) -> int:
        sent: list[dict] = []
        for event in doc.get(OUTBOX) or []:
            try:
                await self.publisher.publish(event)
            except Exception as exc:  # noqa: BLE001 - keep it pending, keep the order
                self.failures.labels(self.service).inc()
                log.error("could not publish event %s (%s): %s; it stays pending",
                          event.get("id"), event.get("type"), exc)
                break
            sent.append(event)
        if sent:
            await self.mark_sent(coll, doc["_id"], sent)
            self.published.labels(self.service).inc(len(sent))
        return len(sent)

    async def mark_sent(self, coll: AsyncCollection, doc_id: str, events: list[dict]) -> None:
        # $pullAll of the exact entries read: FerretDB's $pull matches whole elements only.
        async with self.locks(coll.name, doc_id):
            await coll.update_one({"_id": doc_id}, {"$pullAll": {OUTBOX: events}})
            # Clear the flag only if no save pushed new events meanwhile.
            await coll.update_one({"_id": doc_id, OUTBOX: []}, {"$set": {PENDING: False}})

    async def run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                await self.flush()
            except Exception as exc:  # noqa: BLE001 - the relay must outlive a broker hiccup
                log.error("outbox sweep failed: %s", exc)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval_s)
            except TimeoutError:
                pass

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=f"{self.service}-outbox-relay")

    async def stop(self) -> None:
        """Stop sweeping, then publish whatever is still pending (graceful shutdown)."""
        self._stopping = True
        self._wake.set()
        if self._task:
            await self._task
        try:
            await self.flush()
        except Exception as exc:  # noqa: BLE001
            log.warning("final outbox flush failed (will be sent at next start): %s", exc)
