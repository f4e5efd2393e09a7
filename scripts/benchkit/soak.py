"""The soak (issue 12): a steady stream of complaints carried through the procedure for a
long while, with the backlog and each service's memory looked at every SOAK_INTERVAL_S.

Each complaint, started at a fixed rate (open loop: a slow system does not slow the
arrivals), takes the README's walk-through as fast as each person can see the previous
step: Sales registers and escalates; Quality accepts the case and assigns the production
unit; the unit investigates and proposes; Quality verifies; then Sales replies to the
customer and records the answer (closing the feedback) while the unit marks its two
actions done (closing the action request). So open work stays what a plant has in
flight, and the soak measures how the system holds a rate, not how it carries a pile.
"""

import asyncio
import itertools
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import Field, dataclass, field, fields
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from benchkit import backlog, procs
from benchkit.measure import (
    INVESTIGATION,
    People,
    Samples,
    field_is,
    status_is,
    summary,
    unit_status,
)
from tests.e2e.flow import feedback_body
from tests.e2e.harness import System


@dataclass(frozen=True)
class Settings:
    seconds: float = 600       # how long complaints keep arriving
    rate: float = 5.0          # complaints started per second
    interval_s: float = 30     # one row of figures each
    drain_s: float = 300       # after the load, how long to let what is in flight finish
    wait_s: float = 120        # a person gives up on a step after this
    polls_per_s: float = 20    # all the people's looks for a step's effect, together
    max_in_flight: int = 2000  # arrivals beyond are skipped (and counted)
    # "answer" (issue 12's soak): register -> escalate -> assign -> the unit's answer at
    # Quality; "whole": on to the customer's answer and the actions done (twice the work).
    flow: str = "answer"

    @classmethod
    def from_env(cls) -> "Settings":
        """SOAK_SECONDS, SOAK_RATE, SOAK_INTERVAL_S, SOAK_DRAIN_S, SOAK_WAIT_S,
        SOAK_MAX_IN_FLIGHT, SOAK_POLLS_PER_S, SOAK_FLOW."""
        def get(f: Field) -> Any:
            return f.type(os.environ.get(f"SOAK_{f.name.upper()}") or f.default)  # type: ignore
        settings = cls(**{f.name: get(f) for f in fields(cls)})
        if settings.flow not in FLOWS:
            raise SystemExit(f"SOAK_FLOW={settings.flow!r}: one of {', '.join(FLOWS)}")
        return settings


FLOWS = {"whole": "is registered, escalated, assigned to a unit, investigated, verified, "
                  "replied to and its answer recorded, and its actions marked done",
         "answer": "is registered, escalated and assigned to a unit, and the unit's answer "
                   "(investigation and countermeasures submitted) reaches Quality (issue 12's "
                   "soak; the complaints stay open)"}


class Failed(Exception):
    pass


class Waits:
    """How long people waited for an event's effect: from the answer to the request that
    saved the event until the next person sees its effect. Each looks every
    max(0.1 s, people waiting / `polls_per_s`) (at most every 5 s), so that the looking
    never becomes the load: the figure is late by at most that."""

    def __init__(self, polls_per_s: float) -> None:
        self.polls_per_s = polls_per_s
        self.pending: dict[int, float] = {}  # wait -> when it began (monotonic)
        self.window: list[float] = []        # seconds, finished since the last row
        self.every: dict[str, list[float]] = {}
        self._keys = itertools.count()

    async def until(self, what: str, check: Callable[[], Awaitable[bool]],
                    timeout: float) -> None:
        key, began = next(self._keys), time.monotonic()
        self.pending[key] = began
        try:
            while time.monotonic() - began < timeout:
                try:
                    if await check():
                        waited = time.monotonic() - began
                        self.window.append(waited)
                        self.every.setdefault(what, []).append(waited * 1000)
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(min(5.0, max(0.1, len(self.pending) / self.polls_per_s)))
            raise Failed(f"wait: {what}")
        finally:
            del self.pending[key]

    def take(self) -> tuple[float | None, float | None]:
        """(longest wait finished since the last call, age of the oldest wait still open)."""
        longest = max(self.window, default=None)
        self.window = []
        now = time.monotonic()
        oldest = max((now - t for t in self.pending.values()), default=None)
        return longest, oldest


class Load:
    """Complaints carried through, one task each."""

    def __init__(self, people: People, settings: Settings):
        self.p, self.settings = people, settings
        self.samples, self.waits = Samples(), Waits(settings.polls_per_s)
        self.started = self.answered = self.skipped = 0
        self.failed: dict[str, int] = {}
        self.tasks: set[asyncio.Task] = set()

    async def call(self, step: str, request: Awaitable[httpx.Response]) -> Any:
        resp = await self.samples.time(step, request)
        if resp is None:
            raise Failed(step)
        return resp.json() if resp.content else None

    async def until(self, what: str, check: Callable[[], Awaitable[bool]]) -> None:
        await self.waits.until(what, check, self.settings.wait_s)

    async def complaint(self) -> None:
        p = self.p
        try:
            fid = (await self.call("register", p.sales.post("/feedback",
                                                            json=feedback_body())))["id"]
            await self.call("escalate", p.sales.post(f"/feedback/{fid}/escalate",
                                                     json={"note": "Analyse"}))
            await self.until("case at Quality", lambda: status_is(
                p.quality.get(f"/cases/{fid}"), 200))
            case = await self.call("assign", p.quality.post(
                f"/cases/{fid}/responsibility", json={
                    "preliminary_cause": "Porosity at the boss", "defect_code": "D03",
                    "units": [{"unit": "production", "request": "Find the root cause"}]}))
            action = case["responsible_units"][0]["action_id"]
            await self.until("request at the unit", lambda: status_is(
                p.unit.get(f"/actions/{action}"), 200))
            await self.call("investigation", p.unit.put(f"/actions/{action}/investigation",
                                                        json=INVESTIGATION))
            await self.call("submit", p.unit.post(f"/actions/{action}/submit"))
            await self.until("proposal at Quality", lambda: unit_status(
                p.quality, fid, "proposed"))
            if self.settings.flow == "answer":
                self.answered += 1
                return
            await self.call("verify", p.quality.post(f"/cases/{fid}/verification", json={
                "unit": "production", "accepted": True}))
            await asyncio.gather(self.answer(fid), self.close_actions(action))
            self.answered += 1
        except Failed as exc:
            self.failed[str(exc)] = self.failed.get(str(exc), 0) + 1
        except Exception as exc:  # noqa: BLE001 - counted and shown, the soak goes on
            why = f"{type(exc).__name__}: {exc}"[:200]
            self.failed[why] = self.failed.get(why, 0) + 1

    async def answer(self, fid: str) -> None:
        p = self.p
        await self.until("record at Sales", lambda: field_is(
            p.sales.get(f"/feedback/{fid}"), "status", "quality_record_ready"))
        await self.call("reply", p.sales.post(f"/feedback/{fid}/reply",
                                              json={"reply": "Die replaced; stock sorted."}))
        await self.call("answer recorded", p.sales.post(f"/feedback/{fid}/satisfaction",
                                                        json={"satisfied": True}))

    async def close_actions(self, action: str) -> None:
        p = self.p
        await self.until("acceptance at the unit", lambda: field_is(
            p.unit.get(f"/actions/{action}"), "status", "accepted"))
        for item in ("corrective", "preventive"):
            await self.call("action done", p.unit.post(f"/actions/{action}/items/{item}/1/done",
                                                       json={"note": "done"}))

    async def arrive(self) -> None:
        """Start a complaint every 1/rate s for `seconds` (skipped beyond max_in_flight)."""
        began = time.monotonic()
        for i in range(int(self.settings.seconds * self.settings.rate)):
            await asyncio.sleep(max(0.0, began + i / self.settings.rate - time.monotonic()))
            if len(self.tasks) >= self.settings.max_in_flight:
                self.skipped += 1
                continue
            task = asyncio.create_task(self.complaint())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            self.started += 1


@dataclass
class Row:
    t_s: float
    phase: str                 # "load" or "drain"
    started: int
    answered: int
    in_flight: int
    answered_per_s: float
    outbox: backlog.Outbox
    broker: backlog.Broker
    longest_wait_s: float | None
    oldest_open_wait_s: float | None
    rss_mb: dict[str, float]
    cpu: dict[str, float] = field(default_factory=dict)  # % of one core over the row

    @property
    def backlog_s(self) -> float | None:
        """The oldest pending event's age, as far as it shows: the oldest unpublished event,
        the longest a person waited for one in this row, or is still waiting. None: the
        broker holds messages nobody acks."""
        if self.broker.wait_s is None:
            return None
        return round(max(self.outbox.oldest_s or 0.0, self.longest_wait_s or 0.0,
                         self.oldest_open_wait_s or 0.0, self.broker.wait_s), 1)


class Sampler:
    """One row every interval: backlog, progress, RSS and CPU of every process."""

    def __init__(self, system: System, client: AsyncMongoClient, load: Load):
        self.system, self.client, self.load = system, client, load
        self.pids = {n: p.pid for n, p in system.procs.items()} | procs.infra_pids() | {
            "load driver (this bench)": os.getpid()}
        self.began = time.monotonic()
        self.last = (self.began, 0, {n: procs.cpu_seconds(p) for n, p in self.pids.items()})
        self.machine = procs.machine_cpu()

    async def row(self, phase: str) -> Row:
        now = time.monotonic()
        was, answered_before, cpu_before = self.last
        cpu_now = {n: procs.cpu_seconds(p) for n, p in self.pids.items()}
        self.last = (now, self.load.answered, cpu_now)
        # The whole machine meanwhile: other work on it competes for the same cores
        machine, self.machine = procs.machine_cpu_since(self.machine), procs.machine_cpu()
        longest, oldest = self.load.waits.take()
        ns = self.system.namespace
        return Row(
            t_s=round(now - self.began), phase=phase, started=self.load.started,
            answered=self.load.answered, in_flight=len(self.load.tasks),
            answered_per_s=round((self.load.answered - answered_before) / (now - was), 2),
            outbox=await backlog.outbox(self.client, ns, self.system.services),
            broker=await backlog.broker(ns),
            longest_wait_s=None if longest is None else round(longest, 1),
            oldest_open_wait_s=None if oldest is None else round(oldest, 1),
            rss_mb={n: round(procs.rss_mb(p), 1) for n, p in self.pids.items()},
            cpu={n: round(100 * (cpu_now[n] - cpu_before[n]) / (now - was), 1)
                 for n in cpu_now} | {"whole machine (other work included)": machine})


async def run(system: System, client: AsyncMongoClient, settings: Settings,
              say: Callable[[str], None],
              show: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Drive the load, one row every interval, then let what is in flight finish."""
    people = People(system)
    for http in vars(people).values():
        http.timeout = httpx.Timeout(60)  # under a backlog a person waits, not fails
    load = Load(people, settings)
    sampler = Sampler(system, client, load)
    rss_before = {n: round(procs.rss_mb(p), 1) for n, p in sampler.pids.items()}
    rows: list[Row] = []
    arrivals = asyncio.create_task(load.arrive())
    try:
        while not arrivals.done():  # a row every interval from the start, however long one takes
            due = sampler.began + (len(rows) + 1) * settings.interval_s
            await asyncio.wait({arrivals}, timeout=max(0.0, due - time.monotonic()))
            rows.append(await sampler.row("load"))
            show(_row_dict(rows[-1]))
        arrivals.result()
        say(f"soak: load done; letting {len(load.tasks)} complaints in flight finish")
        drained_at = None
        end = time.monotonic() + settings.drain_s
        while time.monotonic() < end:
            if load.tasks:
                await asyncio.wait(set(load.tasks), timeout=min(settings.interval_s,
                                                                end - time.monotonic()))
            row = await sampler.row("drain")
            rows.append(row)
            show(_row_dict(row))
            if not load.tasks and not row.outbox.marks and not row.broker.ready \
                    and not row.broker.unacked:
                drained_at = row.t_s
                break
            if not load.tasks:
                await asyncio.sleep(min(settings.interval_s, 5))
    finally:
        arrivals.cancel()
        cut_short = len(load.tasks)
        for task in list(load.tasks):
            task.cancel()
        await asyncio.gather(*load.tasks, arrivals, return_exceptions=True)
        await people.aclose()
    return {"settings": vars(settings), "rss_before_mb": rss_before,
            "started": load.started, "answered": load.answered, "skipped": load.skipped,
            "failed": load.failed, "cut_short": cut_short,
            "drained_after_load_s": None if drained_at is None else
            round(drained_at - settings.seconds, 1),
            "steps": load.samples.report(),
            "waits": {what: summary(v) for what, v in load.waits.every.items()},
            "rows": [_row_dict(r) for r in rows]}


def _row_dict(row: Row) -> dict[str, Any]:
    out = {k: v for k, v in vars(row).items() if k not in ("outbox", "broker")}
    return out | {"outbox": vars(row.outbox), "broker": vars(row.broker),
                  "backlog_s": row.backlog_s}
