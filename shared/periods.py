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

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from shared.errors import Invalid

BUILT = "~built"  # the index's marker document: the one-time build from the store is done


@dataclass(frozen=True)
class Period:
    """[start, end) in UTC."""

    start: datetime
    end: datetime

    @classmethod
    def of(cls, start: datetime | None, end: datetime | None, *, default_days: int,
           now: datetime | None = None, end_inclusive: bool = False,
           names: tuple[str, str] = ("from", "to")) -> "Period":
        """The period a list was asked for: from `start` to `end` (either may be left out;
        with neither, the last `default_days`). A naive time is UTC."""
        now = now or datetime.now(UTC)
        start, end = _utc(start), _utc(end)
        if end is not None and end_inclusive:
            end += timedelta(milliseconds=1)  # BSON keeps milliseconds
        if start is not None and end is not None and start >= end:
            raise Invalid(f"The period is empty: {names[0]} must be before {names[1]}.",
                          [{"loc": f"query.{names[0]}", "msg": f"must be before {names[1]}"}])
        if end is None:
            end = max(now, start or now) + timedelta(seconds=1)
        if start is None:
            start = end - timedelta(days=default_days)
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
    """`<name>_days`: which records each day brought, by their ordering time `field`."""

    def __init__(self, collection: AsyncCollection, field: str):
        self.collection = collection
        self.field = field

    async def record(self, doc_id: Any, at: datetime | None) -> None:
        """Add one record (idempotent). Before the record's own insert: a crash in between
        leaves an entry without a record, which lists skip, never a record without one."""
        if at is None:
            return
        entry = {"$addToSet": {"entries": {"id": doc_id, "at": at}}}
        try:
            await self.collection.update_one({"_id": day_of(at)}, entry, upsert=True)
        except DuplicateKeyError:  # another writer created the day at the same moment
            await self.collection.update_one({"_id": day_of(at)}, entry, upsert=True)

    async def entries(self, period: Period) -> list[tuple[Any, datetime]]:
        """(id, at) of every record in the period: one read of its days by `_id`."""
        days = await self.collection.find({"_id": {"$in": period.days()}}).to_list(None)
        found: dict[Any, datetime] = {}
        for day in days:
            for e in day.get("entries", []):
                if period.holds(e["at"]):
                    found.setdefault(e["id"], e["at"])  # once, even if a crash wrote it twice
        return list(found.items())

    async def forget(self, doc_id: Any, at: datetime | None) -> None:
        """Remove an entry whose record was never inserted (the insert was refused)."""
        if at is not None:
            await self.collection.update_one({"_id": day_of(at)},
                                             {"$pull": {"entries": {"id": doc_id, "at": at}}})

    async def built(self) -> bool:
        return await self.collection.find_one({"_id": BUILT}) is not None

    async def build(self, store: AsyncCollection) -> int:
        """Index the records the store already holds (added before this index existed).
        Reads the whole store, so only once: the marker document says it is done."""
        if await self.built():
            return 0
        by_day: dict[str, list[dict[str, Any]]] = {}
        async for doc in store.find({}, projection={self.field: 1}):
            at = doc.get(self.field)
            if isinstance(at, datetime):
                by_day.setdefault(day_of(at), []).append({"id": doc["_id"], "at": at})
        for day, entries in by_day.items():
            await self.collection.update_one(
                {"_id": day}, {"$addToSet": {"entries": {"$each": entries}}}, upsert=True)
        await self.collection.update_one({"_id": BUILT}, {"$set": {"at": datetime.now(UTC)}},
                                         upsert=True)
        return sum(len(e) for e in by_day.values())
