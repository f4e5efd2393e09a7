"""The history, stamped: the templates' documents copied with fresh ids and shifted dates.

Every document the services wrote for a template complaint (found by the complaint's
feedback id, register number, customer id or product code in its bytes) is copied as BSON
bytes, changing only values of the same length in place:
- the complaint's ids: feedback id and every other UUID only it uses (event ids, ...),
  register number, customer id, product code; ObjectIds get fresh ones;
- every date: BSON datetimes and ISO date-time texts move by the clone's offset (whole
  seconds), so a closed complaint lands somewhere in the past years, consistently.
Documents no template owns (sequences, the notify directory, ...) are copied once.
No document is decoded and re-encoded: the shapes stay exactly what the services wrote.
"""

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bson import ObjectId
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo import AsyncMongoClient

from benchkit.templates import Kind, clone_customer, clone_product, customer_id, product_code

RAW = CodecOptions(document_class=RawBSONDocument)
UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
ISO = re.compile(rb"(?<![0-9])\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")
ISO_FORMAT = "%Y-%m-%dT%H:%M:%S"
HISTORY = "event_history"  # reporting keeps only this; its read models are folded from it


def _int32(raw: bytes, at: int) -> int:
    return int.from_bytes(raw[at:at + 4], "little", signed=True)


FIXED = {0x01: 8, 0x07: 12, 0x08: 1, 0x09: 8, 0x0A: 0, 0x10: 4, 0x11: 8, 0x12: 8,
         0x13: 16, 0x06: 0, 0xFF: 0, 0x7F: 0}


def _walk(raw: bytes, start: int, dates: list[int], oids: list[int]) -> None:
    """Offsets of datetime (0x09) and ObjectId (0x07) values in a BSON document."""
    end = start + _int32(raw, start) - 1
    at = start + 4
    while at < end:
        kind = raw[at]
        at = raw.index(b"\0", at + 1) + 1  # past the element's name
        if kind in (0x03, 0x04):
            _walk(raw, at, dates, oids)
            at += _int32(raw, at)
        elif kind in (0x02, 0x0D, 0x0E):
            at += 4 + _int32(raw, at)
        elif kind == 0x05:
            at += 5 + _int32(raw, at)
        elif kind in FIXED:
            if kind == 0x09:
                dates.append(at)
            elif kind == 0x07:
                oids.append(at)
            at += FIXED[kind]
        else:
            raise ValueError(f"BSON type {kind:#x} not handled by the stamper")


@dataclass
class DocTemplate:
    raw: bytes
    tokens: list[tuple[int, bytes]]  # (offset, the template's value there)
    dates: list[int]
    oids: list[tuple[int, bytes]]
    isos: list[tuple[int, datetime]]

    @classmethod
    def of(cls, raw: bytes, tokens: set[bytes]) -> "DocTemplate":
        dates: list[int] = []
        oid_at: list[int] = []
        _walk(raw, 0, dates, oid_at)
        found = []
        for token in tokens:
            at = raw.find(token)
            while at >= 0:
                found.append((at, token))
                at = raw.find(token, at + len(token))
        isos = [(m.start(), datetime.strptime(m.group().decode(), ISO_FORMAT))
                for m in ISO.finditer(raw)]
        return cls(raw, sorted(found), dates, [(a, raw[a:a + 12]) for a in oid_at], isos)

    def stamp(self, ids: dict[bytes, bytes], oids: dict[bytes, bytes], shift_s: int) -> bytes:
        buf = bytearray(self.raw)
        for at, token in self.tokens:
            buf[at:at + len(token)] = ids[token]
        for at, oid in self.oids:
            buf[at:at + 12] = oids.setdefault(oid, ObjectId().binary)
        if shift_s:
            ms = shift_s * 1000
            for at in self.dates:
                value = int.from_bytes(buf[at:at + 8], "little", signed=True) + ms
                buf[at:at + 8] = value.to_bytes(8, "little", signed=True)
            delta = timedelta(seconds=shift_s)
            for at, naive in self.isos:
                buf[at:at + 19] = (naive + delta).isoformat().encode()
        return bytes(buf)


@dataclass
class Template:
    t: int
    kind: Kind
    feedback_id: str
    register_no: str
    docs: dict[str, dict[str, list[DocTemplate]]] = field(default_factory=dict)
    uuids: set[bytes] = field(default_factory=set)

    @property
    def keys(self) -> tuple[bytes, ...]:
        return (self.feedback_id.encode(), self.register_no.encode(),
                customer_id(self.t).encode(), product_code(self.t).encode())

    def ids(self, g: int, number: int, pooled: bool) -> dict[bytes, bytes]:
        """Clone `g`'s values for this template's ids (each the same length); `pooled`:
        its customer and product from the pool (see `templates`)."""
        prefix = self.register_no.rsplit("-", 1)[0]
        ids = {u: u[:24] + b"%012x" % g for u in self.uuids}
        ids[self.register_no.encode()] = f"{prefix}-{number:06d}".encode()
        ids[customer_id(self.t).encode()] = clone_customer(g, pooled).encode()
        ids[product_code(self.t).encode()] = clone_product(g, pooled).encode()
        assert all(len(k) == len(v) for k, v in ids.items()), "a stamp must keep lengths"
        return ids


@dataclass
class Recorded:
    templates: list[Template]
    shared: dict[str, dict[str, list[bytes]]]  # service -> collection -> documents, once
    indexes: dict[str, dict[str, list[dict]]]  # service -> collection -> index_information
    sequence: str  # the register's sequence, e.g. CF-2026
    skipped: int = 0  # documents owned by several templates (copied once instead)

    def docs_per_complaint(self) -> dict[str, float]:
        per: dict[str, list[int]] = {}
        for t in self.templates:
            for service, colls in t.docs.items():
                per.setdefault(service, []).append(sum(len(d) for d in colls.values()))
        return {s: round(sum(n) / len(n), 1) for s, n in per.items()}


async def record(client: AsyncMongoClient, namespace: str, services: tuple[str, ...],
                 played: list[tuple[Kind, dict]]) -> Recorded:
    """Read every document the services wrote for the played templates."""
    templates = [Template(t, kind, fb["id"], fb["register_no"])
                 for t, (kind, fb) in enumerate(played, start=1)]
    raw_docs: dict[str, dict[str, list[bytes]]] = {}
    indexes: dict[str, dict[str, list[dict]]] = {}
    for service in services:
        db = client.get_database(f"{namespace}_{service}", codec_options=RAW)
        for name in sorted(await db.list_collection_names()):
            if service == "reporting" and name != HISTORY:
                continue
            if name.endswith("_days") or name == "outbox_due":
                continue  # derived: the day lists are built after the load (`load`)
            coll = db[name]
            raw_docs.setdefault(service, {})[name] = [
                bytes(d.raw) async for d in coll.find({})]
            info = await coll.index_information()
            indexes.setdefault(service, {})[name] = [
                {"name": k, **v} for k, v in info.items() if k != "_id_"]
    shared: dict[str, dict[str, list[bytes]]] = {}
    owned: list[tuple[Template, str, str, bytes]] = []
    skipped = 0
    for service, colls in raw_docs.items():
        for name, docs in colls.items():
            for raw in docs:
                owners = [t for t in templates if any(k in raw for k in t.keys)]
                if len(owners) == 1:
                    owned.append((owners[0], service, name, raw))
                else:
                    skipped += len(owners) > 1
                    shared.setdefault(service, {}).setdefault(name, []).append(raw)
    # UUIDs a shared document names (a directory entry, ...) are not the complaint's own.
    common = {m for colls in shared.values() for docs in colls.values() for raw in docs
              for m in UUID.findall(raw)}
    for t, _, _, raw in owned:
        t.uuids.update(u for u in UUID.findall(raw) if u not in common)
    for t, service, name, raw in owned:
        tokens = set(t.uuids) | set(t.keys[1:])
        t.docs.setdefault(service, {}).setdefault(name, []).append(DocTemplate.of(raw, tokens))
    sequence = templates[0].register_no.rsplit("-", 1)[0]
    return Recorded(templates, shared, indexes, sequence, skipped)
