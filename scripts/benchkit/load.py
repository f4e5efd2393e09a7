"""Load a stamped history of N complaints into a fresh namespace, before its services start.

Each service's database is written by its own task (FerretDB keeps one SQLite file per
database, so they proceed side by side), in `insert_many` batches; stamping runs in a thread
meanwhile. The templates' indexes are created after the documents (one build, not N updates).
Reporting's read models are folded from the stamped event history with its own code
(`domain.fold`, `ReadModels.replace`), as `scripts/bench_reporting.py` and a rebuild do.
"""

import asyncio
import importlib
import random
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import bson
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo import AsyncMongoClient
from pymongo.errors import BulkWriteError

from benchkit.stamp import HISTORY, Recorded, Template
from services.reporting import domain
from services.reporting.readmodels import ReadModels, parse_history_doc
from shared.service import Service
from shared.store import OutboxMarks, WriteLocks

DAY = 86400
CHUNK = 500  # clones stamped at a time
DECODE = CodecOptions(tz_aware=True, tzinfo=UTC)


@dataclass(frozen=True)
class Clone:
    template: Template
    g: int        # the clone's ordinal: its ids derive from it
    shift_s: int  # its dates move by this (negative: into the past)


def plan(recorded: Recorded, size: int, open_target: int, years: int = 10,
         seed: int = 20330101) -> list[Clone]:
    """`size` clones: `open_target` (at most a tenth) open, spread over the last hours; the
    rest closed, spread over the past `years` (a plant keeps its complaints ten years: a
    history of 100,000 is ten years of 10,000 a year). Shares by kind as in
    `templates.KINDS`."""
    rng = random.Random(seed)
    n_open = min(open_target, size // 10)
    counts: list[tuple[Template, int]] = []
    for want_open, total in ((True, n_open), (False, size - n_open)):
        group = [t for t in recorded.templates if t.kind.is_open is want_open]
        shares = [round(total * t.kind.share / sum(x.kind.share for x in group)) for t in group]
        shares[0] += total - sum(shares)
        counts += list(zip(group, shares, strict=True))
    order = [t for t, n in counts for _ in range(n)]
    rng.shuffle(order)
    return [Clone(t, g, -rng.randrange(0, 6 * 3600) if t.kind.is_open
                  else -rng.randrange(2 * DAY, years * 365 * DAY))
            for g, t in enumerate(order, start=1)]


def stamp(clones: list[Clone], service: str) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = defaultdict(list)
    for clone in clones:
        colls = clone.template.docs.get(service)
        if not colls:
            continue
        ids, oids = clone.template.ids(clone.g, clone.g, pooled=service != "quality"), {}
        for name, docs in colls.items():
            out[name] += [d.stamp(ids, oids, clone.shift_s) for d in docs]
    return out


async def insert(coll, docs: list[bytes], batch: int) -> int:  # noqa: ANN001
    """Insert raw documents; returns how many the store refused (duplicate keys)."""
    refused = 0
    for i in range(0, len(docs), batch):
        try:
            await coll.insert_many([RawBSONDocument(d) for d in docs[i:i + batch]],
                                   ordered=False)
        except BulkWriteError as exc:
            refused += len(exc.details.get("writeErrors", []))
    return refused


@dataclass
class Loaded:
    documents: dict[str, int]
    refused: dict[str, int]
    seconds: dict[str, float]
    index_seconds: dict[str, float]
    total_s: float


async def load_service(client: AsyncMongoClient, namespace: str, service: str,
                       recorded: Recorded, clones: list[Clone], batch: int,
                       with_history: bool, loaded: Loaded, fold: "Folder | None") -> None:
    started = time.perf_counter()
    db = client[f"{namespace}_{service}"]
    count = refused = 0
    for name, docs in recorded.shared.get(service, {}).items():
        if service == "reporting":
            continue  # its shared documents are derived (counters): folded below
        count += len(docs)
        refused += await insert(db[name], list(docs), batch)
    for i in range(0, len(clones), CHUNK):
        stamped = await asyncio.to_thread(stamp, clones[i:i + CHUNK], service)
        for name, docs in stamped.items():
            if fold is not None and name == HISTORY:
                await asyncio.to_thread(fold.add, docs)
                if not with_history:
                    continue
            count += len(docs)
            refused += await insert(db[name], docs, batch)
    if service == "intake" and clones:
        # The register's numbers continue after the loaded ones (1..N)
        await db["sequences"].update_one({"_id": recorded.sequence},
                                         {"$set": {"value": len(clones)}}, upsert=True)
    inserted = time.perf_counter()
    for name, specs in recorded.indexes.get(service, {}).items():
        for spec in specs:
            options = {k: v for k, v in spec.items() if k in ("name", "unique", "sparse")}
            await db[name].create_index(spec["key"], **options)
    # The stores are loaded as the services leave them, every event published: what the
    # relay's one-time sweep of a database (`OutboxRelay.sweep_stores`) would find nothing in.
    await db["outbox_due"].update_one({"_id": OutboxMarks.STORE_SWEPT},
                                      {"$set": {"at": datetime.now(UTC)}}, upsert=True)
    composed = composition(service)
    for name in composed.histories:
        # What the service's first start would do once (`Service._reconcile_at_start`): index
        # the loaded history by day, so that lists of a period find it.
        await composed.day_index(name, db).build(db[name])
    loaded.index_seconds[service] = round(time.perf_counter() - inserted, 1)
    if fold is not None:
        count += await fold.write(db)
    loaded.documents[service] = count
    loaded.refused[service] = refused
    loaded.seconds[service] = round(time.perf_counter() - started, 1)


def composition(service: str) -> Service:
    """The service as its composition declares it (`Service.collection(history_by=...)`),
    not started: what its history lists are."""
    app = importlib.import_module(f"services.{service}.app")
    settings = importlib.import_module(f"services.{service}.settings").Settings()
    return app.build(settings)


class Folder:
    """Reporting's read models from the stamped events, chunk by chunk (a complaint's events
    all come in one chunk; its row depends on them alone)."""

    def __init__(self, tz: ZoneInfo):
        self.tz = tz
        self.rows: dict = {}
        self.names: dict = {}
        self.events = 0

    def add(self, docs: list[bytes]) -> None:
        events = [parse_history_doc(bson.decode(d, DECODE)) for d in docs]
        events.sort(key=lambda e: (e[0].occurred_at, e[0].id))
        self.rows.update(domain.fold(events, self.tz))
        self.names.update(domain.customer_names(events))
        self.events += len(events)

    async def write(self, db) -> int:  # noqa: ANN001
        """Write the read models as a rebuild does; returns how many documents."""
        models = ReadModels(db, WriteLocks(), self.tz)
        totals = domain.monthly_totals(self.rows.values())
        await models.replace(self.rows.values(), totals, self.names.values())
        return sum([await db[n].estimated_document_count()
                    for n in await db.list_collection_names()])


async def load(client: AsyncMongoClient, namespace: str, recorded: Recorded,
               clones: list[Clone], services: tuple[str, ...], *, tz: ZoneInfo,
               batch: int = 1000, with_history: bool = True) -> Loaded:
    started = time.perf_counter()
    loaded = Loaded({}, {}, {}, {}, 0.0)
    await asyncio.gather(*(
        load_service(client, namespace, s, recorded, clones, batch, with_history, loaded,
                     Folder(tz) if s == "reporting" else None)
        for s in services))
    loaded.total_s = round(time.perf_counter() - started, 1)
    return loaded
