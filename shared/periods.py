"""History lists by period: each day's records, so a page reads its period, not the history.

On FerretDB's SQLite handler any filter but an `_id` lookup reads a whole collection, so a
list over history ("the register, newest first", "closed cases", "a customer's complaints")
cannot be one query over the store. A repository with a `DayIndex` keeps `<name>_days`:
one document per UTC day (`_id` "YYYY-MM-DD") listing `{id, at}` of every record whose
ordering time (`field`, e.g. `received_at`) falls on that day. A list is asked for a
`Period` (by default the last days, see `Period.of`); its days are read by `_id`, its
records by `_id: {$in: [...]}` (an `_id` index lookup on MongoDB, and on FerretDB with the
project's patch, deploy/ferretdb). A page costs its period's volume, never the history's.

The ordering time of a record never changes once it is added (received, opened, created).
"""

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import OperationFailure

from shared.batching import Gathered
from shared.errors import DUPLICATE_KEY, Invalid

FUTURE_SLACK = timedelta(hours=1)  # a default period's end lies this far after now
BUILT = "~built"  # the index's marker document: the one-time build from the store is done


@dataclass(frozen=True)
class Period:
    """[start, end) in UTC."""

    start: datetime
    end: datetime

    @classmethod
    def of(cls, start: datetime | None, end: datetime | None, *, default_days: int,
           now: datetime | None = None, end_inclusive: bool = False,
           names: tuple[str, str] = ("from", "to"), max_days: int | None = None) -> "Period":
        """The period a list was asked for: from `start` to `end` (either may be left out;
        with neither, the last `default_days`). A naive time is UTC."""
        now = now or datetime.now(UTC)
        start, end = _utc(start), _utc(end)
        if end is not None and end_inclusive:
            end += timedelta(milliseconds=1)  # BSON keeps milliseconds
        if start is not None and end is not None and start >= end:
            raise Invalid(f"The period is empty: {names[0]} must be before {names[1]}.",
                          [{"loc": f"query.{names[0]}", "msg": f"must be before {names[1]}"}])
        if end is None:  # up to now, and what was received a little in the future (clock skew)
            end = max(now, start or now) + FUTURE_SLACK
        if start is None:
            start = end - timedelta(days=default_days)
        if max_days is not None and end - start > timedelta(days=max_days):
            raise Invalid(f"The period is longer than {max_days} days: ask for a shorter one "
                          f"({names[0]}/{names[1]}), e.g. a month or a year at a time.",
                          [{"loc": f"query.{names[0]}",
                            "msg": f"the period may be at most {max_days} days long"}])
        return cls(start, end)

    def days(self) -> list[str]:
        first, last = self.start.date(), (self.end - timedelta(microseconds=1)).date()
        return [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]

    def holds(self, at: datetime) -> bool:
        return self.start <= _utc(at) < self.end  # type: ignore[operator]

    def holds_day(self, day: str) -> bool:
        """The whole UTC day "YYYY-MM-DD" lies in the period."""
        start = datetime.fromisoformat(day).replace(tzinfo=UTC)
        return self.start <= start and start + timedelta(days=1) <= self.end


def _utc(at: datetime | None) -> datetime | None:
    if at is None:
        return None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def same_instant(a: datetime | None, b: datetime | None) -> bool:
    """Equal as stored: BSON keeps milliseconds."""
    if a is None or b is None:
        return a is b
    return _ms(a) == _ms(b)


def _ms(at: datetime) -> datetime:
    return _utc(at).replace(microsecond=at.microsecond // 1000 * 1000)  # type: ignore[union-attr]


def day_of(at: datetime) -> str:
    return _utc(at).date().isoformat()  # type: ignore[union-attr]


def value_id(day: str, facet: str, value: str) -> str:
    """The document that counts a many-valued facet's value on a day."""
    return f"{day}#{facet}={facet_key(value)}"


@dataclass(frozen=True)
class Counted:
    """How a day's head counts facets: in itself (`fs`), or apart, a document per value
    (`fa`, `value_id`)."""

    in_head: tuple[str, ...]
    apart: tuple[str, ...] = ()

    @classmethod
    def of(cls, head: dict[str, Any]) -> "Counted":
        return cls(tuple(head.get("fs", ())), tuple(head.get("fa", ())))


class DayIndex:
    """`<name>_days`: which records each day brought, by their ordering time `field`.

    A day's entries `{id, at}` are kept in pages of at most `PAGE_SIZE` (`_id`
    "YYYY-MM-DD/<n>"; page 0 also says how many pages the day has): FerretDB rewrites a
    whole document on every update, so a page that grew with the day would make each
    record's add slower than the last (300 entries: 19 ms an add; 3,000: 96 ms). Reading a
    period is two `$in` reads: its days' first pages, then the rest.

    Each day also has a small head (`_id` "YYYY-MM-DD"): how many records it holds (`n`),
    its pages, and each page's entries (`c`) and newest and oldest time (`hi`, `lo`),
    written in the same command as the entry. A page of a list in the index's own order
    reads the period's heads and only the pages that can hold its records
    (`shared.lists.index_page`), so it costs its page, not the period's volume (9,000
    entries: their pages 200 ms, the heads 3 ms). A day written before heads existed has
    none: it is counted by reading its pages.

    A facet with as many values as records (`many_valued`, e.g. the complaint an action
    request is for) is not counted in the head, which would then grow with the day and be
    rewritten, whole, with every add (capa's was 128 KB after 3,000 requests in a day, and
    FerretDB's CPU grew with it): each value's count of a day is a small document of its
    own (`_id` "YYYY-MM-DD#<facet>=<value>"), written in the same command, and a list
    filtered by it reads its period's few (one `$in`). The head names the facets it counts
    (`fs`) and those counted apart (`fa`), from its first entry on.

    Every write to a day's pages holds that day's lock (FerretDB's SQLite handler does not
    run an update's read and write atomically: two at once would lose one)."""

    def __init__(self, collection: AsyncCollection, field: str, stripes: int = 64,
                 facets: tuple[str, ...] = (), times_change: bool = False,
                 many_valued: tuple[str, ...] = ()):
        self.collection = collection
        self.field = field
        # A record's time may change after it is added (reporting's register: a form may
        # come before the registration): its old entry stays, so a day's head may count a
        # record another day lists too. Lists then check each record's own time.
        self.times_change = times_change
        # Top-level fields that never change once a record is added (e.g. an action
        # request's unit): kept in each entry, so a list filtered by them reads only its
        # page's records (`shared.lists.history_page`).
        self.facets = facets
        self.counts = Counted(tuple(f for f in facets if f not in many_valued),
                              tuple(f for f in facets if f in many_valued))
        self._locks = [asyncio.Lock() for _ in range(stripes)]
        self._open_page: dict[str, int] = {}  # day -> the page adds go to (this process)
        # day -> how its head counts (None: the day keeps no head) (this process)
        self._counted: dict[str, Counted | None] = {}
        self._gathered: Gathered[dict[str, Any]] = Gathered()  # entries for a day's next write

    def _lock(self, day: str) -> asyncio.Lock:
        return self._locks[hash(day) % len(self._locks)]

    def entry_of(self, doc: dict[str, Any]) -> dict[str, Any] | None:
        """What the index keeps of a stored record: its id, time and facets."""
        at = doc.get(self.field)
        if not isinstance(at, datetime):
            return None
        return {"id": doc["_id"], "at": at} | {f: doc.get(f) for f in self.facets}

    async def record(self, doc: dict[str, Any]) -> None:
        """Add one record (idempotent). Before the record's own insert: a crash in between
        leaves an entry without a record, which lists skip, never a record without one.

        Group commit: the entries of a day that arrive while its write is in flight wait,
        and the next write carries them all (one command, not one each, under the day's
        lock: at 32 registrations at once, the day's page was the queue they all stood in)."""
        entry = self.entry_of(doc)
        if entry is None:
            return
        day = day_of(entry["at"])
        await self._gathered.add(day, entry, self._lock(day),
                                 lambda entries: self._add_all(day, entries))

    async def _add_all(self, day: str, entries: list[dict[str, Any]]) -> None:
        for n in range(0, len(entries), GROUP_MAX):
            await self._add(day, entries[n:n + GROUP_MAX])

    async def _add(self, day: str, entries: list[dict[str, Any]]) -> None:
        """Add entries of one day, under its lock: onto the open page while it has room for
        them all (a page without matches nothing), and the head in the same command."""
        page = self._open_page.get(day)
        if page is None:
            page, self._counted[day] = await self._open_page_of(day)
        counted = self._counted[day]
        while True:
            # Onto the open page while it has room (a full one matches nothing), and
            # the day's head in the same command (ordered: not if the page refused).
            updates = [{"q": {"_id": page_id(day, page),
                              "count": {"$lte": PAGE_SIZE - len(entries)}},
                        "u": {"$addToSet": {"entries": {"$each": entries}},
                              "$inc": {"count": len(entries)}},
                        "upsert": True}]
            if counted is not None:
                updates.append({"q": {"_id": day}, "u": _head_update(
                    page, entries, counted, self.counts), "upsert": True})
                updates += [{"q": {"_id": value_id}, "u": {"$inc": {"n": n}}, "upsert": True}
                            for value_id, n in _apart(day, entries, counted).items()]
            # The command itself: FerretDB's reply to a refused statement lacks the
            # `nModified` PyMongo's bulk_write requires.
            reply = await self.collection.database.command(
                {"update": self.collection.name, "updates": updates, "ordered": True},
                codec_options=self.collection.codec_options)
            errors = reply.get("writeErrors") or []
            if not errors:
                break
            if errors[0].get("index") != 0 or errors[0].get("code") != DUPLICATE_KEY:
                raise OperationFailure(errors[0].get("errmsg", "update failed"),
                                       errors[0].get("code"), reply)
            page += 1  # full (or created by another process): the next
        if page > 0 and self._open_page.get(day) != page:
            await self.collection.update_one({"_id": page_id(day, 0)},
                                             {"$max": {"pages": page + 1}}, upsert=True)
        self._open_page[day] = page

    async def _open_page_of(self, day: str) -> tuple[int, Counted | None]:
        """The page adds go to, and how the day's head counts (None: the day keeps no head;
        a day begun before heads existed keeps none: its count would miss the entries
        written before)."""
        head = await self.collection.find_one({"_id": day}, {"pages": 1, "fs": 1, "fa": 1})
        if head is not None:
            return max(head.get("pages", 1), 1) - 1, Counted.of(head)
        first = await self.collection.find_one({"_id": page_id(day, 0)}, {"pages": 1})
        return ((first or {}).get("pages", 1) - 1, self.counts if first is None else None)

    async def _uncount(self, day: str, entry: dict[str, Any]) -> None:
        """Take one entry out of its day's counts (under the day's lock)."""
        head = await self.collection.find_one({"_id": day}, {"fs": 1, "fa": 1})
        if head is None:
            return  # a day without a head: counted by reading
        counted = Counted.of(head)
        await self.collection.update_one({"_id": day}, {"$inc": {"n": -1} | {
            p: -1 for p in _facet_paths(entry, counted.in_head)}})
        for value_id, n in _apart(day, [entry], counted).items():
            await self.collection.update_one({"_id": value_id}, {"$inc": {"n": -n}})

    async def uncount(self, doc: dict[str, Any]) -> None:
        """The record was added again (its insert refused, the stored one has this entry):
        the add counted it a second time in its day's head."""
        entry = self.entry_of(doc)
        if entry is None:
            return
        day = day_of(entry["at"])
        async with self._lock(day):  # FerretDB's `$inc` is not atomic: one writer a day
            await self._uncount(day, entry)

    async def pages(self, days: list[str], also: Sequence[str] = ()) -> list[dict[str, Any]]:
        """Every page of these days (and the pages named `also`): their first pages, then
        the others (two `$in` reads)."""
        first = await load(self.collection, [*(page_id(d, 0) for d in days), *also])
        more = [page_id(p["_id"].split("/")[0], n) for p in first if p["_id"] not in also
                for n in range(1, p.get("pages", 1))]
        return first + await load(self.collection, more)

    async def entries(self, period: Period) -> list[tuple[Any, datetime]]:
        """(id, at) of every record in the period, each once (a crash may write one twice)."""
        return [(e["id"], e["at"]) for e in await self.rows(period)]

    async def rows(self, period: Period) -> list[dict[str, Any]]:
        """The entries (id, at, facets) of every record in the period, each once."""
        found: dict[Any, dict[str, Any]] = {}
        for page in await self.pages(period.days()):
            for e in page.get("entries", []):
                if period.holds(e["at"]):
                    found.setdefault(e["id"], e)
        return list(found.values())

    async def forget(self, doc: dict[str, Any]) -> None:
        """Remove the entry of a record that was never inserted (the insert was refused)."""
        entry = self.entry_of(doc)
        if entry is None:
            return
        doc_id, at = entry["id"], entry["at"]
        async with self._lock(day_of(at)):
            pages = [p for p in await self.pages([day_of(at)])
                     if any(e.get("id") == doc_id for e in p.get("entries", []))]
            for page in pages:
                await self.collection.update_one({"_id": page["_id"]},
                                                 {"$pull": {"entries": entry}})
            if pages:
                await self._uncount(day_of(at), entry)

    async def built(self) -> bool:
        return await self.collection.find_one({"_id": BUILT}) is not None

    async def build(self, store: AsyncCollection) -> int:
        """Index the records the store already holds (added before this index existed).
        Reads the whole store, so only once: the marker document says it is done. Pages go
        after those live adds wrote meanwhile; an entry in both is listed once."""
        if await self.built():
            return 0
        by_day: dict[str, list[dict[str, Any]]] = {}
        fields = {f: 1 for f in (self.field, *self.facets)}
        async for doc in store.find({}, projection=fields):
            if (entry := self.entry_of(doc)) is not None:
                by_day.setdefault(day_of(entry["at"]), []).append(entry)
        for day, entries in by_day.items():
            async with self._lock(day):
                first = await self.collection.find_one({"_id": page_id(day, 0)}, {"pages": 1})
                after = (first or {}).get("pages", 1) if first else 0
                pages = day_pages(day, entries, first_page=after, counts=self.counts)
                if first is not None:  # live adds came first: the day is counted by reading
                    pages = [p for p in pages if p["_id"] != day and "#" not in p["_id"]]
                    await self.collection.delete_one({"_id": day})
                await self.collection.insert_many(pages)
                if first is not None:
                    await self.collection.update_one(
                        {"_id": page_id(day, 0)},
                        {"$max": {"pages": after + len(pages)}}, upsert=True)
                self._open_page.pop(day, None)
                self._counted.pop(day, None)
        await self.collection.update_one({"_id": BUILT}, {"$set": {"at": datetime.now(UTC)}},
                                         upsert=True)
        return sum(len(e) for e in by_day.values())


PAGE_SIZE = 64  # entries a day page holds
GROUP_MAX = 16  # entries one write adds at most (a page with less room is left for the next)


def page_id(day: str, page: int) -> str:
    return f"{day}/{page}"


def day_pages(day: str, entries: list[dict[str, Any]], first_page: int = 0,
              counts: Counted = Counted(())) -> list[dict[str, Any]]:
    """A day's entries as the documents `DayIndex` keeps (full pages, from `first_page`;
    from page 0, the day's head too, and its values' counts)."""
    # In time order: each page then spans a stretch of the day, and a list reads only the
    # pages its page of records falls in (`shared.lists.index_page`).
    entries = sorted(entries, key=lambda e: _utc(e["at"]) or e["at"])
    chunks = [entries[i:i + PAGE_SIZE] for i in range(0, len(entries), PAGE_SIZE)] or [[]]
    pages = [{"_id": page_id(day, first_page + n), "entries": chunk, "count": PAGE_SIZE}
             for n, chunk in enumerate(chunks)]
    if first_page == 0:
        pages[0]["pages"] = len(pages)
        distinct = list({e["id"]: e for chunk in chunks for e in chunk}.values())
        pages.append(_head(day, chunks, distinct, counts))
        pages += [{"_id": value, "n": n} for value, n in _apart(day, distinct, counts).items()]
    return pages


def _head(day: str, chunks: list[list[dict[str, Any]]], distinct: list[dict[str, Any]],
          counted: Counted) -> dict[str, Any]:
    head = {"_id": day, "n": len(distinct), "fs": list(counted.in_head),
            "fa": list(counted.apart),
            "pages": len(chunks), "c": {str(n): len(c) for n, c in enumerate(chunks)},
            "hi": {str(n): max(e["at"] for e in c) for n, c in enumerate(chunks) if c},
            "lo": {str(n): min(e["at"] for e in c) for n, c in enumerate(chunks) if c}}
    counts: dict[str, dict[str, int]] = {}
    for e in distinct:
        for path in _facet_paths(e, counted.in_head):
            facet, key = path.split(".")[1:]
            counts.setdefault(facet, {})[key] = counts.get(facet, {}).get(key, 0) + 1
    return head | ({"f": counts} if counts else {})


def _head_update(page: int, entries: list[dict[str, Any]], counted: Counted,
                 declared: Counted) -> dict[str, Any]:
    """`counted`: how this day's head counts; `declared`: how a head made now will."""
    # `fs` and `fa`: the facets the head counts from its first entry on (a facet declared
    # later is not counted for the days before).
    times = [e["at"] for e in entries]
    incs: dict[str, int] = {"n": len(entries), f"c.{page}": len(entries)}
    for entry in entries:
        for path in _facet_paths(entry, counted.in_head):
            incs[path] = incs.get(path, 0) + 1
    return {"$inc": incs,
            "$max": {"pages": page + 1, f"hi.{page}": max(times)},
            "$min": {f"lo.{page}": min(times)},
            "$setOnInsert": {"fs": list(declared.in_head), "fa": list(declared.apart)}}


def _facet_paths(entry: dict[str, Any], facets: tuple[str, ...]) -> list[str]:
    """Where a day's head counts the entry's facets: `f.<facet>.<value>`, for text values
    (a list filtered by one reads its count: `shared.lists.index_page`)."""
    return [f"f.{name}.{facet_key(value)}" for name, value in entry.items()
            if name in facets and isinstance(value, str)]


def _apart(day: str, entries: list[dict[str, Any]], counted: Counted) -> dict[str, int]:
    """The day's documents of many-valued facets' values these entries add to, and by how
    much."""
    counts: dict[str, int] = {}
    for entry in entries:
        for name in counted.apart:
            if isinstance(value := entry.get(name), str):
                key = value_id(day, name, value)
                counts[key] = counts.get(key, 0) + 1
    return counts


def facet_key(value: str) -> str:
    """A facet's value as a field name (no dots, no leading `$`)."""
    return quote(value, safe="").replace(".", "%2E")


def built_marker() -> dict[str, Any]:
    return {"_id": BUILT, "at": datetime.now(UTC)}


async def load(store: AsyncCollection, ids: Iterable[Any], query: dict[str, Any] | None = None,
               projection: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The documents with these ids (that match `query`), by `_id: {$in}` in chunks, each
    chunk in one reply."""
    ids = list(ids)
    chunks = [ids[i:i + IN_CHUNK] for i in range(0, len(ids), IN_CHUNK)]
    found = await asyncio.gather(*(
        store.find({"_id": {"$in": chunk}} | (query or {}), projection,
                   batch_size=ALL_AT_ONCE).to_list(None)
        for chunk in chunks))
    return [doc for docs in found for doc in docs]


IN_CHUNK = 250  # ids per `$in` read: FerretDB checks each result against the whole list
# Documents per reply when a read wants everything it matches (a small collection of open
# work, a chunk of ids): the driver's default first batch is 101 and each further batch is
# another round trip (610 open summaries: 4 round trips, 244 ms; in one, 95 ms).
ALL_AT_ONCE = 10_000
