"""Lists of history by period (`shared.periods`) on the real FerretDB: a page reads its
period's days and records by `_id`, whatever the history holds."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from shared import lists
from shared.periods import Period, day_of
from shared.store import AlreadyExists
from tests import reads
from tests.conftest import infra_settings, test_namespace
from tests.integration.kit_fixtures import Counter, eventually, ledger_service

NOW = datetime.now(UTC).replace(microsecond=0)
NEWEST_FIRST = [("created_at", -1), ("_id", 1)]


@pytest.fixture
async def ledger_with_reads():
    namespace = test_namespace(uuid.uuid4().hex[:6])
    log = reads.install(namespace)
    ledger = ledger_service(infra_settings(namespace, relay_interval_s=0.2))
    await ledger.start()
    # The start's background work reads the store once (the day index's build, open work).
    await eventually(lambda: _built(ledger), what="the start's one-time build")
    yield ledger, log
    if ledger.started:
        await ledger.stop()


async def _add(ledger, age: timedelta, value: int = 0) -> str:
    c = Counter(_id=f"c-{uuid.uuid4().hex[:8]}", created_at=NOW - age, value=value)
    await ledger.repo("counters").add(c)
    return c.id


def _page(ledger, period: Period, query=None, skip=0, limit=50):
    repo = ledger.repo("counters")
    return lists.history_page(repo.collection, repo.days, period, query or {}, NEWEST_FIRST, skip,
                        limit)


async def test_a_page_of_history_lists_its_period_newest_first_and_reads_no_other_day(
        ledger_with_reads):
    ledger, log = ledger_with_reads
    old = [await _add(ledger, timedelta(days=40 + i)) for i in range(5)]
    recent = [await _add(ledger, timedelta(hours=1 + i * 30)) for i in range(4)]
    log.recording = True
    docs, total = await _page(ledger, Period.of(None, None, default_days=31, now=NOW))
    page2, _ = await _page(ledger, Period.of(None, None, default_days=31, now=NOW), skip=2,
                           limit=2)
    log.recording = False
    assert [d["_id"] for d in docs] == recent and total == 4, "the last 31 days, newest first"
    assert [d["_id"] for d in page2] == recent[2:]
    assert not set(old) & {d["_id"] for d in docs}
    assert not log.unbounded(), "reads that grow with history:\n" + "\n".join(
        f"{r.collection}.{r.command} {r.filter}" for r in log.unbounded())

    older, total = await _page(ledger, Period.of(NOW - timedelta(days=42, hours=12), NOW -
                                                 timedelta(days=39), default_days=31))
    assert [d["_id"] for d in older] == old[:3] and total == 3


async def test_a_filtered_page_counts_only_the_matching_records_of_its_period(
        ledger_with_reads):
    ledger, log = ledger_with_reads
    await _add(ledger, timedelta(days=60), value=7)  # matches, but outside the period
    small = [await _add(ledger, timedelta(hours=i + 1), value=1) for i in range(3)]
    big = [await _add(ledger, timedelta(hours=i + 5), value=7) for i in range(2)]
    log.recording = True
    docs, total = await _page(ledger, Period.of(None, None, default_days=31, now=NOW),
                              {"value": {"$gte": 5}})
    log.recording = False
    assert [d["_id"] for d in docs] == big and total == 2
    assert small
    assert not log.unbounded()


async def test_records_stored_before_the_day_index_existed_are_indexed_once_at_start(
        ledger_with_reads):
    ledger, _ = ledger_with_reads
    store = ledger.repo("counters").collection
    # Written straight into the store, as by a version without the day index.
    legacy = [{"_id": f"legacy-{i}", "value": 0, "version": 1, "history": [],
               "applied_events": [], "created_at": NOW - timedelta(days=i)} for i in range(3)]
    await store.insert_many(legacy)
    await ledger.database["counters_days"].delete_many({})  # as if it never existed
    await ledger.stop()
    restarted = ledger_service(ledger.settings.infra)
    await restarted.start()
    try:
        await eventually(lambda: _built(restarted), what="the one-time build of counters_days")
        docs, total = await _page(restarted, Period.of(None, None, default_days=31, now=NOW))
        assert [d["_id"] for d in docs] == ["legacy-0", "legacy-1", "legacy-2"] and total == 3
    finally:
        await restarted.stop()


async def _built(svc) -> bool:
    return svc._rebuilding.done() and await svc.repo("counters").days.built()


async def test_a_page_of_open_work_is_sorted_on_the_summaries_and_loads_only_its_records(
        ledger_with_reads):
    ledger, log = ledger_with_reads
    repo = ledger.repo("counters")
    done = await _add(ledger, timedelta(hours=1), value=50)  # not open work (OPEN_BELOW 10)
    values = {await _add(ledger, timedelta(hours=2), value=v): v for v in (3, 8, 1, 5)}
    log.recording = True
    docs, total = await lists.open_page(repo, {}, [("value", -1), ("_id", 1)], 1, 2)
    log.recording = False
    assert total == 4 and done not in {d["_id"] for d in docs}
    assert [d["value"] for d in docs] == [5, 3], "second and third by value, highest first"
    assert sorted(values.values()) == [1, 3, 5, 8]
    assert not log.unbounded()


async def test_an_add_refused_as_a_duplicate_leaves_the_day_lists_as_they_were(
        ledger_with_reads):
    from shared.store import AlreadyExists
    ledger, _ = ledger_with_reads
    repo = ledger.repo("counters")
    first = Counter(_id=f"c-{uuid.uuid4().hex[:8]}", created_at=NOW - timedelta(hours=3))
    await repo.add(first)
    same = Counter(_id=first.id, created_at=first.created_at)  # e.g. a redelivered event
    later = Counter(_id=first.id, created_at=NOW - timedelta(days=1))  # another try, new time
    for again in (same, later):
        with pytest.raises(AlreadyExists):
            await repo.add(again)
    docs, total = await _page(ledger, Period.of(None, None, default_days=31, now=NOW))
    assert [d["_id"] for d in docs] == [first.id] and total == 1
    days = await repo.days.collection.find({"entries": {"$exists": True}}).to_list(None)
    entries = [(e["id"], e["at"]) for d in days for e in d["entries"]]
    assert entries == [(first.id, first.created_at)], "one entry, at the stored record's time"


async def test_a_busy_day_is_kept_in_small_pages_and_listed_whole(ledger_with_reads):
    """FerretDB rewrites a whole document on each update: a day's list must not grow."""
    from shared.periods import PAGE_SIZE
    ledger, log = ledger_with_reads
    repo = ledger.repo("counters")
    n = 2 * PAGE_SIZE + 7
    await asyncio.gather(*(repo.add(Counter(_id=f"busy-{i:04d}", created_at=NOW -
                                            timedelta(minutes=i))) for i in range(n)))
    pages = await repo.days.collection.find({"entries": {"$exists": True}}).to_list(None)
    assert max(len(p["entries"]) for p in pages) <= PAGE_SIZE
    log.recording = True
    docs, total = await _page(ledger, Period.of(None, None, default_days=31, now=NOW),
                              skip=PAGE_SIZE, limit=3)
    log.recording = False
    assert total == n, "every record of the busy day is listed"
    assert [d["_id"] for d in docs] == [f"busy-{i:04d}" for i in range(PAGE_SIZE,
                                                                         PAGE_SIZE + 3)]
    assert not log.unbounded()


async def test_records_built_into_a_day_that_already_has_pages_are_listed_once(
        ledger_with_reads):
    ledger, _ = ledger_with_reads
    repo = ledger.repo("counters")
    live = Counter(_id="live-1", created_at=NOW - timedelta(hours=1))
    await repo.add(live)  # added through the service while the build runs
    store = repo.collection
    await store.insert_many([{"_id": f"old-{i}", "value": 0, "version": 1, "history": [],
                              "applied_events": [], "created_at": NOW - timedelta(hours=2)}
                             for i in range(3)])
    await repo.days.collection.delete_one({"_id": "~built"})
    assert await repo.days.build(store) == 4, "the whole store, the live one included"
    docs, total = await _page(ledger, Period.of(None, None, default_days=31, now=NOW))
    assert sorted(d["_id"] for d in docs) == ["live-1", "old-0", "old-1", "old-2"]
    assert total == 4


async def test_a_list_filtered_by_a_facet_reads_only_its_page_of_records(ledger_with_reads):
    ledger, log = ledger_with_reads
    repo = ledger.repo("counters")
    for i in range(12):
        await repo.add(Counter(_id=f"k-{i:02d}", created_at=NOW - timedelta(hours=i),
                               kind="red" if i % 3 == 0 else "blue"))
    log.recording = True
    docs, total = await _page(ledger, Period.of(None, None, default_days=31, now=NOW),
                              {"kind": "red"}, skip=1, limit=2)
    log.recording = False
    assert [d["_id"] for d in docs] == ["k-03", "k-06"] and total == 4
    loaded = [r for r in log.reads if r.collection == "counters"]
    assert loaded and all(len(r.filter["_id"]["$in"]) <= 2 for r in loaded), \
        "only the page's records are read, not the period's"


async def test_a_facet_with_a_value_per_record_is_counted_apart_and_its_day_head_stays_small():
    """A facet with about as many values as records (the complaint an action request is for)
    counted in the day's head made the head grow with the day, rewritten whole with every
    add (capa's: 128 KB after 3,000 requests). Counted a document per value, the head keeps
    none of it, and a list filtered by it still reads only its page."""
    namespace = test_namespace(uuid.uuid4().hex[:6])
    log = reads.install(namespace)
    ledger = ledger_service(infra_settings(namespace, relay_interval_s=0.2),
                            many_valued=("kind",))
    await ledger.start()
    try:
        await eventually(lambda: _built(ledger), what="the start's one-time build")
        repo = ledger.repo("counters")
        for i in range(12):
            await repo.add(Counter(_id=f"m-{i:02d}", created_at=NOW - timedelta(hours=i),
                                   kind=f"complaint-{i % 4}"))
        with pytest.raises(AlreadyExists):  # a redelivery: counted once all the same
            await repo.add(Counter(_id="m-04", created_at=NOW - timedelta(hours=4),
                                   kind="complaint-0"))
        kept = await repo.days.collection.find({}).to_list(None)
        heads = [d for d in kept if not {"/", "#", "~"} & set(d["_id"])]
        assert heads and all("f" not in h and h["fa"] == ["kind"] for h in heads), \
            "the head must not count the facet's values itself"
        expected: dict[str, int] = {}
        for i in range(12):
            key = f"{day_of(NOW - timedelta(hours=i))}#kind=complaint-{i % 4}"
            expected[key] = expected.get(key, 0) + 1
        assert {d["_id"]: d["n"] for d in kept if "#" in d["_id"]} == expected, \
            "each value's count of a day, apart, the redelivery counted once"
        log.recording = True
        docs, total = await _page(ledger, Period.of(None, None, default_days=31, now=NOW),
                                  {"kind": "complaint-0"}, skip=1, limit=2)
        log.recording = False
        assert [d["_id"] for d in docs] == ["m-04", "m-08"] and total == 3
        assert not log.unbounded(), "reads that grow with history:\n" + "\n".join(
            f"{r.collection}.{r.command} {r.filter}" for r in log.unbounded())
    finally:
        await ledger.stop()


async def test_records_added_at_once_share_their_days_writes_and_are_all_counted(
        ledger_with_reads):
    """Group commit: 32 registrations at once queued on their day's page, one write each.
    The entries that wait while the day is written go out together, and none is lost."""
    ledger, log = ledger_with_reads
    repo = ledger.repo("counters")
    n = 32
    log.recording = True
    await asyncio.gather(*(repo.add(Counter(_id=f"together-{i:02d}", created_at=NOW -
                                            timedelta(seconds=i))) for i in range(n)))
    log.recording = False
    page_writes = [r for r in log.reads if r.collection == "counters_days"
                   and r.command == "update" and "/" in str(r.filter.get("_id"))]
    assert len(page_writes) < n // 4, f"{len(page_writes)} writes of the day's pages for {n}"
    docs, total = await _page(ledger, Period.of(None, None, default_days=31, now=NOW), limit=n)
    assert total == n, "the day's head counts every record"
    assert sorted(d["_id"] for d in docs) == [f"together-{i:02d}" for i in range(n)]
