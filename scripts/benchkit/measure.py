"""What `make bench` times, through the public HTTP APIs (one user at a time unless said).

The procedure's steps follow tests/e2e/flow.py (the README's walk-through). To keep a run
short, the complaints advance together step by step: every complaint takes step k (each
request alone, timed), then waits for the events step k+1 needs; the waits overlap, the
requests never do.
"""

import asyncio
import statistics
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aio_pika
import httpx
from pymongo import AsyncMongoClient

from tests.e2e.flow import feedback_body
from tests.e2e.harness import System

INVESTIGATION = {
    "containment": "Sort all stock at the customer and in the warehouse",
    "root_cause": {"five_whys": ["Crack at boss", "Porosity", "Die worn"],
                   "category": "machine", "statement": "Die worn beyond limit"},
    "corrective": [{"description": "Replace die", "owner": "liu.gang",
                    "due_date": "2026-12-05"}],
    "preventive": [{"description": "Die life counter with stop", "owner": "liu.gang",
                    "due_date": "2026-12-20"}],
}


def pct(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100), interpolated; None without samples."""
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 2)
    return round(statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1], 2)


def summary(values: list[float]) -> dict[str, Any]:
    return {"n": len(values), "p50_ms": pct(values, 50), "p99_ms": pct(values, 99),
            "max_ms": round(max(values), 2) if values else None}


class Samples:
    """Latencies by step (ms), and what failed."""

    def __init__(self) -> None:
        self.ms: dict[str, list[float]] = defaultdict(list)
        self.failed: dict[str, int] = defaultdict(int)
        self.last_error: dict[str, str] = {}
        self.skipped: dict[str, float] = {}  # step -> the seconds it was expected to take

    async def time(self, step: str, request: Awaitable[httpx.Response],
                   expect: tuple[int, ...] = (200, 201)) -> httpx.Response | None:
        started = time.perf_counter()
        try:
            resp = await request
        except httpx.HTTPError as exc:
            self.fail(step, f"{type(exc).__name__}: {exc}")
            return None
        elapsed = (time.perf_counter() - started) * 1000
        if resp.status_code not in expect:
            self.fail(step, f"{resp.status_code} {resp.text[:300]}")
            return None
        self.ms[step].append(elapsed)
        return resp

    def fail(self, step: str, why: str) -> None:
        self.failed[step] += 1
        self.last_error[step] = why

    def report(self) -> dict[str, Any]:
        out = {step: summary(v) for step, v in self.ms.items()}
        for step, n in self.failed.items():
            out.setdefault(step, summary([]))
            out[step] |= {"failed": n, "last_error": self.last_error[step]}
        for step, expected in self.skipped.items():
            out[step] = summary([]) | {"skipped": True, "expected_s": round(expected, 1)}
        return out


async def until(check: Callable[[], Awaitable[Any]], *, timeout: float,
                interval: float = 0.05) -> Any:
    """Poll `check` until it returns something truthy; None after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if result := await check():
                return result
        except httpx.HTTPError:
            pass
        await asyncio.sleep(interval)
    return None


class People:
    """One HTTP client per person and service (kept open: connections are reused, as a
    browser would)."""

    def __init__(self, system: System):
        c = system.client
        self.sales = c("intake", "sales", sub="wang.fang")
        self.auditor = c("intake", "auditor", sub="zhou.yu")
        self.quality = c("quality", "quality", sub="li.wei")
        self.unit = c("capa", "unit", sub="liu.gang", unit="production")
        self.capa_quality = c("capa", "quality", sub="li.wei")
        self.manager = c("reporting", "manager", sub="chen.jie")
        self.ops_notify = c("notify", "ops", sub="ops.on.duty")

    async def aclose(self) -> None:
        for client in vars(self).values():
            await client.aclose()


def _body(resp: httpx.Response | None) -> dict[str, Any] | None:
    return resp.json() if resp is not None else None


async def procedure(people: People, samples: Samples, hops: list[float], reps: int,
                    wait_s: float = 60) -> int:
    """`reps` product-quality complaints carried from registration to closure, each step
    timed; plus `reps` delivery complaints answered directly. Returns the complaints that
    reached the end (the others failed a step or timed out; see `samples.failed`)."""
    s, p = samples, people
    cases: list[dict[str, Any]] = []
    lost = 0  # hops in a row that never arrived: the choreography has stalled
    for _ in range(reps):  # register, escalate, and the hop to Quality (one at a time)
        if lost >= 3:
            s.fail("hop: escalation -> case readable", "3 hops in a row never arrived: "
                   "the rest of this size's procedure is skipped")
            break
        fb = _body(await s.time("register (POST /feedback)",
                                p.sales.post("/feedback", json=feedback_body())))
        if fb is None:
            continue
        fid = fb["id"]
        if await s.time("escalate (POST /feedback/{id}/escalate)",
                        p.sales.post(f"/feedback/{fid}/escalate", json={"note": "Analyse"})):
            escalated = time.perf_counter()
            seen = await until(lambda f=fid: status_is(p.quality.get(f"/cases/{f}"), 200),
                               timeout=wait_s, interval=0.002)
            if seen:
                hops.append((time.perf_counter() - escalated) * 1000)
                cases.append({"id": fid})
                lost = 0
            else:
                lost += 1
                s.fail("hop: escalation -> case readable", f"not readable in {wait_s}s")
    for case in cases:
        await s.time("quality reads the form (GET /cases/{id})",
                     p.quality.get(f"/cases/{case['id']}"))
    for case in cases:
        body = _body(await s.time("responsibility (POST /cases/{id}/responsibility)",
                                  p.quality.post(f"/cases/{case['id']}/responsibility", json={
                                      "preliminary_cause": "Porosity at the boss",
                                      "defect_code": "D03",
                                      "units": [{"unit": "production", "request": "Find the "
                                                 "root cause, contain stock, sort"}]})))
        case["action"] = body["responsible_units"][0]["action_id"] if body else None
    cases = [c for c in cases if c["action"]]
    await _each(cases, lambda c: status_is(p.unit.get(f"/actions/{c['action']}"), 200),
                wait_s, s, "action request reaches the unit")
    for case in cases:
        a = case["action"]
        await s.time("unit reads the request (GET /actions/{id})", p.unit.get(f"/actions/{a}"))
        await s.time("unit investigation (PUT /actions/{id}/investigation)",
                     p.unit.put(f"/actions/{a}/investigation", json=INVESTIGATION))
        await s.time("unit submits (POST /actions/{id}/submit)",
                     p.unit.post(f"/actions/{a}/submit"))
    await _each(cases, lambda c: unit_status(p.quality, c["id"], "proposed"), wait_s, s,
                "proposal reaches Quality")
    for case in cases:
        await s.time("verification (POST /cases/{id}/verification)",
                     p.quality.post(f"/cases/{case['id']}/verification",
                                    json={"unit": "production", "accepted": True}))
    await _each(cases, lambda c: field_is(p.unit.get(f"/actions/{c['action']}"), "status",
                                           "accepted"), wait_s, s, "acceptance reaches capa")
    for case in cases:
        for item in ("corrective", "preventive"):
            await s.time("unit marks an action done (POST /actions/{id}/items/…/done)",
                         p.unit.post(f"/actions/{case['action']}/items/{item}/1/done",
                                     json={"note": "done"}))
    await _each(cases, lambda c: field_is(p.sales.get(f"/feedback/{c['id']}"), "status",
                                           "quality_record_ready"), wait_s, s,
                "quality record reaches Sales")
    closed = 0
    for case in cases:
        fid = case["id"]
        await s.time("sales reads the record (GET /feedback/{id})", p.sales.get(f"/feedback/{fid}"))
        await s.time("reply (POST /feedback/{id}/reply)",
                     p.sales.post(f"/feedback/{fid}/reply", json={"reply": "Die replaced."}))
        closed += bool(await s.time("satisfaction, closes (POST /feedback/{id}/satisfaction)",
                                    p.sales.post(f"/feedback/{fid}/satisfaction",
                                                 json={"satisfied": True})))
    for case in cases:
        await s.time("auditor reads the history (GET /feedback/{id}/history)",
                     p.auditor.get(f"/feedback/{case['id']}/history"))
        await s.time("quality reads the case history (GET /cases/{id}/history)",
                     p.quality.get(f"/cases/{case['id']}/history"))
    await _each(cases, lambda c: status_is(p.manager.get(f"/register/{c['id']}"), 200), wait_s,
                s, "reporting's register row")
    for case in cases:
        await s.time("reporting register row (GET /register/{id})",
                     p.manager.get(f"/register/{case['id']}"))
    return closed + await direct_replies(people, samples, reps)


async def first_hop(people: People, timeout: float) -> float | None:
    """Seconds until a complaint escalated now is readable at Quality: after a start, the
    events flow once each relay's start-up sweep of its store is done. None: not in time."""
    started = time.perf_counter()
    resp = await people.sales.post("/feedback", json=feedback_body(), timeout=timeout)
    if resp.status_code != 201:
        return None
    fid = resp.json()["id"]
    resp = await people.sales.post(f"/feedback/{fid}/escalate", json={"note": "Warm-up"},
                                   timeout=timeout)
    if resp.status_code != 200:
        return None
    seen = await until(lambda: status_is(people.quality.get(f"/cases/{fid}"), 200),
                       timeout=max(1.0, timeout - (time.perf_counter() - started)),
                       interval=0.5)
    return round(time.perf_counter() - started, 1) if seen else None


async def direct_replies(people: People, samples: Samples, reps: int) -> int:
    s, p = samples, people
    done = 0
    for _ in range(reps):
        fb = _body(await s.time("register (POST /feedback)",
                                p.sales.post("/feedback", json=feedback_body(category="delivery"))))
        if fb is None:
            continue
        if await s.time("direct reply (POST /feedback/{id}/direct-reply)",
                        p.sales.post(f"/feedback/{fb['id']}/direct-reply",
                                     json={"reply": "Replacement shipped today."})):
            done += bool(await s.time("satisfaction, closes (POST /feedback/{id}/satisfaction)",
                                      p.sales.post(f"/feedback/{fb['id']}/satisfaction",
                                                   json={"satisfied": True})))
    return done


async def status_is(request: Awaitable[httpx.Response], status: int) -> bool:
    return (await request).status_code == status


async def field_is(request: Awaitable[httpx.Response], name: str, value: Any) -> bool:
    resp = await request
    return resp.status_code == 200 and resp.json().get(name) == value


async def unit_status(quality: httpx.AsyncClient, fid: str, status: str) -> bool:
    resp = await quality.get(f"/cases/{fid}")
    return resp.status_code == 200 and any(
        u["status"] == status for u in resp.json()["responsible_units"])


async def _each(cases: list[dict], check: Callable[[dict], Awaitable[bool]], wait_s: float,
                samples: Samples, what: str) -> None:
    """Wait for every case's condition (in turn: the deadlines overlap); drop the late."""
    deadline = time.monotonic() + wait_s
    for case in list(cases):
        if not await until(lambda c=case: check(c), timeout=max(1.0, deadline - time.monotonic())):
            samples.fail(f"wait: {what}", f"{case['id']} not there in {wait_s}s")
            cases.remove(case)


def list_pages(month: str) -> list[tuple[str, str, str]]:
    """(label, person, path) of the pages people read all day."""
    return [
        ("register, newest first (GET /feedback)", "sales", "/feedback"),
        ("register, registered (GET /feedback?status=registered)", "sales",
         "/feedback?status=registered"),
        ("register, with Quality (GET /feedback?status=with_quality)", "sales",
         "/feedback?status=with_quality"),
        ("cases, newest first (GET /cases)", "quality", "/cases"),
        ("cases, open (GET /cases?status=open&status=awaiting_units)", "quality",
         "/cases?status=open&status=awaiting_units"),
        ("unit's action requests (GET /actions)", "unit", "/actions"),
        ("unit's open requests (GET /actions?status=requested)", "unit",
         "/actions?status=requested"),
        ("reporting register page (GET /register)", "manager", "/register"),
        ("reporting register, a month (GET /register?month=…)", "manager",
         f"/register?month={month}"),
        ("monthly table, this month (GET /statistics/monthly)", "manager",
         "/statistics/monthly"),
        ("notifications (GET /notifications)", "ops_notify", "/notifications"),
    ]


async def reads(people: People, samples: Samples, pages: list[tuple[str, str, str]],
                reps: int, budget_s: float, expected: dict[str, float] | None = None,
                skip_over_s: float = 60, slow_s: float = 5) -> None:
    """Each page `reps` times, or fewer when it is slow: at least 3 then until `budget_s`,
    only once when it takes over `slow_s`, not at all when `expected` (seconds, from the
    previous history size) says it would take over `skip_over_s` (a scan of the whole
    history: its figure grows with the history, so the smaller size already shows it)."""
    for label, person, path in pages:
        if (expected or {}).get(label, 0) > skip_over_s:
            samples.skipped[label] = expected[label]  # type: ignore[index]
            continue
        client = getattr(people, person)
        started = time.monotonic()
        for i in range(reps):
            await samples.time(label, client.get(path, timeout=max(600, skip_over_s * 3)))
            spent = time.monotonic() - started
            if spent > slow_s * (i + 1) or (i >= 2 and spent > budget_s):
                break


def extrapolate(steps: dict[str, dict], size: int, new_size: int) -> dict[str, float]:
    """Seconds each read would take at `new_size`, if it grows with the history."""
    if not size:
        return {}
    seconds = {label: st["max_ms"] / 1000 if st.get("max_ms") else st.get("expected_s")
               for label, st in steps.items()}
    return {label: s * new_size / size for label, s in seconds.items() if s}


def reports(month: str, first: str) -> list[tuple[str, str]]:
    return [
        ("monthly table, one month (JSON)", f"/statistics/monthly?month={month}"),
        ("monthly table, one month (XLSX)", f"/statistics/monthly?month={month}&format=xlsx"),
        ("monthly table, 12 months (JSON)", f"/statistics/monthly?first={first}&last={month}"),
        ("register export of a month (CSV)", f"/register?month={month}&format=csv"),
        ("register export of a month (XLSX)", f"/register?month={month}&format=xlsx"),
    ]


async def register_many(url: str, headers: dict[str, str], n: int, concurrency: int) -> int:
    """POST /feedback `n` times, `concurrency` at once: how many were registered."""
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:
        async def one() -> bool:
            async with gate:
                resp = await http.post("/feedback", json=feedback_body())
                return resp.status_code == 201
        return sum(await asyncio.gather(*(one() for _ in range(n))))


async def throughput(url: str, headers: dict[str, str], concurrency: int,
                     seconds: float) -> dict[str, Any]:
    """POST /feedback from `concurrency` workers for `seconds`: rate and latency."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    latencies: list[float] = []
    errors: list[str] = []
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60,
                                 limits=limits) as http:
        async def worker(stop: float, record: bool) -> None:
            while time.monotonic() < stop:
                started = time.perf_counter()
                try:
                    resp = await http.post("/feedback", json=feedback_body())
                    good = resp.status_code == 201
                    why = f"{resp.status_code} {resp.text[:200]}"
                except httpx.HTTPError as exc:
                    good, why = False, f"{type(exc).__name__}: {exc}"
                if not record:
                    continue
                if good:
                    latencies.append((time.perf_counter() - started) * 1000)
                else:
                    errors.append(why)

        await asyncio.gather(*(worker(time.monotonic() + 1.0, False)
                               for _ in range(concurrency)))  # warm up connections
        started = time.perf_counter()
        await asyncio.gather(*(worker(time.monotonic() + seconds, True)
                               for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"concurrency": concurrency, "seconds": round(elapsed, 2),
            "requests": len(latencies), "rate_per_s": round(len(latencies) / elapsed, 1),
            **summary(latencies), "errors": len(errors),
            "last_error": errors[-1] if errors else None}


async def bus_round_trip(amqp_url: str, namespace: str, n: int) -> list[float]:
    """Publish (persistent, with publisher confirm) through a topic exchange to an exclusive
    queue and consume it: what one hop of the choreography cannot beat."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(f"{namespace}.bench-raw",
                                                  aio_pika.ExchangeType.TOPIC, auto_delete=True)
        queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        await queue.bind(exchange, routing_key="complaint.escalated")
        arrived: asyncio.Queue[float] = asyncio.Queue()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await message.ack()
            arrived.put_nowait(time.perf_counter())

        await queue.consume(on_message)
        body = b"x" * 2000  # about an escalation's envelope
        out = []
        for _ in range(n):
            started = time.perf_counter()
            await exchange.publish(aio_pika.Message(
                body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=str(uuid.uuid4())), routing_key="complaint.escalated")
            got = await asyncio.wait_for(arrived.get(), 10)
            out.append((max(got, time.perf_counter()) - started) * 1000)
        await exchange.delete(if_unused=False)
    return out


async def indexed_update(client: AsyncMongoClient, database: str, n: int,
                         shape: dict[str, Any]) -> list[float]:
    """One optimistic save as the services make it: update by {_id, version}."""
    coll = client[database]["raw_update"]
    ids = [f"raw-{i:05d}" for i in range(1000)]
    await coll.insert_many([shape | {"_id": i, "version": 1} for i in ids])
    out = []
    for k in range(n):
        doc_id, version = ids[k % len(ids)], 1 + k // len(ids)
        started = time.perf_counter()
        result = await coll.update_one({"_id": doc_id, "version": version},
                                       {"$set": {"version": version + 1,
                                                 "updated_at": datetime.now(UTC)}})
        out.append((time.perf_counter() - started) * 1000)
        assert result.matched_count == 1
    return out
