"""MongoDB storage: aggregates with optimistic concurrency and the outbox in the document.

A save writes the new state and the events it produced in ONE single-document
update, matched on `version` (atomic on MongoDB and FerretDB alike; no
multi-document transactions). The relay (`shared.outbox`) publishes `outbox`
entries and pulls them once the broker has confirmed them.
"""

import asyncio
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

FOLD_BATCH = 500  # summaries per reply when a timer folds open work (`OpenWork.each`)
RECENT_KEPT = 128  # documents per collection whose last write a process keeps (`RecentWrites`)

A = TypeVar("A", bound=Aggregate)

OUTBOX = "outbox"
PENDING = "outbox_pending"  # indexed flag, so the relay finds pending events without a scan
MARK_GRACE_S = 600.0  # a mark whose save has not happened after this long never will


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


def _events(events: list[Envelope]) -> list[dict[str, Any]]:
    return [e.model_dump(mode="json") for e in events]


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

    async def announce(self, collection: str, doc_id: Any, version: int) -> str:
        mark_id = f"{collection}/{doc_id}/{version}/{uuid.uuid4().hex[:12]}"
        await insert(self.collection, {"_id": mark_id, "collection": collection,
                                       "doc_id": doc_id, "version": version, "at": _now()})
        return mark_id

    async def withdraw(self, mark_id: str) -> None:
        await self.collection.delete_one({"_id": mark_id})

    async def all(self) -> list[dict[str, Any]]:
        """Every mark: a read bounded by unpublished events."""
        return [m for m in await self.collection.find({}, batch_size=ALL_AT_ONCE).to_list(None)
                if "doc_id" in m]

    async def has(self, collection: str, doc_id: Any) -> bool:
        """Whether a save of this document since marks exist is still unpublished."""
        return await self.collection.find_one({"collection": collection, "doc_id": doc_id},
                                              {"_id": 1}) is not None

    async def settle(self, collection: str, doc_id: Any, version: int,
                     mark_ids: list[str] | None = None) -> None:
        """The document's events up to `version` are published: drop their marks. With
        `mark_ids` (the marks of the saves whose events went out), by `_id`; without, by a
        filter, which FerretDB answers by reading every mark: under a backlog of thousands,
        each settle then cost more than the save (measured: deletes took a third of
        FerretDB's CPU in the soak). Marks left by other saves go with the next sweep."""
        if mark_ids is not None:
            # Gathered with the other documents' settles under way (one delete for many).
            await delete_ids(self.collection, mark_ids)
            return
        await self.collection.delete_many({"collection": collection, "doc_id": doc_id,
                                           "version": {"$lte": version}})

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
    """What this process last wrote of the documents it wrote most recently, by `_id`: an
    event about one of them starts from it instead of reading it back (on FerretDB a read is
    a command, a decode of the whole document and an encode, however small the change).

    Kept as BSON, so each recall is a fresh copy that no caller can have changed. At most
    `size` documents (the most recently written), so memory does not follow history."""

    def __init__(self, codec_options: CodecOptions, size: int):
        self.codec_options = codec_options
        self.size = size
        self._docs: OrderedDict[Any, bytes] = OrderedDict()

    def keep(self, doc: dict[str, Any]) -> None:
        self._docs[doc["_id"]] = bson.encode(doc, codec_options=self.codec_options)
        self._docs.move_to_end(doc["_id"])
        while len(self._docs) > self.size:
            self._docs.popitem(last=False)

    def drop(self, doc_id: Any) -> None:
        self._docs.pop(doc_id, None)

    def clear(self) -> None:
        self._docs.clear()

    def recall(self, doc_id: Any) -> dict[str, Any] | None:
        raw = self._docs.get(doc_id)
        return None if raw is None else bson.decode(raw, codec_options=self.codec_options)


class Repository(Generic[A]):
    """Loads and saves one kind of aggregate in its own collection."""

    def __init__(self, collection: AsyncCollection, model: type[A],
                 on_events: Callable[[str, Any, int, list[dict[str, Any]], list[str]], None]
                 | None = None,
                 locks: WriteLocks | None = None, open_work: OpenWork[A] | None = None,
                 marks: OutboxMarks | None = None, days: DayIndex | None = None,
                 lookup: Lookup | None = None):
        self.collection = collection
        self.days = days
        self.lookup = lookup
        self.model = model
        self._on_events = on_events or (lambda collection, doc_id, version, events, marks: None)
        # `is not None`, not `or`: the service's WriteLocks, empty at start, has no locks in
        # use, and `or` once gave each repository locks of its own that the relay's
        # `mark_sent` on the same document did not wait for (a lost save on FerretDB).
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
        doc = await self.collection.find_one({"_id": id}, projection={OUTBOX: 0, PENDING: 0})
        return self.model.model_validate(doc) if doc else None

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

    async def add(self, agg: A, *, claim: bool = False) -> A:
        """Insert a new aggregate with its events; AlreadyExists if the id is taken. With
        `claim`, its number is claimed in the lookup first (NumberTaken if another record
        holds it, and nothing is written)."""
        events = _events(agg.pending_events)
        doc = agg.to_document() | {"version": 1, OUTBOX: events, PENDING: bool(events)}
        # All before the insert, side by side (none needs another): one round trip.
        claimed, _, mark = await asyncio.gather(
            self._claim(agg) if claim else _true(), self._record_day(agg.id, doc),
            self._announce(agg, 1))
        if not claimed:
            await asyncio.gather(self._forget_day(agg.id, doc, None), self._withdraw(mark))
            raise NumberTaken(str(getattr(agg, self.lookup.field)) if self.lookup else "")
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
                self._tell(agg, 1, events, mark)
                self.recent.keep({k: v for k, v in doc.items() if k not in (OUTBOX, PENDING)})
                await self._record_open(agg, 1)
        except DuplicateKeyError as exc:
            # Which unique index refused it? Asking is portable; the error's keyPattern is
            # MongoDB's and FerretDB does not always send it.
            stored = await self.collection.find_one({"_id": agg.id}, projection=self._day_field())
            await self._forget_day(agg.id, doc, stored)
            if stored is not None:
                raise AlreadyExists(agg.id) from exc
            raise DuplicateValue(str(exc)) from exc
        return self._saved(agg, 1)

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
        """Write state and new events in one update, if nobody saved since we read."""
        state = agg.to_document()
        state.pop("_id")
        expected = state.pop("version")
        update: dict[str, Any] = {"$set": state | {"version": expected + 1}}
        events = _events(agg.pending_events)
        if events:
            update["$push"] = {OUTBOX: {"$each": events}}
            update["$set"][PENDING] = True
        async with self.lock(agg.id):
            mark = await self._announce(agg, expected + 1)
            try:
                result = await self.collection.update_one({"_id": agg.id, "version": expected},
                                                          update)
            except BaseException:
                self.open_work_unsure = True  # written or not: nobody can tell
                raise
            if result.matched_count:
                self._tell(agg, expected + 1, events, mark)
                self.recent.keep(state | {"_id": agg.id, "version": expected + 1})
                await self._record_open(agg, expected + 1)
            else:
                self.recent.drop(agg.id)  # outdated: the next event reads it
                await self._withdraw(mark)  # the save lost the race: its mark is void
        if result.matched_count == 0:
            raise ConcurrencyConflict(f"{self.model.__name__} {agg.id} changed since version "
                                      f"{expected}")
        return self._saved(agg, expected + 1)

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

    def _tell(self, agg: A, version: int, events: list[dict[str, Any]],
              mark: str | None) -> None:
        # The relay publishes as soon as the store has the events, before the open-work
        # summary is written: that write is not on the way to the consumers. It is handed
        # the events written, so it need not read them back, and their mark, to drop by `_id`.
        if events:
            self._on_events(self.collection.name, agg.id, version, events,
                            [mark] if mark is not None else [])

    def _saved(self, agg: A, version: int) -> A:
        return self.model.model_validate(agg.to_document() | {"version": version})

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
                agg = await self.get_or_raise(id, what)
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
            kept = self.recent.recall(id) if attempt == 0 else None
            agg = self.model.model_validate(kept) if kept is not None else await self.get(id)
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
