"""The kit's write locks (`shared.store.WriteLocks`): one lock per document, shared by every
writer of the process, the outbox relay's one-time sweep of the stores included.

FerretDB v1's SQLite handler runs an update as read, then write of the whole document it read
(upstream FerretDB#3040): two updates of one document in flight at once lose one. A service
hands ONE `WriteLocks` to its repositories and to its relay (`Service.start`); a repository
that made locks of its own once let the relay (which then took the sent events out of the
document) write the copy it read over a save made meanwhile: a direct reply answered 200, and
the record still `registered`. The relay no longer writes documents, except for the events
saved before marks existed, once per database.
"""

import asyncio
import copy
from types import SimpleNamespace
from typing import Any

import pytest
from bson.codec_options import CodecOptions
from prometheus_client import CollectorRegistry

from shared.domain import Aggregate
from shared.outbox import OutboxRelay
from shared.store import OUTBOX, PENDING, Repository, WriteLocks


class Note(Aggregate):
    status: str = "registered"


class RacyCollection:
    """FerretDB v1's SQLite handler in miniature: an update reads the document, lets other
    tasks run (the round trip between its read and its write), then writes back the whole
    document it read, changed."""

    codec_options = CodecOptions(tz_aware=True)

    def __init__(self, name: str):
        self.name = name
        self.docs: dict[str, dict[str, Any]] = {}

    async def update_one(self, filter: dict[str, Any], update: dict[str, Any],
                         upsert: bool = False) -> SimpleNamespace:
        doc = copy.deepcopy(self.docs.get(filter["_id"]))
        await asyncio.sleep(0)
        if doc is None or any(doc.get(k) != v for k, v in filter.items()):
            return SimpleNamespace(matched_count=0)
        doc.update(update.get("$set", {}))
        for field, push in update.get("$push", {}).items():
            doc[field] = doc.get(field, []) + push["$each"]
        for field, gone in update.get("$pullAll", {}).items():
            doc[field] = [x for x in doc.get(field, []) if x not in gone]
        await asyncio.sleep(0)
        self.docs[doc["_id"]] = doc
        return SimpleNamespace(matched_count=1)

    def find(self, filter: dict[str, Any], projection: Any = None) -> Any:
        found = [copy.deepcopy(d) for d in self.docs.values()
                 if all(d.get(k) == v for k, v in filter.items())]

        async def each() -> Any:
            for doc in found:
                yield doc
        return each()


class Marks:
    def published(self, mark_ids: list[str]) -> None:
        pass

    async def settle(self, mark_ids: list[str]) -> None:
        pass


def test_a_repository_keeps_the_locks_it_is_given_while_none_is_held():
    locks = WriteLocks()
    assert len(locks) == 0  # nothing written yet: an empty WriteLocks is falsy
    repo = Repository(RacyCollection("feedback"), Note, locks=locks)
    assert repo.locks is locks


async def test_the_relay_and_a_repository_wait_for_each_other_on_one_document():
    locks = WriteLocks()
    repo = Repository(RacyCollection("feedback"), Note, locks=locks)
    order: list[str] = []

    async def relay_write() -> None:
        async with locks("feedback", "fb-1"):
            order.append("relay")

    async with repo.lock("fb-1"):
        other = asyncio.create_task(relay_write())
        await asyncio.sleep(0.01)
        order.append("save")
    await other
    assert order == ["save", "relay"]
    assert len(locks) == 0  # dropped once nobody holds or waits for it


class Broker:
    async def publish(self, event: dict[str, Any]) -> None:
        await asyncio.sleep(0)


@pytest.mark.parametrize("first", ["save", "sweep"])
async def test_a_save_and_the_sweep_of_the_stores_at_once_lose_neither(first: str):
    """A record saved before marks existed (its event flagged `outbox_pending`) is replied to
    while the one-time sweep of the stores publishes that event and empties its outbox:
    whichever starts first, the reply's state stays and the outbox ends empty."""
    locks = WriteLocks()
    coll = RacyCollection("feedback")
    registered = {"type": "feedback.registered", "id": "e-1"}
    coll.docs["fb-1"] = Note(_id="fb-1", version=1).to_document() | {
        "version": 1, OUTBOX: [registered], PENDING: True}
    repo = Repository(coll, Note, locks=locks)  # as Service.start: the same locks for both
    relay = OutboxRelay("intake", [coll], Broker(), 0.2, CollectorRegistry(),  # type: ignore
                        locks, Marks())  # type: ignore[arg-type]

    replied = Note.model_validate(coll.docs["fb-1"])
    replied.status = "replied"
    save, sweep = repo.save(replied), relay._sweep_stores()
    await asyncio.gather(*((save, sweep) if first == "save" else (sweep, save)))

    stored = coll.docs["fb-1"]
    assert (stored["status"], stored["version"]) == ("replied", 2), "the save was lost"
    assert (stored[OUTBOX], stored[PENDING]) == ([], False), "the sweep's write was lost"
