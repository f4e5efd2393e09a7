"""Pages of lists, each read bounded: open work from `<name>_open`, history by period.

Both end by loading the page's records with `_id: {$in: [...]}` (an `_id` index lookup on
MongoDB, and on FerretDB with the project's patch, deploy/ferretdb), in the order the list
was sorted in, so no list reads the whole store (see `shared.store.OpenWork` and
`shared.periods`).
"""

from datetime import UTC, date, datetime
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection

from shared.periods import DayIndex, Period, _utc, load
from shared.store import Repository

Order = list[tuple[str, int]]


async def open_page(repo: Repository, query: dict[str, Any], order: Order, skip: int,
                    limit: int, projection: dict[str, Any] | None = None
                    ) -> tuple[list[dict[str, Any]], int]:
    """A page of open work matching `query`, sorted by `order`, and the total: matched and
    sorted on the summaries in `<name>_open` (which carry the fields lists filter and sort
    by, under the same names), then the page's records loaded by `_id`."""
    if repo.open_work is None:
        raise ValueError(f"{repo.collection.name} keeps no open work (Service.collection)")
    fields = {f: 1 for f, _ in order if f != "_id"}
    summaries = sort_rows(await repo.open_work.all(query, projection=fields or None), order)
    wanted = [s["_id"] for s in summaries[skip:skip + limit]]
    return await _in_order(repo.collection, wanted, projection), len(summaries)


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

    Without a filter and in the index's own order (its time, then `_id`), only the page's
    records are read; otherwise every record of the period is, then filtered and sorted."""
    entries = await index.rows(period)
    own_order = len(order) <= 2 and order[0][0] == index.field and \
        (len(order) == 1 or order[1][0] == "_id")
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
