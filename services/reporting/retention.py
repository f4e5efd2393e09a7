"""Records retention (P-5.4.2): how long each record is kept, what has passed its period, and
its disposal, an explicit action a person takes and the system records for ever.

Record types: `complaint` (a register row and its event history; it ends when the complaint
is closed or withdrawn), `complaint_report` (the issued Complaint Handling Report revisions of
one complaint; it ends at the complaint's end or its last issue, the later) and
`monthly_report` (one month's issued report; it ends with its month). Each is kept the years
the settings give for its type after its end (`retain_until`, inclusive) and may be disposed
of from the next day on.

Storage, in reporting's database, so that no read grows with history on FerretDB:
- `retention_records`: one document per record that has ended (`_id` = `<type>:<ref>`): its
  end, `retain_until`, the bucket that lists it, and `disposed` once disposed of;
- `retention_due`: one bucket per type and day of `retain_until` (`_id` =
  `complaint:2036-03-14`) naming the records still held that end then, and `~index` naming
  the buckets. A day, not a year: FerretDB rewrites a whole document on each entry added, and
  a year's bucket at 10,000 complaints a year was 1–2 MB rewritten per closure. (Buckets of a
  year, `complaint:2036`, written before, are still read.) The listing reads the index and
  the buckets up to the day asked, by `_id`; a disposal
  takes its record out of its bucket, so past buckets hold only what is due and not yet
  disposed of (the open work of disposal);
- `retention_disposals`: the disposal log (`_id` = the record id): who, when, why. Never
  removed;
- `retention_disposed`: the log's list, one document per year of disposal in the plant's
  time zone (`_id` = `"2026"`) naming each disposal with its moment, and `~years` naming the
  years. The list of all disposals reads `~years` and the years' documents, sorts, then loads
  one page from the log by `_id: {$in}`. A disposal enters it in the path that records it;
  those recorded before it existed are listed by a one-time build at start (`~built`).

Disposal keeps the bytes. The attachment store is shared by content hash with intake and
notify (a customer may send the issued PDF back as evidence: the same hash), so deleting a
file could silently remove another record. A disposed record is withdrawn from retrieval
(410 Gone with its disposal record); its PDFs' hashes are in the log, for the people who
destroy the copies by the Records Control Procedure. Verification still recognises a
disposed document: it was issued.

Writes: a bucket new to this process is named in the index first, then the entry is added
(a crash leaves the index naming a bucket that lists nothing), and the record document last
(the next write of the record finds the entry again), under the record's lock.
A disposal: the log, then its entry in the year's list, then the record is marked disposed of;
a crash in between leaves the record due, and disposing of it again finishes the rest.
"""

import asyncio
import calendar
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, tzinfo
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from shared.auth import Principal
from shared.errors import Conflict, DomainError, NotFound
from shared.events import utcnow
from shared.periods import load
from shared.store import WriteLocks

RECORDS = "retention_records"
BUCKETS = "retention_due"
DISPOSALS = "retention_disposals"
DISPOSED = "retention_disposed"
INDEX = "~index"
YEARS = "~years"
BUILT = "~built"


class RecordType(StrEnum):
    COMPLAINT = "complaint"
    COMPLAINT_REPORT = "complaint_report"
    MONTHLY_REPORT = "monthly_report"


LABELS: dict[RecordType, tuple[str, str]] = {
    RecordType.COMPLAINT: ("客诉记录（登记表行及其历史）", "complaint record (register row and "
                                                          "its history)"),
    RecordType.COMPLAINT_REPORT: ("客诉处理报告", "Complaint Handling Report"),
    RecordType.MONTHLY_REPORT: ("客诉处理月报", "monthly report")}


class Gone(DomainError):
    """The record was disposed of after its retention period."""

    status, code = 410, "gone"


# -- arithmetic (pure) -----------------------------------------------------------------
def add_years(day: date, years: int) -> date:
    """The same day `years` later; 29 February becomes 28 February in a common year."""
    year = day.year + years
    return day.replace(year=year, day=min(day.day, calendar.monthrange(year, day.month)[1]))


def month_end(month: str) -> date:
    """The last day of a month `YYYY-MM`."""
    year, number = int(month[:4]), int(month[5:7])
    return date(year, number, calendar.monthrange(year, number)[1])


def retain_until(ended: date, years: int) -> date:
    """The last day the record must be kept: `years` after the day it ended."""
    return add_years(ended, years)


def is_due(until: date, as_of: date) -> bool:
    """Whether the retention has ended on `as_of` (the day after `retain_until`)."""
    return as_of > until


def record_id(kind: RecordType, ref: str) -> str:
    return f"{kind.value}:{ref}"


def parse_record_id(text: str) -> tuple[RecordType, str]:
    kind, _, ref = text.partition(":")
    try:
        return RecordType(kind), ref
    except ValueError as exc:
        raise NotFound(f"{text!r} is not a record id (`<type>:<ref>`, type one of "
                       f"{', '.join(t.value for t in RecordType)}). / {text!r} 不是记录编号。"
                       ) from exc


def bucket_id(kind: RecordType, day: date) -> str:
    return f"{kind.value}:{day.isoformat()}"


def bucket_starts(bucket: str) -> date:
    """The first day a bucket's records may be due from: its day, or for a bucket of a whole
    year (written before buckets were of a day) the year's first day."""
    when = bucket.rpartition(":")[2]
    return date.fromisoformat(when) if len(when) > 4 else date(int(when), 1, 1)


def field_key(ref: str) -> str:
    """`ref` as a field name FerretDB accepts (no `.`, no leading `$`)."""
    return ref.replace("%", "%25").replace(".", "%2E").replace("$", "%24")


# -- models ------------------------------------------------------------------------------
class Held(BaseModel):
    """A record that has ended and is kept until `retain_until`."""

    id: str = Field(..., examples=["complaint:3f2a…"], description="`<type>:<ref>`")
    type: RecordType
    ref: str = Field(..., description="The feedback id, or the month of a monthly report")
    register_no: str | None = Field(None, examples=["CF-2026-000123"])
    ended_at: datetime = Field(..., description="Closure, withdrawal, last issue or the "
                                                "month's end")
    retain_until: date = Field(..., description="The last day it must be kept")

    @property
    def bucket(self) -> str:
        return bucket_id(self.type, self.retain_until)


class Disposer(BaseModel):
    sub: str
    name: str
    roles: list[str]


class Disposal(BaseModel):
    """The record of one disposal: kept for ever."""

    id: str
    type: RecordType
    ref: str
    register_no: str | None = None
    ended_at: datetime
    retain_until: date
    disposed_at: datetime
    by: Disposer
    reason: str
    files: list[str] = Field(default_factory=list, description="sha256 of the issued PDFs "
                             "of the record, kept in the store (see the module's note)")
    clock_offset_days: int = Field(0, description="The retention clock's offset then (0 on a "
                                   "real system)")


# -- the service ---------------------------------------------------------------------------
FilesOf = Callable[[Held], Awaitable[list[str]]]


class Retention:
    """Holding records as they end, listing what is due, disposing of it."""

    def __init__(self, db: AsyncDatabase, locks: WriteLocks, years: dict[str, int],
                 today: Callable[[], date], offset_days: int = 0, tz: tzinfo = UTC):
        self.records = db[RECORDS]
        self.buckets = db[BUCKETS]
        self.disposals = db[DISPOSALS]
        self.disposed = db[DISPOSED]
        self.locks = locks
        # One lock of their own for the buckets and their index: a bucket is written under its
        # record's lock, and were both on one stripe of `locks`, its holder would wait on it for
        # ever (issue 12); and two buckets written at once must not both rewrite the index
        # (FerretDB does not apply an update's read and write atomically). Closures are rare.
        self.bucket_lock = asyncio.Lock()
        # The same for the years' lists of disposals: taken only while no record lock is held.
        self.disposed_lock = asyncio.Lock()
        # Buckets this process knows the index names: a day's later entries skip the index.
        self._indexed: set[str] = set()
        self.tz = tz
        self.years = years
        self._today = today
        self.offset_days = offset_days

    def today(self) -> date:
        """The retention clock's day (the service's day, plus the offset on a test system)."""
        return date.fromordinal(self._today().toordinal() + self.offset_days)

    def held(self, kind: RecordType, ref: str, register_no: str | None, ended_at: datetime,
             ended_day: date) -> Held:
        return Held(id=record_id(kind, ref), type=kind, ref=ref, register_no=register_no,
                    ended_at=ended_at, retain_until=retain_until(ended_day, self.years[kind]))

    # -- holding --------------------------------------------------------------------
    async def hold(self, held: Held) -> None:
        """Keep `held` listed under its bucket; a changed end moves it. Idempotent; a record
        disposed of stays disposed of."""
        async with self.locks(RECORDS, held.id):
            before = await self.records.find_one({"_id": held.id})
            if before is not None and (before.get("disposed") or (
                    before.get("bucket") == held.bucket
                    and Held.model_validate(before | {"id": held.id}) == held)):
                return  # disposed of, or held as it is
            await self._list(held)
            if before is not None and before.get("bucket") != held.bucket:
                await self._unlist(before["bucket"], held.ref)
            await self.records.update_one({"_id": held.id}, {"$set": held.model_dump(
                mode="json", exclude={"id"}) | {"bucket": held.bucket}}, upsert=True)

    async def release(self, kind: RecordType, ref: str) -> None:
        """The record no longer ended (reopened): out of its bucket until it ends again."""
        rid = record_id(kind, ref)
        async with self.locks(RECORDS, rid):
            before = await self.records.find_one({"_id": rid})
            if before is None or before.get("disposed"):
                return
            await self._unlist(before["bucket"], ref)
            await self.records.delete_one({"_id": rid})  # an index entry, not the record

    async def _list(self, held: Held) -> None:
        entry = held.model_dump(mode="json")
        async with self.bucket_lock:
            named = held.bucket in self._indexed
            if not named:  # before the bucket: a crash leaves the index naming an empty one
                await self._index(held.bucket)
            written = await self.buckets.update_one(
                {"_id": held.bucket},
                {"$set": {f"entries.{field_key(held.ref)}": entry, "type": held.type.value,
                          "day": held.retain_until.isoformat()}}, upsert=True)
            if named and written.upserted_id is not None:  # emptied and dropped meanwhile
                await self._index(held.bucket)

    async def _index(self, bucket: str) -> None:
        await self.buckets.update_one({"_id": INDEX}, {"$addToSet": {"buckets": bucket}},
                                      upsert=True)
        self._indexed.add(bucket)

    async def _unlist(self, bucket: str, ref: str) -> None:
        async with self.bucket_lock:
            await self.buckets.update_one({"_id": bucket},
                                          {"$unset": {f"entries.{field_key(ref)}": ""}})
            emptied = await self.buckets.delete_one({"_id": bucket, "entries": {}})
            if emptied.deleted_count:  # no longer read: out of the index
                await self.buckets.update_one({"_id": INDEX}, {"$pull": {"buckets": bucket}})
                self._indexed.discard(bucket)

    # -- listing --------------------------------------------------------------------
    async def due(self, as_of: date, kinds: set[RecordType] | None = None) -> list[Held]:
        """Records whose retention has ended on `as_of` and that nobody has disposed of yet,
        oldest first: the index, then the buckets of the years up to `as_of`, by `_id`."""
        index = await self.buckets.find_one({"_id": INDEX})
        wanted = [b for b in (index or {}).get("buckets", [])
                  if bucket_starts(b) <= as_of
                  and (kinds is None or RecordType(b.rpartition(":")[0]) in kinds)]
        out: list[Held] = []
        for doc in await load(self.buckets, sorted(wanted)):  # by `_id: {$in}`, in chunks
            for entry in doc.get("entries", {}).values():
                held = Held.model_validate(entry)
                if is_due(held.retain_until, as_of):
                    out.append(held)
        return sorted(out, key=lambda h: (h.retain_until, h.id))

    # -- disposing -----------------------------------------------------------------------
    async def disposal(self, kind: RecordType, ref: str) -> Disposal | None:
        doc = await self.disposals.find_one({"_id": record_id(kind, ref)})
        return _disposal(doc) if doc else None

    async def refuse_if_disposed(self, ref: str, *kinds: RecordType) -> None:
        """410 Gone, with the disposal record, when one of these records was disposed of."""
        for kind in kinds:
            done = await self.disposal(kind, ref)
            if done is not None:
                who = done.by.name
                raise Gone(
                    f"{done.register_no or done.ref}: the {LABELS[kind][1]} was disposed of on "
                    f"{done.disposed_at.date()} by {who} after its retention period ended on "
                    f"{done.retain_until} ({done.reason}). / {done.register_no or done.ref}："
                    f"{LABELS[kind][0]}已于 {done.disposed_at.date()} 由 {who} 按保存期限处置"
                    f"（保存至 {done.retain_until}；理由：{done.reason}）。",
                    [{"loc": "path", "msg": "disposed", "disposal":
                      done.model_dump(mode="json")}])

    async def check(self, ids: list[str]) -> list[tuple[Held, Disposal | None]]:
        """Each record with its disposal if done already; refuses (nothing disposed) when one
        is unknown, has not ended, or is still within its retention period."""
        today = self.today()
        found: list[tuple[Held, Disposal | None]] = []
        for i, rid in enumerate(ids):
            kind, ref = parse_record_id(rid)
            doc = await self.records.find_one({"_id": rid})
            if doc is None:
                raise Conflict(
                    f"{rid} is not a record that has ended (not closed, withdrawn or issued, or "
                    f"unknown): its retention period has not begun. / {rid} 尚未结案或签发（或不"
                    "存在），保存期限尚未开始。",
                    [{"loc": f"body.records.{i}", "msg": "not ended"}])
            held = Held.model_validate(doc | {"id": rid})
            done = await self.disposal(kind, ref)
            if done is None and not is_due(held.retain_until, today):
                raise Conflict(
                    f"{held.register_no or ref} ({LABELS[kind][1]}) is kept until "
                    f"{held.retain_until}: it may be disposed of from the next day on. / "
                    f"{held.register_no or ref}（{LABELS[kind][0]}）须保存至 "
                    f"{held.retain_until}，之后方可处置。",
                    [{"loc": f"body.records.{i}", "msg": "retained",
                      "retain_until": held.retain_until.isoformat()}])
            found.append((held, done))
        return found

    async def dispose(self, ids: list[str], reason: str, who: Principal,
                      files_of: FilesOf) -> list[tuple[Disposal, bool]]:
        """Dispose of each record (all or none is refused): the log first, then the record is
        marked disposed and leaves its bucket. A repeat finishes what a crash left and answers
        the disposal already recorded (False: not this call's)."""
        out = []
        for held, done in await self.check(list(dict.fromkeys(ids))):
            created = done is None
            if done is None:
                done = Disposal(
                    id=held.id, type=held.type, ref=held.ref, register_no=held.register_no,
                    ended_at=held.ended_at, retain_until=held.retain_until,
                    disposed_at=utcnow(), reason=reason, files=await files_of(held),
                    by=Disposer(sub=who.sub, name=who.name or who.sub, roles=who.roles),
                    clock_offset_days=self.offset_days)
                try:
                    await self.disposals.insert_one({"_id": done.id} | done.model_dump(
                        mode="json", exclude={"id"}) | {"disposed_at": done.disposed_at})
                except DuplicateKeyError:  # disposed of at the same moment by someone else
                    created, done = False, await self.disposal(held.type, held.ref) or done
            await self._list_disposal(done)  # no record lock held: see `disposed_lock`
            async with self.locks(RECORDS, held.id):
                before = await self.records.find_one_and_update({"_id": held.id},
                                                                {"$set": {"disposed": True}})
                # The bucket it is listed in: a year's, for a record held before buckets of a day.
                await self._unlist((before or {}).get("bucket") or held.bucket, held.ref)
            out.append((done, created))
        return out

    # -- the list of all disposals ---------------------------------------------------------
    def year_of(self, at: datetime) -> str:
        """The year of a disposal in the plant's time zone (the log's naive moments are UTC)."""
        return str(_utc(at).astimezone(self.tz).year)

    async def _list_disposal(self, done: Disposal) -> None:
        """Name the disposal in its year's list; idempotent (a repeat sets the same entry).
        The years' index first: a year it names without the entry lists nothing."""
        await self._list_disposals(self.year_of(done.disposed_at),
                                   {done.id: done.disposed_at})

    async def _list_disposals(self, year: str, moments: dict[str, datetime]) -> None:
        entries = {f"entries.{field_key(rid)}": {"id": rid, "at": at}
                   for rid, at in moments.items()}
        async with self.disposed_lock:
            await self.disposed.update_one({"_id": YEARS}, {"$addToSet": {"years": year}},
                                           upsert=True)
            await self.disposed.update_one({"_id": year}, {"$set": entries}, upsert=True)

    async def disposal_years(self) -> list[int]:
        """The years with disposals, newest first."""
        index = await self.disposed.find_one({"_id": YEARS})
        return sorted((int(y) for y in (index or {}).get("years", [])), reverse=True)

    async def disposals_page(self, years: list[int], skip: int, limit: int
                             ) -> tuple[list[Disposal], int]:
        """One page of the disposals of `years`, newest first, and how many there are: the
        years' lists by `_id`, then the page's disposals from the log by `_id: {$in}`."""
        lists = await load(self.disposed, [str(y) for y in years])
        entries = sorted((e for doc in lists for e in doc.get("entries", {}).values()),
                         key=lambda e: (_utc(e["at"]), e["id"]), reverse=True)
        page = [e["id"] for e in entries[skip:skip + limit]]
        found = {d["_id"]: d for d in await load(self.disposals, page)}
        return [_disposal(found[rid]) for rid in page if rid in found], len(entries)

    async def list_disposals_once(self) -> int | None:
        """Once ever: list the disposals recorded before the years' lists existed (a read of
        the whole log, remembered by a marker). None when done before."""
        if await self.disposed.find_one({"_id": BUILT}) is not None:
            return None
        by_year: dict[str, dict[str, datetime]] = {}
        async for doc in self.disposals.find({}, projection={"disposed_at": 1}):
            at = doc["disposed_at"]
            by_year.setdefault(self.year_of(at), {})[doc["_id"]] = at
        for year, moments in by_year.items():
            await self._list_disposals(year, moments)
        await self.disposed.update_one({"_id": BUILT}, {"$set": {"at": utcnow()}}, upsert=True)
        return sum(map(len, by_year.values()))

    # -- the one-time build --------------------------------------------------------------
    async def built(self) -> bool:
        return await self.buckets.find_one({"_id": BUILT}) is not None

    async def mark_built(self) -> None:
        await self.buckets.update_one({"_id": BUILT}, {"$set": {"at": utcnow()}}, upsert=True)


def _disposal(doc: dict[str, Any]) -> Disposal:
    return Disposal.model_validate(doc | {"id": doc["_id"]})


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)
