"""The outbox relay: publishes the events saved in documents, then marks them sent.

Runs in every service. A save tells the relay which document it wrote (`notify`), and the
relay reads that document by `_id` and publishes its events: the steady state costs one
`_id` lookup per save, however much history the store holds. The whole store is swept
for `outbox_pending` only at start and every `sweep_interval_s` (what a crash, or another
instance that died, left behind): that read grows with history, so it stays rare.

A crash between publishing and marking only means the event is published again later:
consumers are idempotent by event id, so several relays (several instances) are safe too.
"""

import asyncio
import logging
import time

from prometheus_client import CollectorRegistry, Counter
from pymongo.asynchronous.collection import AsyncCollection

from shared.messaging import EventPublisher
from shared.store import OUTBOX, PENDING, WriteLocks

log = logging.getLogger("qms.outbox")


class OutboxRelay:
    def __init__(self, service: str, collections: list[AsyncCollection],
                 publisher: EventPublisher, interval_s: float, registry: CollectorRegistry,
                 locks: WriteLocks, sweep_interval_s: float = 3600.0):
        self.service = service
        self.locks = locks
        self.collections = collections
        self.publisher = publisher
        self.interval_s = interval_s  # how soon a document the broker refused is tried again
        self.sweep_interval_s = sweep_interval_s
        self._due: dict[str, set[str]] = {}  # collection name -> ids of documents with news
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._next_sweep = 0.0  # at start: sweep first
        self.published = Counter("qms_outbox_published_total", "Events published by the relay",
                                 ["service"], registry=registry)
        self.failures = Counter("qms_outbox_publish_failures_total",
                                "Events the broker refused or could not route (kept pending)",
                                ["service"], registry=registry)

    def notify(self, collection: str | None = None, doc_id: str | None = None) -> None:
        """A save wrote events into `doc_id`: publish them now. Without a document, sweep."""
        if collection is None or doc_id is None:
            self._next_sweep = 0.0
        else:
            self._due.setdefault(collection, set()).add(doc_id)
        self._wake.set()

    def _collection(self, name: str) -> AsyncCollection | None:
        return next((c for c in self.collections if c.name == name), None)

    async def publish_due(self) -> int:
        """Publish the documents saves told us about; those the broker refused stay due."""
        due, self._due = self._due, {}
        total = 0
        for name, ids in due.items():
            coll = self._collection(name)
            if coll is None:
                continue
            for doc_id in ids:
                doc = await coll.find_one({"_id": doc_id}, projection={OUTBOX: 1})
                if not doc:
                    continue
                sent = await self._publish_document(coll, doc)
                total += sent
                if sent < len(doc.get(OUTBOX) or []):
                    self._due.setdefault(name, set()).add(doc_id)
        return total

    async def flush(self) -> int:
        """The sweep: publish every pending event in the store; returns how many were sent.

        Reads every collection by the `outbox_pending` flag: a scan on FerretDB's SQLite
        handler, an index on MongoDB. At start and rarely, never per save."""
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

    async def _round(self) -> None:
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + self.sweep_interval_s
            self._due = {}  # the sweep publishes them too
            await self.flush()
        else:
            await self.publish_due()

    async def run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                await self._round()
            except Exception as exc:  # noqa: BLE001 - the relay must outlive a broker hiccup
                log.error("outbox relay round failed: %s", exc)
            timeout = self.interval_s if self._due else self._next_sweep - time.monotonic()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, timeout))
            except TimeoutError:
                pass

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=f"{self.service}-outbox-relay")

    async def stop(self) -> None:
        """Stop, then publish what this process saved and has not sent (graceful shutdown).

        What is still pending after that is sent by the next start's sweep."""
        self._stopping = True
        self._wake.set()
        if self._task:
            await self._task
        try:
            await self.publish_due()
        except Exception as exc:  # noqa: BLE001
            log.warning("final outbox flush failed (will be sent at next start): %s", exc)
