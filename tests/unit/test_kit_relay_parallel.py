"""The outbox relay publishes several documents at once, each document's events in order.

One document after another, each costing a broker confirm and writes, notify's relay fell
behind its saves in the soak at 5 complaints/s while its process idled waiting on FerretDB:
the oldest unpublished event grew to 30 s. `RELAY_PARALLEL` documents now go out side by side.
"""

import asyncio
from typing import Any

from prometheus_client import CollectorRegistry

from shared.outbox import RELAY_PARALLEL, OutboxRelay
from shared.store import MARK, WriteLocks
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
        self.seen_published: list[str] = []

    def published(self, mark_ids: list[str]) -> None:
        self.seen_published += mark_ids

    async def settle(self, mark_ids: list[str]) -> None:
        self.settled += mark_ids


async def test_the_relay_publishes_documents_side_by_side_each_in_order():
    coll, broker, marks = RacyCollection("feedback"), SlowBroker(), Marks()
    relay = OutboxRelay("intake", [coll], broker, 0.2, CollectorRegistry(),  # type: ignore
                        WriteLocks(), marks)  # type: ignore[arg-type]
    documents = 3 * RELAY_PARALLEL
    for n in range(documents):
        events = [{"id": f"d{n}-e{i}", "type": "feedback.registered", MARK: f"mark-{n}"}
                  for i in range(3)]
        relay.notify("feedback", f"d{n}", events)

    assert await relay.publish_due() == 3 * documents
    assert broker.most_at_once == RELAY_PARALLEL, "documents were not published side by side"
    for n in range(documents):
        mine = [e for e in broker.order if e.startswith(f"d{n}-")]
        assert mine == [f"d{n}-e0", f"d{n}-e1", f"d{n}-e2"], "a document's events out of order"
    assert sorted(marks.settled) == sorted(f"mark-{n}" for n in range(documents))
    assert coll.docs == {}, "the relay writes no document: the next save empties the outbox"


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
        events = [{"id": f"d{n}-e{i}", "type": "feedback.registered", MARK: f"mark-{n}"}
                  for i in range(2)]
        relay.notify("feedback", f"d{n}", events)

    assert await asyncio.wait_for(relay.publish_due(), 5) == 2, "d1 went out beside it"
    assert marks.settled == ["mark-1"], "the unconfirmed event's mark stays"
    assert await asyncio.wait_for(relay.publish_due(), 5) == 2, "tried again, in order"
    assert broker.order == ["d1-e0", "d1-e1", "d0-e0", "d0-e1"]
    assert sorted(marks.settled) == ["mark-0", "mark-1"]


async def test_a_mark_is_dropped_only_once_every_event_of_its_save_is_out():
    """Two saves of one document told together: the broker takes the first save's event and
    refuses the second's second event. The first save's mark goes, the second's stays."""

    class RefusingBroker(SlowBroker):
        async def publish(self, event: dict[str, Any]) -> None:
            if event["id"] == "b2":
                raise ConnectionError("refused")
            await super().publish(event)

    coll, broker, marks = RacyCollection("feedback"), RefusingBroker(), Marks()
    relay = OutboxRelay("intake", [coll], broker, 0.2, CollectorRegistry(),  # type: ignore
                        WriteLocks(), marks)  # type: ignore[arg-type]
    relay.notify("feedback", "d", [{"id": "a1", MARK: "a"}])
    relay.notify("feedback", "d", [{"id": "b1", MARK: "b"}, {"id": "b2", MARK: "b"}])
    assert await relay.publish_due() == 2
    assert marks.settled == ["a"] and marks.seen_published == ["a"]
