"""The outbox relay: publishes the events saved in documents, then marks them sent.

Runs in every service. A save tells the relay which document it wrote (`notify`), and the
relay reads that document by `_id` and publishes its events: the steady state costs one
`_id` lookup per save, however much history the store holds. What a crash, or another
instance that died, left unpublished is found by the sweep, at start and every
`sweep_interval_s`: it reads `outbox_due` (`OutboxMarks`, one mark per save with events
until they are published), never the stores' history. The stores themselves are swept for
`outbox_pending` once per database, for events saved before marks existed.

A crash between publishing and marking only means the event is published again later:
consumers are idempotent by event id, so several relays (several instances) are safe too.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from pymongo.asynchronous.collection import AsyncCollection

from shared.messaging import EventPublisher
from shared.periods import load
from shared.store import MARK_GRACE_S, OUTBOX, PENDING, OutboxMarks, WriteLocks

log = logging.getLogger("qms.outbox")

# Documents whose events the relay publishes at once. Each costs a broker confirm and two
# writes; one after another, notify's relay fell behind its saves in the soak (5/s) while
# its process idled, waiting on FerretDB.
RELAY_PARALLEL = 8
# A publish not confirmed within this long counts as refused: kept pending and tried again
# (a copy the broker did take is one more delivery, which consumers recognise by event id).
# Without it, one publish that never completes (a confirm lost around a reconnect) would hold
# the relay's round, and every document's events behind it, for good.
PUBLISH_TIMEOUT_S = 15.0


@dataclass
class Told:
    """What this process's saves of one document wrote and have not published yet: the
    events, in order, and the version the last of those saves wrote."""

    version: int
    events: list[dict[str, Any]]
    marks: list[str]  # their `outbox_due` marks, dropped by `_id` once the events are out


class OutboxRelay:
    def __init__(self, service: str, collections: list[AsyncCollection],
                 publisher: EventPublisher, interval_s: float, registry: CollectorRegistry,
                 locks: WriteLocks, marks: OutboxMarks, sweep_interval_s: float = 60.0):
        self.service = service
        self.locks = locks
        self.marks = marks
        self.collections = collections
        self.publisher = publisher
        self.interval_s = interval_s  # how soon a document the broker refused is tried again
        self.sweep_interval_s = sweep_interval_s
        self.publish_timeout_s = PUBLISH_TIMEOUT_S
        # collection name -> id of a document with news -> what its saves told (None: read it)
        self._due: dict[str, dict[Any, Told | None]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.store_sweep: asyncio.Task | None = None  # once per database (`sweep_stores`)
        self._stopping = False
        self._next_sweep = 0.0  # at start: sweep first
        self.published = Counter("qms_outbox_published_total", "Events published by the relay",
                                 ["service"], registry=registry)
        self.failures = Counter("qms_outbox_publish_failures_total",
                                "Events the broker refused or could not route (kept pending)",
                                ["service"], registry=registry)

    def notify(self, collection: str | None = None, doc_id: Any = None, version: int = 0,
               events: list[dict[str, Any]] | None = None,
               marks: list[str] | None = None) -> None:
        """A save wrote `events` into `doc_id` at `version`, announced by `marks`: publish
        them now (without the events, the document is read). Without a document, sweep."""
        if collection is None or doc_id is None:
            self._next_sweep = 0.0
        else:
            due = self._due.setdefault(collection, {})
            earlier = due[doc_id] if doc_id in due else Told(0, [], [])
            due[doc_id] = None if events is None or earlier is None else \
                Told(max(version, earlier.version), earlier.events + events,
                     earlier.marks + (marks or []))
        self._wake.set()

    def settled(self) -> bool:
        """The start's sweeps are done (the marks', and the one-time sweep of the stores)
        and nothing saved is waiting to be published."""
        return (self._next_sweep > 0 and not self._due and self.store_sweep is not None
                and self.store_sweep.done())

    def _collection(self, name: str) -> AsyncCollection | None:
        return next((c for c in self.collections if c.name == name), None)

    async def publish_due(self) -> int:
        """Publish the events saves told us about, `RELAY_PARALLEL` documents at a time (in
        order within each); what the broker refused stays told, ahead of what newer saves
        told (a document whose events are not known is read, `_publish`)."""
        due, self._due = self._due, {}
        slots = asyncio.Semaphore(RELAY_PARALLEL)

        def again(name: str, doc_id: Any) -> None:
            self._due.setdefault(name, {})[doc_id] = None

        async def told_one(coll: AsyncCollection, doc_id: Any, told: Told) -> int:
            try:
                async with slots:
                    sent = await self._publish_events(coll, doc_id, told.events, told.version,
                                                      written=told.events, marks=told.marks)
            except BaseException:
                again(coll.name, doc_id)
                raise
            if sent < len(told.events):  # the broker refused: the rest stays told, in order
                due = self._due.setdefault(coll.name, {})
                later = due.get(doc_id, Told(0, [], []))  # what a newer save told meanwhile
                due[doc_id] = None if later is None else Told(
                    max(told.version, later.version), told.events[sent:] + later.events,
                    told.marks + later.marks)
            return sent

        async def read_ones(name: str, ids: set) -> int:
            sent, unread = await self._publish(name, ids)  # side by side there too
            for doc_id in unread:
                again(name, doc_id)
            return sent

        jobs: list[Awaitable[int]] = []
        for name, docs in due.items():
            coll = self._collection(name)
            if coll is None:
                continue
            jobs += [told_one(coll, doc_id, told) for doc_id, told in docs.items()
                     if told is not None]
            if unknown := {doc_id for doc_id, told in docs.items() if told is None}:
                jobs.append(read_ones(name, unknown))
        return await _total(jobs)

    async def _send(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Publish in order; stop at the first the broker refuses or does not confirm within
        `publish_timeout_s` (kept pending, in order)."""
        sent: list[dict] = []
        for event in events:
            try:
                await asyncio.wait_for(self.publisher.publish(event), self.publish_timeout_s)
            except Exception as exc:  # noqa: BLE001 - keep it pending, keep the order
                self.failures.labels(self.service).inc()
                log.error("could not publish event %s (%s): %s; it stays pending",
                          event.get("id"), event.get("type"),
                          f"not confirmed within {self.publish_timeout_s:g} s"
                          if isinstance(exc, TimeoutError) else exc)
                break
            sent.append(event)
        return sent

    async def flush(self) -> int:
        """The sweep: publish every document `outbox_due` marks; returns how many events
        were sent. Reads the marks (bounded by unpublished events) and the marked documents
        by `_id`. (The stores themselves are swept once per database, beside: `sweep_stores`.)"""
        total = 0
        marks = await self.marks.all()
        marked: dict[str, set] = {}
        for m in marks:
            marked.setdefault(m["collection"], set()).add(m["doc_id"])
        for name, ids in marked.items():
            sent, undone = await self._publish(name, ids, marks)
            total += sent
            for doc_id in ids - undone:
                await self._drop_stale(name, doc_id, marks)
        return total

    async def sweep_stores(self) -> int:
        """Once per database: every pending event in the stores, by the `outbox_pending`
        flag (events saved before marks existed). A scan on FerretDB's SQLite handler (at
        100,000 complaints, minutes), an index on MongoDB: so it runs in its own task, and
        events saved meanwhile go out as usual."""
        if await self.marks.store_swept():
            return 0
        total = await self._sweep_stores()
        await self.marks.mark_store_swept()
        return total

    async def _sweep_stores(self) -> int:
        total = 0
        for coll in self.collections:
            async for doc in coll.find({PENDING: True}, projection={OUTBOX: 1, "version": 1}):
                # A marked document is the relay's (a save since marks exist): publishing it
                # here as well would send its events twice.
                if not await self.marks.has(coll.name, doc["_id"]):
                    total += await self._publish_events(
                        coll, doc["_id"], doc.get(OUTBOX) or [], doc.get("version", 0))
        return total

    async def _publish(self, name: str, ids: set,
                       marks: list[dict[str, Any]] | None = None) -> tuple[int, set]:
        """Publish these documents' pending events: (events sent, ids with events left).
        `marks`: every mark, as the sweep read them (their `_id`s settle by `_id`).

        The documents are read together by `_id` (`$in`, in chunks): under load one read
        serves every save since the last round."""
        coll = self._collection(name)
        if coll is None:
            return 0, set()
        by_doc: dict[Any, list[dict[str, Any]]] = {}
        for m in marks or []:
            if m["collection"] == name:
                by_doc.setdefault(m["doc_id"], []).append(m)
        undone: set = set()
        slots = asyncio.Semaphore(RELAY_PARALLEL)

        async def one(doc: dict[str, Any]) -> int:
            pending = doc.get(OUTBOX) or []
            version = doc.get("version", 0)
            of_doc = None if marks is None else [
                m["_id"] for m in by_doc.get(doc["_id"], []) if m.get("version", 0) <= version]
            async with slots:
                if not pending:  # its events up to this version went out (here or elsewhere)
                    await self.marks.settle(name, doc["_id"], version, of_doc)
                    return 0
                sent = await self._publish_events(coll, doc["_id"], pending, version,
                                                  marks=of_doc)
            if sent < len(pending):
                undone.add(doc["_id"])
            return sent

        # A document not found is not written (yet): its marks wait for their save or grace.
        docs = await load(coll, ids, projection={OUTBOX: 1, "version": 1})
        return await _total(one(doc) for doc in docs), undone

    async def _drop_stale(self, name: str, doc_id: object, marks: list[dict]) -> None:
        """Marks of this document still there after it was published, older than the grace:
        their saves never happened (a crash between the mark and the write)."""
        stale = time.time() - MARK_GRACE_S
        for m in marks:
            if (m["collection"], m["doc_id"]) == (name, doc_id) and m["at"].timestamp() < stale:
                await self.marks.withdraw(m["_id"])

    async def _publish_events(self, coll: AsyncCollection, doc_id: Any,
                              events: list[dict[str, Any]], version: int,
                              written: list[dict[str, Any]] | None = None,
                              marks: list[str] | None = None) -> int:
        """Publish a document's events in order, then take out those sent (settling the marks
        once all are out). `written`: the events came from the saves, not from a read;
        `marks`: the ids of their marks, when known."""
        sent = await self._send(events)
        if sent:
            await self.mark_sent(coll, doc_id, sent, version, len(sent) == len(events), written,
                                 marks=marks)
            self.published.labels(self.service).inc(len(sent))
        return len(sent)

    async def mark_sent(self, coll: AsyncCollection, doc_id: str, events: list[dict],
                        version: int, everything: bool = False,
                        written: list[dict] | None = None,
                        marks: list[str] | None = None) -> None:
        """Take the sent events out of the document and drop their saves' marks: by `_id`
        when `marks` names them and every event was sent; else, once the outbox is empty,
        the marks of every save up to `version`, found by a filter. `written`: what the
        saves wrote, when the events came from them rather than from reading the document
        (which may also hold events of another process's saves: then it must match)."""
        async with self.locks(coll.name, doc_id):
            emptied = None
            if everything:  # the usual case, one write: nobody saved since we read
                exact = {OUTBOX: written} if written is not None else {}
                emptied = await coll.update_one({"_id": doc_id, "version": version} | exact,
                                                {"$set": {OUTBOX: [], PENDING: False}})
            if not emptied or not emptied.matched_count:
                # $pullAll of the exact entries read: FerretDB's $pull matches whole
                # elements only. Then clear the flag only if no save pushed new events.
                await coll.update_one({"_id": doc_id}, {"$pullAll": {OUTBOX: events}})
                emptied = await coll.update_one({"_id": doc_id, OUTBOX: []},
                                                {"$set": {PENDING: False}})
        if marks is not None:
            # Every event of these saves is out of the outbox now: their marks can go, even
            # if a newer save pushed events meanwhile (that save has a mark of its own).
            if everything:
                await self.marks.settle(coll.name, doc_id, version, marks)
        elif emptied.matched_count:
            await self.marks.settle(coll.name, doc_id, version)

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
        self.store_sweep = asyncio.create_task(self._sweep_stores_once(),
                                               name=f"{self.service}-outbox-store-sweep")

    async def _sweep_stores_once(self) -> None:
        try:
            sent = await self.sweep_stores()
        except Exception as exc:  # noqa: BLE001 - the next start tries again
            log.error("the one-time sweep of the stores failed (tried again at the next "
                      "start): %s", exc)
            return
        if sent:
            log.info("the one-time sweep of the stores published %d events", sent)

    async def stop(self) -> None:
        """Stop, then publish what this process saved and has not sent (graceful shutdown).

        What is still pending after that is sent by the next start's sweep (its marks)."""
        self._stopping = True
        self._wake.set()
        if self.store_sweep and not self.store_sweep.done():
            self.store_sweep.cancel()  # the next start sweeps again (no marker was written)
            await asyncio.gather(self.store_sweep, return_exceptions=True)
        if self._task:
            await self._task
        try:
            await self.publish_due()
        except Exception as exc:  # noqa: BLE001
            log.warning("final outbox flush failed (will be sent at next start): %s", exc)


async def _total(jobs: Iterable[Awaitable[int]]) -> int:
    """Run the jobs side by side; their sum, or the first failure once all have ended."""
    results = await asyncio.gather(*jobs, return_exceptions=True)
    if failed := [r for r in results if isinstance(r, BaseException)]:
        raise failed[0]
    return sum(r for r in results if isinstance(r, int))
