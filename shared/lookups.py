"""A lookup collection keyed by a value people quote (a register number, a CAPA number).

On FerretDB's SQLite handler only an `_id` lookup is cheap; a query on `register_no` reads
the whole store. So each record's number is also the `_id` of a small document naming the
record: `{_id: number, id: record id}`.

The number is claimed here BEFORE the record carrying it is written. Once the lookup has
been built for the records older than it (`build`, once, remembered by a marker document),
a miss therefore means that no record carries the number: a typo costs one `_id` read,
never a scan. A claim whose record was never written (a crash in between) names a record
that does not exist, which reads as "not found"; the number stays used, as a drawn number
did before.
"""

from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError

from shared.batching import insert
from shared.errors import DUPLICATE_KEY

BUILT = "~built"
BUILD_BATCH = 1000  # claims per insert when a lookup is built for older records


class Lookup:
    """`collection`: value of `field` -> the `_id` of the record that carries it."""

    def __init__(self, collection: AsyncCollection, field: str):
        self.collection = collection
        self.field = field

    async def claim(self, value: str, doc_id: Any) -> bool:
        """Name `doc_id` under `value`; False when another record holds the value."""
        for _ in range(2):  # the holder may be released between our insert and our read
            try:
                await insert(self.collection, {"_id": value, "id": doc_id})
                return True
            except DuplicateKeyError:
                held = await self.collection.find_one({"_id": value})
                if held is not None:
                    return bool(held["id"] == doc_id)  # ours already: a retry
        return False

    async def release(self, value: str, doc_id: Any) -> None:
        """Undo a claim whose record was refused."""
        await self.collection.delete_one({"_id": value, "id": doc_id})

    async def find(self, value: str) -> Any | None:
        """The id the value was claimed for, or None: one `_id` read. A claim whose record
        was refused or never written may name a record without this value (a crash between
        the claim and the insert, then a retry under another number): `Repository.id_of`
        checks the record too."""
        if value == BUILT:
            return None
        held = await self.collection.find_one({"_id": value})
        return held["id"] if held else None

    async def built(self) -> bool:
        return await self.collection.find_one({"_id": BUILT}) is not None

    async def build(self, store: AsyncCollection) -> int:
        """Name the records the store already holds (written before this lookup, or before
        claims came first). Reads the whole store, so only once: the marker says it is done."""
        if await self.built():
            return 0
        named, batch = 0, []
        async for doc in store.find({}, projection={self.field: 1}, batch_size=BUILD_BATCH):
            value = doc.get(self.field)
            if isinstance(value, str):
                batch.append({"_id": value, "id": doc["_id"]})
            if len(batch) >= BUILD_BATCH:
                named, batch = named + await self._claim_many(batch), []
        if batch:
            named += await self._claim_many(batch)
        await self.collection.update_one({"_id": BUILT}, {"$set": {"at": datetime.now(UTC)}},
                                         upsert=True)
        return named

    async def _claim_many(self, claims: list[dict[str, Any]]) -> int:
        """`claim` for many values in one command (a build at 100,000 records: 100
        commands, not 100,000): how many now name their record."""
        try:
            return len((await self.collection.insert_many(claims, ordered=False)).inserted_ids)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise
            named = int(exc.details.get("nInserted", 0))
            for error in errors:  # held already: ours (a build cut short) or another's
                claim = claims[error["index"]]
                held = await self.collection.find_one({"_id": claim["_id"]})
                named += bool(held is not None and held["id"] == claim["id"])
            return named
