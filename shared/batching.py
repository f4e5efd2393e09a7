"""Group commit for inserts: the inserts into one collection that are waiting while another
is in flight go out together, as one `insert_many`.

On FerretDB every command costs its parsing, a SQLite transaction and a round trip, whatever
it carries, and a batch of documents is inserted in one transaction. A registration inserts
its record, its number's claim, its outbox mark and its open summary: at 32 registrations at
once, that was 128 commands where a few carry the same documents. Alone, an insert goes out
at once (a batch of one); under load, each command carries what arrived while the last one
was in flight, so nobody waits for a timer.

Each caller gets its own outcome: a duplicate key is raised to the caller whose document it
was (`DuplicateKeyError`, as `insert_one` would), the others are inserted (`ordered=False`).

Deletes by `_id` are gathered the same way (`delete_ids`: the relay drops the marks of the
saves it published, several documents at once under load).

The same for the updates of one document that take turns under its write lock (a day's list,
a month's counters): `Gathered` lets the lock's next holder write everything that waited.
"""

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from contextlib import AbstractAsyncContextManager
from typing import Any, Generic, TypeVar

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError, WriteError

from shared.errors import DUPLICATE_KEY

MAX_BATCH = 500  # documents (or lists of ids) per command: far below the limits; < 16 MB

T = TypeVar("T")


class _Batcher(Generic[T]):
    """Items for one collection, gathered while a command is in flight: `_send` writes a batch
    in one command and tells each caller its outcome."""

    def __init__(self) -> None:
        self._waiting: list[tuple[T, asyncio.Future[None]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def submit(self, collection: AsyncCollection, item: T) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, done))
        if self._sender is None or self._sender.done():
            # A task of its own, not the caller's: a caller cancelled must not strand the rest.
            self._sender = asyncio.create_task(self._send_waiting(collection))
        await done

    async def _send_waiting(self, collection: AsyncCollection) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
            try:
                await self._send(collection, batch)
            except asyncio.CancelledError:  # the loop is closing: nobody gets an answer
                for _, done in batch + self._waiting:
                    done.cancel()
                self._waiting = []
                raise

    async def _send(self, collection: AsyncCollection,
                    batch: list[tuple[T, asyncio.Future[None]]]) -> None:
        raise NotImplementedError


class InsertBatcher(_Batcher[dict[str, Any]]):
    """The inserts into one collection: one `insert_many`; a duplicate key is its caller's."""

    async def _send(self, collection: AsyncCollection,
                    batch: list[tuple[dict[str, Any], asyncio.Future[None]]]) -> None:
        failed: dict[int, Exception] = {}
        try:
            await collection.insert_many([doc for doc, _ in batch], ordered=False)
        except BulkWriteError as exc:
            for error in exc.details.get("writeErrors", []):
                failed[error["index"]] = _error_of(error)
        except Exception as exc:  # noqa: BLE001 - each caller learns it, as from insert_one
            failed = dict.fromkeys(range(len(batch)), exc)
        for n, (_, done) in enumerate(batch):
            _resolve(done, failed.get(n))


class DeleteBatcher(_Batcher[list[Any]]):
    """The deletes by `_id` from one collection: one `delete_many` with every id waiting."""

    async def _send(self, collection: AsyncCollection,
                    batch: list[tuple[list[Any], asyncio.Future[None]]]) -> None:
        try:
            await collection.delete_many({"_id": {"$in": [i for ids, _ in batch for i in ids]}})
        except Exception as exc:  # noqa: BLE001 - each caller learns it, as from delete_many
            _settle(batch, exc)
        else:
            _settle(batch, None)


def _error_of(error: dict[str, Any]) -> WriteError:
    kind = DuplicateKeyError if error.get("code") == DUPLICATE_KEY else WriteError
    return kind(error.get("errmsg", "write error"), error.get("code"), error)


# One per client, collection and kind. A batcher keeps no reference to either (the caller
# that starts a command hands its collection), so a client closed and gone leaves two small
# fields behind, and one made later at the same address simply reuses them.
_batchers: dict[tuple[int, str, type], _Batcher[Any]] = {}


def _batcher(collection: AsyncCollection, kind: type[_Batcher[Any]]) -> _Batcher[Any]:
    key = (id(collection.database.client), collection.full_name, kind)
    return _batchers.get(key) or _batchers.setdefault(key, kind())


async def insert(collection: AsyncCollection, doc: dict[str, Any]) -> None:
    """`collection.insert_one(doc)`, sent with the other inserts into the same collection
    that wait at the same moment."""
    await _batcher(collection, InsertBatcher).submit(collection, doc)


async def delete_ids(collection: AsyncCollection, ids: list[Any]) -> None:
    """`collection.delete_many({"_id": {"$in": ids}})`, sent with the other deletes by `_id`
    from the same collection that wait at the same moment."""
    if ids:
        await _batcher(collection, DeleteBatcher).submit(collection, ids)


class Gathered(Generic[T]):
    """Group commit for the changes to one document that wait for its write lock: the next
    holder of the lock writes every change waiting by then in one write, and each caller
    learns that write's outcome. Alone, a change is written at once; under load, a write
    carries what arrived while the last one was in flight (a busy document is written a few
    times a second, not once per change)."""

    def __init__(self) -> None:
        self._waiting: dict[Hashable, list[tuple[T, asyncio.Future[None]]]] = {}

    async def add(self, key: Hashable, change: T, lock: AbstractAsyncContextManager[Any],
                  write: Callable[[list[T]], Awaitable[None]]) -> None:
        """Have `change` written to document `key` by `write` (called under `lock`, with
        every change to `key` waiting at that moment, in their order of arrival)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append((change, done))
        async with lock:
            if not done.done():  # not written by the holder before us: write what waits
                batch = self._waiting.pop(key, [])
                try:
                    await write([c for c, _ in batch])
                except Exception as exc:
                    _settle(batch, exc)
                except BaseException:
                    # Cancelled: the write may not have happened. The changes of others go
                    # back in front, for the lock's next holder (writes must be idempotent).
                    left = [(c, w) for c, w in batch if w is not done and not w.done()]
                    self._waiting[key] = left + self._waiting.get(key, [])
                    raise
                else:
                    _settle(batch, None)
        await done


def _settle(batch: list[tuple[Any, asyncio.Future[None]]], error: Exception | None) -> None:
    for _, waiter in batch:
        _resolve(waiter, error)


def _resolve(waiter: asyncio.Future[None], error: Exception | None) -> None:
    """Tell one caller its change's outcome (unless it was cancelled meanwhile)."""
    if waiter.done():
        return
    if error is None:
        waiter.set_result(None)
    else:
        waiter.set_exception(error)
