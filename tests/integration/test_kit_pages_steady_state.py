"""A page of a list of history costs its page, not its period's volume (`shared.lists`).

The default list of every service (the last 31 days, newest first, no filter) reads the
period's day heads and only the day pages its records fall in: the same commands and the
same documents read whether the period holds a few records a day or hundreds, on the real
FerretDB (tests/reads.py). Its items and total are those of sorting the whole period.
"""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared import lists
from shared.periods import PAGE_SIZE, Period
from tests import reads
from tests.conftest import infra_settings, test_namespace
from tests.integration import pages_at_size
from tests.integration.kit_fixtures import Counter, eventually, ledger_service

pytestmark = pytest.mark.infra
NOW = datetime.now(UTC).replace(microsecond=0)
NEWEST_FIRST = [("created_at", -1), ("_id", 1)]
OLDEST_FIRST = [("created_at", 1), ("_id", 1)]
NEWEST_FIRST_IDS_DOWN = [("created_at", -1), ("_id", -1)]  # as intake's register
LISTED = Period.of(None, None, default_days=31, now=NOW)  # the default list's period
KINDS = ("screw", "bolt", "nut")  # a facet: set when a record is added, never changed


@pytest.fixture
async def ledger():
    namespace = test_namespace(uuid.uuid4().hex[:6])
    log, replies = reads.install(namespace), pages_at_size.install(namespace)
    svc = ledger_service(infra_settings(namespace, relay_interval_s=0.2))
    await svc.start()
    await eventually(lambda: _built(svc), what="the start's one-time build")
    yield svc, log, replies
    await svc.stop()


async def _built(svc) -> bool:
    return svc._rebuilding.done() and await svc.repo("counters").days.built()


async def _load(svc, per_day: int, tag: str, period: Period,
                around_start: bool = True) -> list[dict[str, Any]]:
    """Closed records over `period`, as the service stores them."""
    repo, made = svc.repo("counters"), []

    def record(doc_id: str, at: datetime) -> dict[str, Any]:
        made.append({"_id": doc_id, "value": 1, "version": 1, "history": [],
                     "applied_events": [], "created_at": at, "kind": KINDS[len(made) % 3]})
        return made[-1]
    await pages_at_size.load_period(repo.collection, repo.days, period, per_day, tag, record,
                                    around_start)
    return made


async def _today(svc, n: int) -> list[str]:
    """Records added through the service now, newest last: the busy day of a list."""
    repo = svc.repo("counters")
    ids = []
    for i in range(n):
        c = Counter(_id=f"now-{i:04d}", created_at=_today_at(i, n),
                    kind=KINDS[i % 3])
        await repo.add(c)
        ids.append(c.id)
    return ids


def _today_at(i: int, n: int) -> datetime:
    """The time of today's `i`th of `n` records: spread between midnight and now, so that
    they are today's whatever the hour."""
    midnight = NOW.replace(hour=0, minute=0, second=0)
    return midnight + (NOW - midnight) * (i + 1) / (n + 1)


async def _page(svc, order, skip: int, limit: int, query=None):
    repo = svc.repo("counters")
    return await lists.history_page(repo.collection, repo.days, LISTED, query or {}, order,
                                    skip, limit)


def _expected(svc_docs: list[dict[str, Any]], order, query) -> list[str]:
    inside = [d for d in svc_docs if LISTED.holds(d["created_at"])
              and all(d.get(k) == v for k, v in query.items())]
    return [d["_id"] for d in lists.sort_rows(inside, order)]


async def test_the_default_page_reads_the_same_whatever_the_period_holds(ledger):
    svc, log, replies = ledger
    await _today(svc, PAGE_SIZE + 20)  # today spans two pages, written by the service
    first_day, month = pages_at_size.first_day_and_the_rest(LISTED, NOW)
    # The period's first day, cut by it, busy from the start: filtered by a facet it is
    # read whole, in one read of its first page and one of its others (the latter shared
    # with today's others when today is cut by the period too: it depends on the hour).
    await _load(svc, 300, "first", first_day)
    await _load(svc, 2, "few", month, around_start=False)  # a quiet month

    async def cost(query=None) -> tuple[list[tuple[str, str]], dict[str, int], list[str], int]:
        log.reads.clear()
        replies.counts.clear()
        log.recording = replies.recording = True
        docs, total = await _page(svc, NEWEST_FIRST, 0, 20, query)
        log.recording = replies.recording = False
        return ([(r.collection, r.command) for r in log.reads], dict(replies.counts),
                [d["_id"] for d in docs], total)

    commands, read, page, total = await cost()
    one_kind = await cost({"kind": "bolt"})
    await _load(svc, 300, "many", month, around_start=False)  # 150 times, every whole day
    commands_after, read_after, page_after, total_after = await cost()
    one_kind_after = await cost({"kind": "bolt"})

    assert total_after >= total + 298 * 29, "the busy month is counted"
    assert page_after == page, "the newest records are today's, whatever came before"
    assert commands_after == commands, "the same commands, busy month or quiet"
    assert read_after["day documents"] == read["day documents"], read_after
    assert read_after["records"] == read["records"] == 20
    # Today's newest page and the one page astride the period's start: never the month.
    assert read_after["day entries"] <= 3 * PAGE_SIZE, read_after
    assert not log.unbounded()
    # Filtered by a facet (e.g. a unit's action requests): counted by the heads too, but
    # the period's first day, covered in part, is read whole (at most a day, not a month).
    assert one_kind_after[0] == one_kind[0] and one_kind_after[2] == one_kind[2]
    assert one_kind_after[1]["day entries"] <= 3 * PAGE_SIZE + 302, one_kind_after[1]
    assert one_kind_after[3] >= one_kind[3] + 99 * 29


async def test_every_page_of_the_default_list_is_the_sorted_period_and_its_total(ledger):
    svc, _, _ = ledger
    today = await _today(svc, PAGE_SIZE + 5)
    docs = await _load(svc, 70, "hist", Period(NOW - timedelta(days=34), LISTED.end))
    everything = docs + [{"_id": i, "created_at": _today_at(n, len(today)),
                          "kind": KINDS[n % 3]} for n, i in enumerate(today)]
    for query in ({}, {"kind": "bolt"}):
        for order in (NEWEST_FIRST, OLDEST_FIRST, NEWEST_FIRST_IDS_DOWN):
            expected = _expected(everything, order, query)
            for skip, limit in ((0, 20), (17, 50), (PAGE_SIZE * 3 + 1, 100),
                                (len(expected) - 5, 20), (len(expected) + 10, 20)):
                page, total = await _page(svc, order, skip, limit, query)
                assert total == len(expected), (query, order, skip)
                assert [d["_id"] for d in page] == expected[skip:skip + limit], \
                    (query, order, skip)
