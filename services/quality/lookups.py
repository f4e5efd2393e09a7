"""Small lookup collections keyed by the value Quality is asked for, as `_id`.

On FerretDB's SQLite handler only an `_id` lookup is cheap; a query on any other field
reads the whole collection, so its cost grows with history. A request by register number
and a CAPA closing therefore read these by `_id`:

* `case_numbers`: the kit's lookup on the cases (`shared.lookups`, declared in app.py),
  `{_id: register_no, id: feedback_id}`. The number is claimed there before the case is
  written (`complaint.escalated`), and the start names the cases older than the claims once,
  so a miss is an unknown number: one `_id` read, never a scan.
* `capa_kinds`: `{_id: capa_id, kinds: [kind keys]}`, written once the kinds carry the CAPA.
  A miss (a CAPA from before this collection existed, or a crash between the writes) falls
  back to the query on the kinds (indexed on MongoDB, a scan on FerretDB) and writes the
  entry, so it happens once per CAPA, on an event path, and reads the kinds of complaint:
  one per customer or product and defect code, as many as those, not as the complaints.
"""

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.quality.domain import Case
from services.quality.recurrence import Kind
from shared.store import Repository

CASE_NUMBERS = "case_numbers"
CASE_NUMBER_FIELD = "register_no"
CAPA_KINDS = "capa_kinds"


async def case_of(cases: Repository[Case], ref: str, *, to_change: bool = False) -> Case | None:
    """The case `ref` names (its feedback id or its register number), or None: `_id` reads.
    `to_change`: as a change starts from it (`Repository.for_change`: without a read when
    this process has it).

    Any `ref` may be a number: Quality takes the register numbers the forms bring."""
    return await (cases.for_change(ref) if to_change else cases.seen(ref)) or \
        await cases.by_number(ref)


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
