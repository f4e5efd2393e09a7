"""A toy pair of services built only from the kit, to test the kit itself on real servers.

`ledger` owns Counter documents and emits `kit.counter_bumped`; `tally` consumes it
and keeps a Tally per counter, applying each event exactly once.
"""

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import ClassVar

from pydantic import Field

from shared.domain import Aggregate
from shared.events import Actor, Contract, Envelope, contract
from shared.service import Service
from shared.settings import InfraSettings, ServiceSettings
from tests.support import eventually  # noqa: F401 - re-exported for the kit tests


@contract("kit.counter_bumped")
class CounterBumped(Contract):
    counter_id: str
    by: int = Field(1, ge=1)
    fail_times: int = Field(0, description="test hook: the consumer fails this many times")


class Counter(Aggregate):
    producer: ClassVar[str] = "ledger"
    value: int = 0
    created_at: datetime | None = None  # what lists of the history order counters by
    kind: str | None = None  # set when added, never changed: a facet of the day lists

    def bump(self, by: int, actor: Actor, fail_times: int = 0) -> None:
        self.value += by
        self.log(actor, "bumped", {"value": self.value})
        self.emit(CounterBumped(counter_id=self.id, by=by, fail_times=fail_times), actor)


class Tally(Aggregate):
    producer: ClassVar[str] = "tally"
    total: int = 0


OPEN_BELOW = 10  # a counter is "open work" until it reaches this value


def ledger_service(infra: InfraSettings, many_valued: tuple[str, ...] = ()) -> Service:
    svc = Service("ledger", ServiceSettings(infra=infra))
    svc.collection("counters", Counter,
                   open_summary=lambda c: {"value": c.value} if c.value < OPEN_BELOW else None,
                   open_query={"value": {"$lt": OPEN_BELOW}}, history_by="created_at",
                   history_facets=("kind",), many_valued=many_valued)
    return svc


def tally_service(infra: InfraSettings, *, before_apply: Callable[[Envelope], Awaitable[None]]
                  | None = None) -> Service:
    svc = Service("tally", ServiceSettings(infra=infra))
    svc.collection("tallies", Tally)
    failures: dict[str, int] = {}

    @svc.consumer.on("kit.counter_bumped")
    async def on_bumped(event: Envelope, payload: CounterBumped) -> None:
        if failures.get(event.id, 0) < payload.fail_times:
            failures[event.id] = failures.get(event.id, 0) + 1
            raise RuntimeError(f"tally refuses this event (failure {failures[event.id]})")
        if before_apply:
            await before_apply(event)
        repo = svc.repo("tallies")
        if await repo.get(payload.counter_id) is None:
            try:
                from shared.store import AlreadyExists
                await repo.add(Tally(_id=payload.counter_id))
            except AlreadyExists:
                pass

        def add(t: Tally) -> None:
            t.total += payload.by

        await repo.apply_event(payload.counter_id, event, add)

    return svc
