"""`make bench`: the system's speed at 0, 10,000 and 100,000 complaints of history, side by
side with the machine's limits. Prints figures and targets; never fails on a target.

    .venv/bin/python scripts/bench.py          # or: make bench
    BENCH_SIZES=0,1000 BENCH_REPS=20 make bench   # a quick look

For each history size, in a fresh namespace (127.0.0.1 only):
1. load the history straight into the stores, in the shapes the services write: a few
   complaints are played through the real services once (a throw-away namespace) and
   their documents stamped N times with fresh ids and dates (benchkit/stamp.py);
   reporting's read models are folded from the stamped events with its own code;
2. start the five services (tests/e2e/harness.py `System`), wait until start-up work is
   done, note each service's RSS;
3. time every step of the procedure through the HTTP APIs, one user, BENCH_REPS complaints;
   one hop of the choreography against the raw bus round trip plus one indexed update;
   the list pages; the monthly table and a month's register export;
4. intake's registration rate at concurrency 1, 8, 32 against a bare FastAPI endpoint doing
   one insert into the same FerretDB;
5. let the backlog drain, then idle CPU of every process over BENCH_IDLE_S and RSS again.
Writes reports/bench.json and reports/bench.md; drops the namespaces' databases and deletes
their queues at the end.

Settings (environment): BENCH_SIZES (0,10000,100000), BENCH_REPS (40), BENCH_OPEN (300 open
complaints at most), BENCH_IDLE_S (30), BENCH_RATE_S (8 seconds per concurrency),
BENCH_EVENT_HISTORY (0; 1 also loads reporting's event history, ~14 documents a complaint:
no measured path reads it, and it more than doubles the load), BENCH_SKIP_OVER_S (60: a list
page that the previous size says would take longer than this is not run; its figure is the
extrapolation), BENCH_WARMUP_S (900: how long to wait, after the services start, for a
first escalation to reach Quality; the events flow once each relay's start-up sweep of its
store is done), BENCH_YEARS (10: the closed history is spread over this many past
years; lists cover a period, so what a page costs follows a period's volume: size/years),
BENCH_KEEP (0; 1 keeps the last namespace's databases and queues: the soak's, when it runs).

Then the soak (issue 12; benchkit/soak.py): on an empty history, SOAK_RATE (5) complaints a
second carried through for SOAK_SECONDS (600), the backlog and each process's RSS and CPU
every SOAK_INTERVAL_S (30); SOAK_DRAIN_S (300) to let what is in flight finish. BENCH_PHASES
(sizes,soak) chooses what runs: `BENCH_PHASES=soak make bench` runs the soak alone (its
report is then reports/bench.md and bench.json on their own).
`BENCH_PHASES=console` (not in the default): the console's pages at 10,000 complaints,
scripts/bench_console.py, which writes reports/bench-console.md.
"""

import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import bson  # noqa: E402
import httpx  # noqa: E402
from benchkit import (  # noqa: E402
    load,
    measure,
    procs,
    profile,
    report,
    soak,
    soak_report,
    stamp,
    templates,
)
from pymongo import AsyncMongoClient  # noqa: E402

from services.reporting.settings import Settings as ReportingSettings  # noqa: E402
from shared.settings import InfraSettings  # noqa: E402
from tests.e2e.harness import SERVICES, Actors, System, free_port  # noqa: E402

REPORTS = ROOT / "reports"
CONCURRENCY = (1, 8, 32)


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


CONFIG = {
    "sizes": [int(s) for s in os.environ.get("BENCH_SIZES", "0,10000,100000").split(",") if s],
    "reps": env_int("BENCH_REPS", 40),
    "open": env_int("BENCH_OPEN", 300),
    "idle_seconds": float(env_int("BENCH_IDLE_S", 30)),
    "rate_seconds": float(env_int("BENCH_RATE_S", 8)),
    "event_history": bool(env_int("BENCH_EVENT_HISTORY", 0)),
    "keep": bool(env_int("BENCH_KEEP", 0)),
    "skip_over_s": float(env_int("BENCH_SKIP_OVER_S", 60)),
    "warmup_s": float(env_int("BENCH_WARMUP_S", 900)),
    "years": env_int("BENCH_YEARS", 10),
    "phases": [p for p in os.environ.get("BENCH_PHASES", "sizes,soak").split(",") if p],
}


def say(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", flush=True)


def service_env(smtp_port: int) -> dict[str, str]:
    """The services' production settings (the harness's are tuned for tests), and an SMTP
    sink so notify's mail goes somewhere, as it does in a plant."""
    return {"QMS_RETRY_DELAY_MS": "2000", "QMS_MAX_ATTEMPTS": "5", "QMS_RELAY_INTERVAL_S": "1.0",
            "QMS_NOTIFY_SMTP_HOST": "127.0.0.1", "QMS_NOTIFY_SMTP_PORT": str(smtp_port)}


class Helpers:
    """The processes the bench starts besides the services: an SMTP sink, the bare app."""

    def __init__(self, bare_db: str):
        self.smtp_port, self.bare_port = free_port(), free_port()
        logs = REPORTS / "bench-logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.procs = [
            subprocess.Popen([sys.executable, "-m", "aiosmtpd", "-n", "-c",
                              "aiosmtpd.handlers.Sink", "-l", f"127.0.0.1:{self.smtp_port}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT),
            subprocess.Popen([sys.executable, str(ROOT / "scripts" / "benchkit" / "bare.py"),
                              "--port", str(self.bare_port), "--database", bare_db],
                             stdout=open(logs / "bare.log", "ab"),  # noqa: SIM115
                             stderr=subprocess.STDOUT)]

    async def ready(self) -> None:
        for port in (self.smtp_port, self.bare_port):
            for _ in range(100):
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError(f"helper on port {port} did not start")

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal"))
    info: dict[str, Any] = {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(mem / 2**20, 1),
                            "python": platform.python_version(), "kernel": platform.release()}
    pid = procs.infra_pids().get("ferretdb")
    if pid:
        info["ferretdb"] = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    try:
        info["rabbitmq"] = httpx.get(f"{procs.RABBIT_API}/overview", auth=procs.RABBIT_AUTH,
                                     timeout=5).json().get("rabbitmq_version")
    except (httpx.HTTPError, ValueError):
        pass
    return info


def git() -> dict[str, Any]:
    def run(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout
    return {"commit": run("rev-parse", "HEAD").strip() or "unknown",
            "dirty": bool(run("status", "--porcelain", "--untracked-files=no").strip())}


async def check_infra(client: AsyncMongoClient) -> None:
    try:
        await client.admin.command("ping")
        procs.queues("none")
    except Exception as exc:  # noqa: BLE001 - say what is missing and stop
        raise SystemExit(f"[bench] FerretDB or RabbitMQ (management API) not reachable: {exc}. "
                         "Start them: make infra") from exc


async def record_templates(client: AsyncMongoClient, namespace: str,
                           env: dict[str, str]) -> stamp.Recorded:
    system = System(namespace, env=env)
    try:
        await system.start(deadline_s=120)
        actors = Actors(system)
        try:
            played = await templates.play_all(actors)
        finally:
            await actors.aclose()
        await templates.quiet(namespace, procs.queues)
        await procs.settle(pids_of(system), max_wait=30)
    finally:
        await system.stop()
    return await stamp.record(client, namespace, SERVICES, played)


def pids_of(system: System) -> dict[str, int]:
    return {name: p.pid for name, p in system.procs.items()} | procs.infra_pids()


def rss(system: System) -> dict[str, float]:
    return {name: round(procs.rss_mb(p.pid), 1) for name, p in system.procs.items()}


def months(tz: ZoneInfo) -> tuple[str, str]:
    """Last month (a full month of history) and the month 11 before it."""
    first_of_this = datetime.now(tz).date().replace(day=1)
    last = first_of_this - timedelta(days=1)
    first = (last.replace(day=1) - timedelta(days=320)).replace(day=1)
    return last.strftime("%Y-%m"), first.strftime("%Y-%m")


async def measure_size(size: int, namespace: str, recorded: stamp.Recorded,
                       client: AsyncMongoClient, env: dict[str, str],
                       helpers: Helpers, tz: ZoneInfo,
                       expected: dict[str, float]) -> dict[str, Any]:
    out: dict[str, Any] = {"namespace": namespace}
    if size:
        clones = load.plan(recorded, size, CONFIG["open"], CONFIG["years"])
        say(f"{size}: loading {len(clones)} complaints "
            f"({sum(c.template.kind.is_open for c in clones)} open)")
        loaded = await load.load(client, namespace, recorded, clones, SERVICES, tz=tz,
                                 with_history=CONFIG["event_history"])
        out["load"] = vars(loaded)
        say(f"{size}: loaded {sum(loaded.documents.values()):,} documents in {loaded.total_s}s "
            f"{loaded.seconds}")
    system = System(namespace, env=env)
    people = None
    try:
        started = time.perf_counter()
        await system.start(deadline_s=900)
        out["start_s"] = round(time.perf_counter() - started, 1)
        # A first start on loaded stores does its one-time work (lookups, day lists, open
        # work reconciled: scans, minutes at 100,000): the steps are measured after it.
        out["settle_s"] = await procs.settle(pids_of(system), max_wait=900)
        say(f"{size}: services ready in {out['start_s']}s, settled after {out['settle_s']}s")
        rss_idle = rss(system)
        people = measure.People(system)
        warmup = CONFIG["warmup_s"]
        out["first_hop_s"] = await measure.first_hop(people, warmup)
        say(f"{size}: first escalation readable at Quality after {out['first_hop_s']}s "
            f"(None: not within {warmup:.0f}s)")
        out |= await measure_all(size, namespace, system, people, client, helpers, tz,
                                 recorded, expected)
        say(f"{size}: draining, then {CONFIG['idle_seconds']:.0f}s of idle CPU")
        try:
            await templates.quiet(namespace, procs.queues, timeout=300)
        except AssertionError as exc:
            out["drain_error"] = str(exc)
        out["drain_settle_s"] = await procs.settle(pids_of(system), max_wait=90)
        machine_before = procs.machine_cpu()
        out["idle_cpu"] = {"seconds": CONFIG["idle_seconds"], "percent": await asyncio.to_thread(
            procs.cpu_percent, pids_of(system), CONFIG["idle_seconds"])}
        # What the whole machine used meanwhile: other work on it shows here (and in FerretDB
        # and RabbitMQ, which they may share).
        out["idle_cpu"]["machine_percent"] = procs.machine_cpu_since(machine_before)
        after = rss(system)
        out["rss_mb"] = {n: {"idle": rss_idle[n], "after_load": after[n]} for n in rss_idle}
    finally:
        if people is not None:
            await people.aclose()
        await system.stop()
    return out


async def measure_all(size: int, namespace: str, system: System, people: measure.People,
                      client: AsyncMongoClient, helpers: Helpers, tz: ZoneInfo,
                      recorded: stamp.Recorded, expected: dict[str, float]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    reps = CONFIG["reps"]
    amqp = InfraSettings().amqp_url.get_secret_value()
    bus = await measure.bus_round_trip(amqp, namespace, 200)
    shape = bson.decode(recorded.templates[0].docs["intake"]["feedback"][0].raw)
    update = await measure.indexed_update(client, f"{namespace}_bench", 200, shape)
    say(f"{size}: procedure, {reps} complaints carried through")
    samples, hops = measure.Samples(), []
    urls = {name: system.url(name) for name in system.services}
    before = await profile.snapshot(urls, pids_of(system))
    t0 = time.perf_counter()
    out["completed"] = await measure.procedure(people, samples, hops, reps)
    out["procedure_s"] = round(time.perf_counter() - t0, 1)
    await templates.quiet(namespace, procs.queues, timeout=120)
    out["profile"] = {"a complaint carried through": profile.per_unit(
        before, await profile.snapshot(urls, pids_of(system)), out["completed"])}
    month, first = months(tz)
    say(f"{size}: list pages")
    await measure.reads(people, samples, measure.list_pages(month), reps, budget_s=20,
                        expected=expected, skip_over_s=CONFIG["skip_over_s"])
    out["steps"] = samples.report()
    hop, bus_s, upd_s = measure.summary(hops), measure.summary(bus), measure.summary(update)
    out["hop"] = {"hop": hop, "bus": bus_s, "update": upd_s,
                  "limit_p99_ms": round(bus_s["p99_ms"] + upd_s["p99_ms"], 2)}
    say(f"{size}: reports of {month}")
    rep = measure.Samples()
    for label, path in measure.reports(month, first):
        await measure.reads(people, rep, [(label, "manager", path)], 5, budget_s=60)
    out["reports"] = rep.report()
    out["month"] = month
    out["intake"], out["bare"] = [], []
    token = {"Authorization": f"Bearer {system.token('sales', 'bench.rate')}"}
    say(f"{size}: what a registration costs each process")
    before = await profile.snapshot(urls, pids_of(system))
    registered = await measure.register_many(system.url("intake"), token, 200, 8)
    await templates.quiet(namespace, procs.queues, timeout=120)
    out["profile"]["a registration"] = profile.per_unit(
        before, await profile.snapshot(urls, pids_of(system)), registered)
    for c in CONCURRENCY:
        say(f"{size}: registration rate at concurrency {c}")
        out["intake"].append(await measure.throughput(system.url("intake"), token, c,
                                                      CONFIG["rate_seconds"]))
        out["bare"].append(await measure.throughput(f"http://127.0.0.1:{helpers.bare_port}",
                                                    {}, c, CONFIG["rate_seconds"]))
    return out


async def cleanup(client: AsyncMongoClient, namespaces: list[str]) -> None:
    names = await client.list_database_names()
    for ns in namespaces:
        for db in names:
            if db.startswith(f"{ns}_"):
                await client.drop_database(db)
        try:
            await asyncio.to_thread(procs.delete_broker_objects, ns)
        except httpx.HTTPError as exc:
            say(f"could not delete {ns}'s queues ({exc}); delete them by hand")
        shutil.rmtree(ROOT / "var" / "test-attachments" / ns, ignore_errors=True)


async def main() -> str:
    began = time.perf_counter()
    run = uuid.uuid4().hex[:6]
    prefix = f"bench{run}"
    client = AsyncMongoClient(InfraSettings().mongo_url.get_secret_value(), tz_aware=True)
    await check_infra(client)
    tz = ZoneInfo(ReportingSettings().timezone)
    helpers = Helpers(f"{prefix}_bare")
    result: dict[str, Any] = {"started_at": datetime.now(UTC).isoformat(timespec="seconds"),
                              "config": CONFIG, "machine": machine(), "git": git(),
                              "runs": {}}
    namespaces = [f"{prefix}tpl", prefix]  # `prefix` holds the bare endpoint's database
    try:
        await helpers.ready()
        env = service_env(helpers.smtp_port)
        if "sizes" in CONFIG["phases"]:
            await sizes(client, prefix, env, helpers, tz, result, namespaces, began)
        if "soak" in CONFIG["phases"]:
            namespaces.append(f"{prefix}soak")
            result["soak"] = await measure_soak(f"{prefix}soak", client, env)
            write(result, began)
        if "console" in CONFIG["phases"]:  # optional: the console's pages at 10,000
            import bench_console  # noqa: PLC0415 - it imports this module
            result["console"] = await bench_console.measure_pages(client, prefix, env, tz,
                                                                  namespaces)
    finally:
        helpers.stop()
        keep = namespaces[-1:] if CONFIG["keep"] else []
        await cleanup(client, [ns for ns in namespaces if ns not in keep])
        await client.close()
    return write(result, began)


async def sizes(client: AsyncMongoClient, prefix: str, env: dict[str, str], helpers: Helpers,
                tz: ZoneInfo, result: dict[str, Any], namespaces: list[str],
                began: float) -> None:
    """The history sizes, one namespace each (templates recorded first)."""
    say(f"recording templates (namespace {prefix}tpl)")
    recorded = await record_templates(client, f"{prefix}tpl", env)
    result["templates"] = {"kinds": [t.kind.name for t in recorded.templates],
                           "documents_per_complaint": recorded.docs_per_complaint(),
                           "shared_documents": sum(len(d) for c in recorded.shared.values()
                                                   for d in c.values()),
                           "documents_owned_by_several": recorded.skipped}
    say(f"templates: {result['templates']}")
    await cleanup(client, [f"{prefix}tpl"])
    previous: tuple[int, dict] = (0, {})
    for size in sorted(CONFIG["sizes"]):
        ns = f"{prefix}n{size}"
        namespaces.append(ns)
        expected = measure.extrapolate(previous[1], previous[0], size)
        run = await measure_size(size, ns, recorded, client, env, helpers, tz, expected)
        result["runs"][str(size)] = run
        previous = (size, run["steps"])
        write(result, began)  # so far: a run cut short still leaves its figures
        if not (CONFIG["keep"] and size == CONFIG["sizes"][-1]):
            await cleanup(client, [ns])


async def measure_soak(namespace: str, client: AsyncMongoClient,
                       env: dict[str, str]) -> dict[str, Any]:
    """The soak in a fresh namespace: start, wait until the events flow, then drive it."""
    settings = soak.Settings.from_env()
    say(f"soak: {settings.rate:g} complaints/s for {settings.seconds:g} s "
        f"(namespace {namespace})")
    system = System(namespace, env=env)
    try:
        await system.start(deadline_s=120)
        await procs.settle(pids_of(system), max_wait=120)
        people = measure.People(system)
        try:
            first = await measure.first_hop(people, CONFIG["warmup_s"])
        finally:
            await people.aclose()
        say(f"soak: first escalation readable at Quality after {first}s; load starts")
        print(soak_report.HEADER, flush=True)
        out = await soak.run(system, client, settings, say,
                             lambda row: print(soak_report.line(row), flush=True))
    finally:
        await system.stop()
    out["targets"] = soak_report.targets(out)
    for t in out["targets"]:
        say(f"soak: {t['target']}: {t['figure']} ({'met' if t['met'] else 'NOT MET'})")
    return out


def write(result: dict[str, Any], began: float) -> str:
    """reports/bench.json and reports/bench.md from what has been measured so far."""
    result["duration_s"] = round(time.perf_counter() - began, 1)
    result["targets"] = report.targets(result) if result["runs"] else []
    REPORTS.mkdir(exist_ok=True)
    (REPORTS / "bench.json").write_text(json.dumps(result, indent=2, default=str))
    text = report.markdown(result) if result["runs"] else \
        soak_report.heading(result) if "soak" in result else ""
    if "soak" in result:
        text += "\n".join(soak_report.markdown(result["soak"])) + "\n"
    (REPORTS / "bench.md").write_text(text)
    return text


async def run_main() -> str:
    """`main`, cancelled (its cleanup still runs) on SIGTERM as on Ctrl-C."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await main()


if __name__ == "__main__":
    print(asyncio.run(run_main()))
    say("wrote reports/bench.json and reports/bench.md")
