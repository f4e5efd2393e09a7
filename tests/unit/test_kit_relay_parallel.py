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
