"""Processes as the kernel sees them (CPU ticks, RSS), and the broker as its HTTP API does.

Reads /proc only; never signals a process it did not start."""

import os
import time
from pathlib import Path
from urllib.parse import quote

import httpx

TICKS = os.sysconf("SC_CLK_TCK")
RABBIT_API = "http://127.0.0.1:15672/api"
RABBIT_AUTH = ("guest", "guest")  # loopback only, as the README says


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process so far (fields 14 and 15 of /proc/<pid>/stat); 0 once it
    is gone (e.g. someone restarted the broker meanwhile)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()  # the name may hold spaces: skip past it
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def infra_pids() -> dict[str, int]:
    """FerretDB (the one on 27017) and RabbitMQ's beam.smp, found by their command lines."""
    found: dict[str, int] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        cmd = _cmdline(pid)
        if "ferretdb" in cmd and "127.0.0.1:27017" in cmd:
            found["ferretdb"] = int(pid)
        elif "beam.smp" in cmd and "rabbit" in cmd:
            found["rabbitmq (beam.smp)"] = int(pid)
    return found


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs so far (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def machine_cpu_since(before: tuple[float, float]) -> float:
    """The whole machine's CPU since `before`, in % of one core."""
    busy, total = machine_cpu()
    share = (busy - before[0]) / max(1, total - before[1])
    return round(100 * share * (os.cpu_count() or 1), 1)


def cpu_percent(pids: dict[str, int], seconds: float) -> dict[str, float]:
    """Each process's CPU over `seconds`, in % of one core."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started = time.monotonic()
    time.sleep(seconds)
    spent = time.monotonic() - started
    return {name: round(max(0.0, 100 * (cpu_seconds(pid) - before[name]) / spent), 2)
            for name, pid in pids.items()}


async def settle(pids: dict[str, int], *, below: float = 15.0, window: float = 2.0,
                 max_wait: float = 120.0) -> float:
    """Wait until these processes together use less than `below` % of a core over `window`
    seconds (start-up work, backlogs done); gives up after `max_wait`. Returns the wait."""
    import asyncio
    started = time.monotonic()
    while time.monotonic() - started < max_wait:
        before = {n: cpu_seconds(p) for n, p in pids.items()}
        t0 = time.monotonic()
        await asyncio.sleep(window)
        used = sum(cpu_seconds(p) - before[n] for n, p in pids.items())
        if 100 * used / (time.monotonic() - t0) < below:
            break
    return round(time.monotonic() - started, 1)


def queues(namespace: str) -> dict[str, int]:
    """The namespace's queues and the messages in each (ready + unacked)."""
    resp = httpx.get(f"{RABBIT_API}/queues", auth=RABBIT_AUTH, timeout=10,
                     params={"columns": "name,messages"})
    resp.raise_for_status()
    return {q["name"]: q.get("messages") or 0 for q in resp.json()
            if q["name"].startswith(f"{namespace}.")}


def queue_stats(namespace: str) -> dict[str, dict[str, float]]:
    """The namespace's queues: messages ready, unacked, and the rate the consumers ack
    (per second, RabbitMQ's own 5 s average; 0 without recent traffic)."""
    resp = httpx.get(f"{RABBIT_API}/queues", auth=RABBIT_AUTH, timeout=10, params={
        "columns": "name,messages_ready,messages_unacknowledged,message_stats"})
    resp.raise_for_status()
    return {q["name"]: {"ready": q.get("messages_ready") or 0,
                        "unacked": q.get("messages_unacknowledged") or 0,
                        "ack_rate": ((q.get("message_stats") or {}).get("ack_details") or {})
                        .get("rate") or 0.0}
            for q in resp.json() if q["name"].startswith(f"{namespace}.")}


def delete_broker_objects(namespace: str) -> int:
    """Delete the namespace's queues and exchanges (the services declared them durable)."""
    deleted = 0
    for kind in ("queues", "exchanges"):
        resp = httpx.get(f"{RABBIT_API}/{kind}", auth=RABBIT_AUTH, timeout=10,
                         params={"columns": "name,vhost"})
        resp.raise_for_status()
        for obj in resp.json():
            if obj["name"].startswith(f"{namespace}."):
                url = f"{RABBIT_API}/{kind}/{quote(obj['vhost'], safe='')}/" \
                      f"{quote(obj['name'], safe='')}"
                httpx.delete(url, auth=RABBIT_AUTH, timeout=10)
                deleted += 1
    return deleted
