"""What a namespace has not handled yet, looked at from outside while the soak runs.

Two places an event waits before its consumer has acted on it:
- the services' outboxes: a save writes a mark in its database's `outbox_due` (with the time,
  before the save) and the relay deletes it once the save's events are published
  (`shared.store.OutboxMarks`). The oldest mark's age is the age of the oldest event not
  yet on the bus; reading the marks is a read bounded by unpublished events;
- the broker: messages ready or delivered-not-acked in the namespace's queues (the retry
  queues included, the dead-letter queues counted apart). RabbitMQ does not say how old the
  head of a quorum queue is, so the wait is estimated as ready / the rate its consumers ack.

The soak adds a third, measured rather than estimated: how long each person waited for
an event's effect to show (`soak.Waits`).
"""

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from pymongo import AsyncMongoClient

from benchkit import procs


@dataclass
class Outbox:
    marks: int               # saves whose events are not published yet, all services
    oldest_s: float | None   # age of the oldest of them
    service: str | None      # where it waits


@dataclass
class Broker:
    ready: int
    unacked: int
    dead: int                # in the dead-letter queues
    wait_s: float | None     # the longest ready / ack rate of a consumed queue; None: messages
                             # ready and nobody acking (stalled)
    seen: bool = True        # False: the management API did not answer (figures unknown)


async def outbox(client: AsyncMongoClient, namespace: str, services: tuple[str, ...]) -> Outbox:
    now = datetime.now(UTC)
    found = Outbox(0, None, None)
    for service in services:
        marks = await client[f"{namespace}_{service}"]["outbox_due"].find(
            {}, {"at": 1, "doc_id": 1}).to_list(None)
        marks = [m for m in marks if "doc_id" in m]  # not the store-sweep note
        found.marks += len(marks)
        if marks:
            age = (now - min(m["at"] for m in marks)).total_seconds()
            if found.oldest_s is None or age > found.oldest_s:
                found.oldest_s, found.service = round(age, 1), service
    return found


async def broker(namespace: str) -> Broker:
    try:
        stats = await asyncio.to_thread(procs.queue_stats, namespace)
    except httpx.HTTPError:  # busy or restarting: this row says so, the soak goes on
        return Broker(0, 0, 0, 0.0, seen=False)
    found = Broker(0, 0, 0, 0.0)
    for name, q in stats.items():
        if name.endswith(".dlq"):
            found.dead += int(q["ready"] + q["unacked"])
            continue
        found.ready += int(q["ready"])
        found.unacked += int(q["unacked"])
        # A retry queue has no consumer: its messages come back after their delay
        if q["ready"] and found.wait_s is not None and not name.endswith(".retry"):
            found.wait_s = None if not q["ack_rate"] else \
                max(found.wait_s, round(q["ready"] / q["ack_rate"], 1))
    return found
