"""The outbox relay publishes several documents at once, each document's events in order.

One document after another, each costing a broker confirm and two writes, notify's relay fell
behind its saves in the soak at 5 complaints/s while its process idled waiting on FerretDB:
the oldest unpublished event grew to 30 s. `RELAY_PARALLEL` documents now go out side by side.
"""

import asyncio
from typing import Any

from prometheus_client import CollectorRegistry

from shared.outbox import RELAY_PARALLEL, OutboxRelay
from shared.store import OUTBOX, PENDING, WriteLocks
from tests.unit.test_kit_write_locks import RacyCollection


class SlowBroker:
    """Confirms each publish after a few loop turns, and remembers what was in flight."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.most_at_once = 0
        self.order: list[str] = []

    async def publish(self, event: dict[str, Any]) -> None:
        self.in_flight += 1
        self.most_at_once = max(self.most_at_once, self.in_flight)
        for _ in range(5):
            await asyncio.sleep(0)
        self.order.append(event["id"])
        self.in_flight -= 1


class Marks:
    def __init__(self) -> None:
        self.settled: list[str] = []

    async def settle(self, collection: str, doc_id: Any, version: int,
                     mark_ids: list[str] | None = None) -> None:
        self.settled += mark_ids or []


async def test_the_relay_publishes_documents_side_by_side_each_in_order():
    coll, broker, marks = RacyCollection("feedback"), SlowBroker(), Marks()
    relay = OutboxRelay("intake", [coll], broker, 0.2, CollectorRegistry(),  # type: ignore
                        WriteLocks(), marks)  # type: ignore[arg-type]
    documents = 3 * RELAY_PARALLEL
    for n in range(documents):
        events = [{"id": f"d{n}-e{i}", "type": "feedback.registered"} for i in range(3)]
        coll.docs[f"d{n}"] = {"_id": f"d{n}", "version": 1, OUTBOX: events, PENDING: True}
        relay.notify("feedback", f"d{n}", 1, events, [f"mark-{n}"])

    assert await relay.publish_due() == 3 * documents
    assert broker.most_at_once == RELAY_PARALLEL, "documents were not published side by side"
    for n in range(documents):
        mine = [e for e in broker.order if e.startswith(f"d{n}-")]
        assert mine == [f"d{n}-e0", f"d{n}-e1", f"d{n}-e2"], "a document's events out of order"
        assert coll.docs[f"d{n}"][OUTBOX] == [] and coll.docs[f"d{n}"][PENDING] is False
    assert sorted(marks.settled) == sorted(f"mark-{n}" for n in range(documents))


class HangingBroker(SlowBroker):
    """Never confirms the first publish of `stuck` (a confirm lost around a reconnect)."""

    def __init__(self, stuck: str) -> None:
        super().__init__()
        self.stuck: str | None = stuck

    async def publish(self, event: dict[str, Any]) -> None:
        if event["id"] == self.stuck:
            self.stuck = None
            await asyncio.Event().wait()  # forever
        await super().publish(event)


async def test_a_publish_never_confirmed_is_tried_again_and_holds_up_nothing_else():
    coll, broker, marks = RacyCollection("feedback"), HangingBroker("d0-e0"), Marks()
    relay = OutboxRelay("intake", [coll], broker, 0.2, CollectorRegistry(),  # type: ignore
                        WriteLocks(), marks)  # type: ignore[arg-type]
    relay.publish_timeout_s = 0.05
    for n in range(2):
        events = [{"id": f"d{n}-e{i}", "type": "feedback.registered"} for i in range(2)]
        coll.docs[f"d{n}"] = {"_id": f"d{n}", "version": 1, OUTBOX: events, PENDING: True}
        relay.notify("feedback", f"d{n}", 1, events, [f"mark-{n}"])

    assert await asyncio.wait_for(relay.publish_due(), 5) == 2, "d1 went out beside it"
    assert coll.docs["d0"][PENDING] is True, "the unconfirmed event stays pending"
    assert await asyncio.wait_for(relay.publish_due(), 5) == 2, "tried again, in order"
    assert broker.order == ["d1-e0", "d1-e1", "d0-e0", "d0-e1"]
    assert coll.docs["d0"][OUTBOX] == [] and sorted(marks.settled) == ["mark-0", "mark-1"]
