"""Small lookup collections keyed by the value Quality is asked for, as `_id`.

On FerretDB's SQLite handler only an `_id` lookup is cheap; a query on any other field
reads the whole collection, so its cost grows with history. A request by register number
and a CAPA closing therefore read these by `_id`:

* `case_numbers`: `{_id: register_no, id: feedback_id}`, written once the case is stored;
* `capa_kinds`: `{_id: capa_id, kinds: [kind keys]}`, written once the kinds carry the CAPA.

Each is written after the aggregate(s) it points at. A miss (a record from before these
collections existed, or a crash between the two writes) falls back to the old query on the
aggregates (indexed on MongoDB, a scan on FerretDB) and writes the entry, so it happens
once per record. A reference that is not shaped like a register number and is neither a
case's id nor in the lookup names no case: it costs two `_id` reads, never a scan.
"""

import re

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.quality.domain import Case
from services.quality.recurrence import Kind
from shared.store import Repository
from shared.vocabulary import REGISTER_NO_PATTERN

CASE_NUMBERS = "case_numbers"
CAPA_KINDS = "capa_kinds"
REGISTER_NO = re.compile(rf"^{REGISTER_NO_PATTERN}$")


class CaseNumbers:
    """Register number -> feedback id (the case's `_id`)."""

    def __init__(self, db: AsyncDatabase):
        self.collection = db[CASE_NUMBERS]

    async def remember(self, register_no: str, feedback_id: str) -> None:
        try:
            await self.collection.insert_one({"_id": register_no, "id": feedback_id})
        except DuplicateKeyError:
            pass  # written before (a redelivered form, a concurrent fallback)

    async def case_id(self, cases: Repository[Case], ref: str) -> str | None:
        """The feedback id `ref` names (itself or its register number), or None."""
        if await cases.exists(ref):
            return ref
        entry = await self.collection.find_one({"_id": ref})
        if entry is not None:
            return str(entry["id"])
        if not REGISTER_NO.match(ref):
            return None  # no such case: not worth a query on the whole store
        # Not in the lookup: a case from before it existed, or a crash between the writes.
        doc = await cases.collection.find_one({"register_no": ref}, {"_id": 1})
        if doc is None:
            return None
        await self.remember(ref, doc["_id"])
        return str(doc["_id"])


class CapaKinds:
    """CAPA id -> the kinds of complaint it covers (P-5.3.4)."""

    def __init__(self, db: AsyncDatabase):
        self.collection = db[CAPA_KINDS]

    async def remember(self, capa_id: str, kinds: list[str]) -> None:
        # A union: a redelivered `capa.opened` may see more kinds on its cases than the first.
        union = {"$addToSet": {"kinds": {"$each": kinds}}}
        try:
            await self.collection.update_one({"_id": capa_id}, union, upsert=True)
        except DuplicateKeyError:  # FerretDB does not retry an upsert that lost a race
            await self.collection.update_one({"_id": capa_id}, union)

    async def kinds_of(self, repo: Repository[Kind], capa_id: str) -> list[str]:
        entry = await self.collection.find_one({"_id": capa_id})
        if entry is not None:
            return sorted(entry["kinds"])
        # Opened before the lookup existed, or a crash before it was written.
        linked = await repo.collection.find({"capa_ids": capa_id}, {"_id": 1}).to_list(None)
        kinds = sorted({d["_id"] for d in linked})
        await self.remember(capa_id, kinds)
        return kinds
