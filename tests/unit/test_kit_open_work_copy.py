"""The open work kept in memory (`OpenWork.matching`) never keeps a read that a write of
this process overlapped: such a read may predate the write, and kept, it would show a
board without that save until the next one."""

import asyncio
from types import SimpleNamespace
from typing import Any

from pydantic import BaseModel

from shared.store import OpenWork


class Row(BaseModel):
    id: str
    value: int


class SlowCollection:
    """A summaries collection whose reads wait for `gate` (the read is in flight)."""

    def __init__(self) -> None:
        self.full_name = "db.rows_open"
        self.database = SimpleNamespace(client=object())  # its own (inserts are batched)
        self.docs: dict[str, dict[str, Any]] = {}
        self.gate = asyncio.Event()
        self.gate.set()

    def find(self, query: Any = None, projection: Any = None, **kw: Any) -> "SlowCollection":
        self._snapshot = [dict(d) for d in self.docs.values()]
        return self

    async def to_list(self, length: Any) -> list[dict[str, Any]]:
        snapshot = self._snapshot
        await self.gate.wait()
        return snapshot

    async def insert_many(self, docs: list[dict[str, Any]], ordered: bool = True) -> None:
        for doc in docs:
            self.docs[doc["_id"]] = doc


async def alone() -> bool:
    return True


async def test_a_read_overlapped_by_a_write_is_not_kept():
    coll = SlowCollection()
    work = OpenWork(coll, Row, lambda r: {"value": r.value}, {}, alone=alone)  # type: ignore[arg-type]
    await work.record(Row(id="a", value=1), 1)
    coll.gate.clear()
    reading = asyncio.create_task(work.matching({}))  # reads the store as it is: a only
    await asyncio.sleep(0)
    await work.record(Row(id="b", value=2), 1)  # written while the read is in flight
    coll.gate.set()
    assert [r["_id"] for r in await reading] == ["a"]
    assert sorted(r["_id"] for r in await work.matching({})) == ["a", "b"], "read again"
    assert sorted(r["_id"] for r in await work.matching({"value": 2})) == ["b"]
