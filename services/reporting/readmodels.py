"""The read models in MongoDB/FerretDB: rows, monthly counters, and posting the deltas.

Exactly-once, on a database without transactions (FerretDB v1):
1. the row is updated with the event's effect, the event id (`applied_events`)
   and the resulting counter difference (`pending`) in ONE document update;
2. each monthly document gets the difference added to its counters and the
   delta id pushed to its `inflight` list in ONE update; a delta whose id is
   already in `inflight` is not added again. The deltas that wait for a month's write
   go out in one such update (group commit, `shared.batching.Gathered`);
3. the row drops the posted delta; 4. the monthly documents drop the id, with
   their next update of step 2 (one write per month and event, not two).
A crash anywhere leaves either a pending delta on the row (posted again, and
recognised by the monthly document if step 2 had happened) or a stale id in
`inflight` (harmless; cleared by `recover`, when nothing is pending any more).
Steps 1-4 for one row run under a per-row lock, every single-document write
under the kit's per-document write lock (FerretDB's `$inc` is not atomic, see
the README). These locks are a process's: one replica writes at a time (the
queue has a single active consumer), and `recover` runs before a replica's
first event, when it has become that writer.

A month's counters are JSON text (`data`), not one field per counter:
FerretDB v1 handles a document field by field, and a busy month has thousands
of counters (measured here: 8000 counters as fields take 650 ms to read, as
one text 38 ms). The write lock keeps the read-modify-write safe. The counters by
customer and by product, which grow with the month's customers and products, are in
the month's shards (`counter_documents`); the rest in its main document.

Customer names (shown next to the customer id in the table) are not counters: one
document per customer id (`customer_names`) keeps the latest name stated for it
(`domain.CustomerName`). Keeping the latest is idempotent and order-free, so it
needs no delta: a redelivery writes it again or changes nothing.

The open work (`open_work`: what the gauges need of each open complaint, form and
CAPA, `domain.OpenWork`) is a pure function of its row, written after it (5.) and
again on a redelivery, rebuilt from the rows by `recover` and by a rebuild. The gauges'
periodic refresh reads it instead of the register.

What each read costs on FerretDB v1.24 (SQLite, with the project's patch in
deploy/ferretdb): a filter with an `_id` equality is an index search; any other filter
reads and decodes the whole collection. So an event reads and writes by `_id` only (the
first event of a row inserts it without a lookup, `STARTS_ROW`); the gauges' timer reads
`open_work`, whose size follows open work; the monthly table reads its months by `_id`; the
register report (`/register`) reads the days of its period in `register_days` (each day's
rows by `received_at`, `shared.periods.DayIndex`, named there before the row's write that
sets its `received_at`: step 0) and their rows by `_id`. What reads a collection by other
fields runs when a replica takes over (`recover`), on a rebuild, or once to index the rows
written before `register_days` existed (`index_days`).
"""

import asyncio
import json
import time
import zlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.reporting import domain
from services.reporting.domain import (
    CUSTOMER_NAMES,
    MONTHLY,
    MONTHLY_OPEN,
    OPEN_WORK,
    ROW_MODELS,
    STARTS_ROW,
    OpenWork,
    ReadRow,
    RowKind,
    split_part,
)
from shared.batching import Gathered, insert
from shared.errors import NotFound
from shared.events import Contract, Envelope, MalformedEvent, UnknownEvent, parse_event
from shared.lookups import Lookup
from shared.periods import ALL_AT_ONCE, DayIndex, built_marker, day_of, day_pages, load
from shared.store import RECENT_KEPT, ConcurrencyConflict, RecentWrites, WriteLocks

HISTORY = "event_history"
NAMES_KEPT = 1024  # customers whose latest name a process keeps (bounded: not one per customer)
REGISTER_DAYS = "register_days"  # the register's rows by the day they were received
REGISTER_NUMBERS = "register_numbers"  # register number -> feedback id (`shared.lookups`)
REGISTER_ORDER = [("received_at", -1), ("_id", 1)]  # the register report's default order
ROW_COLLECTIONS: dict[RowKind, str] = {
    RowKind.FEEDBACK: "register", RowKind.CAPA: "capas", RowKind.RECURRENCE: "recurrences"}
COUNTER_COLLECTIONS = (MONTHLY, MONTHLY_OPEN)


class Gate:
    """Event handlers pass together; a rebuild or the start-up recovery passes alone.

    Starts closed: events wait until the recovery at start has run."""

    def __init__(self) -> None:
        self._cond = asyncio.Condition()
        self._inside = 0
        self._exclusive = True

    @asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        async with self._cond:
            await self._cond.wait_for(lambda: not self._exclusive)
            self._inside += 1
        try:
            yield
        finally:
            async with self._cond:
                self._inside -= 1
                self._cond.notify_all()

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        async with self._cond:
            await self._cond.wait_for(lambda: not self._exclusive)
            self._exclusive = True
            await self._cond.wait_for(lambda: self._inside == 0)
        try:
            yield
        finally:
            await self.open()

    async def open(self) -> None:
        async with self._cond:
            self._exclusive = False
            self._cond.notify_all()


@dataclass
class Projected:
    kind: RowKind
    row: ReadRow
    applied: bool  # False: a redelivery, nothing changed


@dataclass
class RebuildReport:
    events: int
    skipped: int
    rows: dict[str, int]
    months: int
    seconds: float


class RowStore:
    """The rows of one kind in their collection.

    Every write matches on `_id` alone, under the per-document write lock (no `version` in
    the filter, unlike the kit's `Repository.save`): this process is the only writer of its
    read models (the reporting queue has a single active consumer; the other replicas only
    read), so the lock suffices."""

    def __init__(self, collection: AsyncCollection, model: type[ReadRow], locks: WriteLocks):
        self.collection = collection
        self.model = model
        self.locks = locks
        # The rows this process wrote last, as written: the one writer need not read them
        # back for their next event (a complaint's events come close together). Dropped
        # whenever the read models are replaced (`ReadModels._forget_copies`).
        self.recent = RecentWrites(collection.codec_options, RECENT_KEPT)

    async def get(self, row_id: str) -> ReadRow | None:
        doc = self.recent.recall(row_id) or await self.collection.find_one({"_id": row_id})
        return self.model.model_validate(doc) if doc else None

    async def get_or_raise(self, row_id: str, what: str) -> ReadRow:
        row = await self.get(row_id)
        if row is None:
            raise NotFound(f"{what} {row_id!r} is not in the read models (yet).")
        return row

    async def insert(self, row: ReadRow) -> None:
        row.version = 1
        doc = row.to_document()
        async with self.locks(self.collection.name, row.id):
            await insert(self.collection, doc)
            self.recent.keep(doc)

    async def save(self, row: ReadRow) -> None:
        row.version += 1
        doc = row.to_document()
        doc.pop("_id")
        async with self.locks(self.collection.name, row.id):
            try:
                await self.collection.update_one({"_id": row.id}, {"$set": doc})
            except BaseException:
                self.recent.drop(row.id)  # written or not: read it
                raise
            self.recent.keep(doc | {"_id": row.id})


class ReadModels:
    def __init__(self, db: AsyncDatabase, locks: WriteLocks, tz: ZoneInfo,
                 gate: Gate | None = None):
        self.db = db
        self.tz = tz
        self.locks = locks
        self.row_locks = WriteLocks()  # its own: held around steps 1-4, never nested
        self.gate = gate or Gate()
        self._open_work_kept = False  # seen `open_work`: the gauges read only it
        # This process is the one writer (see `RowStore`): what it last wrote of each month's
        # counters, and the latest name it knows of each customer, spare a read per event.
        # A write still matches the month's `version`, so a copy another writer has outdated
        # is read again, never written back. Dropped whenever the read models are replaced.
        self._months: dict[tuple[str, str], dict[str, Any]] = {}
        self._posted: dict[tuple[str, str], set[str]] = {}  # step 4, left to the next write
        self._month_writes: Gathered[tuple[str, dict[str, int]]] = Gathered()
        # The latest names of the customers seen lately (a customer's events come close
        # together; an older one is read again): bounded, however many customers a month has.
        self._names: OrderedDict[str, domain.CustomerName] = OrderedDict()
        self.rows: dict[RowKind, RowStore] = {
            kind: RowStore(db[name], ROW_MODELS[kind], locks)
            for kind, name in ROW_COLLECTIONS.items()}
        self.register_days = DayIndex(db[REGISTER_DAYS], "received_at", times_change=True)
        self.register_numbers = Lookup(db[REGISTER_NUMBERS], "register_no")

    @property
    def register(self) -> RowStore:
        return self.rows[RowKind.FEEDBACK]

    async def ensure_indexes(self) -> None:
        # FerretDB v1 does not use them for these filters; MongoDB does.
        coll = self.register.collection
        for field in ("received_at", "status", "open", "form_open", "has_pending",
                      "customer_id", "register_no"):
            await coll.create_index(field)
        # The register report's default order; the report reads by period now
        # (`register_days`), this stays for queries run on MongoDB itself.
        await coll.create_index(REGISTER_ORDER)
        for kind in (RowKind.CAPA, RowKind.RECURRENCE):
            await self.rows[kind].collection.create_index("has_pending")

    # -- projecting one event --------------------------------------------------------
    async def project(self, env: Envelope, payload: Contract) -> Projected | None:
        await self._note_customer(env, payload)  # before the row: a redelivery repeats it
        target = domain.target_of(env, payload)
        if target is None:
            return None
        kind, row_id = target
        store = self.rows[kind]
        async with self.row_locks(kind, row_id):
            before = OpenWork(kind=kind, row_id=row_id)  # a new row has none
            row = await self._start(store, row_id, env, payload)
            applied = row is not None
            if row is None:
                row, before, applied = await self._apply_to(store, row_id, env, payload,
                                                            domain.apply)
            if row.pending:  # steps 2-4 (also what a crash left of an earlier event)
                await self._post(store, row)
            await self._note_open_work(row, before, applied)
        for feedback_id in domain.linked_feedback(env, payload):  # e.g. a CAPA's complaints
            async with self.row_locks(RowKind.FEEDBACK, feedback_id):
                linked, _, _ = await self._apply_to(self.register, feedback_id, env, payload,
                                                    domain.apply_link)
                if linked.pending:
                    await self._post(self.register, linked)
        return Projected(kind, row, applied)

    async def _apply_to(self, store: RowStore, row_id: str, env: Envelope, payload: Contract,
                        how: Callable[[ReadRow, Envelope, Contract, ZoneInfo], bool]
                        ) -> tuple[ReadRow, OpenWork, bool]:
        """Step 1 on a row read by `_id` (made when this is its first event): the row, its
        open work before, and whether the event changed it (False: applied before)."""
        row = await store.get(row_id)
        fresh = row is None
        if row is None:  # the first event of this row (maybe ahead of its registration)
            row = store.model(id=row_id)
        before = OpenWork.of(row)
        received, number = _received_at(row), _register_no(row)
        applied = how(row, env, payload, self.tz)
        if applied:  # step 1: effect + event id + counter difference, one write
            domain.settle(row, env.id, self.tz)
            await self._note_received(row, received)  # step 0
            await self._note_number(row, number)
            await (store.insert(row) if fresh else store.save(row))
        return row, before, applied

    async def _start(self, store: RowStore, row_id: str, env: Envelope,
                     payload: Contract) -> ReadRow | None:
        """Step 1 for an event that normally comes first to its row: insert the new row without
        looking it up. None (nothing written) when the row exists already."""
        if env.type not in STARTS_ROW:
            return None
        row = store.model(id=row_id)
        domain.apply(row, env, payload, self.tz)
        domain.settle(row, env.id, self.tz)
        await self._note_received(row, None)  # step 0 (a redelivery names the same again)
        await self._note_number(row, None)
        try:
            await store.insert(row)
        except DuplicateKeyError:
            return None  # a redelivery, or events of the row came first: the usual path
        return row

    async def _note_received(self, row: ReadRow, before: datetime | None) -> None:
        """Step 0: a register row whose `received_at` is new (set by its registration, or by
        a form that came first) is named under its day in `register_days` before the row is
        written; a crash in between leaves a name without a row, which lists skip."""
        at = _received_at(row)
        if at is None or (before is not None and _ms(before) == _ms(at)):
            return
        # `DayIndex` holds the day's lock itself, and writes the entries that waited for
        # it together (a lock of ours around it would let them in one at a time).
        await self.register_days.record({"_id": row.id, "received_at": at})

    async def _note_number(self, row: ReadRow, before: str | None) -> None:
        """Step 0 too: a register number new to the row is claimed in `register_numbers`
        (register number -> feedback id) before the row is written, so a number people quote
        finds its row by `_id` (the Complaint Handling Report's `ref`)."""
        number = _register_no(row)
        if number is not None and number != before:
            await self.register_numbers.claim(number, row.id)

    async def feedback_id_of(self, ref: str) -> str:
        """A register number's feedback id (one `_id` read), else `ref` itself (an id)."""
        found = await self.register_numbers.find(ref)
        return str(found) if found is not None else ref

    async def index_numbers(self) -> int:
        """Once: claim the numbers of the rows written before `register_numbers` existed
        (reads the register's numbers; a claim made meanwhile by an event is recognised)."""
        return await self.register_numbers.build(self.register.collection)

    async def index_days(self) -> int:
        """Once (then never again): name the register rows written before `register_days`
        existed. Reads the whole register, with event handling paused (the gate), so no
        row's step 0 writes a day at the same time."""
        if await self.register_days.built():
            return 0
        async with self.gate.exclusive():
            return await self.register_days.build(self.register.collection)

    async def _note_open_work(self, row: ReadRow, before: OpenWork, applied: bool) -> None:
        """Step 5: the row's open work, when it changed; on a redelivery always (a crash may
        have come between the row and this)."""
        work = OpenWork.of(row)
        if row.kind is RowKind.RECURRENCE or (applied and work == before):
            return
        coll = self.db[OPEN_WORK]
        async with self.locks(OPEN_WORK, work.key):
            if work.is_open:
                doc = work.to_document()
                doc.pop("_id")
                await coll.update_one({"_id": work.key}, {"$set": doc}, upsert=True)
            else:
                await coll.delete_one({"_id": work.key})

    async def _note_customer(self, env: Envelope, payload: Contract) -> None:
        """Keep the customer's name if this event states a later one than known."""
        said = domain.customer_name_of(env, payload)
        if said is None:
            return
        known = self._names.get(said.id)
        if known is not None and not domain.latest(known, said):
            return  # the stored name is this one or later (names only ever move forward)
        coll = self.db[CUSTOMER_NAMES]
        async with self.locks(CUSTOMER_NAMES, said.id):
            doc = await coll.find_one({"_id": said.id})
            stored = domain.CustomerName.of_document(doc) if doc else None
            if doc is None:
                await coll.insert_one(said.to_document())
            elif domain.latest(stored, said):
                await coll.update_one({"_id": said.id}, {"$set": {
                    "name": said.name, "said_at": said.said_at, "event_id": said.event_id}})
            self._names[said.id] = said if stored is None or domain.latest(stored, said) \
                else stored
            self._names.move_to_end(said.id)
            if len(self._names) > NAMES_KEPT:
                self._names.popitem(last=False)

    async def _post(self, store: RowStore, row: ReadRow) -> None:
        deltas = list(row.pending)
        writes = [(collection, doc_id, delta.id, part)
                  for delta in deltas for key, incs in delta.parts.items()
                  for collection, month in [split_part(key)]
                  for doc_id, part in counter_documents(collection, month, incs).items()]
        # Each document on its own (each knows the deltas it holds), so side by side.
        await asyncio.gather(*(self._inc(*write) for write in writes))
        posted = {d.id for d in deltas}
        row.pending = [d for d in row.pending if d.id not in posted]
        row.has_pending = bool(row.pending)
        await store.save(row)
        for collection, doc_id, delta_id, _ in writes:  # step 4: with each one's next write
            self._posted.setdefault((collection, doc_id), set()).add(delta_id)

    async def _inc(self, collection: str, doc_id: str, delta_id: str,
                   incs: dict[str, int]) -> None:
        """Add `incs` to one counters document of a month once. Group commit: the deltas that
        wait for the document's write lock go out in its next write together (every event of
        a month writes its main document, which would otherwise be the queue they stand in)."""
        await self._month_writes.add((collection, doc_id), (delta_id, incs),
                                     self.locks(collection, doc_id),
                                     lambda deltas: self._add_to_month(collection, doc_id, deltas))

    async def _add_to_month(self, collection: str, doc_id: str,
                            deltas: list[tuple[str, dict[str, int]]]) -> None:
        """The counters and the delta ids of one counters document change in one update, which
        also drops the ids of deltas posted since (step 4). Under the document's write lock,
        matched on the `version` this process last read or wrote."""
        coll = self.db[collection]
        key = (collection, doc_id)
        for _ in range(3):
            doc = self._months.get(key) or await coll.find_one({"_id": doc_id})
            inflight: list[str] = doc.get("inflight", []) if doc else []
            fresh: dict[str, dict[str, int]] = {}
            for delta_id, incs in deltas:
                if delta_id not in inflight:  # else posted before a crash
                    fresh.setdefault(delta_id, incs)
            if not fresh:
                return
            # The copy keeps its counters parsed: a month's JSON is parsed once, not per
            # write (thousands of customers make it hundreds of KB).
            counts = dict(doc.get(PARSED) or json.loads(doc["data"])) if doc else {}
            for incs in fresh.values():
                add_counters(counts, incs)
            if doc is None:
                doc = {"_id": doc_id, "version": 1, "data": _dump(counts),
                       "inflight": list(fresh)}
                try:
                    await coll.insert_one(doc)
                except DuplicateKeyError:
                    continue  # written meanwhile by another writer: read it
                self._months[key] = doc | {PARSED: counts}
                return
            posted = self._posted.pop(key, set())
            new = {"version": doc.get("version", 0) + 1, "data": _dump(counts),
                   "inflight": [i for i in inflight if i not in posted] + list(fresh)}
            result = await coll.update_one(
                {"_id": doc_id, "version": doc.get("version")}, {"$set": new})
            if result.matched_count:
                self._months[key] = {"_id": doc_id, PARSED: counts} | new
                return
            self._months.pop(key, None)  # outdated by another writer: read again
            self._posted.setdefault(key, set()).update(posted)
        raise ConcurrencyConflict(f"{collection} {doc_id} keeps changing under this writer")

    def _forget_copies(self) -> None:
        """The read models are being replaced (a take-over, a rebuild): what this process
        remembers of them no longer holds."""
        self._months.clear()
        self._posted.clear()
        self._names.clear()
        for store in self.rows.values():
            store.recent.clear()

    async def recover(self) -> int:
        """When a replica becomes the writer (gate closed): post what a crash left pending,
        then clear stale ids; and rebuild the open work from the rows (the same pass).

        It reads the rows and months by other fields than `_id` (indexes on MongoDB, whole
        collections on FerretDB): once per take-over, never per event or on a timer."""
        self._forget_copies()
        posted = 0
        work: list[OpenWork] = []
        for kind, store in self.rows.items():
            wanted: dict[str, Any] = {"has_pending": True}
            if kind is RowKind.FEEDBACK:
                wanted = {"$or": [wanted, {"open": True}, {"form_open": True}]}
            elif kind is RowKind.CAPA:
                wanted = {"$or": [wanted, {"open": True}]}
            async for doc in store.collection.find(wanted):
                row: ReadRow | None = store.model.model_validate(doc)
                if row is not None and row.pending:
                    async with self.row_locks(kind, row.id):
                        row = await store.get(row.id)
                        if row is not None and row.pending:
                            await self._post(store, row)
                            posted += 1
                if row is not None:
                    work.append(OpenWork.of(row))
        for collection in COUNTER_COLLECTIONS:
            await self.db[collection].update_many({"inflight": {"$ne": []}},
                                                  {"$set": {"inflight": []}})
        await self._swap_in(OPEN_WORK, [w.to_document() for w in work if w.is_open])
        return posted

    # -- reading -------------------------------------------------------------------------
    async def monthly(self, months: list[str]) -> dict[str, dict[str, int]]:
        """The counters of these months: each month's documents by `_id` (its main one and
        its shards, `counter_documents`), added up."""
        ids = [doc_id for month in months for doc_id in month_documents(month)]
        found = await load(self.db[MONTHLY], ids, projection={"data": 1})
        counters: dict[str, dict[str, int]] = {month: {} for month in months}
        for doc in found:
            add_counters(counters[month_of_document(doc["_id"])], json.loads(doc["data"]))
        return counters

    async def open_counters(self, last_month: str) -> dict[str, dict[str, int]]:
        """Receipts and closures by received month, up to `last_month`: every month on record
        may still hold an open case, so this reads them all (one small document per month,
        not per complaint)."""
        cursor = self.db[MONTHLY_OPEN].find({"_id": {"$lte": last_month}},
                                            projection={"data": 1})
        return {d["_id"]: json.loads(d["data"]) async for d in cursor}

    async def customer_names(self, ids: list[str]) -> dict[str, str]:
        """The latest name known for each of these customer ids (those with one). One read
        of the names (a table may name hundreds of customers): one small document per
        customer, so its size follows the customer directory, not the complaints."""
        # By `_id: {$in}` in chunks, each in one reply (the driver's first batch is 101:
        # a month naming 300 customers took three more round trips).
        found = await load(self.db[CUSTOMER_NAMES], ids, projection={"name": 1})
        return {d["_id"]: d["name"] for d in found}

    async def history_of(self, row: ReadRow) -> list[dict[str, Any]]:
        """The row's events, each by `_id`: the history holds every event ever seen."""
        coll = self.db[HISTORY]
        docs = await asyncio.gather(*(coll.find_one({"_id": event_id})
                                      for event_id in row.applied_events))
        return sorted([d for d in docs if d is not None],
                      key=lambda d: (d["occurred_at"], d["_id"]))

    async def live_rows(self) -> AsyncIterator[ReadRow | OpenWork]:
        """Open complaints, open forms and open CAPAs (for the gauges): their open work, or,
        before a replica that keeps it has taken over (no `open_work` yet, only after an
        upgrade), the rows (a read of the register: at start, and until that take-over)."""
        if self._open_work_kept or OPEN_WORK in await self.db.list_collection_names():
            self._open_work_kept = True  # from here on always there (a rebuild swaps it)
            async for doc in self.db[OPEN_WORK].find({}, batch_size=ALL_AT_ONCE):
                yield OpenWork.of_document(doc)
            return
        async for doc in self.register.collection.find(
                {"$or": [{"open": True}, {"form_open": True}]}):
            yield domain.FeedbackRow.model_validate(doc)
        async for doc in self.rows[RowKind.CAPA].collection.find({"open": True}):
            yield domain.CapaRow.model_validate(doc)

    # -- rebuilding from the history -------------------------------------------------
    async def rebuild(self) -> RebuildReport:
        """Replace every read model by the fold of the stored event history.

        Built in side collections, then swapped in; the caller holds the gate."""
        self._forget_copies()
        started = time.perf_counter()
        events, skipped = [], 0
        async for doc in self.db[HISTORY].find({}):
            try:
                events.append(parse_history_doc(doc))
            except (UnknownEvent, MalformedEvent):
                skipped += 1
        events.sort(key=lambda e: (e[0].occurred_at, e[0].id))
        rows = domain.fold(events, self.tz)
        totals = domain.monthly_totals(rows.values())
        await self.replace(rows.values(), totals, domain.customer_names(events).values())
        counts = {k.value: sum(1 for (kind, _) in rows if kind is k) for k in RowKind}
        return RebuildReport(events=len(events), skipped=skipped, rows=counts,
                             months=len({split_part(p)[1] for p in totals}),
                             seconds=round(time.perf_counter() - started, 3))

    async def replace(self, rows: Any, totals: dict[str, dict[str, int]],
                      names: Iterable[domain.CustomerName] | None = None) -> None:
        """Write rows, their open work, the register's days, counters and (given) customer
        names into `<name>__next`, then swap each into place."""
        docs: dict[str, list[dict[str, Any]]] = {
            n: [] for n in [*ROW_COLLECTIONS.values(), *COUNTER_COLLECTIONS, OPEN_WORK]}
        if names is not None:
            docs[CUSTOMER_NAMES] = [said.to_document() for said in names]
        days: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            docs[ROW_COLLECTIONS[row.kind]].append(row.to_document() | {"version": 1})
            work = OpenWork.of(row)
            if work.is_open:
                docs[OPEN_WORK].append(work.to_document())
            at = _received_at(row)
            if at is not None:
                days.setdefault(day_of(at), []).append({"id": row.id, "at": at})
        # `register_days` as `DayIndex.build` would leave it: built from these rows.
        docs[REGISTER_DAYS] = [page for day, entries in days.items()
                               for page in day_pages(day, entries)] + [built_marker()]
        for key, counters in totals.items():
            collection, month = split_part(key)
            for doc_id, part in counter_documents(collection, month, counters).items():
                docs[collection].append({"_id": doc_id, "version": 1, "data": _dump(part),
                                         "inflight": []})
        for name, batch in docs.items():
            await self._swap_in(name, batch)
        await self.ensure_indexes()

    async def _swap_in(self, name: str, batch: list[dict[str, Any]]) -> None:
        """Replace collection `name` by these documents (written aside, then renamed)."""
        side = self.db[f"{name}__next"]
        await side.drop()
        for i in range(0, len(batch), 5000):
            await side.insert_many(batch[i:i + 5000], ordered=False)
        if not batch:
            await self.db.create_collection(side.name)
        await self.db[name].drop()
        await side.rename(name)


# The statistics' counters by customer and by product grow with the month's customers and
# products (thousands in a busy month): they live in shards of the month, so an event rewrites
# a small document, not one that grows all month (a month of 3,000 new customers made one of
# 350 KB, rewritten by every event). Other counters grow with configuration (categories,
# units, defect codes) or with the days and minutes of a month, and stay in the main document.
SHARDED = ("customer", "product")
SHARDS = 8  # per dimension: 8 x 2 shards and the main document, read by `_id`


def counter_documents(collection: str, month: str,
                      counters: dict[str, int]) -> dict[str, dict[str, int]]:
    """The documents of `month` that hold these counters (`_id` -> their counters): the main
    one (`_id` the month), and for a counter of a sharded dimension ("fb|customer|<id>",
    "loss|product|<code>|<currency>", ...) its value's shard ("2026-12|customer3")."""
    if collection != MONTHLY:
        return {month: counters}
    out: dict[str, dict[str, int]] = {}
    for key, value in counters.items():
        out.setdefault(_document_of(month, key), {})[key] = value
    return out


def _document_of(month: str, key: str) -> str:
    parts = key.split("|", 3)
    if len(parts) > 2 and parts[1] in SHARDED:
        return f"{month}|{parts[1]}{zlib.crc32(parts[2].encode()) % SHARDS}"
    return month


def month_documents(month: str) -> list[str]:
    """Every document a month's counters may be in (a shard not written yet is not there)."""
    return [month] + [f"{month}|{dim}{n}" for dim in SHARDED for n in range(SHARDS)]


def month_of_document(doc_id: str) -> str:
    return doc_id.split("|", 1)[0]


def add_counters(counters: dict[str, int], incs: dict[str, int]) -> dict[str, int]:
    for key, value in incs.items():
        total = counters.get(key, 0) + value
        if total:
            counters[key] = total
        else:
            counters.pop(key, None)  # keeps the document small when things are undone
    return counters


def _received_at(row: ReadRow) -> datetime | None:
    """When a register row's feedback was received (None for other rows, and until known)."""
    return row.received_at if isinstance(row, domain.FeedbackRow) else None


def _register_no(row: ReadRow) -> str | None:
    return row.register_no if isinstance(row, domain.FeedbackRow) else None


def _ms(at: datetime) -> datetime:
    return at.replace(microsecond=at.microsecond // 1000 * 1000)  # what BSON keeps


PARSED = "~parsed"  # in the copy of a month's counters only: `data` parsed (never written)


def _dump(counters: dict[str, int]) -> str:
    return json.dumps(counters, separators=(",", ":"), sort_keys=True)


def parse_history_doc(doc: dict[str, Any]) -> tuple[Envelope, Contract]:
    """An event as stored in the history (its id doubles as `_id`)."""
    return parse_event({k: v for k, v in doc.items() if k != "_id"})
