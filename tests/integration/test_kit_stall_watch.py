"""A handler that does not finish is told, not silent (issue 12), on the real broker and DB.

The kit's toy consumer (`tally`) is held inside its handler until the test lets it go: its
queue waits behind it. The stall watch logs it at ERROR naming the event and the line the
handler waits at, once, counts it, and exports how long it has been handled; `kill -USR1`
logs where every task waits. Let go, the event is applied and the gauge is back to 0.
"""

import asyncio
import logging
import os
import signal
import uuid
from collections.abc import Iterator

import pytest

from shared.events import Actor, Envelope
from tests.conftest import infra_settings, test_namespace
from tests.integration.kit_fixtures import Counter, eventually, ledger_service, tally_service

pytestmark = pytest.mark.infra

ACTOR = Actor(sub="tester", roles=("quality",))


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def logged() -> Iterator[dict[str, Kept]]:
    kept = {name: Kept() for name in ("qms.stallwatch", "qms.tasks")}
    for name, handler in kept.items():
        logging.getLogger(name).addHandler(handler)
    yield kept
    for name, handler in kept.items():
        logging.getLogger(name).removeHandler(handler)


async def test_an_event_handled_too_long_is_logged_with_where_it_waits(logged) -> None:
    # A short threshold: the test holds the handler until it has seen the report.
    infra = infra_settings(test_namespace(uuid.uuid4().hex[:6]), retry_delay_ms=200,
                           max_attempts=3, relay_interval_s=0.2, stall_after_s=0.5)
    release = asyncio.Event()

    async def held_by_the_test(event: Envelope) -> None:
        await release.wait()

    tally = tally_service(infra, before_apply=held_by_the_test)
    ledger = ledger_service(infra)
    started = []
    try:
        for svc in (tally, ledger):
            await svc.start()
            started.append(svc)

        def metric(name: str) -> float | None:
            return tally.registry.get_sample_value(name, {"service": "tally"})

        assert metric("qms_event_handling_stalls_total") == 0  # exported before any stall
        counter = Counter(_id=str(uuid.uuid4()))
        counter.bump(3, ACTOR)
        await ledger.repo("counters").add(counter)

        async def reported() -> list[str]:
            return logged["qms.stallwatch"].messages
        [message] = await eventually(reported, timeout=30, what="the stall logged")
        assert "kit.counter_bumped" in message and "in held_by_the_test" in message, message
        assert metric("qms_event_handling_stalls_total") == 1
        assert (metric("qms_event_handling_oldest_seconds") or 0) > 0

        os.kill(os.getpid(), signal.SIGUSR1)  # what an operator does: where every task waits

        async def dumped() -> list[str]:
            return logged["qms.tasks"].messages
        [dump] = await eventually(dumped, timeout=30, what="the task dump")
        assert "in held_by_the_test" in dump and "tally-stall-watch" in dump, dump

        release.set()

        async def applied() -> bool:
            t = await tally.repo("tallies").get(counter.id)
            return t is not None and t.total == 3
        await eventually(applied, timeout=30, what="the event applied once let go")
        assert metric("qms_event_handling_oldest_seconds") == 0
        assert metric("qms_event_handling_stalls_total") == 1  # reported once, not per check
        assert len(logged["qms.stallwatch"].messages) == 1
    finally:
        release.set()
        for svc in started:
            await svc.stop()
