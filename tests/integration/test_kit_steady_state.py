"""Cost that does not grow with history: the kit's reads in steady state, on the real servers.

FerretDB's SQLite handler reads a whole collection for any filter but an `_id` lookup or an
`_id: {$in: [...]}` list (and only with the project's patch, deploy/ferretdb). So once a
service has started, a save, the relay publishing it and a consumer applying it must read
by `_id` only; what timers and boards need comes from the small open-work collections the
repository keeps.
"""

import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from shared.events import Actor
from tests import reads
from tests.conftest import infra_settings, test_namespace
from tests.integration.kit_fixtures import (
    OPEN_BELOW,
    Counter,
    eventually,
    ledger_service,
    tally_service,
)

ACTOR = Actor(sub="tester", roles=("quality",))


def uses_id_index(explained: dict) -> bool:
    """FerretDB names the SQLite plan; MongoDB its own stages. Either way: the `_id` index."""
    plan = explained.get("queryPlanner", {})
    ferret = " ".join(plan.get("Plan", []))
    if ferret:
        return "USING INDEX" in ferret and "__id_" in ferret
    winning = str(plan.get("winningPlan", {}))
    return any(mark in winning for mark in ("IDHACK", "'_id_'", "EXPRESS"))


@pytest.mark.parametrize("query", [{"_id": "c42"}, {"_id": "c42", "version": 3},
                                   {"version": 3, "_id": "c42"},
                                   {"_id": {"$in": ["c41", "c42", "missing"]}},
                                   {"version": 3, "_id": {"$in": ["c42", "c7"]}}],
                         ids=["id", "id_and_version", "version_then_id", "id_in",
                              "version_then_id_in"])
async def test_the_database_finds_by_id_through_the_index_even_beside_a_version(
        mongo_client_for_tests, query):
    db = mongo_client_for_tests[test_namespace("_explain")]
    await db.docs.insert_many([{"_id": f"c{i}", "version": 3} for i in range(200)])
    explained = await db.command("explain", {"find": "docs", "filter": query})
    assert uses_id_index(explained), f"{query} is not looked up by the _id index: {explained}"
    await mongo_client_for_tests.drop_database(db.name)


async def test_a_list_of_ids_finds_exactly_what_the_rest_of_the_filter_allows(
        mongo_client_for_tests):
    """The patch narrows `_id: {$in}` in SQLite; the handler must still apply the rest."""
    from bson import ObjectId
    db = mongo_client_for_tests[test_namespace("_in")]
    oids = [ObjectId() for _ in range(4)]
    ids = [f"c{i}" for i in range(50)] + ["<a&b>", 'q"uote', "é😀", ""] + oids
    await db.docs.insert_many([{"_id": x, "status": ("open", "closed")[n % 2]}
                               for n, x in enumerate(ids)] + [{"_id": 7, "status": "open"}])
    wanted = ["c1", "c2", "c3", "nope", "<a&b>", 'q"uote', "é😀", "", oids[0], oids[1], ObjectId()]

    async def found(query) -> set:
        return {d["_id"] async for d in db.docs.find(query)}
    existing = set(wanted) & set(ids)  # not "nope" nor the last ObjectId
    closed = existing & {x for n, x in enumerate(ids) if n % 2}
    assert await found({"_id": {"$in": wanted}}) == existing
    assert await found({"_id": {"$in": wanted}, "status": "closed"}) == closed
    assert await found({"status": "closed", "_id": {"$in": wanted}}) == closed
    assert await found({"_id": {"$in": ["c1", "c2", 7]}}) == {"c1", "c2", 7}
    assert await found({"_id": {"$in": ["c1", "c2"], "$ne": "c2"}}) == {"c1"}
    assert await found({"_id": {"$in": []}}) == set()
    assert await db.docs.count_documents({"_id": {"$in": wanted}, "status": "open"}) == len(
        existing - closed)
    await mongo_client_for_tests.drop_database(db.name)


@pytest.fixture
async def mongo_client_for_tests(mongo_url):
    from pymongo import AsyncMongoClient
    client = AsyncMongoClient(mongo_url)
    yield client
    await client.close()


@pytest.fixture
async def pair_with_reads():
    namespace = test_namespace(uuid.uuid4().hex[:6])
    log = reads.install(namespace)
    infra = infra_settings(namespace, retry_delay_ms=200, max_attempts=3, relay_interval_s=0.2)
    ledger, tally = ledger_service(infra), tally_service(infra)
    await tally.start()
    await ledger.start()
    yield ledger, tally, log
    for svc in (ledger, tally):
        if svc.started:
            await svc.stop()


async def test_saves_relay_and_consumer_read_by_id_only_once_started(pair_with_reads):
    ledger, tally, log = pair_with_reads
    counters = ledger.repo("counters")
    # History: closed counters the steady state must never read.
    for _ in range(20):
        c = Counter(_id=str(uuid.uuid4()))
        c.value = OPEN_BELOW
        await counters.add(c)
    await eventually(lambda: _quiet(ledger), what="the start-up sweep and rebuild to end")

    log.recording = True
    ids = [str(uuid.uuid4()) for _ in range(5)]
    for counter_id in ids:
        c = Counter(_id=counter_id)
        c.bump(2, ACTOR)
        await counters.add(c)
        await counters.change(counter_id, lambda agg: agg.bump(1, ACTOR))

    async def applied() -> bool:
        tallies = [await tally.repo("tallies").get(i) for i in ids]
        return all(t is not None and t.total == 3 for t in tallies)
    await eventually(applied, what="the tally to apply every event")
    log.recording = False

    assert log.reads, "the listener saw no command: it is not installed"
    assert not log.unbounded(), "reads that grow with history:\n" + "\n".join(
        f"{r.collection}.{r.command} {r.filter}" for r in log.unbounded())


async def _quiet(svc) -> bool:
    return svc.settled()


async def _none(found) -> bool:
    left = await found
    return not left


async def test_a_published_save_drops_its_mark_by_id_so_a_backlog_never_slows_the_relay(
        pair_with_reads):
    """`outbox_due` is small in steady state but holds thousands of marks under a backlog:
    a mark dropped by a filter made FerretDB read every mark for each published save (a third
    of its CPU in the soak), so the backlog fed itself. Each save's own mark goes by `_id`."""
    ledger, _, log = pair_with_reads
    counters = ledger.repo("counters")
    await eventually(lambda: _quiet(ledger), what="the start-up sweeps to end")
    marks = ledger.database["outbox_due"]
    log.recording = True
    for _ in range(5):
        c = Counter(_id=str(uuid.uuid4()))
        c.bump(1, ACTOR)
        await counters.add(c)
        await counters.change(c.id, lambda agg: agg.bump(1, ACTOR))

    async def all_published() -> list:
        return [m for m in await marks.find({}).to_list(None) if "doc_id" in m]
    await eventually(lambda: _none(all_published()),
                     what="every save's events published, their marks gone")
    log.recording = False
    dropped = [r for r in log.reads if r.collection == "outbox_due" and r.command == "delete"]
    assert dropped, "no mark was dropped: the relay did not publish"
    assert all(r.is_id_lookup() for r in dropped), "marks dropped by a filter:\n" + "\n".join(
        str(r.filter) for r in dropped if not r.is_id_lookup())


async def test_open_work_follows_each_save_and_drops_what_is_done(pair_with_reads):
    ledger, _, _ = pair_with_reads
    counters = ledger.repo("counters")
    c = Counter(_id=str(uuid.uuid4()))
    c.bump(3, ACTOR)
    await counters.add(c)
    assert await _open(ledger) == {c.id: 3}
    await counters.change(c.id, lambda agg: agg.bump(4, ACTOR))
    assert await _open(ledger) == {c.id: 7}
    await counters.change(c.id, lambda agg: agg.bump(OPEN_BELOW, ACTOR))  # done
    assert await _open(ledger) == {}


async def test_a_late_summary_write_never_puts_done_work_back_on_the_board(pair_with_reads):
    """Another process saved version 2 and writes its summary late, after a newer save
    (version 3, done) dropped the summary: the late write must not bring it back."""
    ledger, _, _ = pair_with_reads
    counters = ledger.repo("counters")
    c = Counter(_id=str(uuid.uuid4()))
    c.bump(1, ACTOR)
    await counters.add(c)
    await counters.change(c.id, lambda agg: agg.bump(1, ACTOR))
    late = await counters.get(c.id)
    await counters.change(c.id, lambda agg: agg.bump(OPEN_BELOW, ACTOR))  # done
    assert await _open(ledger) == {}
    await counters.open_work.record(late, late.version)
    assert await _open(ledger) == {}


class _ScanSeenBefore:
    """The store as a start's scan saw it a moment ago; `_id` reads see it as it is now."""

    def __init__(self, store, docs):
        self.store, self.docs = store, docs

    def find(self, *args, **kwargs):
        async def scan():
            for doc in self.docs:
                yield doc
        return scan()

    async def find_one(self, *args, **kwargs):
        return await self.store.find_one(*args, **kwargs)


async def test_a_start_rebuild_that_read_a_record_before_it_was_done_drops_it(
        pair_with_reads):
    ledger, _, _ = pair_with_reads
    counters = ledger.repo("counters")
    await eventually(lambda: _quiet(ledger), what="the start-up rebuild to end")
    c = Counter(_id=str(uuid.uuid4()))
    await counters.add(c)
    scanned = await counters.collection.find_one({"_id": c.id})  # open, version 1
    await counters.change(c.id, lambda agg: agg.bump(OPEN_BELOW, ACTOR))  # done meanwhile
    await counters.open_work.rebuild(_ScanSeenBefore(counters.collection, [scanned]))
    assert await _open(ledger) == {}


async def test_open_work_lost_in_a_crash_is_put_right_at_the_next_start(pair_with_reads):
    ledger, _, _ = pair_with_reads
    counters = ledger.repo("counters")
    open_one, done_one = Counter(_id="open-" + uuid.uuid4().hex), Counter(_id="done-" +
                                                                        uuid.uuid4().hex)
    open_one.bump(1, ACTOR)
    await counters.add(open_one)
    await counters.add(done_one)
    await counters.change(done_one.id, lambda agg: agg.bump(OPEN_BELOW, ACTOR))
    await eventually(lambda: _quiet(ledger), what="the start-up rebuild to end")
    # A crash between the store's write and the summary's: one missing, one left behind.
    opened = ledger.database["counters_open"]
    await opened.delete_one({"_id": open_one.id})
    await opened.insert_one({"_id": done_one.id, "value": 0, "version": 1})
    counters.open_work_unsure = True  # what a save cut between its two writes leaves
    await ledger.stop()
    restarted = ledger_service(ledger.settings.infra)
    await restarted.start()
    try:
        await eventually(lambda: _quiet(restarted), what="the rebuild after the restart")
        assert await _open(restarted) == {open_one.id: 1}
    finally:
        await restarted.stop()


async def test_after_a_clean_stop_the_next_start_reads_no_history_for_open_work(
        pair_with_reads):
    """Reconciling open work reads the whole store (a scan on FerretDB): a start after a
    clean stop skips it; a start after a crash (no note) does it."""
    ledger, _, log = pair_with_reads
    counters = ledger.repo("counters")
    for _ in range(5):
        await counters.add(Counter(_id=str(uuid.uuid4())))
    await eventually(lambda: _quiet(ledger), what="the start-up rebuild to end")
    await ledger.stop()  # clean: every save's summary was written
    for crashed_before in (False, True):
        log.reads.clear()
        log.recording = True
        restarted = ledger_service(ledger.settings.infra)
        await restarted.start()
        try:
            await eventually(lambda svc=restarted: _quiet(svc), what="the start's work")
            log.recording = False
            scans = [r for r in log.unbounded() if r.collection == "counters"]
            assert bool(scans) == crashed_before, scans
            assert len(await restarted.repo("counters").open_work.all()) >= 5
        finally:
            if not crashed_before:  # the next start follows a save cut short, as a crash
                restarted.repo("counters").open_work_unsure = True
            await restarted.stop()


async def test_a_clean_stop_leaves_no_note_while_another_instance_is_registered(
        pair_with_reads):
    """Several replicas: an instance that died without stopping (its summaries unknown) or
    one still running keeps the last clean stop from vouching for the summaries; the next
    start that reconciles forgets the dead one."""
    from datetime import UTC, datetime, timedelta

    from shared.lifecycle import CLEAN_STOP
    ledger, _, _ = pair_with_reads
    await eventually(lambda: _quiet(ledger), what="the start-up rebuild to end")
    lifecycle = ledger.database["lifecycle"]
    dead = {"_id": "running/dead-replica", "at": datetime.now(UTC) - timedelta(hours=1)}
    await lifecycle.insert_one(dead)
    await ledger.stop()
    restarted = ledger_service(ledger.settings.infra)
    await restarted.start()
    try:
        assert not restarted._clean_start, "a replica died: the stop could not vouch"
        await eventually(lambda: _quiet(restarted), what="the reconciliation")
        assert await restarted.database["lifecycle"].find_one({"_id": dead["_id"]}) is None, \
            "reconciled: the dead replica is forgotten"
    finally:
        await restarted.stop()
    again = ledger_service(ledger.settings.infra)
    await again.start()
    try:
        assert again._clean_start, "the last one out stopped clean, nobody else registered"
        assert await again.database["lifecycle"].find_one({"_id": CLEAN_STOP}) is None, \
            "the start takes the note away"
    finally:
        await again.stop()


async def _open(svc) -> dict[str, int]:
    await asyncio.sleep(0)
    return {d["_id"]: d["value"] for d in await svc.repo("counters").open_work.all()}


async def test_the_relays_sweep_reads_the_marks_of_unpublished_events_not_the_history(
        pair_with_reads):
    ledger, tally, log = pair_with_reads
    counters = ledger.repo("counters")
    for _ in range(20):  # history, published long ago
        c = Counter(_id=str(uuid.uuid4()))
        c.bump(1, ACTOR)
        await counters.add(c)
    await eventually(lambda: _quiet(ledger), what="the start-up sweep to end")
    await eventually(lambda: _no_marks(ledger), what="the relay to publish the history")
    await ledger.relay.stop()  # a crash: saved, never handed to a relay
    left = Counter(_id=str(uuid.uuid4()))
    left.bump(4, ACTOR)
    await counters.add(left)
    assert not await _no_marks(ledger), "a save with events must leave a mark"

    log.recording = True
    assert await ledger.relay.flush() == 1
    log.recording = False
    assert log.reads, "the listener saw no command: it is not installed"
    assert not log.unbounded(), "the sweep read history:\n" + "\n".join(
        f"{r.collection}.{r.command} {r.filter}" for r in log.unbounded())
    assert await _no_marks(ledger), "a published document's marks must be dropped"

    async def applied() -> bool:
        t = await tally.repo("tallies").get(left.id)
        return t is not None and t.total == 4
    await eventually(applied, what="the swept event to reach the tally")


async def _no_marks(svc) -> bool:
    return await svc.database["outbox_due"].count_documents({"doc_id": {"$exists": True}}) == 0


async def test_a_saved_event_is_published_without_reading_its_document_back(pair_with_reads):
    """The save hands the relay the events it wrote: the relay's only writes are taking them
    out and dropping the mark. A change given the aggregate its caller just read does not
    read it again. `/metrics` counts each command by collection."""
    ledger, tally, log = pair_with_reads
    counters = ledger.repo("counters")
    await eventually(lambda: _quiet(ledger), what="the start-up sweep and rebuild to end")
    before = _commands(ledger, "counters", "find")

    log.recording = True
    c = Counter(_id=str(uuid.uuid4()))
    c.bump(2, ACTOR)
    await counters.add(c)
    loaded = await counters.get(c.id)  # e.g. read to check who may change it
    await counters.change(c.id, lambda agg: agg.bump(1, ACTOR), loaded=loaded)

    async def applied() -> bool:
        t = await tally.repo("tallies").get(c.id)
        return t is not None and t.total == 3
    await eventually(applied, what="the tally to apply both events")
    await eventually(lambda: _no_marks(ledger), what="the relay to take the events out")
    log.recording = False

    finds = [r for r in log.reads if r.database == ledger.database.name
             and r.collection == "counters" and r.command == "find"]
    assert len(finds) == 1, f"one read: the change uses it, the relay reads none: {finds}"
    assert _commands(ledger, "counters", "find") - before == 1
    assert _commands(ledger, "counters", "insert") >= 1
    assert _commands(ledger, "outbox_due", "insert") >= 2  # a mark per save with events


def _commands(svc, collection: str, command: str) -> float:
    return svc.registry.get_sample_value("qms_db_commands_total", {
        "service": svc.name, "collection": collection, "command": command}) or 0.0


async def test_a_board_reads_all_its_open_work_in_one_round_trip(pair_with_reads):
    """More open records than the driver's first batch (101): still one reply, no getMore."""
    ledger, _, _ = pair_with_reads
    counters = ledger.repo("counters")
    await eventually(lambda: _quiet(ledger), what="the start-up sweep and rebuild to end")
    await asyncio.gather(*(counters.add(Counter(_id=f"open-{i}")) for i in range(130)))
    before = _commands(ledger, "counters_open", "getMore")
    finds = _commands(ledger, "counters_open", "find")
    assert len(await counters.open_work.all()) >= 130
    assert _commands(ledger, "counters_open", "find") - finds == 1
    assert _commands(ledger, "counters_open", "getMore") == before


async def test_open_work_read_from_memory_follows_each_save_while_the_instance_is_alone(
        pair_with_reads):
    """Boards and inboxes (`OpenWork.matching`) keep the summaries in memory while no other
    instance of the service runs: the next read follows every save of this process at
    once, without reading the store again; a write the process did not make (another
    replica's) is read from the store as soon as another instance is alive."""
    ledger, _, log = pair_with_reads
    counters = ledger.repo("counters")
    await eventually(lambda: _quiet(ledger), what="the start-up rebuild to end")
    open_work = counters.open_work

    async def board(query=None) -> dict[str, int]:
        return {r["_id"]: r["value"] for r in await open_work.matching(query or {})}

    first, second = Counter(_id="a-" + uuid.uuid4().hex), Counter(_id="b-" + uuid.uuid4().hex)
    await counters.add(first)
    assert await board() == {first.id: 0}
    log.reads.clear()
    log.recording = True
    await counters.add(second)
    await counters.change(first.id, lambda agg: agg.bump(3, ACTOR))
    assert await board() == {first.id: 3, second.id: 0}  # one read of the store, then kept
    assert await board({"value": {"$in": [3, 4]}}) == {first.id: 3}
    await counters.change(second.id, lambda agg: agg.bump(OPEN_BELOW, ACTOR))  # done
    assert await board() == {first.id: 3}
    log.recording = False
    reads = [r for r in log.reads if r.collection == "counters_open" and r.command == "find"]
    assert len(reads) == 2, "read again only after a save, never for an unchanged board"

    # Another instance comes alive: what it writes must show, so the store is read.
    lifecycle = ledger.lifecycle
    await lifecycle.collection.insert_one({"_id": "running/other", "at": datetime.now(UTC)})
    lifecycle._alone_until = None  # noqa: SLF001 - as ALONE_TTL_S later
    await open_work.collection.update_one({"_id": first.id}, {"$set": {"value": 7}})
    assert await board() == {first.id: 7}
    await lifecycle.collection.delete_one({"_id": "running/other"})
