"""MongoDB storage: aggregates with optimistic concurrency and the outbox in the document.

A save writes the new state and the events it produced in ONE single-document
update, matched on `version` (atomic on MongoDB and FerretDB alike; no
multi-document transactions). Each event in `outbox` carries the mark of its save
(`OutboxMarks`): the relay (`shared.outbox`) publishes it and drops the mark, and
writes nothing to the document. The next save of the document leaves out the
events whose marks are gone, in the same update it writes anyway.
"""

import asyncio
import logging
import random
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import bson
from bson.codec_options import CodecOptions
from pymongo import AsyncMongoClient, ReturnDocument, monitoring
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from shared.batching import delete_ids, insert
from shared.domain import Aggregate, bson_safe
from shared.errors import Conflict, NotFound
from shared.events import Envelope
from shared.lookups import Lookup
from shared.periods import ALL_AT_ONCE, DayIndex, same_instant

log = logging.getLogger("qms.store")

FOLD_BATCH = 500  # summaries per reply when a timer folds open work (`OpenWork.each`)
RECENT_KEPT = 128  # documents per collection whose last write a process keeps (`RecentWrites`)

A = TypeVar("A", bound=Aggregate)

OUTBOX = "outbox"
MARK = "outbox_mark"  # on each event in an outbox: the mark of the save that wrote it
# Indexed flag of the events saved before marks existed (events without `MARK`), found once
# per database by the relay's sweep of the stores. Saves since marks exist leave it alone.
PENDING = "outbox_pending"
MARK_GRACE_S = 600.0  # a mark whose save has not happened after this long never will
PUBLISHED_KEPT = 4096  # marks a process remembers publishing (`OutboxMarks.published`)


class WriteLocks:
    """Serialises writes to one document within this process.

    FerretDB v1's SQLite handler runs an update's read and write in separate
    steps (upstream FerretDB#3040): two concurrent updates of one document can
    both "match" the old version and one is silently lost, even with `$inc`.
    Holding a per-document lock around every write keeps one process correct;
    on MongoDB the version check alone would do.

    One lock per document being written, dropped when nobody holds or waits for it (memory
    follows the writes in flight). Not striped: with shared stripes, a task holding one
    document's lock and taking another's waited for ever when both fell on one stripe (the
    reporting stall of issue 12); with a lock per document, nesting two is safe.
    """

    def __init__(self) -> None:
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}

    def __len__(self) -> int:
        return len(self._locks)

    def __bool__(self) -> bool:
        return True  # a set of locks, even with none in use, is never "no locks"

    @asynccontextmanager
    async def __call__(self, collection: str, doc_id: object) -> AsyncIterator[None]:
        key = (collection, str(doc_id))
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class ConcurrencyConflict(Conflict):
    """Someone saved the document since we read it: reload and try again.

    Should retries run out, the caller gets a 409 saying so, never a 500."""


class AlreadyExists(Exception):
    """The aggregate's id is taken: it was added before (a redelivery, a retried request)."""


class NumberTaken(Exception):
    """The number claimed for a new aggregate is held by another record (`add(claim=True)`)."""


class DuplicateValue(Exception):
    """Another unique field of the aggregate is taken (e.g. its register number)."""


# Numbers skipped in a row before giving up: each skip is a number someone else holds.
NUMBER_ATTEMPTS = 50


def mongo_client(url: str, listeners: Sequence[monitoring.CommandListener] = ()
                 ) -> AsyncMongoClient:
    # Majority writes on a replica set (MongoDB 7); FerretDB accepts and ignores it.
    return AsyncMongoClient(url, tz_aware=True, serverSelectionTimeoutMS=5000,
                            w="majority", uuidRepresentation="standard",
                            event_listeners=list(listeners))


def database(client: AsyncMongoClient, namespace: str, service: str) -> AsyncDatabase:
    return client.get_database(f"{namespace}_{service}",
                               write_concern=WriteConcern(w="majority"),
                               read_concern=ReadConcern("majority"))


def _events(events: list[Envelope], mark: str | None) -> list[dict[str, Any]]:
    """The outbox entries of a save's events: each names the save's mark (when it has one)."""
    tag = {} if mark is None else {MARK: mark}
    return [e.model_dump(mode="json") | tag for e in events]


class OutboxMarks:
    """`outbox_due`: one small mark per save that wrote events, until the relay published them.

    What the relay sweeps at start and on its interval instead of every collection's history:
    its size is bounded by events not yet published. A mark is written BEFORE the save it
    announces, so a crash never leaves events without one, and names the version that save
    writes: the relay deletes a document's marks up to the version it read and published. A
    mark whose save never happened (a conflict withdraws its own; a crash leaves it) is dropped
    once older than `MARK_GRACE_S`."""

    STORE_SWEPT = "~store-swept"  # the one-time sweep of the stores (events saved before marks)

    def __init__(self, collection: AsyncCollection):
        self.collection = collection
        # What this process knows without asking the store: the marks it announced whose
        # events are not published yet, and those it saw published lately (bounded).
        self._unpublished: set[str] = set()
        self._published: OrderedDict[str, None] = OrderedDict()

    async def announce(self, collection: str, doc_id: Any, version: int) -> str:
        mark_id = f"{collection}/{doc_id}/{version}/{uuid.uuid4().hex[:12]}"
        self._unpublished.add(mark_id)
        await insert(self.collection, {"_id": mark_id, "collection": collection,
                                       "doc_id": doc_id, "version": version, "at": _now()})
        return mark_id

    async def withdraw(self, mark_id: str) -> None:
        self._unpublished.discard(mark_id)
        await self.collection.delete_one({"_id": mark_id})

    def published(self, mark_ids: list[str]) -> None:
        """The broker confirmed every event of these marks' saves (or they had none left):
        a later save of their documents may leave the events out."""
        for mark_id in mark_ids:
            self._unpublished.discard(mark_id)
            self._published[mark_id] = None
            self._published.move_to_end(mark_id)
        while len(self._published) > PUBLISHED_KEPT:
            self._published.popitem(last=False)

    async def unpublished(self, outbox: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The entries of an outbox still to be published: those whose mark is still there
        (or that have none: saved before marks existed). Known here for the marks this
        process announced or saw published lately; others (another instance's, or from before
        a restart) are looked up by `_id`."""
        marks = {e.get(MARK) for e in outbox} - {None}
        unknown = [m for m in marks if m not in self._unpublished and m not in self._published]
        there = set(self._unpublished)
        if unknown:
            found = self.collection.find({"_id": {"$in": unknown}}, {"_id": 1})
            there |= {m["_id"] for m in await found.to_list(None)}
        return [e for e in outbox if e.get(MARK) is None or e[MARK] in there]

    async def all(self) -> list[dict[str, Any]]:
        """Every mark: a read bounded by unpublished events."""
        return [m for m in await self.collection.find({}, batch_size=ALL_AT_ONCE).to_list(None)
                if "doc_id" in m]

    async def settle(self, mark_ids: list[str]) -> None:
        """These marks' events are published: drop the marks, by `_id` (by a filter, FerretDB
        reads every mark: under a backlog of thousands each settle cost more than the save).
        Gathered with the other documents' settles under way (one delete for many)."""
        if mark_ids:
            await delete_ids(self.collection, mark_ids)

    async def store_swept(self) -> bool:
        return await self.collection.find_one({"_id": self.STORE_SWEPT}) is not None

    async def mark_store_swept(self) -> None:
        await self.collection.update_one({"_id": self.STORE_SWEPT}, {"$set": {"at": _now()}},
                                         upsert=True)


class OpenWork(Generic[A]):
    """A small collection beside an aggregate collection, with a summary of each aggregate
    that is still open work (`<collection>_open`): what timers, boards and gauges read.

    Its size is bounded by open work, not by history, so reading it whole costs the same
    with 100 or 100,000 records stored (on FerretDB's SQLite handler every read other than
    an `_id` lookup reads a whole collection). The repository keeps it current on each save;
    `rebuild` reconciles it with the store at start (a crash between the two writes).

    `summary(agg)` returns the fields to keep, or None once the aggregate is no longer open
    work; `query` selects the same aggregates in the store, for the rebuild only.
    """

    def __init__(self, collection: AsyncCollection, model: type[A],
                 summary: Callable[[A], dict[str, Any] | None], query: dict[str, Any],
                 store: AsyncCollection | None = None,
                 alone: Callable[[], Awaitable[bool]] | None = None):
        self.collection = collection
        self.model = model
        self.summary = summary
        self.query = query
        self.store = store  # the aggregates' own collection, to check a write against
        # While no other instance runs (`alone`), every write to the summaries is this
        # process's: a copy of them in memory stays exact once each write drops it. FerretDB
        # takes ~0.15 ms per document read, so a board of 600 rows is 90 ms from the store.
        self.alone = alone
        self._copy: list[dict[str, Any]] | None = None
        self._writes = 0  # a read that overlapped a write must not become the copy

    def forget(self) -> None:
        """The summaries changed (a write of this process, or by hand): read them again."""
        self._writes += 1
        self._copy = None

    async def matching(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        """The summaries matching `query` (field equality or `$in`, dotted paths): from the
        copy in memory while this instance runs alone, else from the store. Rows are shared:
        callers must not change them."""
        if self.alone is None or not _simple(query) or not await self.alone():
            return await self.all(query)
        if self._copy is None:
            before = self._writes
            rows = await self.all()
            if self._writes == before:
                self._copy = rows
        else:
            rows = self._copy
        return [r for r in rows if _matches(r, query)]

    async def record(self, agg: A, version: int) -> None:
        """Keep the summary of `agg` as saved at `version` (never overwrite a newer one)."""
        if await self._write(agg, version):
            await self._settle(agg.id, version)

    async def _write(self, agg: A, version: int) -> bool:
        """True when it inserted a summary of a changed aggregate that had none: a newer save
        may have dropped it (done) just before, and a delete leaves nothing to compare with."""
        try:
            return await self._write_summary(agg, version)
        finally:
            self.forget()  # after the write: a read begun before it is not kept

    async def _write_summary(self, agg: A, version: int) -> bool:
        summary = self.summary(agg)
        not_newer = {"_id": agg.id, "version": {"$lte": version}}
        if summary is None:
            await self.collection.delete_one(not_newer)
            return False
        doc = bson_safe(summary) | {"version": version, "recorded_at": _now()}
        if version == 1:  # a new aggregate: nobody recorded it yet, so insert (one write)
            try:
                await insert(self.collection, {"_id": agg.id} | doc)
                return False
            except DuplicateKeyError:
                pass  # a rebuild got there first: update it like any other save
        result = await self.collection.update_one(not_newer, {"$set": doc})
        if result.matched_count == 0 and version > 1:
            try:
                await insert(self.collection, {"_id": agg.id} | doc)
                return True
            except DuplicateKeyError:
                pass  # a newer save of the same aggregate recorded it first
        return False

    async def _settle(self, doc_id: Any, version: int,
                      store: AsyncCollection | None = None) -> None:
        """After writing the summary of `version`: if the store has moved on, write the
        newest instead. A newer save whose own summary write came before ours would
        otherwise leave ours (e.g. a closed complaint back on the board); one whose write
        comes after ours replaces it anyway. One `_id` read, on a rare path only."""
        store = store if store is not None else self.store
        if store is None:
            return
        for _ in range(10):
            doc = await store.find_one({"_id": doc_id}, projection={OUTBOX: 0, PENDING: 0})
            if doc is None:
                await self.collection.delete_one({"_id": doc_id, "version": {"$lte": version}})
                self.forget()
                return
            if doc["version"] == version:
                return
            agg = self.model.viewed(doc)
            version = agg.version
            await self._write(agg, version)

    async def all(self, query: dict[str, Any] | None = None,
                  projection: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Every summary (matching `query`): a read bounded by open work."""
        return await self.collection.find(query or {}, projection,
                                          batch_size=ALL_AT_ONCE).to_list(None)

    async def each(self, projection: dict[str, Any] | None = None
                   ) -> AsyncIterator[dict[str, Any]]:
        """Every summary, a batch at a time: for a timer that folds the open work into a few
        figures, so the process holds a batch, never all of it (thousands of open records
        read whole each minute raised a service's memory for good)."""
        async for doc in self.collection.find({}, projection, batch_size=FOLD_BATCH):
            yield doc

    async def rebuild(self, store: AsyncCollection) -> int:
        """Reconcile with the store: add what is open, drop what is not. Reads the store by
        `query` (a scan on FerretDB, an index on MongoDB), so it runs at start only."""
        started = _now()
        seen: set[str] = set()
        async for doc in store.find(self.query, projection={OUTBOX: 0, PENDING: 0}):
            agg = self.model.viewed(doc)
            seen.add(agg.id)
            # The scan's copy may be older than a save made since: check it by `_id`.
            await self._write(agg, agg.version)
            await self._settle(agg.id, agg.version, store)
        # Closed while we were down, or never open: not open work, unless a save recorded it
        # after the rebuild began.
        before_rebuild = {"$or": [{"recorded_at": {"$lt": started}},
                                  {"recorded_at": {"$exists": False}}]}
        for doc in await self.collection.find({}, {"_id": 1}).to_list(None):
            if doc["_id"] not in seen:
                await self.collection.delete_one({"_id": doc["_id"]} | before_rebuild)
        self.forget()
        return len(seen)


def _now() -> datetime:
    return datetime.now(UTC)


def _simple(query: dict[str, Any]) -> bool:
    """Only field equality and `$in` (what boards and inboxes ask), matched in memory."""
    return all(not k.startswith("$") and (not isinstance(v, dict) or set(v) == {"$in"})
               for k, v in query.items())


def _matches(row: dict[str, Any], query: dict[str, Any]) -> bool:
    for path, wanted in query.items():
        value: Any = row
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        values = value if isinstance(value, list) else [value]  # an array matches by element
        choices = wanted["$in"] if isinstance(wanted, dict) else [wanted]
        if not any(v == c for v in values for c in choices):
            return False
    return True


async def _true() -> bool:
    return True


class RecentWrites:
    """What this process last wrote or read of the documents it handled most recently, by
    `_id`: an event about one of them starts from it instead of reading it back (on FerretDB a
    read is a command, a decode of the whole document and an encode, however small the
    change); and the next save knows the document's outbox, so it can leave out what is
    published in the update it writes anyway.

    Kept as BSON, so each recall is a fresh copy that no caller can have changed. At most
    `size` documents (the most recently written), so memory does not follow history."""

    def __init__(self, codec_options: CodecOptions, size: int):
        self.codec_options = codec_options
        self.size = size
        # _id -> (the document without its outbox, its version, its outbox if known)
        self._docs: OrderedDict[Any, tuple[bytes, int, tuple[dict[str, Any], ...] | None]] = \
            OrderedDict()

    def keep(self, doc: dict[str, Any], outbox: list[dict[str, Any]] | None = None) -> None:
        """`doc` as stored (without `outbox`); `outbox`: its outbox, None when not known. An
        older version than the one kept (a read that overlapped a save) is not kept."""
        earlier = self._docs.get(doc["_id"])
        if earlier is not None and earlier[1] > doc.get("version", 0):
            return
        self._docs[doc["_id"]] = (bson.encode(doc, codec_options=self.codec_options),
                                  doc.get("version", 0), None if outbox is None else
                                  tuple(outbox))
        self._docs.move_to_end(doc["_id"])
        while len(self._docs) > self.size:
            self._docs.popitem(last=False)

    def drop(self, doc_id: Any) -> None:
        self._docs.pop(doc_id, None)

    def clear(self) -> None:
        self._docs.clear()

    def recall(self, doc_id: Any) -> dict[str, Any] | None:
        kept = self._docs.get(doc_id)
        return None if kept is None else bson.decode(kept[0], codec_options=self.codec_options)

    def outbox(self, doc_id: Any, version: int) -> list[dict[str, Any]] | None:
        """The outbox the document had at `version`, if that is what was kept of it. Its
        entries are shared: callers must not change them."""
        kept = self._docs.get(doc_id)
        return None if kept is None or kept[1] != version or kept[2] is None else \
            list(kept[2])


class Repository(Generic[A]):
    """Loads and saves one kind of aggregate in its own collection."""

    def __init__(self, collection: AsyncCollection, model: type[A],
                 on_events: Callable[[str, Any, list[dict[str, Any]]], None] | None = None,
                 locks: WriteLocks | None = None, open_work: OpenWork[A] | None = None,
                 marks: OutboxMarks | None = None, days: DayIndex | None = None,
                 lookup: Lookup | None = None,
                 alone: Callable[[], Awaitable[bool]] | None = None):
        self.collection = collection
        self.alone = alone  # no other instance of the service runs (`Lifecycle.alone`)
        self.days = days
        self.lookup = lookup
        self.model = model
        self._on_events = on_events or (lambda collection, doc_id, events: None)
        # `is not None`, not `or`: the service's WriteLocks, empty at start, has no locks in
        # use, and `or` once gave each repository locks of its own that the relay (which then
        # wrote the outbox) did not wait for: a lost save on FerretDB.
        self.locks = locks if locks is not None else WriteLocks()
        self.open_work = open_work
        self.marks = marks
        # A save that failed or was cancelled between the store's write and its open-work
        # summary: this process cannot vouch for the summaries when it stops.
        self.open_work_unsure = False
        # Where `apply_event` starts. Safe beside other writers (other replicas, requests):
        # a save matches the version, so an outdated copy costs a conflict and a read; and
        # whether an event was applied only ever goes from no to yes.
        self.recent = RecentWrites(collection.codec_options, RECENT_KEPT)

    def kept_open(self) -> OpenWork[A]:
        """Its open-work summaries (`Service.collection(open_summary=...)`)."""
        if self.open_work is None:
            raise ValueError(f"{self.collection.name} keeps no open work (Service.collection)")
        return self.open_work

    async def _claim(self, agg: A) -> bool:
        if self.lookup is None:
            return True
        return await self.lookup.claim(str(getattr(agg, self.lookup.field)), agg.id)

    async def _release(self, agg: A) -> None:
        if self.lookup is not None:
            await self.lookup.release(str(getattr(agg, self.lookup.field)), agg.id)

    def _day_field(self) -> dict[str, int]:
        return {self.days.field: 1} if self.days is not None else {"_id": 1}

    async def _record_day(self, doc_id: Any, doc: dict[str, Any]) -> None:
        # Before the insert: a crash in between leaves an entry lists skip, never a record
        # missing from its day.
        if self.days is not None:
            await self.days.record(doc)

    async def _forget_day(self, doc_id: Any, doc: dict[str, Any],
                          stored: dict[str, Any] | None) -> None:
        """The insert was refused: drop our day entry unless the stored record has it too."""
        if self.days is None:
            return
        at = doc.get(self.days.field)
        if stored is None or not same_instant(stored.get(self.days.field), at):
            await self.days.forget(doc)
        else:  # the same record, added again: its day counted it twice
            await self.days.uncount(doc)

    async def _announce(self, agg: A, version: int) -> str | None:
        if self.marks is None or not agg.pending_events:
            return None
        return await self.marks.announce(self.collection.name, agg.id, version)

    async def _withdraw(self, mark: str | None) -> None:
        if self.marks is not None and mark is not None:
            await self.marks.withdraw(mark)

    def lock(self, doc_id: object) -> AbstractAsyncContextManager[None]:
        return self.locks(self.collection.name, doc_id)

    async def get(self, id: str) -> A | None:
        # With its outbox (the last save's events, mostly): kept, so that a save of what was
        # read knows what the document holds and can leave out the published events.
        doc = await self.collection.find_one({"_id": id}, projection={PENDING: 0})
        if doc is None:
            return None
        outbox = doc.pop(OUTBOX, None)
        self.recent.keep(doc, outbox if isinstance(outbox, list) else None)
        return self.model.model_validate(doc)

    async def for_change(self, id: str) -> A | None:
        """The aggregate as a change starts from: what this process last wrote or read of it
        (`recent`), else read. Safe beside other writers: the save matches the version, so an
        outdated copy costs a conflict and a read (`change` reads again then). Only fields
        that never change may be judged on it before the change (e.g. whose it is)."""
        kept = self.recent.recall(id)
        return self.model.model_validate(kept) if kept is not None else await self.get(id)

    async def seen(self, id: str) -> A | None:
        """For reading (a request's answer, a mail's facts): while no other instance of the
        service runs, every write of the document is this process's, so what it last wrote
        or read of it (`recent`) is what the store holds: no read. Else read."""
        if self.alone is not None and await self.alone():
            kept = self.recent.recall(id)
            if kept is not None:
                return self.model.model_validate(kept)
        return await self.get(id)

    async def exists(self, id: str) -> bool:
        # find_one, not count_documents: a count is an aggregation, which FerretDB does not
        # narrow by _id (it reads the whole collection).
        return await self.collection.find_one({"_id": id}, projection={"_id": 1}) is not None

    async def id_of(self, value: str) -> str | None:
        """The id of the record whose number (the lookup's field) is `value`, or None."""
        found = await self.by_number(value)
        return None if found is None else found.id

    async def by_number(self, value: str) -> A | None:
        """The record whose number (the lookup's field) is `value`, or None: two `_id` reads
        (the lookup, then the record, which must carry the value)."""
        if self.lookup is None:
            raise ValueError(f"{self.collection.name} keeps no lookup (Service.collection)")
        doc_id = await self.lookup.find(value)
        agg = None if doc_id is None else await self.get(str(doc_id))
        return agg if agg is not None and getattr(agg, self.lookup.field) == value else None

    async def ensure_indexes(self) -> None:
        await self.collection.create_index(PENDING)

    async def get_or_raise(self, id: str, what: str | None = None) -> A:
        agg = await self.get(id)
        if agg is None:
            raise NotFound(f"{what or self.model.__name__} {id!r} does not exist.")
        return agg

    async def add(self, agg: A, *, claim: bool = False, number_shared: bool = False) -> A:
        """Insert a new aggregate with its events; AlreadyExists if the id is taken. With
        `claim`, its number is claimed in the lookup first, so that a record readable by its
        id is found by its number too (NumberTaken if another record holds it, and nothing is
        written; with `number_shared`, it is written all the same, found by its id only)."""
        doc = agg.to_document() | {"version": 1}
        # All before the insert, side by side (none needs another): one round trip.
        claimed, _, mark = await asyncio.gather(
            self._claim(agg) if claim else _true(), self._record_day(agg.id, doc),
            self._announce(agg, 1))
        events = _events(agg.pending_events, mark)
        state = dict(doc)
        doc |= {OUTBOX: events} | ({} if self.marks is not None else {PENDING: bool(events)})
        if not claimed:
            number = str(getattr(agg, self.lookup.field)) if self.lookup else ""
            if not number_shared:
                await asyncio.gather(self._forget_day(agg.id, doc, None), self._withdraw(mark))
                raise NumberTaken(number)
            log.error("number %s names another record of %s; %s is found by its id only",
                      number, self.collection.name, agg.id)
        try:
            async with self.lock(agg.id):
                try:
                    await insert(self.collection, doc)
                except DuplicateKeyError:
                    await self._withdraw(mark)
                    raise
                except BaseException:
                    self.open_work_unsure = True  # written or not: nobody can tell
                    raise
                self._tell(agg, events)
                self.recent.keep(state, events)
                await self._record_open(agg, 1)
        except DuplicateKeyError as exc:
            # Which unique index refused it? Asking is portable; the error's keyPattern is
            # MongoDB's and FerretDB does not always send it.
            stored = await self.collection.find_one({"_id": agg.id}, projection=self._day_field())
            await self._forget_day(agg.id, doc, stored)
            if stored is not None:
                raise AlreadyExists(agg.id) from exc
            raise DuplicateValue(str(exc)) from exc
        return self.model.model_validate(state)  # as saved: no pending events

    async def add_numbered(self, sequence: str, make: Callable[[int], A]) -> A:
        """Insert `make(n)` with the next free number `n` of `sequence`.

        A number already held, by a record written while the sequence lagged behind (restored
        from a backup) or by another process drawing the same value on FerretDB (whose `$inc`
        is not atomic across processes), is skipped, never given twice: the unique index on the
        number refuses the insert and the next one is drawn. With a `lookup`, the number is
        claimed there before the insert, so the lookup names every record's number."""
        for _ in range(NUMBER_ATTEMPTS):
            number = await next_number(self.collection.database, sequence, self.locks)
            agg = make(number)
            # The number is claimed in the lookup first (`shared.lookups`): taken, draw again.
            try:
                return await self.add(agg, claim=True)
            except NumberTaken:
                continue
            except DuplicateValue:
                await self._release(agg)
                continue
            except AlreadyExists:
                await self._release(agg)
                raise
        raise ConcurrencyConflict(f"no free number in {sequence} after {NUMBER_ATTEMPTS} "
                                  "attempts; the unique index and the sequence disagree")

    async def save(self, agg: A) -> A:
        """Write state and new events in one update, if nobody saved since we read. The
        events this process knows to be published leave the outbox in the same update."""
        state = agg.to_document()
        state.pop("_id")
        expected = state.pop("version")
        update: dict[str, Any] = {"$set": state | {"version": expected + 1}}
        async with self.lock(agg.id):
            mark = await self._announce(agg, expected + 1)
            events = _events(agg.pending_events, mark)
            outbox = await self._outbox_after(agg.id, expected, events, update)
            try:
                result = await self.collection.update_one({"_id": agg.id, "version": expected},
                                                          update)
            except BaseException:
                self.open_work_unsure = True  # written or not: nobody can tell
                self.recent.drop(agg.id)
                raise
            if result.matched_count:
                self._tell(agg, events)
                self.recent.keep(state | {"_id": agg.id, "version": expected + 1}, outbox)
                await self._record_open(agg, expected + 1)
            else:
                self.recent.drop(agg.id)  # outdated: the next event reads it
                await self._withdraw(mark)  # the save lost the race: its mark is void
        if result.matched_count == 0:
            raise ConcurrencyConflict(f"{self.model.__name__} {agg.id} changed since version "
                                      f"{expected}")
        # As saved (no pending events), from the document written: not dumped again.
        return self.model.model_validate(state | {"_id": agg.id, "version": expected + 1})

    async def _record_open(self, agg: A, version: int) -> None:
        # After the store's write, under its lock: a crash in between leaves the open-work
        # summary behind until the next start's rebuild, never the record itself.
        if self.open_work is not None:
            try:
                await self.open_work.record(agg, version)
            except BaseException:
                # The store has the save, the summary may not: the next start must reconcile.
                self.open_work_unsure = True
                raise

    async def _outbox_after(self, doc_id: Any, version: int, events: list[dict[str, Any]],
                            update: dict[str, Any]) -> list[dict[str, Any]] | None:
        """Add the save's `events` to `update`; returns the outbox the save leaves, when known.

        Known when this process last wrote or read the document at `version` (`recent`): then
        the outbox is written whole, without the events whose marks are gone (published),
        instead of the relay emptying it in a write of its own after each publish. Else the
        events are pushed to what is there."""
        known = None if self.marks is None else self.recent.outbox(doc_id, version)
        if self.marks is None or known is None:
            if events:
                update["$push"] = {OUTBOX: {"$each": events}}
                if self.marks is None:  # no relay: the flag is what finds them
                    update["$set"][PENDING] = True
            return None
        outbox = await self.marks.unpublished(known) + events if known else events
        if outbox != known:
            update["$set"][OUTBOX] = outbox
        return outbox

    def _tell(self, agg: A, events: list[dict[str, Any]]) -> None:
        # The relay publishes as soon as the store has the events, before the open-work
        # summary is written: that write is not on the way to the consumers. It is handed
        # the events written (each names its mark), so it need not read them back.
        if events:
            self._on_events(self.collection.name, agg.id, events)

    async def change(self, id: str, apply: Callable[[A], Awaitable[bool | None] | bool | None],
                     *, attempts: int = 30, what: str | None = None,
                     loaded: A | None = None) -> A:
        """Load, apply, save; on a concurrent save, reload and apply again (never lost).
        `loaded`: the aggregate as the caller just read it (e.g. to check who may change it),
        used for the first attempt instead of reading it again."""
        agg, _ = await self.change_and_tell(id, apply, attempts=attempts, what=what,
                                            loaded=loaded)
        return agg

    async def change_and_tell(
            self, id: str, apply: Callable[[A], Awaitable[bool | None] | bool | None],
            *, attempts: int = 30, what: str | None = None,
            loaded: A | None = None) -> tuple[A, bool]:
        """`change`, also telling whether it wrote: False when `apply` returned False (nothing
        new, e.g. a retried request), so an API can answer 200 instead of 201.

        Each round of n concurrent changers lets at least one through, so `attempts`
        must exceed the writers one document realistically sees at once; the jittered
        backoff keeps them from colliding in step."""
        for attempt in range(attempts):
            if attempt == 0 and loaded is not None and loaded.id == id:
                agg = loaded
            else:
                found = await (self.for_change(id) if attempt == 0 else self.get(id))
                if found is None:
                    raise NotFound(f"{what or self.model.__name__} {id!r} does not exist.")
                agg = found
            result = apply(agg)
            if asyncio.iscoroutine(result):
                result = await result
            if result is False:  # the change decided there is nothing to write
                return agg, False
            try:
                return await self.save(agg), True
            except ConcurrencyConflict:
                await asyncio.sleep(random.uniform(0, min(0.2, 0.01 * (attempt + 1))))
        raise ConcurrencyConflict(f"{what or self.model.__name__} {id} is too busy; try again")

    async def apply_event(self, id: str, event: Envelope,
                          apply: Callable[[A], Awaitable[None] | None],
                          create: Callable[[], A] | None = None) -> A | None:
        """Idempotent consumer: the effect and the event id are written in one update.

        Returns None when the aggregate does not exist and there is no `create`; with one,
        a missing aggregate is made, given the effect and inserted (one write). One `_id`
        read per attempt: the read that loads the aggregate also tells whether it exists;
        none at first when this process wrote it lately (`recent`)."""
        for attempt in range(30):
            agg = await (self.for_change(id) if attempt == 0 else self.get(id))
            if agg is None:
                if create is None:
                    return None
                agg = create()
            if agg.has_applied(event.id):
                return agg
            result = apply(agg)
            if asyncio.iscoroutine(result):
                await result
            agg.mark_applied(event.id)
            try:
                return await (self.add(agg) if agg.version == 0 else self.save(agg))
            except (ConcurrencyConflict, AlreadyExists):  # someone wrote it since: again
                await asyncio.sleep(random.uniform(0, min(0.2, 0.01 * (attempt + 1))))
        raise ConcurrencyConflict(f"{self.model.__name__} {id} is too busy; try again")


async def next_number(db: AsyncDatabase, sequence: str, locks: WriteLocks) -> int:
    """The next value of a named sequence (e.g. `CF-2026`), starting at 1.

    Under the write lock because FerretDB's `$inc` is not atomic under concurrency."""
    coll = db["sequences"]
    async with locks(coll.name, sequence):
        try:
            doc = await coll.find_one_and_update({"_id": sequence}, {"$inc": {"value": 1}},
                                                 upsert=True, return_document=ReturnDocument.AFTER)
        except DuplicateKeyError:
            # Another process created the sequence at the same moment (MongoDB retries such
            # an upsert itself, FerretDB does not): it exists now, so increment it.
            doc = await coll.find_one_and_update({"_id": sequence}, {"$inc": {"value": 1}},
                                                 return_document=ReturnDocument.AFTER)
    assert doc is not None  # an upsert returning the document AFTER always has one
    return int(doc["value"])
