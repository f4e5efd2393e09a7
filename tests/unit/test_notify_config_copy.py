"""Notify reads its configuration (the active webhook subscriptions, the directory) at most
every few seconds, not per event; a change through its own API is seen by the very next
event."""

import asyncio
from types import SimpleNamespace

from services.notify.context import ConfigCopy


class Collection:
    """What `find(...).to_list()` answers, counting the reads; `gate` holds a read open."""

    def __init__(self, docs: list[dict]):
        self.docs, self.reads, self.gate = docs, 0, None

    def find(self, query: dict):
        outer = self

        class Cursor:
            def sort(self, key, direction):
                assert (key, direction) == ("_id", 1)
                return self

            async def to_list(self, _):
                outer.reads += 1
                snapshot = sorted((d for d in outer.docs
                                   if all(d.get(k) == v for k, v in query.items())),
                                  key=lambda d: d["_id"])
                if outer.gate is not None:
                    await outer.gate.wait()
                return snapshot
        return Cursor()


async def test_events_in_a_row_read_the_subscriptions_once():
    coll = Collection([{"_id": "erp", "active": True}])
    repo = SimpleNamespace(collection=coll)
    cache = ConfigCopy({"active": True}, ttl_s=60)
    for _ in range(10):
        assert [d["_id"] for d in await cache.all(repo)] == ["erp"]
    assert coll.reads == 1


async def test_a_subscription_made_here_is_seen_by_the_next_event():
    coll = Collection([{"_id": "erp", "active": True}])
    repo = SimpleNamespace(collection=coll)
    cache = ConfigCopy({"active": True}, ttl_s=60)
    await cache.all(repo)
    coll.docs.append({"_id": "mes", "active": True})
    cache.forget()
    assert [d["_id"] for d in await cache.all(repo)] == ["erp", "mes"]


async def test_a_read_begun_before_a_change_is_not_kept():
    coll = Collection([{"_id": "erp", "active": True}])
    repo = SimpleNamespace(collection=coll)
    cache = ConfigCopy({"active": True}, ttl_s=60)
    coll.gate = asyncio.Event()
    slow = asyncio.create_task(cache.all(repo))  # reads the old list, then waits
    await asyncio.sleep(0)
    coll.docs.append({"_id": "mes", "active": True})
    cache.forget()  # the API saved a subscription meanwhile
    coll.gate.set()
    assert [d["_id"] for d in await slow] == ["erp"]
    assert [d["_id"] for d in await cache.all(repo)] == ["erp", "mes"]
