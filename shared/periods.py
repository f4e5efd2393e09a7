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

    Every write to a day document holds that day's lock (FerretDB's SQLite handler does not
    run an update's read and write atomically: two at once would lose one)."""

    def __init__(self, collection: AsyncCollection, field: str, stripes: int = 64):
        self.collection = collection
        self.field = field
        self._locks = [asyncio.Lock() for _ in range(stripes)]

    def _lock(self, day: str) -> asyncio.Lock:
        return self._locks[hash(day) % len(self._locks)]

    async def _update(self, day: str, update: dict[str, Any], upsert: bool = True) -> None:
        async with self._lock(day):
            try:
                await self.collection.update_one({"_id": day}, update, upsert=upsert)
            except DuplicateKeyError:  # another process created the day at the same moment
                await self.collection.update_one({"_id": day}, update, upsert=upsert)

    async def record(self, doc_id: Any, at: datetime | None) -> None:
        """Add one record (idempotent). Before the record's own insert: a crash in between
        leaves an entry without a record, which lists skip, never a record without one."""
        if at is not None:
            await self._update(day_of(at), {"$addToSet": {"entries": {"id": doc_id, "at": at}}})

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
            await self._update(day_of(at), {"$pull": {"entries": {"id": doc_id, "at": at}}},
                               upsert=False)

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
            await self._update(day, {"$addToSet": {"entries": {"$each": entries}}})
        await self.collection.update_one({"_id": BUILT}, {"$set": {"at": datetime.now(UTC)}},
                                         upsert=True)
        return sum(len(e) for e in by_day.values())
