"""Issue 12, the project's own proof: under a steady load through the choreography, each
service killed with kill -9 in turn (make up's supervisor starts it again), the broker's
application stopped and started, FerretDB killed with kill -9 and started again. Afterwards
every acknowledged complaint is in the register exactly once, every escalated one has exactly
one case, no event was handled twice, nothing sits in a dead-letter queue, and each fault's
backlog, and the whole backlog after the last, has drained within 60 s of the fault.

The table (fault, load, lost, duplicated, dead-lettered, catch-up) is printed at the end of
the run and kept in reports/faults.md and reports/faults.json. Deselect with
`-m "not faults"`; `QMS_FAULTS=intake,broker,ferretdb` runs only those faults."""

import asyncio
import time
import uuid
from collections import Counter

import aio_pika
import pytest

from tests.e2e.flow import feedback_body
from tests.faults import servers
from tests.faults.audit import Audit, Findings, by_window, pages
from tests.faults.conftest import PRINTED
from tests.faults.downstream import Downstream
from tests.faults.faults import Fault, all_faults, restore_servers
from tests.faults.load import Load, Story
from tests.faults.report import Row, write
from tests.faults.supervised import SupervisedSystem
from tests.support import eventually, ok

pytestmark = [pytest.mark.faults, pytest.mark.infra, pytest.mark.timeout(1800)]

RATE = 2.0  # complaints offered per second
CATCH_UP_S = 60.0  # issue 12: the backlog drained within 60 s of a fault
WATCH_S = 180.0  # how long a catch-up is watched before the run moves on (and fails)
STEADY_S = 5.0  # the plain load before the first fault and between faults
WARM_UP = "none (steady load)"


async def dead_lettered(system: SupervisedSystem, amqp_url: str) -> dict[str, int]:
    depths = await servers.queue_depths(system.namespace, amqp_url)
    return {name: n for name, n in depths.items() if name.endswith(".dlq")}


async def backlog(system: SupervisedSystem, amqp_url: str, mongo_url: str) -> dict[str, int]:
    """Events not yet handled: in a queue (main or retry) or in an outbox."""
    depths = await servers.queue_depths(system.namespace, amqp_url)
    waiting = {name: n for name, n in depths.items() if n and not name.endswith(".dlq")}
    return waiting | await servers.pending_outboxes(mongo_url, system.namespace,
                                                    system.services)


async def drained(system: SupervisedSystem, load: Load, downstream: Downstream, amqp_url: str,
                  mongo_url: str) -> float | None:
    """When every story had reached reporting and notify, and no queue or outbox held an
    event; None if not within WATCH_S."""
    deadline = time.monotonic() + WATCH_S
    while time.monotonic() < deadline:
        if not await downstream.outstanding(load.stories, until=float("inf")):
            try:
                if not await backlog(system, amqp_url, mongo_url):
                    return time.monotonic()
            except Exception:  # noqa: BLE001 - a server still coming back: look again
                pass
        await asyncio.sleep(1)
    return None


def fill(row: Row, stories: list[Story], load: Load, found: Findings) -> Row:
    row.offered = len(stories)
    row.acknowledged = sum("register" in s.acked for s in stories)
    row.abandoned = sum(bool(s.abandoned) for s in stories)
    row.lost, row.duplicated = found.of(row.fault)
    row.clients_saw = dict(load.answers.get(row.fault, Counter()))
    return row


def report(rows: list[Row], load: Load, found: Findings, dead: dict[str, int],
           drained_after: float | None, restarts: int, extra: dict) -> str:
    """The table: a line per fault, then the whole run; written to reports/ and printed."""
    windows = by_window(load.stories)
    for row in rows:
        fill(row, windows.get(row.fault, []), load, found)
    total = fill(Row("all, after the last fault: the whole backlog drained"), load.stories,
                 load, found)
    total.lost, total.duplicated = len(found.lost), len(found.duplicated)
    total.dead_lettered, total.restarts, total.catch_up_s = sum(dead.values()), restarts, \
        drained_after
    total.clients_saw = dict(sum(load.answers.values(), Counter()))
    findings = ([f"lost ({w}): {what}" for w, what in found.lost]
                + [f"duplicated ({w}): {what}" for w, what in found.duplicated]
                + [f"dead-lettered: {n} in {q}" for q, n in dead.items() if n]
                + [f"abandoned ({s.window}): {s.register_no or s.key}: {s.abandoned}"
                   for s in load.stories if s.abandoned]
                + [f"server error ({e})" for e in load.server_errors])
    text = write([*rows, total], {"rate": RATE, "limit_s": CATCH_UP_S, "findings": findings}
                 | extra)
    PRINTED.append(text)
    print(text)
    return text


async def test_p_5_4_1_every_acknowledged_complaint_once_and_caught_up_within_60_s_of_faults(
        faults_system: SupervisedSystem, amqp_url: str, mongo_url: str):
    system = faults_system
    faults = all_faults(system)
    ran = {"ferretdb": servers.ferretdb_pid() is not None, "broker": servers.broker_running()}
    load, downstream = Load(system, rate=RATE), Downstream(system)
    rows: list[Row] = []
    found, extra = Findings(), {}
    last_end: float | None = None
    drained_after: float | None = None
    interrupted: BaseException | None = None
    load.window = WARM_UP
    load.start()
    try:
        await asyncio.sleep(STEADY_S)
        now = time.monotonic()
        caught = await downstream.caught_up(load.stories, until=now, timeout=WATCH_S)
        rows.append(Row(WARM_UP, catch_up_s=None if caught is None else caught - now))
        active = [f for f in faults if not f.skip]
        for fault in faults:
            if fault.skip:
                rows.append(Row(fault.name, note=f"skipped: {fault.skip}"))
                continue
            row, last_end = await _one(fault, system, load, downstream, amqp_url)
            rows.append(row)
            if fault is not active[-1]:
                await asyncio.sleep(STEADY_S)
        await load.stop()
        done = await drained(system, load, downstream, amqp_url, mongo_url)
        if done is not None and last_end is not None:
            drained_after = done - last_end
        found = await (audit := Audit(system, load.stories)).run()
        extra["audit"] = audit.summary | {"notifications per story (form, action)": {
            str(k): v for k, v in audit.notifications.items()}}
    except Exception as exc:  # noqa: BLE001 - the table is still written, then it is raised
        interrupted = exc
        extra["interrupted"] = repr(exc)
    finally:
        await load.stop()
        await downstream.aclose()
        restore_servers(**ran)  # what ran before the test runs after it, whatever failed
    dead = await dead_lettered(system, amqp_url)
    report(rows, load, found, dead, drained_after, system.restarts(), extra)
    if interrupted is not None:
        raise interrupted

    assert not found.lost and not found.duplicated, \
        f"lost {found.lost[:20]}; duplicated {found.duplicated[:20]}"
    assert not any(dead.values()), f"dead-lettered: {dead}; `python -m shared.dlq list`"
    gave_up = [(s.window, s.register_no or s.key, s.abandoned) for s in load.stories
               if s.abandoned]
    assert not gave_up, f"clients gave up: {gave_up[:10]}"
    slow = [(r.fault, r.catch_up_s) for r in rows[1:]
            if not r.note and (r.catch_up_s is None or r.catch_up_s > CATCH_UP_S)]
    assert not slow, f"not caught up within {CATCH_UP_S:.0f} s of the fault: {slow}"
    errors = [e for e in load.server_errors if " answered 500 " in e]
    assert not errors, f"a fault must give 503 with Retry-After, never 500: {errors[:5]}"
    assert drained_after is not None and drained_after <= CATCH_UP_S, \
        f"the whole backlog had not drained {CATCH_UP_S:.0f} s after the last fault " \
        f"({drained_after})"


async def _one(fault: Fault, system: SupervisedSystem, load: Load, downstream: Downstream,
               amqp_url: str) -> tuple[Row, float]:
    """One fault under the load: how long until the services answered, and until everything
    acknowledged before its end had reached reporting and notify; and when it ended."""
    load.window = fault.name
    before_restarts, began = system.restarts(), time.monotonic()
    dead_before = sum((await dead_lettered(system, amqp_url)).values())
    ended, ready = await fault.apply()
    caught = await downstream.caught_up(load.stories, until=ended, timeout=WATCH_S)
    dead_after = sum((await dead_lettered(system, amqp_url)).values())
    return Row(fault.name, restarts=system.restarts() - before_restarts,
               down_s=ready - began, catch_up_s=None if caught is None else caught - ended,
               dead_lettered=dead_after - dead_before), ended


async def test_the_audit_finds_a_lost_a_duplicated_and_a_dead_lettered_event(
        faults_system: SupervisedSystem, amqp_url: str):
    """The checks above are not blind: a complaint acknowledged but never registered is lost;
    one registered twice (a client retrying without an Idempotency-Key) is duplicated; an
    event no service knows is dead-lettered, and counted."""
    system = faults_system
    lost = Story(n=-1, key=f"load-{uuid.uuid4()}", window="control: lost", escalate=False,
                 assign=False, fid=str(uuid.uuid4()), register_no="CF-never",
                 acked={"register": time.monotonic()})
    twice = Story(n=-2, key=f"load-{uuid.uuid4()}", window="control: twice", escalate=False,
                  assign=False)
    body = feedback_body(description=f"Housings crack at the mounting boss ({twice.key})")
    async with system.client("intake", "sales", sub="load.sales") as sales:
        for _ in range(2):
            first = ok(await sales.post("/feedback", json=body), 201)
    twice.fid, twice.register_no = first["id"], first["register_no"]
    twice.acked["register"] = time.monotonic()
    async with system.client("reporting", "auditor") as reporting:
        async def both_in_reporting() -> bool:
            rows = (await pages(reporting, "/register"))
            return sum(twice.key in (r.get("description") or "") for r in rows) == 2
        await eventually(both_in_reporting, timeout=120, what="both registrations in reporting")

    found = await Audit(system, [lost, twice], statistics=False).run()

    assert found.of("control: lost") == (3, 0), found.lost  # intake, reporting, the event
    assert found.of("control: twice") == (0, 2), found.duplicated  # intake, reporting

    connection = await aio_pika.connect(amqp_url, timeout=20)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(f"{system.namespace}.events")
        await exchange.publish(aio_pika.Message(b'{"type": "no.such.event"}'),
                               routing_key="no.such.event")

    async def counted() -> dict[str, int]:
        return {q: n for q, n in (await dead_lettered(system, amqp_url)).items() if n}
    assert f"{system.namespace}.reporting.dlq" in await eventually(
        counted, timeout=60, what="the unknown event in reporting's dead-letter queue")
