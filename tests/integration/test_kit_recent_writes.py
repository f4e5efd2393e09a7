"""An event about an aggregate this process wrote lately starts from what it wrote, not from a
read (`Repository.recent`), on the real database; and stays exactly-once beside another writer
whose saves the copy does not know."""

import uuid
from collections.abc import AsyncIterator

import pytest
from pymongo import monitoring

from shared.events import Actor, Envelope, make_event
from shared.store import Repository, mongo_client
from tests.conftest import test_namespace
from tests.integration.kit_fixtures import CounterBumped, Tally

pytestmark = pytest.mark.infra
ACTOR = Actor(sub="tester", roles=("quality",))


class Finds(monitoring.CommandListener):
    """The `_id`s the tallies were read by."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find" and event.command["find"] == "tallies":
            self.ids.append(event.command["filter"].get("_id"))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.fixture
async def replicas(mongo_url: str) -> AsyncIterator[tuple[Repository, Repository, Finds]]:
    """Two processes' repositories of one collection (two replicas), and this one's reads."""
    finds = Finds()
    name = test_namespace(uuid.uuid4().hex[:6])
    here, there = mongo_client(mongo_url, [finds]), mongo_client(mongo_url)
    yield (Repository(here[name]["tallies"], Tally), Repository(there[name]["tallies"], Tally),
           finds)
    await here.drop_database(name)
    await here.close()
    await there.close()


def bumped(tally_id: str, by: int) -> Envelope:
    return make_event(CounterBumped(counter_id=tally_id, by=by), producer="ledger",
                      correlation_id=tally_id, actor=ACTOR)


async def stored_as(repo: Repository, tally_id: str, *, total: int, version: int) -> None:
    stored = await repo.get(tally_id)
    assert stored is not None and (stored.total, stored.version) == (total, version)


def add(by: int):
    def apply(t: Tally) -> None:
        t.total += by
    return apply


async def test_an_event_about_a_tally_just_written_here_is_applied_without_reading_it(replicas):
    here, _, finds = replicas
    tally_id = str(uuid.uuid4())
    await here.add(Tally(_id=tally_id))
    first, second = bumped(tally_id, 2), bumped(tally_id, 3)
    await here.apply_event(tally_id, first, add(2))
    await here.apply_event(tally_id, second, add(3))
    again = await here.apply_event(tally_id, first, add(2))  # a redelivery
    assert again is not None and again.total == 5, "the redelivery changed nothing"
    assert finds.ids == [], "read back what this process had just written"
    await stored_as(here, tally_id, total=5, version=3)


async def test_a_save_by_another_writer_is_not_lost_nor_applied_twice(replicas):
    here, there, finds = replicas
    tally_id = str(uuid.uuid4())
    await here.add(Tally(_id=tally_id))
    elsewhere = bumped(tally_id, 10)
    await there.apply_event(tally_id, elsewhere, add(10))  # this process's copy is outdated
    await here.apply_event(tally_id, bumped(tally_id, 1), add(1))
    assert finds.ids == [tally_id], "the outdated copy failed its save and was read again"
    redelivered = await here.apply_event(tally_id, elsewhere, add(10))
    assert redelivered is not None and redelivered.total == 11
    await stored_as(here, tally_id, total=11, version=3)


async def test_what_is_kept_is_a_copy_no_caller_can_change(replicas):
    here, _, _ = replicas
    tally_id = str(uuid.uuid4())
    await here.add(Tally(_id=tally_id))
    seen: list[Tally] = []

    def change_and_fail(t: Tally) -> None:
        t.total = 99  # changed in hand, then the handler fails before saving
        seen.append(t)
        raise RuntimeError("the handler failed")

    with pytest.raises(RuntimeError):
        await here.apply_event(tally_id, bumped(tally_id, 1), change_and_fail)
    applied = await here.apply_event(tally_id, bumped(tally_id, 1), add(1))
    assert seen[0].total == 99 and applied is not None and applied.total == 1


async def test_a_change_starts_from_what_this_process_wrote_and_an_outdated_copy_is_not_lost(
        replicas):
    """A request's change (`Repository.change`) starts from the last write here, like an
    event; a save by another writer meanwhile costs a conflict and a read, never the save."""
    here, there, finds = replicas
    tally_id = str(uuid.uuid4())
    await here.add(Tally(_id=tally_id))
    await here.change(tally_id, add(1))
    assert finds.ids == [], "read back what this process had just written"
    await there.change(tally_id, add(10))  # the copy here is outdated now
    changed = await here.change(tally_id, add(100))
    assert changed.total == 111 and finds.ids == [tally_id]
    await stored_as(here, tally_id, total=111, version=4)


async def test_a_read_is_answered_from_the_last_write_only_while_no_other_instance_runs(
        mongo_url: str):
    """`Repository.seen`: alone, every write is this process's, so its copy is what the store
    holds; with another instance running, it reads (the other's save must show)."""
    finds = Finds()
    name = test_namespace(uuid.uuid4().hex[:6])
    here, there = mongo_client(mongo_url, [finds]), mongo_client(mongo_url)
    alone = True

    async def is_alone() -> bool:
        return alone
    mine = Repository(here[name]["tallies"], Tally, alone=is_alone)
    other = Repository(there[name]["tallies"], Tally)
    try:
        tally_id = str(uuid.uuid4())
        await mine.add(Tally(_id=tally_id))
        await mine.change(tally_id, add(2))
        read = await mine.seen(tally_id)
        assert read is not None and read.total == 2 and finds.ids == [], "alone: no read"

        alone = False  # another instance started, and wrote
        await other.change(tally_id, add(5))
        read = await mine.seen(tally_id)
        assert read is not None and read.total == 7, "another instance's save must show"
        assert finds.ids == [tally_id]
    finally:
        await here.drop_database(name)
        await here.close()
        await there.close()
