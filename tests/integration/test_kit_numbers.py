"""Numbers people say on the phone (register and CAPA numbers) are given once, on FerretDB.

The sequence lives in its own document; the unique index on the number is what makes
a number given twice impossible, whatever the sequence says: after a restore from a
backup it may lag behind the register, and on FerretDB two processes may draw the
same value (its `$inc` is not atomic across processes).
"""

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import ClassVar

import pytest
from pymongo.asynchronous.collection import AsyncCollection

from shared.domain import Aggregate
from shared.store import AlreadyExists, Repository, WriteLocks, mongo_client
from tests.conftest import test_namespace


class Numbered(Aggregate):
    producer: ClassVar[str] = "numbers"
    number: str


def numbered(number: int, id: str | None = None) -> Numbered:
    return Numbered(id=id or str(uuid.uuid4()), number=f"N-{number:04d}")


@pytest.fixture
async def register(mongo_url) -> AsyncIterator[AsyncCollection]:
    client = mongo_client(mongo_url)
    db = client[f"{test_namespace('num')}_{uuid.uuid4().hex[:6]}"]
    await db["records"].create_index("number", unique=True)
    yield db["records"]
    await client.drop_database(db.name)
    await client.close()


async def numbers_in(register: AsyncCollection) -> list[str]:
    return sorted([d["number"] async for d in register.find({}, projection={"number": 1})])


async def test_a_sequence_behind_the_register_skips_the_numbers_already_given(register):
    repo = Repository(register, Numbered)
    await repo.add(numbered(1))   # written while the sequence was lost (restored backup)
    await repo.add(numbered(2))
    added = await repo.add_numbered("N", numbered)
    assert added.number == "N-0003"
    assert await numbers_in(register) == ["N-0001", "N-0002", "N-0003"]


async def test_the_same_record_twice_is_already_there_not_a_new_number(register):
    repo = Repository(register, Numbered)
    first = await repo.add_numbered("N", lambda n: numbered(n, id="the-one"))
    with pytest.raises(AlreadyExists):
        await repo.add_numbered("N", lambda n: numbered(n, id="the-one"))
    assert first.number == "N-0001"
    assert await numbers_in(register) == ["N-0001"]


async def test_two_processes_drawing_numbers_at_once_never_share_one(register):
    # Two repositories with their own write locks: what two service processes are.
    a = Repository(register, Numbered, locks=WriteLocks())
    b = Repository(register, Numbered, locks=WriteLocks())
    added = await asyncio.gather(*[repo.add_numbered("N", numbered)
                                   for _ in range(15) for repo in (a, b)])
    numbers = await numbers_in(register)
    assert len(numbers) == len(added) == 30
    assert len(set(numbers)) == 30 and sorted(r.number for r in added) == numbers


async def test_with_a_lookup_every_number_is_found_by_id_and_a_typo_reads_no_record(
        register, mongo_url):
    from shared.lookups import Lookup
    from tests import reads
    lookup = Lookup(register.database["numbers"], "number")
    repo = Repository(register, Numbered, lookup=lookup)
    await repo.add(numbered(1))  # written before the lookup existed
    assert await lookup.build(register) == 1
    assert await lookup.build(register) == 0, "built once, never again"
    added = await repo.add_numbered("N", numbered)  # N-0001 is claimed: the next is drawn
    assert added.number == "N-0002"
    log = reads.install(register.database.name)
    client = mongo_client(mongo_url)  # made after the listener: it reports to it
    seen = Lookup(client[register.database.name]["numbers"], "number")
    log.recording = True
    assert await seen.find("N-0002") == added.id
    assert await seen.find("N-9999") is None
    log.recording = False
    await client.close()
    assert log.reads and not log.unbounded(), "a number is found by _id, a typo too"


async def test_a_number_whose_record_was_refused_is_released(register):
    from shared.lookups import Lookup
    lookup = Lookup(register.database["numbers"], "number")
    repo = Repository(register, Numbered, lookup=lookup)
    await repo.add_numbered("N", lambda n: numbered(n, id="the-one"))
    with pytest.raises(AlreadyExists):
        await repo.add_numbered("N", lambda n: numbered(n, id="the-one"))
    assert await lookup.find("N-0002") is None, "the refused record's number names nothing"
    assert await lookup.find("N-0001") == "the-one"


async def test_a_claim_left_by_a_crash_never_names_a_record_under_another_number(register):
    from shared.lookups import Lookup
    lookup = Lookup(register.database["numbers"], "number")
    repo = Repository(register, Numbered, lookup=lookup)
    # A crash after claiming N-0001 for "the-one", before its insert; the retry drew N-0002.
    assert await lookup.claim("N-0001", "the-one")
    await repo.add(numbered(2, id="the-one"))
    await lookup.claim("N-0002", "the-one")
    assert await repo.id_of("N-0002") == "the-one"
    assert await repo.id_of("N-0001") is None, "N-0001 is not the-one's number"
    found = await repo.by_number("N-0002")
    assert found is not None and found.id == "the-one"
    assert await repo.by_number("N-0001") is None, "N-0001 is not the-one's number"


async def test_a_number_held_by_another_record_writes_nothing_and_keeps_its_holder(
        register):
    """`add(claim=True)` claims the number beside its other writes: a number taken refuses
    the record, and the holder keeps it."""
    from shared.lookups import Lookup
    from shared.store import NumberTaken
    lookup = Lookup(register.database["numbers"], "number")
    repo = Repository(register, Numbered, lookup=lookup)
    assert await lookup.claim("N-0001", "someone-else")
    rec = numbered(1)
    with pytest.raises(NumberTaken):
        await repo.add(rec, claim=True)
    assert await repo.get(rec.id) is None
    assert await lookup.find("N-0001") == "someone-else"


async def test_a_lookup_built_in_batches_names_every_record_once_and_keeps_other_holders(
        register, monkeypatch):
    """The build claims in batches (one command each); a value already claimed for its own
    record (a build cut short) counts as named, one held by another record stays as it is."""
    from shared import lookups
    monkeypatch.setattr(lookups, "BUILD_BATCH", 3)
    lookup = lookups.Lookup(register.database["numbers"], "number")
    repo = Repository(register, Numbered)
    records = [numbered(n) for n in range(1, 9)]
    for rec in records:
        await repo.add(rec)
    assert await lookup.claim("N-0002", records[1].id)  # claimed before the cut
    assert await lookup.claim("N-0005", "someone-else")  # held by another record
    assert await lookup.build(register) == 7
    for rec in records:
        holder = "someone-else" if rec.number == "N-0005" else rec.id
        assert await lookup.find(rec.number) == holder
