"""Pages of lists, each read bounded: open work from `<name>_open`, history by period.

Both end by loading the page's records with `_id: {$in: [...]}` (an `_id` index lookup on
MongoDB, and on FerretDB with the project's patch, deploy/ferretdb), in the order the list
was sorted in, so no list reads the whole store (see `shared.store.OpenWork` and
`shared.periods`).
"""

import asyncio
from datetime import UTC, date, datetime
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection

from shared.periods import PAGE_SIZE, DayIndex, Period, _utc, facet_key, load, page_id, value_id
from shared.store import OUTBOX, PENDING, Repository

Order = list[tuple[str, int]]


async def open_page(repo: Repository, query: dict[str, Any], order: Order, skip: int,
                    limit: int, projection: dict[str, Any] | None = None
                    ) -> tuple[list[dict[str, Any]], int]:
    """A page of open work matching `query`, sorted by `order`, and the total: matched and
    sorted on the summaries in `<name>_open` (which carry the fields lists filter and sort
    by, under the same names), then the page's records loaded by `_id`."""
    fields = {f: 1 for f, _ in order if f != "_id"}
    summaries = sort_rows(await repo.kept_open().all(query, projection=fields or None), order)
    wanted = [s["_id"] for s in summaries[skip:skip + limit]]
    return await _in_order(repo.collection, wanted, projection), len(summaries)


async def open_rows(repo: Repository, query: dict[str, Any], order: Order, *,
                    fields: tuple[str, ...], group_by: str, per_group: int
                    ) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Open work as lean rows, grouped: each group's first `per_group` rows in `order`, and
    each group's count. Read from the summaries in `<name>_open` alone, which keep `fields`
    under the store's names and shapes, so no record is loaded (a board of 600 full records
    took FerretDB half a second to decode). A summary written before it kept all of
    `fields` is completed from its record, by `_id`."""
    rows: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    for row in sort_rows(await repo.kept_open().matching(query), order):
        group = str(_get(row, group_by))
        counts[group] = counts.get(group, 0) + 1
        if counts[group] <= per_group:
            rows.append(row)
    older = {r["_id"] for r in rows if any(f not in r for f in fields)}
    if older:
        renewed = await _renew(repo, older)
        # A record gone since keeps its old row; one no longer open work leaves the list.
        rows = [r for r in rows if renewed.get(r["_id"], r) is not None]
        rows = [renewed.get(r["_id"]) or r for r in rows]
    return rows, counts


async def _renew(repo: Repository, ids: set[Any]) -> dict[Any, dict[str, Any] | None]:
    """The summaries of these records as today's code writes them (None: no longer open),
    kept for the next read. Under each record's write lock, like a save's summary."""
    open_work = repo.kept_open()
    renewed: dict[Any, dict[str, Any] | None] = {}
    for doc in await load(repo.collection, ids, None, {OUTBOX: 0, PENDING: 0}):
        agg = repo.model.viewed(doc)
        async with repo.lock(agg.id):
            await open_work.record(agg, agg.version)
        summary = open_work.summary(agg)
        renewed[agg.id] = None if summary is None else {"_id": agg.id} | summary
    return renewed


async def _in_order(store: AsyncCollection, ids: list[Any],
                    projection: dict[str, Any] | None) -> list[dict[str, Any]]:
    docs = {d["_id"]: d for d in await load(store, ids, None, projection)}
    # A record gone between the two reads (or whose insert a crash prevented) is left out.
    return [docs[i] for i in ids if i in docs]


async def history_page(store: AsyncCollection, index: DayIndex, period: Period,
                       query: dict[str, Any], order: Order, skip: int, limit: int,
                       projection: dict[str, Any] | None = None
                       ) -> tuple[list[dict[str, Any]], int]:
    """A page of the records in `period` matching `query`, sorted by `order`, and the total.

    In the index's own order (its time, then `_id`), unfiltered or filtered by one facet,
    the day heads say the total and only the page's day pages and records are read
    (`index_page`); filtered by facets otherwise, the period's day entries and the page's
    records; otherwise every record of the period, then filtered and sorted."""
    own_order = len(order) <= 2 and order[0][0] == index.field and \
        (len(order) == 1 or order[1][0] == "_id")
    if own_order and not index.times_change and \
            (not query or _one_text_facet(query, index.facets)):
        # The default list, or one filtered by a facet: the page's days and pages only.
        paged = await index_page(index, period, order[0][1] < 0, skip, limit,
                                 ids_descending=len(order) == 2 and order[1][1] < 0,
                                 facet=next(iter(query.items()), None))
        if paged is not None:
            return await _in_order(store, paged[0], projection), paged[1]
    entries = await index.rows(period)
    if own_order and _by_facets(query, index.facets) and \
            all(f in e for e in entries for f in query):  # entries older than a facet: no
        # Filtered by fields the entries carry (or not at all): only the page is read.
        entries = [e for e in entries if all(e.get(f) == v for f, v in query.items())]
        ranked = sort_rows([{"_id": e["id"], index.field: e["at"]} for e in entries], order)
        wanted = [r["_id"] for r in ranked[skip:skip + limit]]
        return await _in_order(store, wanted, projection), len(entries)
    found = await load(store, (e["id"] for e in entries), query, projection)
    # The record's own time decides (an entry a crash left behind may name another day).
    docs = sort_rows([d for d in found if not isinstance(d.get(index.field), datetime)
                      or period.holds(d[index.field])], order)
    return docs[skip:skip + limit], len(docs)


async def index_page(index: DayIndex, period: Period, descending: bool, skip: int,
                     limit: int, ids_descending: bool = False,
                     facet: tuple[str, str] | None = None) -> tuple[list[Any], int] | None:
    """The ids at [skip, skip + limit) of the period's records (those whose `facet` has
    this value, if one is given) in the index's own order (time, newest first if
    `descending`, then id), and how many the period holds.

    Reads the period's day heads; the pages of days without a head, and those astride the
    period's start or end, to count them; then, of the days the page falls in, only the
    pages that can hold its records (by their newest and oldest times). So it costs the
    page and at most a day's volume, not the period's. None: entries older than the facet
    (they do not say its value) must be read with their records."""
    days = period.days()
    heads = {h["_id"]: h for h in await load(index.collection, days)}
    apart = await _apart_counts(index, heads, facet)
    by_head = {d: c for d in days
               if d in heads and (c := _count(heads[d], period, facet, apart)) is not None}
    astride = [page_id(d, n) for d, (_, pages) in by_head.items() for n in pages]
    unknown = [d for d in days if d not in by_head]  # no head: read the whole day
    day_pages = await index.pages(unknown, also=astride)
    if facet is not None and any(facet[0] not in e for p in day_pages
                                 for e in p.get("entries", [])):
        return None
    read = _by_day(day_pages, period, facet)
    counts = {d: n + len(read.get(d, {})) for d, (n, _) in by_head.items()}
    counts |= {d: len(read.get(d, {})) for d in unknown}
    counted = set(by_head)
    wanted_of: list[tuple[str, int, int]] = []  # (day, its first n, from position)
    at = 0  # the position of the day's first record in the whole list
    for day in sorted(days, reverse=descending):
        wanted = min(counts[day], skip + limit - at)
        if at + counts[day] > skip and wanted > 0:
            wanted_of.append((day, wanted, max(skip - at, 0)))
        at += counts[day]
    # The days of the page side by side: a page across quiet days waits for one read, not
    # one per day. The pages already read (astride the period's ends) are not read again.
    cached = {p["_id"]: p for p in day_pages}
    tops = await asyncio.gather(*(
        _top(index, heads[day], period, wanted, descending, ids_descending, facet, cached)
        if day in counted else _ready(read.get(day, {})) for day, wanted, _ in wanted_of))
    ids: list[Any] = []
    for (_, wanted, start), rows in zip(wanted_of, tops, strict=True):
        ranked = _by_time_then_id(list(rows.values()), descending, ids_descending)
        ids += [e["id"] for e in ranked[start:wanted]]
    return ids, sum(counts.values())


async def _apart_counts(index: DayIndex, heads: dict[str, dict[str, Any]],
                        facet: tuple[str, str] | None) -> dict[str, int]:
    """Day -> how many of its records have the facet's value, for the days whose heads count
    that facet apart (a document per value: `DayIndex`, `many_valued`). One `$in` read."""
    if facet is None:
        return {}
    name, value = facet
    ids = {value_id(day, name, value): day for day, head in heads.items()
           if name in head.get("fa", [])}
    return {ids[doc["_id"]]: int(doc.get("n", 0))
            for doc in await load(index.collection, ids)} if ids else {}


def _count(head: dict[str, Any], period: Period, facet: tuple[str, str] | None,
           apart: dict[str, int]) -> tuple[int, list[int]] | None:
    """How many records of the period (with the facet's value) a day's head says the day
    holds, and its pages that hold times on both sides of the period's start or end (to be
    read and counted); None if it cannot say (read the day's pages). `apart`: the counts of
    the facet's value on the days that count it apart."""
    if facet is not None:  # counted by day only: a day the period covers in part is read
        name, value = facet
        if not period.holds_day(head["_id"]):
            return None
        if name in head.get("fa", []):
            return apart.get(head["_id"], 0), []
        if name not in head.get("fs", []):
            return None
        return int(head.get("f", {}).get(name, {}).get(facet_key(value), 0)), []
    if period.holds_day(head["_id"]):
        return int(head.get("n", 0)), []
    pages, lo, hi = head.get("c", {}), head.get("lo", {}), head.get("hi", {})
    if sum(pages.values()) != head.get("n") or any(p not in lo or p not in hi for p in pages):
        return None  # a record added twice or forgotten since: pages no longer add up
    inside = {p for p in pages if period.holds(lo[p]) and period.holds(hi[p])}
    astride = [int(p) for p in pages if p not in inside
               and _at(lo[p]) < period.end and _at(hi[p]) >= period.start]
    return sum(pages[p] for p in inside), astride


def _one_text_facet(query: dict[str, Any], facets: tuple[str, ...]) -> bool:
    return len(query) == 1 and all(f in facets and isinstance(v, str) for f, v in query.items())


async def _ready(rows: dict[Any, dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    return rows


async def _top(index: DayIndex, head: dict[str, Any], period: Period, wanted: int,
               descending: bool, ids_descending: bool, facet: tuple[str, str] | None,
               cache: dict[str, dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    """At least the first `wanted` entries in the period of a day with a head, in the order
    asked: its pages read from the one holding the newest (oldest) time on, until no page
    left unread can hold an entry ranking among them."""
    bound = head.get("hi" if descending else "lo", {})
    lo, hi = head.get("lo", {}), head.get("hi", {})
    pages = [n for n in range(head.get("pages", 1))  # not those wholly outside the period
             if not (str(n) in lo and str(n) in hi and (_at(hi[str(n)]) < period.start
                                                        or _at(lo[str(n)]) >= period.end))]
    todo = [n for n in pages if str(n) not in bound] + sorted(  # times unknown: read first
        (n for n in pages if str(n) in bound), key=lambda n: bound[str(n)], reverse=descending)
    found: dict[Any, dict[str, Any]] = {}
    batch = wanted // PAGE_SIZE + 2  # the newest page is seldom full
    while todo:
        if len(found) >= wanted:
            last = _by_time_then_id(list(found.values()), descending,
                                    ids_descending)[wanted - 1]["at"]
            beyond = bound.get(str(todo[0]))
            if beyond is not None and (_at(beyond) < _at(last) if descending
                                       else _at(beyond) > _at(last)):
                break  # every page left holds only entries ranking after these
        read, todo = todo[:batch], todo[batch:]
        ids = [page_id(head["_id"], n) for n in read]
        got = [cache[i] for i in ids if i in cache] + await load(
            index.collection, [i for i in ids if i not in cache])  # no round trip if none
        for page in got:
            for e in page.get("entries", []):
                if _listed(e, period, facet):
                    found.setdefault(e["id"], e)
        batch = 1
    return found


def _at(value: datetime) -> datetime:
    return _utc(value) or value


def _by_day(pages: list[dict[str, Any]], period: Period, facet: tuple[str, str] | None
            ) -> dict[str, dict[Any, dict[str, Any]]]:
    """The entries of these pages that are listed, by day, each record once."""
    days: dict[str, dict[Any, dict[str, Any]]] = {}
    for page in pages:
        found = days.setdefault(page["_id"].split("/")[0], {})
        for e in page.get("entries", []):
            if _listed(e, period, facet):
                found.setdefault(e["id"], e)
    return days


def _listed(entry: dict[str, Any], period: Period, facet: tuple[str, str] | None) -> bool:
    return period.holds(entry["at"]) and (facet is None or entry.get(facet[0]) == facet[1])


def _by_time_then_id(entries: list[dict[str, Any]], descending: bool,
                     ids_descending: bool = False) -> list[dict[str, Any]]:
    """As `sort_rows` orders records: by time, then by id."""
    by_id = sorted(entries, key=lambda e: _sortable(e["id"]), reverse=ids_descending)
    return sorted(by_id, key=lambda e: _sortable(e["at"]), reverse=descending)


def _by_facets(query: dict[str, Any], facets: tuple[str, ...]) -> bool:
    """The query only asks for equal values of facets (an empty query too)."""
    return all(f in facets and isinstance(v, str | int | bool) for f, v in query.items())


def sort_rows(rows: list[dict[str, Any]], order: Order) -> list[dict[str, Any]]:
    """Sort like MongoDB: by each key in turn, missing and null first when ascending."""
    for field, direction in reversed(order):
        def key(row: dict[str, Any], field: str = field) -> tuple[int, Any]:
            return _sortable(_get(row, field))
        rows = sorted(rows, key=key, reverse=direction < 0)
    return rows


def _get(row: dict[str, Any], path: str) -> Any:
    value: Any = row
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _sortable(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, 0)
    if isinstance(value, datetime):
        return (2, _utc(value))
    if isinstance(value, date):
        return (2, datetime(value.year, value.month, value.day, tzinfo=UTC))
    if isinstance(value, bool):
        return (1, int(value))
    if isinstance(value, int | float):
        return (1, value)
    return (3, str(value))
