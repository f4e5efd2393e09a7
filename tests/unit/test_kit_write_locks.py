"""The kit's per-document write locks (`shared.store.WriteLocks`): one document's writes wait
for each other, two documents' never do, and a task may hold one while taking another (the
striped locks they replace made reporting wait on itself for ever: issue 12)."""

import asyncio

from shared.store import WriteLocks


async def test_one_documents_writers_take_turns():
    locks, order = WriteLocks(), []

    async def write(n: int) -> None:
        async with locks("register", "fb-1"):
            order.append(("in", n))
            await asyncio.sleep(0.01)
            order.append(("out", n))

    await asyncio.gather(*(write(n) for n in range(3)))
    assert [kind for kind, _ in order] == ["in", "out"] * 3  # never two inside at once


async def test_holding_one_documents_lock_while_taking_anothers_never_waits_on_itself():
    locks = WriteLocks()

    async def nested() -> None:
        for i in range(2_000):  # with 256 stripes, some pair would have shared one
            async with locks("retention_records", f"complaint:{i}"):
                async with locks("retention_due", "complaint:2036"):
                    pass

    await asyncio.wait_for(nested(), timeout=10)


async def test_locks_are_dropped_once_nobody_holds_or_waits_for_them():
    locks = WriteLocks()
    async with locks("register", "a"):
        waiter = asyncio.create_task(_take(locks, "register", "a"))
        await asyncio.sleep(0)
        assert len(locks) == 1
    await waiter
    assert len(locks) == 0
    try:
        async with locks("register", "b"):
            raise RuntimeError("a failed write")
    except RuntimeError:
        pass
    assert len(locks) == 0


async def _take(locks: WriteLocks, collection: str, doc_id: str) -> None:
    async with locks(collection, doc_id):
        pass
