"""Group commit (`shared.batching`): the inserts that wait while one is in flight go out as one
command, and each caller still gets its own outcome, as from `insert_one`; the changes to one
document that wait for its lock go out in the lock's next write (`Gathered`)."""

import asyncio
from typing import Any

import pytest
from pymongo.errors import AutoReconnect, BulkWriteError, DuplicateKeyError

from shared.batching import Gathered, delete_ids, insert


class Collection:
    """A collection that takes a few loop turns per command and refuses a taken `_id`."""

    def __init__(self, name: str, client: object) -> None:
        self.full_name = f"db.{name}"
        self.database = type("Db", (), {"client": client})()
        self.docs: dict[Any, dict[str, Any]] = {}
        self.commands: list[int] = []  # documents per command
        self.fail_next: Exception | None = None

    async def _command(self, size: int) -> None:
        """A command carrying `size` documents (or ids): a few loop turns, or the failure."""
        self.commands.append(size)
        for _ in range(3):
            await asyncio.sleep(0)
        if self.fail_next is not None:
            failure, self.fail_next = self.fail_next, None
            raise failure

    async def insert_many(self, docs: list[dict[str, Any]], ordered: bool = True) -> None:
        assert ordered is False, "one duplicate must not stop the others"
        await self._command(len(docs))
        errors = []
        for n, doc in enumerate(docs):
            if doc["_id"] in self.docs:
                errors.append({"index": n, "code": 11000, "errmsg": f"E11000 {doc['_id']}"})
            else:
                self.docs[doc["_id"]] = doc
        if errors:
            raise BulkWriteError({"writeErrors": errors, "nInserted": len(docs) - len(errors)})

    async def delete_many(self, query: dict[str, Any]) -> None:
        ids = query["_id"]["$in"]
        await self._command(len(ids))
        for i in ids:
            self.docs.pop(i, None)


async def test_inserts_waiting_together_go_out_in_one_command_each_with_its_outcome():
    coll = Collection("feedback", object())
    coll.docs["taken"] = {"_id": "taken"}
    outcomes = await asyncio.gather(
        *(insert(coll, {"_id": f"fb-{n}"}) for n in range(31)), insert(coll, {"_id": "taken"}),
        return_exceptions=True)
    assert coll.commands == [32], "the inserts that waited together went out as one command"
    assert all(o is None for o in outcomes[:31])
    assert isinstance(outcomes[31], DuplicateKeyError), "the duplicate's caller learns it"
    assert set(coll.docs) == {"taken"} | {f"fb-{n}" for n in range(31)}


async def test_one_insert_alone_goes_out_at_once():
    coll = Collection("marks", object())
    await insert(coll, {"_id": "m-1"})
    await insert(coll, {"_id": "m-2"})
    assert coll.commands == [1, 1]


async def test_a_failed_command_fails_each_of_its_callers_and_not_the_next():
    coll = Collection("lookup", object())
    coll.fail_next = AutoReconnect("connection lost")
    outcomes = await asyncio.gather(*(insert(coll, {"_id": n}) for n in range(3)),
                                    return_exceptions=True)
    assert all(isinstance(o, AutoReconnect) for o in outcomes), "each caller learns it"
    await insert(coll, {"_id": 1})  # the next command goes out as usual
    with pytest.raises(DuplicateKeyError):
        await insert(coll, {"_id": 1})


async def test_a_cancelled_caller_does_not_strand_the_others():
    coll = Collection("history", object())
    leader = asyncio.create_task(insert(coll, {"_id": "a"}))
    await asyncio.sleep(0)
    others = [asyncio.create_task(insert(coll, {"_id": x})) for x in "bc"]
    await asyncio.sleep(0)
    leader.cancel()
    await asyncio.gather(*others)
    assert {"b", "c"} <= set(coll.docs)


class Counter:
    """One document's counter, written a few loop turns after it is read (as over a network)."""

    def __init__(self) -> None:
        self.total = 0
        self.writes: list[list[int]] = []
        self.lock = asyncio.Lock()
        self.gathered: Gathered[int] = Gathered()
        self.failing: dict[int, Exception] = {}  # write number -> its failure

    async def add(self, n: int) -> None:
        await self.gathered.add("doc", n, self.lock, self._write)

    async def _write(self, changes: list[int]) -> None:
        self.writes.append(changes)
        for _ in range(3):
            await asyncio.sleep(0)
        if len(self.writes) in self.failing:
            raise self.failing[len(self.writes)]
        self.total += sum(changes)


async def test_changes_waiting_for_a_documents_lock_go_out_in_its_next_write():
    counter = Counter()
    await asyncio.gather(*(counter.add(n) for n in range(1, 33)))
    assert counter.total == sum(range(1, 33)), "every change written, once"
    assert counter.writes == [[1], list(range(2, 33))], \
        "the first goes at once, the 31 that waited for it in one write, in their order"
    await counter.add(100)
    assert counter.writes[-1] == [100], "alone, a change is written at once"


async def test_a_failed_write_fails_each_change_it_carried_and_not_the_next():
    counter = Counter()
    counter.failing[2] = AutoReconnect("connection lost")
    first = asyncio.create_task(counter.add(1))
    await asyncio.sleep(0)
    outcomes = await asyncio.gather(first, *(counter.add(n) for n in (2, 3)),
                                    return_exceptions=True)
    assert outcomes[0] is None and counter.writes[0] == [1]
    assert all(isinstance(o, AutoReconnect) for o in outcomes[1:]), "each caller learns it"
    await counter.add(4)
    assert counter.total == 5


async def test_a_cancelled_writer_leaves_the_changes_of_others_to_the_next_holder():
    counter = Counter()
    blocker = asyncio.create_task(counter.add(1))
    await asyncio.sleep(0)
    leader = asyncio.create_task(counter.add(10))
    others = [asyncio.create_task(counter.add(n)) for n in (20, 30)]
    while len(counter.writes) < 2:  # the leader writes what waited: 10, 20 and 30
        await asyncio.sleep(0)
    leader.cancel()
    await asyncio.wait_for(asyncio.gather(blocker, *others), timeout=5)
    assert counter.writes[1] == [10, 20, 30] and counter.writes[2] == [20, 30], \
        "the cancelled write's other changes went out with the lock's next holder"
    assert counter.total == 1 + 20 + 30


async def test_deletes_by_id_waiting_together_go_out_in_one_command():
    coll = Collection("outbox_due", object())
    coll.docs = {f"m-{n}": {"_id": f"m-{n}"} for n in range(10)}
    await delete_ids(coll, ["m-0"])  # alone: at once
    coll.fail_next = AutoReconnect("connection lost")
    failed = await asyncio.gather(delete_ids(coll, ["m-1"]), delete_ids(coll, ["m-2", "m-3"]),
                                  return_exceptions=True)
    assert all(isinstance(o, AutoReconnect) for o in failed), "each caller learns it"
    await asyncio.gather(*(delete_ids(coll, [f"m-{n}", f"m-{n + 1}"]) for n in range(1, 9, 2)))
    assert coll.commands == [1, 3, 8], "one command for the deletes that waited together"
    assert coll.docs == {f"m-{n}": {"_id": f"m-{n}"} for n in [9]}
