"""The outbox, the relay and the idempotent consumer on the real RabbitMQ and FerretDB."""

import uuid

import pytest

from shared.events import Actor
from shared.store import ConcurrencyConflict
from tests.conftest import infra_settings, test_namespace
from tests.integration.kit_fixtures import Counter, eventually, ledger_service, tally_service

ACTOR = Actor(sub="tester", roles=("quality",))


@pytest.fixture
async def pair():
    infra = infra_settings(test_namespace(uuid.uuid4().hex[:6]), retry_delay_ms=200,
                           max_attempts=3, relay_interval_s=0.2)
    ledger, tally = ledger_service(infra), tally_service(infra)
    await tally.start()   # its queue and binding exist before anything is published
    await ledger.start()
    yield ledger, tally
    for svc in (ledger, tally):
        if svc.started:
            await svc.stop()


async def _added_by_hand(ledger, by: int) -> Counter:
    """A counter added with one event, its relay stopped: the test publishes by hand."""
    await ledger.relay.stop()
    c = Counter(_id=str(uuid.uuid4()))
    c.bump(by, ACTOR)
    await ledger.repo("counters").add(c)
    return c


async def tally_total(tally, counter_id: str) -> int:
    doc = await tally.repo("tallies").get(counter_id)
    return doc.total if doc else 0


async def test_saved_event_reaches_the_consumer_through_the_outbox(pair):
    ledger, tally = pair
    counters = ledger.repo("counters")
    c = Counter(_id=str(uuid.uuid4()))
    c.bump(3, ACTOR)
    await counters.add(c)

    async def arrived() -> bool:
        return await tally_total(tally, c.id) == 3
    await eventually(arrived, what="the tally to apply the event")

    async def marked_sent() -> bool:
        return await _marks_of(ledger, c.id) == []
    await eventually(marked_sent, what="the relay to drop the save's mark")


async def test_relay_dying_after_publish_before_marking_sent_applies_once(pair):
    ledger, tally = pair
    counters = ledger.repo("counters")
    c = await _added_by_hand(ledger, 5)

    async def crash(*_args, **_kwargs):
        raise RuntimeError("relay process died here")

    ledger.relay.mark_sent = crash  # dies after the broker confirmed, before marking
    with pytest.raises(RuntimeError):
        await ledger.relay.flush()
    raw = await counters.collection.find_one({"_id": c.id})
    assert len(raw["outbox"]) == 1 and len(await _marks_of(ledger, c.id)) == 1, \
        "the event must still be pending after the crash"

    # A restarted relay publishes it again; the consumer must apply it once.
    del ledger.relay.mark_sent
    assert await ledger.relay.flush() == 1

    async def settled() -> bool:
        t = await tally.repo("tallies").get(c.id)
        return t is not None and len(t.applied_events) == 1
    await eventually(settled, what="the tally")
    await eventually(lambda: _after_quiet(tally, c.id), what="duplicates to be consumed")
    assert await tally_total(tally, c.id) == 5


async def _after_quiet(tally, counter_id: str) -> bool:
    """True once the tally queue is empty (the duplicate has been consumed)."""
    q = await tally.broker.declare_queue(tally.topology.queue)
    return q.declaration_result.message_count == 0 and await tally_total(tally, counter_id) > 0


async def test_stale_version_is_rejected_and_change_is_retried_not_lost(pair):
    ledger, _ = pair
    counters = ledger.repo("counters")
    c = Counter(_id=str(uuid.uuid4()))
    await counters.add(c)
    first = await counters.get(c.id)
    second = await counters.get(c.id)
    first.value = 10
    await counters.save(first)
    second.value = 20
    with pytest.raises(ConcurrencyConflict):
        await counters.save(second)  # read before the first save: stale

    # `change` reloads and re-applies on conflict: concurrent bumps all count.
    import asyncio

    async def bump() -> None:
        await counters.change(c.id, lambda agg: agg.bump(1, ACTOR))
    await asyncio.gather(*(bump() for _ in range(10)))
    final = await counters.get(c.id)
    assert final.value == 20
    assert final.version == 12


async def _marks_of(svc, doc_id: str) -> list[dict]:
    return await svc.database["outbox_due"].find({"doc_id": doc_id}).to_list(None)


async def test_a_save_that_lost_the_race_withdraws_its_mark_and_the_winners_events_go_out(pair):
    ledger, tally = pair
    counters = ledger.repo("counters")
    await ledger.relay.stop()  # publishing by hand: the marks stay until then
    c = Counter(_id=str(uuid.uuid4()))
    await counters.add(c)
    winner, loser = await counters.get(c.id), await counters.get(c.id)
    winner.bump(2, ACTOR)
    loser.bump(9, ACTOR)
    await counters.save(winner)
    with pytest.raises(ConcurrencyConflict):
        await counters.save(loser)
    assert [m["version"] for m in await _marks_of(ledger, c.id)] == [2], \
        "only the winner's save (version 2) may stay announced"

    assert await ledger.relay.flush() == 1
    assert await _marks_of(ledger, c.id) == []

    async def applied() -> bool:
        return await tally_total(tally, c.id) == 2
    await eventually(applied, what="the winner's event at the tally")


async def test_a_mark_whose_save_never_happened_is_dropped_after_its_grace_only(pair):
    ledger, _ = pair
    counters = ledger.repo("counters")
    await ledger.relay.stop()
    c = Counter(_id=str(uuid.uuid4()))
    await counters.add(c)
    marks = ledger.database["outbox_due"]
    from datetime import UTC, datetime, timedelta
    now = datetime.now(UTC)
    # A crash between the mark and the save: version 5 was announced, never written.
    await marks.insert_many([
        {"_id": "old", "collection": "counters", "doc_id": c.id, "version": 5,
         "at": now - timedelta(hours=1)},
        {"_id": "young", "collection": "counters", "doc_id": c.id, "version": 6, "at": now}])
    assert await ledger.relay.flush() == 0
    assert [m["_id"] for m in await _marks_of(ledger, c.id)] == ["young"], \
        "a save may still be on its way for the young mark; the old one is void"


async def test_events_flow_while_the_one_time_sweep_of_the_stores_is_still_reading(pair):
    """At 100,000 complaints that sweep takes minutes: it must not hold events back."""
    import asyncio
    ledger, tally = pair
    await ledger.stop()
    restarted = ledger_service(ledger.settings.infra)
    await restarted.start()  # a start with the store-swept marker gone: sweeps again
    try:
        await restarted.database["outbox_due"].delete_one({"_id": "~store-swept"})
        reading = asyncio.Event()

        async def slow_sweep() -> int:
            reading.set()
            await asyncio.sleep(3600)  # still reading the history
            return 0
        restarted.relay._sweep_stores = slow_sweep
        restarted.relay.store_sweep = asyncio.create_task(restarted.relay.sweep_stores())
        await asyncio.wait_for(reading.wait(), 10)
        c = Counter(_id=str(uuid.uuid4()))
        c.bump(6, ACTOR)
        await restarted.repo("counters").add(c)

        async def arrived() -> bool:
            return await tally_total(tally, c.id) == 6
        await eventually(arrived, what="the new event, with the sweep still reading")
    finally:
        await restarted.stop()


async def _stored(svc, doc_id: str) -> dict:
    return await svc.repo("counters").collection.find_one({"_id": doc_id})


async def _bumped_and_published(ledger, by: int) -> Counter:
    """A counter added with one event, once the relay has published it."""
    c = Counter(_id=str(uuid.uuid4()))
    c.bump(by, ACTOR)
    await ledger.repo("counters").add(c)
    await eventually(lambda: _no_marks(ledger, c.id), what="the first event published")
    return c


async def test_the_relay_writes_nothing_to_the_document_and_the_next_save_leaves_out_what_went_out(
        pair):
    """One write fewer per save with events: the relay drops the save's mark and leaves the
    document alone; the next save writes the outbox without the published event."""
    ledger, tally = pair
    counters = ledger.repo("counters")
    c = await _bumped_and_published(ledger, 1)
    after_publish = await _stored(ledger, c.id)
    assert after_publish["version"] == 1 and len(after_publish["outbox"]) == 1, \
        "the relay left the document as the save wrote it"

    await counters.change(c.id, lambda agg: agg.bump(2, ACTOR))
    raw = await _stored(ledger, c.id)
    assert [e["payload"]["by"] for e in raw["outbox"]] == [2], \
        "the published event left the outbox with the next save"
    await eventually(lambda: _total_is(tally, c.id, 3), what="both events applied once")


async def test_a_save_keeps_the_events_not_yet_published_and_both_go_out_once(pair):
    ledger, tally = pair
    counters = ledger.repo("counters")
    await ledger.relay.stop()  # nothing is published until the sweep below
    c = Counter(_id=str(uuid.uuid4()))
    c.bump(1, ACTOR)
    await counters.add(c)
    await counters.change(c.id, lambda agg: agg.bump(2, ACTOR))
    raw = await _stored(ledger, c.id)
    assert [e["payload"]["by"] for e in raw["outbox"]] == [1, 2], \
        "an event not published yet must stay in the outbox"

    assert await ledger.relay.flush() == 2
    assert await _marks_of(ledger, c.id) == []
    await eventually(lambda: _total_is(tally, c.id, 3), what="both events applied once")


async def test_after_a_restart_a_save_asks_the_marks_which_events_went_out(pair):
    """A process that did not publish them itself (a restart, another instance) does not
    know which of the outbox's events went out: the marks still there say."""
    ledger, tally = pair
    c = await _bumped_and_published(ledger, 1)
    await ledger.stop()
    restarted = ledger_service(ledger.settings.infra)
    await restarted.start()
    try:
        await restarted.relay.stop()  # the second event stays unpublished
        again = restarted.repo("counters")
        await again.change(c.id, lambda agg: agg.bump(2, ACTOR))
        raw = await _stored(restarted, c.id)
        assert [e["payload"]["by"] for e in raw["outbox"]] == [2]
        await again.change(c.id, lambda agg: agg.bump(4, ACTOR))
        raw = await _stored(restarted, c.id)
        assert [e["payload"]["by"] for e in raw["outbox"]] == [2, 4]

        stopped = ledger_service(ledger.settings.infra)  # the next start forgets it all
        await stopped.start()
        try:
            await eventually(lambda: _no_marks(stopped, c.id), what="the sweep to publish")
            await eventually(lambda: _total_is(tally, c.id, 7), what="every event once")
        finally:
            await stopped.stop()
    finally:
        await restarted.stop()


async def _no_marks(svc, doc_id: str) -> bool:
    return await _marks_of(svc, doc_id) == []


async def _total_is(tally, counter_id: str, total: int) -> bool:
    return await tally_total(tally, counter_id) == total


async def test_what_a_sweep_could_not_publish_is_tried_again_at_the_relays_interval(pair):
    """The fault suite's broker stop caught up in 64.7 s once: a sweep fell in the outage,
    and what it could not publish waited for the next sweep, a minute later."""
    ledger, tally = pair
    c = await _added_by_hand(ledger, 4)
    ledger.relay._due = {}  # as after a restart: only the marks say what is pending
    publisher = ledger.relay.publisher

    async def refused(event) -> None:
        raise ConnectionError("the broker is away")
    publisher.publish = refused
    try:
        assert await ledger.relay.flush() == 0
    finally:
        del publisher.publish
    assert await ledger.relay.publish_due() == 1, "not held back until the next sweep"
    await eventually(lambda: _total_is(tally, c.id, 4), what="the event applied")


async def test_a_sweep_that_fails_keeps_what_saves_told(pair):
    ledger, tally = pair
    c = await _added_by_hand(ledger, 2)

    async def store_away() -> list:
        raise ConnectionError("the database is away")
    ledger.relay.marks.all = store_away
    ledger.relay._next_sweep = 0.0  # the sweep's turn
    try:
        with pytest.raises(ConnectionError):
            await ledger.relay._round()
    finally:
        del ledger.relay.marks.all
    assert await ledger.relay.publish_due() == 1, "the told event must stay told"
    await eventually(lambda: _total_is(tally, c.id, 2), what="the event applied")
