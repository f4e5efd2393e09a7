"""Several instances of one service, on the real RabbitMQ and database (what Kubernetes runs:
at least two replicas of every consumer, more on a backlog).

- Competing consumers: instances of a service consume the same queue; RabbitMQ gives each
  event to one of them, so the work is shared, and every event is applied exactly once.
- What must run once is safe with several instances: every instance runs an outbox relay, and
  two relays publishing the same pending events only mean a second copy, which the consumer's
  inbox (the applied event id, written with the effect) turns into no change.

The instances are two `Service` objects with the same name and namespace in this process,
each with its own broker connection and its own per-document write locks, as two processes
would have. Every event here concerns its own document (one complaint each), as events of
different complaints do. FerretDB's SQLite handler does not make concurrent updates of ONE
document atomic (README, "Why a per-document write lock"): across instances the kit then
relies on the version check, which holds on MongoDB (compose, Kubernetes) but not there.
"""

import asyncio
import uuid
from collections import Counter as Count
from collections.abc import AsyncIterator

import pytest

from shared.events import Actor, Envelope
from shared.service import Service
from shared.settings import InfraSettings
from tests.conftest import infra_settings, test_namespace
from tests.integration.kit_fixtures import Counter, ledger_service, tally_service
from tests.support import eventually

ACTOR = Actor(sub="tester", roles=("sales",))
EVENTS = 40


@pytest.fixture
def infra() -> InfraSettings:
    return infra_settings(test_namespace(uuid.uuid4().hex[:6]), retry_delay_ms=200,
                          max_attempts=3, relay_interval_s=0.2)


@pytest.fixture
async def running() -> AsyncIterator[list[Service]]:
    services: list[Service] = []
    yield services
    for svc in services:
        if svc.started:
            await svc.stop()


async def start(running: list[Service], svc: Service) -> Service:
    await svc.start()
    running.append(svc)
    return svc


class Deliveries:
    """Which instance was handed which event (recorded before the handler applies it)."""

    def __init__(self) -> None:
        self.by_instance: dict[str, list[str]] = {}

    def hook(self, instance: str):
        self.by_instance[instance] = []

        async def before_apply(event: Envelope) -> None:
            self.by_instance[instance].append(event.id)
        return before_apply

    def all(self) -> list[str]:
        return [e for ids in self.by_instance.values() for e in ids]


async def register_complaints(ledger: Service, n: int = EVENTS) -> list[Counter]:
    """n documents with one event each, saved with their events in the outbox."""
    counters = []
    for i in range(n):
        c = Counter(_id=str(uuid.uuid4()))
        c.bump(i + 1, ACTOR)
        await ledger.repo("counters").add(c)
        counters.append(c)
    return counters


async def all_applied_once(tally: Service, counters: list[Counter]) -> bool:
    for c in counters:
        t = await tally.repo("tallies").get(c.id)
        if t is None or t.total != c.value or len(t.applied_events) != 1:
            return False
    return True


async def queue_drained(svc: Service) -> bool:
    queue = await svc.broker.declare_queue(svc.topology.queue)
    return queue.declaration_result.message_count == 0


async def test_two_instances_share_one_queue_and_apply_every_event_once(infra, running):
    deliveries = Deliveries()
    a = await start(running, tally_service(infra, before_apply=deliveries.hook("a")))
    b = await start(running, tally_service(infra, before_apply=deliveries.hook("b")))
    assert a.topology.queue_name == b.topology.queue_name  # one queue, two consumers
    ledger = await start(running, ledger_service(infra))

    counters = await register_complaints(ledger)
    await eventually(lambda: all_applied_once(a, counters), timeout=60,
                     what="every event applied by one of the two instances")

    assert deliveries.by_instance["a"] and deliveries.by_instance["b"], \
        f"the work was not shared: {Count({k: len(v) for k, v in deliveries.by_instance.items()})}"
    delivered = Count(deliveries.all())
    assert len(delivered) == EVENTS and set(delivered.values()) == {1}, \
        "each event goes to exactly one instance"


async def test_an_instance_leaving_mid_stream_loses_nothing_and_doubles_nothing(infra, running):
    deliveries = Deliveries()
    a = await start(running, tally_service(infra, before_apply=deliveries.hook("a")))
    b = await start(running, tally_service(infra, before_apply=deliveries.hook("b")))
    ledger = await start(running, ledger_service(infra))

    counters = await register_complaints(ledger, 2 * EVENTS)

    async def a_has_worked() -> bool:
        return len(deliveries.by_instance["a"]) >= 3
    await eventually(a_has_worked, what="instance a to take some of the work")
    await a.stop()  # scaled down (or drained) while events are still coming in

    await eventually(lambda: all_applied_once(b, counters), timeout=60,
                     what="the remaining instance to finish the work")
    assert len(deliveries.by_instance["b"]) > 0
    assert await all_applied_once(b, counters)


async def test_a_second_relay_republishing_the_same_outbox_changes_nothing(infra, running):
    deliveries = Deliveries()
    tally = await start(running, tally_service(infra, before_apply=deliveries.hook("tally")))
    first = await start(running, ledger_service(infra))
    second = await start(running, ledger_service(infra))  # another instance of the producer
    for ledger in (first, second):
        await ledger.relay.stop()  # drive both relays by hand

    counters = await register_complaints(first)

    async def lost_marking(*_args, **_kwargs) -> None:
        """The first instance dies after the broker confirmed, before marking the events sent."""
    first.relay.mark_sent = lost_marking
    assert await first.relay.flush() == EVENTS
    # The second instance's sweep finds them all still pending: publishes them again, marks them.
    assert await second.relay.flush() == EVENTS

    async def every_copy_consumed() -> bool:
        return len(deliveries.all()) == 2 * EVENTS and await queue_drained(tally)
    await eventually(every_copy_consumed, timeout=60, what="both copies of every event consumed")
    assert set(Count(deliveries.all()).values()) == {2}
    assert await all_applied_once(tally, counters)
    assert await first.database["outbox_due"].count_documents({"doc_id": {"$exists": True}}) \
        == 0, "every save's mark dropped once its events went out"


async def test_two_relays_flushing_at_once_publish_everything_and_apply_it_once(infra, running):
    tally = await start(running, tally_service(infra))
    first = await start(running, ledger_service(infra))
    second = await start(running, ledger_service(infra))
    for ledger in (first, second):
        await ledger.relay.stop()

    counters = await register_complaints(first)
    sent = await asyncio.gather(first.relay.flush(), second.relay.flush())
    assert sum(sent) >= EVENTS  # at least once; an event both relays saw goes out twice

    await eventually(lambda: all_applied_once(tally, counters), timeout=60,
                     what="every event applied once")
    await eventually(lambda: queue_drained(tally), what="the duplicates to be consumed")
    assert await all_applied_once(tally, counters)
    pending = await first.database["outbox_due"].count_documents({"doc_id": {"$exists": True}})
    assert pending == 0
