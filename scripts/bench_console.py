"""The console's main pages at 10,000 complaints: server time per page and role (issue 10's
"Fast": the quality board and the Sales inbox under 150 ms at p95 on this machine).

    .venv/bin/python scripts/bench_console.py                 # 10,000 complaints
    CONSOLE_SIZE=1000 CONSOLE_REPS=20 .venv/bin/python scripts/bench_console.py
    BENCH_PHASES=console make bench                           # the same, as a bench phase

A fresh namespace is loaded with the stamped history as `make bench` loads it
(benchkit/load.py: closed complaints over the past BENCH_YEARS, CONSOLE_OPEN open ones, a
third each Sales' new ones, forms with a unit's request open, Quality's record waiting for
Sales' reply); the five services and the console start on it; one more complaint is carried
through the real services (its audit timeline is real events). Then each page is fetched
CONSOLE_REPS times, one person at a time, signed in as an auth proxy would sign them in
(`X-Forwarded-Access-Token`, a development token). The figure is the wall time of a request
to the console on loopback (the console's server time plus a loopback round trip; the
console's own `qms_http_request_seconds` mean is printed beside it as a check). Per page
also: the calls the console made to each service (their own request counters) and the time
those took (their histograms), and the database time they spent (`qms_db_*`).

Writes reports/bench-console.md and .json; asserts nothing (a benchmark, not a test).
Settings: CONSOLE_SIZE (10000), CONSOLE_REPS (40), CONSOLE_OPEN (600), CONSOLE_EVENT_HISTORY
(0; 1 also loads reporting's event history of every complaint), BENCH_YEARS (10).
"""

import asyncio
import json
import os
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import httpx  # noqa: E402
from bench import (  # noqa: E402
    CONFIG,
    Helpers,
    check_infra,
    cleanup,
    machine,
    months,
    pids_of,
    record_templates,
    say,
    service_env,
)
from benchkit import load, measure, procs, profile, templates  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from pymongo import AsyncMongoClient  # noqa: E402

from services.reporting.settings import Settings as ReportingSettings  # noqa: E402
from shared.settings import InfraSettings  # noqa: E402
from tests.e2e.harness import SERVICES, Actors, System  # noqa: E402

SIZE = int(os.environ.get("CONSOLE_SIZE") or 10000)
REPS = int(os.environ.get("CONSOLE_REPS") or 40)
OPEN = int(os.environ.get("CONSOLE_OPEN") or 600)
HISTORY = bool(int(os.environ.get("CONSOLE_EVENT_HISTORY") or 0))
TARGET_MS = 150.0
TARGETED = ("Sales inbox", "quality board")  # the pages issue 10 sets the target for
REPORT = ROOT / "reports" / "bench-console.md"
LATENCY = "qms_http_request_seconds"
PEOPLE = {"sales": ("sales", "wang.fang", None), "quality": ("quality", "li.wei", None),
          "unit": ("unit", "liu.gang", "production"), "manager": ("manager", "chen.jie", None),
          "auditor": ("auditor", "zhou.yu", None)}


async def route_times(urls: dict[str, str]) -> dict[tuple[str, str], list[float]]:
    """(service, route) -> [requests, seconds] from each process's own latency histogram
    (/metrics itself left out)."""
    out: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    async with httpx.AsyncClient(timeout=10) as http:
        for service, url in urls.items():
            text = (await http.get(f"{url}/metrics")).text
            for family in text_string_to_metric_families(text):
                for s in family.samples:
                    route = s.labels.get("route", "")
                    if s.name in (f"{LATENCY}_count", f"{LATENCY}_sum") and route != "/metrics":
                        out[(service, route)][s.name.endswith("_sum")] += s.value
    return out


def calls(before: dict, after: dict, units: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The console's own mean server time per route, and per service the calls per page
    and the time they took (their server time)."""
    console: dict[str, Any] = {}
    services: dict[str, Any] = {}
    for (service, route), (n, s) in after.items():
        n0, s0 = before.get((service, route), (0.0, 0.0))
        if n - n0 <= 0:
            continue
        if service == "console":
            console[route] = round((s - s0) * 1000 / (n - n0), 1)
            continue
        entry = services.setdefault(service, {"calls": 0.0, "ms": 0.0, "routes": {}})
        entry["calls"] = round(entry["calls"] + (n - n0) / units, 2)
        entry["ms"] = round(entry["ms"] + (s - s0) * 1000 / units, 1)
        entry["routes"][route] = {"calls": round((n - n0) / units, 2),
                                  "ms": round((s - s0) * 1000 / units, 1)}
    return console, services


def summary(values: list[float]) -> dict[str, Any]:
    return {"n": len(values)} | {f"p{q}_ms": measure.pct(values, q) for q in (50, 95, 99)}


async def time_page(http: httpx.AsyncClient, path: str, urls: dict[str, str],
                    pids: dict[str, int]) -> dict[str, Any]:
    for _ in range(2):  # a first look (connections, templates compiled) is not the figure
        (await http.get(path)).raise_for_status()
    before, db_before = await route_times(urls), await profile.snapshot(urls, pids)
    ms = []
    for _ in range(REPS):
        started = time.perf_counter()
        resp = await http.get(path)
        ms.append((time.perf_counter() - started) * 1000)
        if resp.status_code != 200:
            raise RuntimeError(f"{path}: {resp.status_code} {resp.text[:300]}")
    after, db_after = await route_times(urls), await profile.snapshot(urls, pids)
    server, services = calls(before, after, REPS)
    db = profile.per_unit(db_before, db_after, REPS)["services"]
    for name, entry in services.items():
        entry["db_ms"] = db.get(name, {}).get("db_ms")
        entry["db_heaviest"] = db.get(name, {}).get("heaviest")
    return summary(ms) | {"server_mean_ms": next(iter(server.values()), None),
                          "services": services}


async def pick(system: System) -> dict[str, str]:
    """Ids the pages open: an open form waiting on a unit, a record ready for Sales, a unit's
    open request, and a complaint carried through now (its timeline is real events)."""
    actors = Actors(system)
    try:
        done = await templates.play(templates.KINDS[0], 90, actors)
        ready = measure_ok(await actors.sales.get("/feedback", params={
            "status": "quality_record_ready", "page_size": 1}))["items"][0]
        waiting = measure_ok(await actors.quality.get("/cases", params={
            "status": "awaiting_units", "page_size": 1}))["items"][0]
        async with actors.unit("production") as unit:
            action = measure_ok(await unit.get("/actions", params={
                "status": "requested", "page_size": 1}))["items"][0]
    finally:
        await actors.aclose()
    return {"ready": ready["id"], "case": waiting["id"], "action": action["id"],
            "closed": done["id"], "customer": templates.clone_customer(1, pooled=True)}


def measure_ok(resp: httpx.Response) -> Any:
    resp.raise_for_status()
    return resp.json()


def pages(ids: dict[str, str], month: str) -> list[tuple[str, str, str]]:
    """(label, person, path) of every main page, by role."""
    return [
        ("Sales inbox", "sales", "/sales"),
        ("feedback page (record to review)", "sales", f"/feedback/{ids['ready']}"),
        ("registration page", "sales", "/sales/new"),
        ("search (text)", "sales", "/search?q=mounting+boss&in=text"),
        ("search (customer)", "sales", f"/search?q={ids['customer']}&in=customer"),
        ("quality board", "quality", "/quality"),
        ("case page (awaiting units)", "quality", f"/cases/{ids['case']}"),
        ("CAPA list", "quality", "/capas"),
        ("unit's requests", "unit", "/unit"),
        ("request page", "unit", f"/actions/{ids['action']}"),
        ("monthly statistics", "manager", f"/manager?month={month}"),
        ("open work", "manager", "/manager/open"),
        ("audit timeline", "auditor", f"/audit/{ids['closed']}"),
    ]


async def run(client: AsyncMongoClient, prefix: str, env: dict[str, str], tz: ZoneInfo,
              namespaces: list[str]) -> dict[str, Any]:
    """The whole measurement in namespaces named after `prefix` (added to `namespaces`, so
    the caller's cleanup drops them)."""
    namespaces += [f"{prefix}ctpl", f"{prefix}c"]
    say(f"console: recording templates (namespace {prefix}ctpl)")
    recorded = await record_templates(client, f"{prefix}ctpl", env)
    await cleanup(client, [f"{prefix}ctpl"])
    ns = f"{prefix}c"
    clones = load.plan(recorded, SIZE, OPEN, CONFIG["years"])
    loaded = await load.load(client, ns, recorded, clones, SERVICES, tz=tz, with_history=HISTORY)
    n_open = sum(c.template.kind.is_open for c in clones)
    say(f"console: loaded {SIZE:,} complaints ({n_open} open) in {loaded.total_s}s")
    system = System(ns, env=env, services=(*SERVICES, "console"))
    system.env |= {f"QMS_CONSOLE_{s.upper()}_URL": system.url(s) for s in SERVICES}
    out: dict[str, Any] = {"size": SIZE, "open": n_open, "load_s": loaded.total_s,
                           "reps": REPS, "pages": {}}
    try:
        await system.start(deadline_s=900)
        out["settle_s"] = await procs.settle(pids_of(system), max_wait=900)
        ids = await pick(system)
        await templates.quiet(ns, procs.queues, timeout=300)
        await procs.settle(pids_of(system), max_wait=120)
        urls = {name: system.url(name) for name in system.services}
        month, _ = months(tz)
        clients = {who: httpx.AsyncClient(
            base_url=system.url("console"), timeout=60, headers={
                "X-Forwarded-Access-Token": system.token(role, sub, unit, name=sub),
                "Accept-Language": "zh-CN,zh;q=0.9"})
            for who, (role, sub, unit) in PEOPLE.items()}
        machine_before = procs.machine_cpu()
        try:
            for label, who, path in pages(ids, month):
                figures = await time_page(clients[who], path, urls, pids_of(system))
                out["pages"][label] = figures | {"role": who, "path": path}
                say(f"console: {label}: {line(figures)}")
        finally:
            for http in clients.values():
                await http.aclose()
        # Other work on the machine shows here (this run alone: about one core at most).
        out["machine_cpu_percent"] = procs.machine_cpu_since(machine_before)
    finally:
        await system.stop()
    return out


def line(f: dict[str, Any]) -> str:
    called = ", ".join(f"{s} {e['calls']:g}×/{e['ms']:g} ms" for s, e in f["services"].items())
    return (f"p50 {f['p50_ms']} p95 {f['p95_ms']} p99 {f['p99_ms']} ms "
            f"(server mean {f['server_mean_ms']} ms); calls: {called}")


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        "# The console's pages at {:,} complaints".format(result["size"]),
        "",
        f"`scripts/bench_console.py`, {result['started_at']}: {result['size']:,} complaints "
        f"loaded ({result['open']} open), {result['reps']} requests per page, one person at a "
        f"time, in Chinese. Machine: {m.get('cpu')}, {m.get('cores')} cores (shared with other "
        f"work), {m.get('memory_gb')} GB; FerretDB `{m.get('ferretdb', '?')}`.",
        "",
        f"The whole machine's CPU while the pages were timed: "
        f"{result.get('machine_cpu_percent')} % of one core (other work included).",
        "",
        "Wall time of a request to the console on loopback (ms); *server* is the console's own "
        "`qms_http_request_seconds` mean. *Calls* are the requests the console made to each "
        "service per page, with their server time and database time (ms per page).",
        "",
        "| page | role | p50 | p95 | p99 | server mean | calls per page (service: n, ms, db ms) "
        "| target p95 < 150 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, f in result["pages"].items():
        called = "; ".join(f"{s}: {e['calls']:g}, {e['ms']:g}, {e.get('db_ms')}"
                           for s, e in f["services"].items())
        target = ("" if label not in TARGETED else
                  "met" if (f["p95_ms"] or 1e9) < TARGET_MS else "**not met**")
        lines.append(f"| {label} (`{f['path']}`) | {f['role']} | {f['p50_ms']} | {f['p95_ms']} "
                     f"| {f['p99_ms']} | {f['server_mean_ms']} | {called} | {target} |")
    lines += ["", "Where the time of the targeted pages goes (database commands per page, "
              "the services' `qms_db_*`; a service's database time includes what it did "
              "meanwhile in the background):", ""]
    for label in TARGETED:
        for service, e in result["pages"].get(label, {}).get("services", {}).items():
            heavy = ", ".join(f"`{h['what']}` {h['commands']:g}× {h['db_ms']:g} ms"
                              for h in e.get("db_heaviest") or [])
            lines.append(f"- {label}, {service}: {heavy}")
    lines += ["", "Calls by route (per page: calls, ms):", ""]
    for label, f in result["pages"].items():
        routes = "; ".join(f"{s} `{r}` {e['calls']:g}×, {e['ms']:g} ms"
                           for s, se in f["services"].items() for r, e in se["routes"].items())
        lines.append(f"- {label}: {routes}")
    return "\n".join(lines) + "\n"


async def measure_pages(client: AsyncMongoClient, prefix: str, env: dict[str, str],
                        tz: ZoneInfo, namespaces: list[str]) -> dict[str, Any]:
    """`run`, with the machine's description; writes reports/bench-console.md and .json
    (also `make bench`'s phase `console`)."""
    result: dict[str, Any] = {"started_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                              "machine": machine()}
    result |= await run(client, prefix, env, tz, namespaces)
    REPORT.write_text(markdown(result))
    REPORT.with_suffix(".json").write_text(json.dumps(result, indent=1, default=str))
    return result


async def main() -> None:
    prefix = f"cons{uuid.uuid4().hex[:6]}"
    client = AsyncMongoClient(InfraSettings().mongo_url.get_secret_value(), tz_aware=True)
    await check_infra(client)
    tz = ZoneInfo(ReportingSettings().timezone)
    helpers = Helpers(f"{prefix}_bare")  # its SMTP sink: notify's mail goes somewhere
    namespaces = [prefix]
    try:
        await helpers.ready()
        result = await measure_pages(client, prefix, service_env(helpers.smtp_port), tz,
                                     namespaces)
    finally:
        helpers.stop()
        await cleanup(client, namespaces)
        await client.close()
    print(markdown(result))


if __name__ == "__main__":
    asyncio.run(main())
