"""The outbox relay: publishes the events saved in documents, then drops their saves' marks.

Runs in every service. A save hands the relay the events it wrote (`notify`), each naming
its save's mark in `outbox_due` (`OutboxMarks`); the relay publishes them and drops the
marks by `_id`. It writes nothing to the documents: a published event stays in its
document's outbox until the next save of the document leaves it out (`Repository.save`),
and a mark that is gone is what says it was published. What a crash, or another instance
that died, left unpublished is found by the sweep, at start and every `sweep_interval_s`:
it reads the marks (bounded by unpublished events), never the stores' history, and
publishes the events in the marked documents that name a mark still there. The stores
themselves are swept for `outbox_pending` once per database, for events saved before marks
existed.

A crash between publishing and dropping the mark only means the event is published again
later: consumers are idempotent by event id, so several relays (several instances) are safe.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from pymongo.asynchronous.collection import AsyncCollection

from shared.messaging import EventPublisher
from shared.periods import load
from shared.store import MARK, MARK_GRACE_S, OUTBOX, PENDING, OutboxMarks, WriteLocks

log = logging.getLogger("qms.outbox")

# Documents whose events the relay publishes at once. Each costs a broker confirm and a
# mark's delete; one after another, notify's relay fell behind its saves in the soak (5/s) while
# its process idled, waiting on FerretDB.
RELAY_PARALLEL = 8
# A publish not confirmed within this long counts as refused: kept pending and tried again
# (a copy the broker did take is one more delivery, which consumers recognise by event id).
# Without it, one publish that never completes (a confirm lost around a reconnect) would hold
# the relay's round, and every document's events behind it, for good.
PUBLISH_TIMEOUT_S = 15.0


class OutboxRelay:
    def __init__(self, service: str, collections: list[AsyncCollection],
                 publisher: EventPublisher, interval_s: float, registry: CollectorRegistry,
                 locks: WriteLocks, marks: OutboxMarks, sweep_interval_s: float = 60.0):
        self.service = service
        self.locks = locks  # for the one-time sweep of the stores, which empties outboxes
        self.marks = marks
        self.collections = collections
        self.publisher = publisher
        self.interval_s = interval_s  # how soon a document the broker refused is tried again
        self.sweep_interval_s = sweep_interval_s
        self.publish_timeout_s = PUBLISH_TIMEOUT_S
        # collection name -> id of a document with news -> the events its saves wrote, in order
        self._due: dict[str, dict[Any, list[dict[str, Any]]]] = {}
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

    def notify(self, collection: str | None = None, doc_id: Any = None,
               events: list[dict[str, Any]] | None = None) -> None:
        """A save wrote `events` into `doc_id` (each naming its save's mark): publish them
        now. Without a document, sweep."""
        if collection is None or doc_id is None:
            self._next_sweep = 0.0
        elif events:
            due = self._due.setdefault(collection, {})
            due[doc_id] = due.get(doc_id, []) + events
        self._wake.set()

    def settled(self) -> bool:
        """The start's sweeps are done (the marks', and the one-time sweep of the stores)
        and nothing saved is waiting to be published."""
        return (self._next_sweep > 0 and not self._due and self.store_sweep is not None
                and self.store_sweep.done())

    def _collection(self, name: str) -> AsyncCollection | None:
        return next((c for c in self.collections if c.name == name), None)

    def _again(self, name: str, doc_id: Any, events: list[dict[str, Any]]) -> None:
        """Not published: told again, ahead of what newer saves told meanwhile."""
        due = self._due.setdefault(name, {})
        due[doc_id] = events + due.get(doc_id, [])

    async def publish_due(self) -> int:
        """Publish the events saves told us about, `RELAY_PARALLEL` documents at a time (in
        order within each); what the broker refused stays told, in order."""
        due, self._due = self._due, {}
        slots = asyncio.Semaphore(RELAY_PARALLEL)

        jobs: list[Awaitable[int]] = []
        for name, docs in due.items():
            coll = self._collection(name)
            if coll is not None:
                jobs += [self._publish_or_again(coll, doc_id, events, slots)
                         for doc_id, events in docs.items()]
        return await _total(jobs)

    async def _publish_or_again(self, coll: AsyncCollection, doc_id: Any,
                                events: list[dict[str, Any]], slots: asyncio.Semaphore) -> int:
        """Publish a document's events (in one of `slots`); what the broker refused, or a
        failure cut off, stays told, in order, and is tried again every `interval_s`."""
        try:
            async with slots:
                sent = await self._publish_events(coll, doc_id, events)
        except BaseException:
            self._again(coll.name, doc_id, events)
            raise
        if sent < len(events):
            self._again(coll.name, doc_id, events[sent:])
        return sent

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
        """The sweep: publish the events of every save `outbox_due` marks; returns how many
        were sent. Reads the marks (bounded by unpublished events) and the marked documents
        by `_id`. (The stores themselves are swept once per database, beside: `sweep_stores`.)"""
        marked: dict[str, dict[Any, list[dict[str, Any]]]] = {}
        for m in await self.marks.all():
            marked.setdefault(m["collection"], {}).setdefault(m["doc_id"], []).append(m)
        total = 0
        for name, docs in marked.items():
            total += await self._publish_marked(name, docs)
        return total

    async def _publish_marked(self, name: str, marks: dict[Any, list[dict[str, Any]]]) -> int:
        """Publish the marked events of these documents (`marks`: each one's marks, as the
        sweep read them). The documents are read together by `_id` (`$in`, in chunks)."""
        coll = self._collection(name)
        if coll is None:
            return 0
        slots = asyncio.Semaphore(RELAY_PARALLEL)
        waiting: list[dict[str, Any]] = []  # marks whose save is not in the document (yet)

        async def one(doc: dict[str, Any]) -> int:
            of_doc = marks[doc["_id"]]
            ids = {m["_id"] for m in of_doc}
            events = [e for e in doc.get(OUTBOX) or [] if e.get(MARK) in ids]
            named = {e[MARK] for e in events}
            version = doc.get("version", 0)
            # The document is at or past the mark's save, but holds none of its events: a
            # later save left them out (published), or the save never happened.
            void = [m["_id"] for m in of_doc if m["_id"] not in named
                    and m.get("version", 0) <= version]
            waiting.extend(m for m in of_doc if m["_id"] not in named
                           and m.get("version", 0) > version)
            if void:
                await self.mark_sent(coll, doc["_id"], void)
            # What the broker refuses (an outage) is tried again with the told events, every
            # `interval_s`, not left for the next sweep a minute later.
            return await self._publish_or_again(coll, doc["_id"], events, slots) \
                if events else 0

        docs = await load(coll, set(marks), projection={OUTBOX: 1, "version": 1})
        total = await _total(one(doc) for doc in docs)
        found = {doc["_id"] for doc in docs}
        waiting.extend(m for doc_id, of_doc in marks.items() if doc_id not in found
                       for m in of_doc)
        await self._drop_stale(waiting)
        return total

    async def _drop_stale(self, marks: list[dict[str, Any]]) -> None:
        """Marks whose save is not in their document, older than the grace: their saves
        never happened (a crash between the mark and the write). Younger ones may still."""
        stale = time.time() - MARK_GRACE_S
        for m in marks:
            if m["at"].timestamp() < stale:
                await self.marks.withdraw(m["_id"])

    async def sweep_stores(self) -> int:
        """Once per database: every pending event in the stores saved before marks existed,
        by the `outbox_pending` flag. A scan on FerretDB's SQLite handler (at 100,000
        complaints, minutes), an index on MongoDB: so it runs in its own task, and events
        saved meanwhile go out as usual."""
        if await self.marks.store_swept():
            return 0
        total = await self._sweep_stores()
        await self.marks.mark_store_swept()
        return total

    async def _sweep_stores(self) -> int:
        total = 0
        for coll in self.collections:
            async for doc in coll.find({PENDING: True}, projection={OUTBOX: 1}):
                # Events with a mark are the marks' sweep's (published here as well, they
                # would go out twice).
                events = [e for e in doc.get(OUTBOX) or [] if MARK not in e]
                sent = await self._send(events)
                update: dict[str, Any] = {}
                if sent:  # $pullAll of the exact entries read: FerretDB's $pull matches
                    update["$pullAll"] = {OUTBOX: sent}  # whole elements only
                    self.published.labels(self.service).inc(len(sent))
                if len(sent) == len(events):
                    update["$set"] = {PENDING: False}
                if update:
                    async with self.locks(coll.name, doc["_id"]):
                        await coll.update_one({"_id": doc["_id"]}, update)
                total += len(sent)
        return total

    async def _publish_events(self, coll: AsyncCollection, doc_id: Any,
                              events: list[dict[str, Any]]) -> int:
        """Publish a document's events in order, then drop the marks whose events all went
        out. Returns how many were sent."""
        sent = await self._send(events)
        if sent:
            left = {e.get(MARK) for e in events[len(sent):]}
            done = list(dict.fromkeys(m for e in sent if (m := e.get(MARK)) not in left
                                      and m is not None))
            await self.mark_sent(coll, doc_id, done)
            self.published.labels(self.service).inc(len(sent))
        return len(sent)

    async def mark_sent(self, coll: AsyncCollection, doc_id: Any, marks: list[str]) -> None:
        """Every event of these marks' saves of `doc_id` is published: drop the marks. The
        document is not written: its next save leaves the events out."""
        self.marks.published(marks)
        await self.marks.settle(marks)

    async def _round(self) -> None:
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + self.sweep_interval_s
            told, self._due = self._due, {}  # the sweep publishes them too
            try:
                await self.flush()
            except BaseException:
                # Not swept (the store or the broker away): what saves told stays told.
                for name, docs in told.items():
                    for doc_id, events in docs.items():
                        self._again(name, doc_id, events)
                raise
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
