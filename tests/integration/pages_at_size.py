"""What a page of a list of history reads, and a busy period loaded straight into a store.

`Replies` counts, per reply, the day documents and the day entries in them and the records
(the documents read), beside `tests.reads.ReadLog` (the commands). `load_period` writes
records and their `<name>_days` documents as the services write them (`day_pages`, as
`make bench` loads a history), so a test can compare a page's cost on a quiet and on a
busy period without adding thousands of records one by one.
"""

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pymongo import monitoring

from shared.periods import DayIndex, Period, day_of, day_pages


@dataclass
class Replies(monitoring.CommandListener):
    """Documents each reply carried: day documents and their entries, records."""

    database_prefix: str
    recording: bool = False
    counts: dict[str, int] = field(default_factory=dict)

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if not (self.recording and event.database_name.startswith(self.database_prefix)
                and event.command_name in ("find", "getMore")):
            return
        cursor = event.reply.get("cursor", {})
        docs = cursor.get("firstBatch", cursor.get("nextBatch", []))
        days = str(cursor.get("ns", "")).endswith("_days")
        self._add("day documents" if days else "records", len(docs))
        self._add("day entries", sum(len(d.get("entries", [])) for d in docs) if days else 0)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def _add(self, key: str, n: int) -> None:
        self.counts[key] = self.counts.get(key, 0) + n


def install(database_prefix: str) -> Replies:
    replies = Replies(database_prefix)
    monitoring.register(replies)
    return replies


def first_day_and_the_rest(period: Period, now: datetime) -> tuple[Period, Period]:
    """The part of the period's first day it covers, and the whole days after it up to
    today's midnight: a list's first day is cut by its period (whether a page lies astride
    the cut depends on the hour, so tests load it the same way in every measure)."""
    second_day = period.start.replace(hour=0, minute=0, second=0, microsecond=0) + \
        timedelta(days=1)
    return Period(period.start, second_day), \
        Period(second_day, now.replace(hour=0, minute=0, second=0, microsecond=0))


async def load_period(store: Any, days: DayIndex, period: Period, per_day: int, tag: str,
                      record: Callable[[str, datetime], dict[str, Any]],
                      around_start: bool = True) -> int:
    """`per_day` records on every day the period touches, at times spread over each day
    (and, if `around_start`, two a minute either side of the period's start, so its first
    day always has a page astride it);
    `record(id, at)` makes a record as the service stores it (its day entry, facets too, is
    what the service's `DayIndex` keeps). Returns how many lie in the
    period (the first day's earlier ones do not)."""
    rng = random.Random(f"{tag}{per_day}")
    by_day: dict[str, list[dict[str, Any]]] = {}
    records = []
    for day in period.days():
        midnight = datetime.fromisoformat(day).replace(tzinfo=period.start.tzinfo)
        for i in range(per_day):
            at = midnight + timedelta(seconds=rng.randrange(0, 86400))
            if around_start and i < 2 and day == day_of(period.start):
                at = period.start + timedelta(minutes=1 if i else -1)
            if at >= period.end:
                continue
            records.append(record(f"{tag}-{day}-{i:04d}", at))
            by_day.setdefault(day, []).append(days.entry_of(records[-1]))
    if records:
        await store.insert_many(records)
    inside = sum(period.holds(e["at"]) for entries in by_day.values() for e in entries)
    for day, entries in by_day.items():  # merged with what the day holds already
        old = await days.pages([day])
        entries += [e for p in old for e in p.get("entries", [])]
        await days.collection.delete_many({"_id": {"$in": [p["_id"] for p in old] + [day]}})
        await days.collection.delete_many({"_id": {"$regex": f"^{day}#"}})  # values' counts
        await days.collection.insert_many(day_pages(day, entries, counts=days.counts))
    return inside
