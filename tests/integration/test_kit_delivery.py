"""Redelivery after a consumer crash, bounded retries, the DLQ and its replay, on real RabbitMQ."""

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from shared import dlq
from shared.events import Actor, Envelope
from tests.conftest import infra_settings, test_namespace
from tests.integration.kit_fixtures import Counter, eventually, ledger_service, tally_service

ACTOR = Actor(sub="tester", roles=("quality",))
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def infra():
    return infra_settings(test_namespace(uuid.uuid4().hex[:6]), retry_delay_ms=200,
                          max_attempts=3, relay_interval_s=0.2)


@pytest.fixture
async def services():
    started = []
    yield started
    for svc in started:
        if svc.started:
            await svc.stop()


async def _start(services, svc):
    await svc.start()
    services.append(svc)
    return svc


async def test_consumer_killed_before_ack_gets_the_event_again_and_applies_it_once(infra, services):
    proc = subprocess.Popen([sys.executable, "-m", "tests.integration.crashing_tally",
                             infra.namespace], cwd=ROOT, stdout=subprocess.PIPE,
                            env=os.environ | {"PYTHONPATH": str(ROOT)})
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
        assert line.strip() == b"ready"
        ledger = await _start(services, ledger_service(infra))
        c = Counter(_id=str(uuid.uuid4()))
        c.bump(7, ACTOR)
        await ledger.repo("counters").add(c)
        # The consumer process dies while handling the event, before it acks.
        await asyncio.wait_for(asyncio.to_thread(proc.wait), 30)
        assert proc.returncode == -9
    finally:
        proc.kill()

    tally = await _start(services, tally_service(infra))  # the restart

    async def applied() -> bool:
        t = await tally.repo("tallies").get(c.id)
        return t is not None and t.total == 7
    await eventually(applied, what="the restarted consumer to apply the event")
    t = await tally.repo("tallies").get(c.id)
    assert len(t.applied_events) == 1


async def test_failing_event_is_retried_then_dead_lettered_with_its_error_and_replayed(infra,
                                                                                     services):
    tally = await _start(services, tally_service(infra))
    ledger = await _start(services, ledger_service(infra))
    c = Counter(_id=str(uuid.uuid4()))
    c.bump(2, ACTOR, fail_times=3)  # fails on each of the 3 allowed attempts
    await ledger.repo("counters").add(c)

    async def dead_lettered() -> bool:
        return len(await dlq.peek(tally.broker, tally.topology)) == 1
    await eventually(dead_lettered, what="the event to reach the DLQ")
    [row] = await dlq.peek(tally.broker, tally.topology)
    assert row["attempts"] == 3
    assert "tally refuses this event" in row["error"]
    assert await tally.repo("tallies").get(c.id) is None or \
        (await tally.repo("tallies").get(c.id)).total == 0

    # Ops look at the DLQ and replay it with the documented command: applied, once.
    listed = _dlq_command(infra, "list")
    [line] = listed.splitlines()
    assert json.loads(line)["error"].startswith("RuntimeError: tally refuses")
    assert "replayed 1 message(s)" in _dlq_command(infra, "replay")

    async def applied() -> bool:
        t = await tally.repo("tallies").get(c.id)
        return t is not None and t.total == 2
    await eventually(applied, what="the replayed event to be applied")
    assert await dlq.peek(tally.broker, tally.topology) == []


def _dlq_command(infra, command: str) -> str:
    env = os.environ | {"QMS_NAMESPACE": infra.namespace, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "shared.dlq", command, "--service", "tally"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


async def test_event_without_a_contract_goes_to_the_dlq_at_once_with_the_reason(infra, services):
    tally = await _start(services, tally_service(infra))
    unknown = Envelope(type="kit.counter_bumped", version=9, producer="ledger",
                       correlation_id="x", actor=ACTOR, payload={"counter_id": "x"})
    await ledger_service(infra).publisher.__class__(tally.broker, tally.topology.exchange) \
        .publish(unknown)

    async def dead_lettered() -> bool:
        return len(await dlq.peek(tally.broker, tally.topology)) == 1
    await eventually(dead_lettered, what="the unknown event to be dead-lettered")
    [row] = await dlq.peek(tally.broker, tally.topology)
    assert "no contract for event 'kit.counter_bumped' version 9" in row["error"]
    assert row["attempts"] == 1


async def test_retry_delay_is_a_setting_that_can_change_between_starts(infra, services):
    first = await _start(services, tally_service(infra))
    await first.stop()
    # The same queues, now with another delay: a queue-wide TTL would make RabbitMQ refuse
    # the declaration (PRECONDITION_FAILED) and the service would not start at all.
    tally = await _start(services, tally_service(infra.model_copy(update={"retry_delay_ms": 700})))
    ledger = await _start(services, ledger_service(infra))
    c = Counter(_id=str(uuid.uuid4()))
    c.bump(4, ACTOR, fail_times=1)
    await ledger.repo("counters").add(c)

    async def applied_after_one_retry():
        t = await tally.repo("tallies").get(c.id)
        return t if t is not None and t.total == 4 else None
    t = await eventually(applied_after_one_retry, what="the event to be applied after its retry")
    assert len(t.applied_events) == 1


async def test_dead_letters_survive_being_listed_many_times(infra, services):
    """`dlq list` reads and returns messages; RabbitMQ 4.x (compose, Kubernetes) counts each
    return against a quorum queue's delivery limit, 20 by default, and drops the message
    past it. The DLQ carries a limit of its own so that looking never loses an event."""
    tally = await _start(services, tally_service(infra))
    ledger = await _start(services, ledger_service(infra))
    c = Counter(_id=str(uuid.uuid4()))
    c.bump(1, ACTOR, fail_times=3)
    await ledger.repo("counters").add(c)

    async def dead_lettered() -> bool:
        return len(await dlq.peek(tally.broker, tally.topology)) == 1
    await eventually(dead_lettered, what="the event to reach the DLQ")
    for _ in range(25):
        assert len(await dlq.peek(tally.broker, tally.topology)) == 1
    api = os.environ.get("QMS_RABBIT_API", "http://127.0.0.1:15672/api")
    async with httpx.AsyncClient(auth=("guest", "guest"), timeout=10) as http:
        queue = (await http.get(f"{api}/queues/%2F/{tally.topology.dlq.name}")).json()
    assert queue["arguments"]["x-delivery-limit"] > 10_000
    assert "replayed 1 message(s)" in _dlq_command(infra, "replay")


async def test_stopping_a_service_finishes_the_event_in_hand(infra, services):
    """Graceful shutdown (a deploy, a scale-in): the event being handled is finished and
    acked, not cut off halfway and not handled again by the next instance."""
    in_hand = asyncio.Event()

    async def slow(_event: Envelope) -> None:
        in_hand.set()
        await asyncio.sleep(1.5)  # a handler mid-way through its work

    tally = await _start(services, tally_service(infra, before_apply=slow))
    ledger = await _start(services, ledger_service(infra))
    c = Counter(_id=str(uuid.uuid4()))
    c.bump(6, ACTOR)
    await ledger.repo("counters").add(c)
    await asyncio.wait_for(in_hand.wait(), 20)
    await tally.stop()  # while the handler is mid-way

    successor = await _start(services, tally_service(infra))
    t = await successor.repo("tallies").get(c.id)
    assert t is not None and t.total == 6, "the event in hand was not finished before the stop"
    assert len(t.applied_events) == 1
