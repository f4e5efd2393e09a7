"""What the pages people read all day cost at each history size: latency, and per request
the database commands and time each service spent (its `qms_db_*` counters, /metrics).

    .venv/bin/python scripts/bench_reads.py              # histories of 0 and 10,000
    READS_SIZES=0,10000,100000 .venv/bin/python scripts/bench_reads.py

A focused part of `make bench` (scripts/bench.py), with its building blocks: for each size,
a fresh namespace loaded with the stamped history (benchkit/load.py: closed complaints over
the past BENCH_YEARS, BENCH_OPEN open ones), the five real services started on it, then
READS_BUSY complaints registered now (the current period's own traffic: lists read a
period), then each page READS_REPS times, one user. Prints the figures and writes
reports/bench-reads.json; asserts nothing about times (a steady-state test proves each
path's reads: tests/integration/test_*_steady_state.py).
"""

import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

from bench import (  # noqa: E402
    CONFIG,
    Helpers,
    check_infra,
    cleanup,
    months,
    pids_of,
    record_templates,
    say,
    service_env,
)
from benchkit import load, measure, procs, profile, templates  # noqa: E402
from pymongo import AsyncMongoClient  # noqa: E402

from services.reporting.settings import Settings as ReportingSettings  # noqa: E402
from shared.settings import InfraSettings  # noqa: E402
from tests.e2e.harness import SERVICES, System  # noqa: E402

SIZES = [int(s) for s in os.environ.get("READS_SIZES", "0,10000").split(",") if s]
REPS = int(os.environ.get("READS_REPS") or 20)
BUSY = int(os.environ.get("READS_BUSY") or 600)
OUT = ROOT / "reports" / "bench-reads.json"


def pages(month: str) -> list[tuple[str, str, str]]:
    """The list pages of `make bench` (and the notifications of one complaint)."""
    return [*measure.list_pages(month),
            ("notifications, open (GET /notifications?status=pending)", "ops_notify",
             "/notifications?status=pending")]


async def one_page(people: measure.People, urls: dict[str, str], system: System,
                   label: str, person: str, path: str) -> dict[str, Any]:
    samples = measure.Samples()
    before = await profile.snapshot(urls, pids_of(system))
    await measure.reads(people, samples, [(label, person, path)], REPS, budget_s=30)
    after = await profile.snapshot(urls, pids_of(system))
    figures = samples.report().get(label, {})
    cost = profile.per_unit(before, after, figures.get("n") or 1)
    # The page's own service: the one whose counters moved (/metrics itself reads nothing).
    busiest = max(cost["services"].items(), key=lambda kv: kv[1]["db_ms"], default=None)
    return figures | ({"service": busiest[0]} | busiest[1] if busiest else {})


async def register_rows(people: measure.People, urls: dict[str, str], system: System,
                        ids: list[str]) -> dict[str, Any]:
    samples = measure.Samples()
    label = "reporting register row (GET /register/{id})"
    before = await profile.snapshot(urls, pids_of(system))
    for fid in ids:
        await samples.time(label, people.manager.get(f"/register/{fid}"))
    after = await profile.snapshot(urls, pids_of(system))
    figures = samples.report().get(label, {})
    cost = profile.per_unit(before, after, figures.get("n") or 1)["services"]["reporting"]
    return {label: figures | {"service": "reporting"} | cost}


async def measure_size(size: int, namespace: str, recorded: Any, client: AsyncMongoClient,
                       env: dict[str, str], tz: ZoneInfo) -> dict[str, Any]:
    if size:
        clones = load.plan(recorded, size, CONFIG["open"], CONFIG["years"])
        loaded = await load.load(client, namespace, recorded, clones, SERVICES, tz=tz,
                                 with_history=False)
        say(f"{size}: loaded in {loaded.total_s}s")
    system = System(namespace, env=env)
    people = None
    try:
        await system.start(deadline_s=900)
        await procs.settle(pids_of(system), max_wait=900)
        people = measure.People(system)
        await measure.first_hop(people, CONFIG["warmup_s"])
        token = {"Authorization": f"Bearer {system.token('sales', 'bench.reads')}"}
        say(f"{size}: {BUSY} complaints registered now (the period's own traffic)")
        await measure.register_many(system.url("intake"), token, BUSY, 8)
        await templates.quiet(namespace, procs.queues, timeout=300)
        await procs.settle(pids_of(system), max_wait=120)
        urls = {name: system.url(name) for name in system.services}
        month, _ = months(tz)
        out: dict[str, Any] = {}
        for label, person, path in pages(month):
            out[label] = await one_page(people, urls, system, label, person, path)
            say(f"{size}: {label}: {_line(out[label])}")
        listed = (await people.sales.get("/feedback?page_size=20")).json()["items"]
        out |= await register_rows(people, urls, system, [f["id"] for f in listed] * 2)
        return out
    finally:
        if people is not None:
            await people.aclose()
        await system.stop()


def _line(f: dict[str, Any]) -> str:
    heaviest = ", ".join(f"{h['what']} {h['commands']:g}×/{h['db_ms']:g} ms"
                         for h in f.get("heaviest", [])[:3])
    return (f"p50 {f.get('p50_ms')} ms, p99 {f.get('p99_ms')} ms; {f.get('service')}: "
            f"{f.get('commands')} commands, {f.get('db_ms')} ms in the database ({heaviest})")


def table(result: dict[str, dict[str, Any]]) -> str:
    sizes = list(result)
    labels = list(next(iter(result.values()), {}))
    head = " | ".join(f"at {int(s):,}: p50 / p99 ms, commands, db ms" for s in sizes)
    lines = [f"| page | {head} |", "|---" * (len(sizes) + 1) + "|"]
    for label in labels:
        cells = []
        for s in sizes:
            f = result[s].get(label, {})
            cells.append(f"{f.get('p50_ms')} / {f.get('p99_ms')}, {f.get('commands')}, "
                         f"{f.get('db_ms')}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


async def main() -> None:
    prefix = f"reads{uuid.uuid4().hex[:6]}"
    client = AsyncMongoClient(InfraSettings().mongo_url.get_secret_value(), tz_aware=True)
    await check_infra(client)
    tz = ZoneInfo(ReportingSettings().timezone)
    helpers = Helpers(f"{prefix}_bare")  # its SMTP sink: notify's mail goes somewhere
    namespaces = [prefix, f"{prefix}tpl"]
    result: dict[str, Any] = {}
    try:
        await helpers.ready()
        env = service_env(helpers.smtp_port)
        say(f"recording templates (namespace {prefix}tpl)")
        recorded = await record_templates(client, f"{prefix}tpl", env)
        await cleanup(client, [f"{prefix}tpl"])
        for size in SIZES:
            namespaces.append(f"{prefix}n{size}")
            started = time.perf_counter()
            result[str(size)] = await measure_size(size, f"{prefix}n{size}", recorded, client,
                                                   env, tz)
            say(f"{size}: done in {time.perf_counter() - started:.0f}s")
            await cleanup(client, [f"{prefix}n{size}"])
            OUT.write_text(json.dumps(result, indent=1, default=str))
    finally:
        helpers.stop()
        await cleanup(client, namespaces)
        await client.close()
    print(table(result))


if __name__ == "__main__":
    asyncio.run(main())
