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
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from shared.errors import Invalid

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


class DayIndex:
    """`<name>_days`: which records each day brought, by their ordering time `field`.

    A day's entries `{id, at}` are kept in pages of at most `PAGE_SIZE` (`_id`
    "YYYY-MM-DD/<n>"; page 0 also says how many pages the day has): FerretDB rewrites a
    whole document on every update, so a page that grew with the day would make each
    record's add slower than the last (300 entries: 19 ms an add; 3,000: 96 ms). Reading a
    period is two `$in` reads: its days' first pages, then the rest.

    Every write to a day's pages holds that day's lock (FerretDB's SQLite handler does not
    run an update's read and write atomically: two at once would lose one)."""

    def __init__(self, collection: AsyncCollection, field: str, stripes: int = 64,
                 facets: tuple[str, ...] = ()):
        self.collection = collection
        self.field = field
        # Top-level fields that never change once a record is added (e.g. an action
        # request's unit): kept in each entry, so a list filtered by them reads only its
        # page's records (`shared.lists.history_page`).
        self.facets = facets
        self._locks = [asyncio.Lock() for _ in range(stripes)]
        self._open_page: dict[str, int] = {}  # day -> the page adds go to (this process)

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
        leaves an entry without a record, which lists skip, never a record without one."""
        entry = self.entry_of(doc)
        if entry is None:
            return
        day = day_of(entry["at"])
        async with self._lock(day):
            page = self._open_page.get(day)
            if page is None:
                first = await self.collection.find_one({"_id": page_id(day, 0)}, {"pages": 1})
                page = (first or {}).get("pages", 1) - 1
            while True:
                try:  # onto the open page while it has room (a full one matches nothing)
                    await self.collection.update_one(
                        {"_id": page_id(day, page), "count": {"$lt": PAGE_SIZE}},
                        {"$addToSet": {"entries": entry}, "$inc": {"count": 1}}, upsert=True)
                    break
                except DuplicateKeyError:  # full (or created by another process): the next
                    page += 1
            if page > 0 and self._open_page.get(day) != page:
                await self.collection.update_one({"_id": page_id(day, 0)},
                                                 {"$max": {"pages": page + 1}}, upsert=True)
            self._open_page[day] = page

    async def _pages(self, days: list[str]) -> list[dict[str, Any]]:
        """Every page of these days: their first pages, then the others (two `$in` reads)."""
        first = await load(self.collection, [page_id(d, 0) for d in days])
        more = [page_id(p["_id"].split("/")[0], n) for p in first
                for n in range(1, p.get("pages", 1))]
        return first + await load(self.collection, more)

    async def entries(self, period: Period) -> list[tuple[Any, datetime]]:
        """(id, at) of every record in the period, each once (a crash may write one twice)."""
        return [(e["id"], e["at"]) for e in await self.rows(period)]

    async def rows(self, period: Period) -> list[dict[str, Any]]:
        """The entries (id, at, facets) of every record in the period, each once."""
        found: dict[Any, dict[str, Any]] = {}
        for page in await self._pages(period.days()):
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
            for page in await self._pages([day_of(at)]):
                if any(e.get("id") == doc_id for e in page.get("entries", [])):
                    await self.collection.update_one({"_id": page["_id"]},
                                                     {"$pull": {"entries": entry}})

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
                pages = day_pages(day, entries, first_page=after)
                await self.collection.insert_many(pages)
                if first is not None or len(pages) > 1:
                    await self.collection.update_one(
                        {"_id": page_id(day, 0)},
                        {"$max": {"pages": after + len(pages)}}, upsert=True)
                self._open_page.pop(day, None)
        await self.collection.update_one({"_id": BUILT}, {"$set": {"at": datetime.now(UTC)}},
                                         upsert=True)
        return sum(len(e) for e in by_day.values())


PAGE_SIZE = 64  # entries a day page holds


def page_id(day: str, page: int) -> str:
    return f"{day}/{page}"


def day_pages(day: str, entries: list[dict[str, Any]], first_page: int = 0
              ) -> list[dict[str, Any]]:
    """A day's entries as the documents `DayIndex` keeps (full pages, from `first_page`)."""
    chunks = [entries[i:i + PAGE_SIZE] for i in range(0, len(entries), PAGE_SIZE)] or [[]]
    pages = [{"_id": page_id(day, first_page + n), "entries": chunk, "count": PAGE_SIZE}
             for n, chunk in enumerate(chunks)]
    if first_page == 0:
        pages[0]["pages"] = len(pages)
    return pages


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
