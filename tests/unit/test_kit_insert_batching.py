"""Group commit of inserts (`shared.batching`): the inserts that wait while one is in flight go
out as one command, and each caller still gets its own outcome, as from `insert_one`."""

import asyncio
from typing import Any

import pytest
from pymongo.errors import AutoReconnect, BulkWriteError, DuplicateKeyError

from shared.batching import insert


class Collection:
    """A collection that takes a few loop turns per command and refuses a taken `_id`."""

    def __init__(self, name: str, client: object) -> None:
        self.full_name = f"db.{name}"
        self.database = type("Db", (), {"client": client})()
        self.docs: dict[Any, dict[str, Any]] = {}
        self.commands: list[int] = []  # documents per command
        self.fail_next: Exception | None = None

    async def insert_many(self, docs: list[dict[str, Any]], ordered: bool = True) -> None:
        assert ordered is False, "one duplicate must not stop the others"
        self.commands.append(len(docs))
        for _ in range(3):
            await asyncio.sleep(0)
        if self.fail_next is not None:
            failure, self.fail_next = self.fail_next, None
            raise failure
        errors = []
        for n, doc in enumerate(docs):
            if doc["_id"] in self.docs:
                errors.append({"index": n, "code": 11000, "errmsg": f"E11000 {doc['_id']}"})
            else:
                self.docs[doc["_id"]] = doc
        if errors:
            raise BulkWriteError({"writeErrors": errors, "nInserted": len(docs) - len(errors)})


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
