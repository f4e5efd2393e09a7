"""The faults, one at a time: kill -9 of each service (the supervisor starts it again), the
broker's application stopped and started, FerretDB killed with kill -9 and started again.

`apply` returns when the fault is over: (when it ended, when every service answered ready
again), both monotonic. A server fault always restores its server, whatever fails."""

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from tests.faults import servers
from tests.faults.supervised import SupervisedSystem, alive
from tests.support import eventually

BROKER_DOWN_S = 5.0  # long enough that every service loses its connections and publishes fail
FERRETDB_DOWN_S = 2.0  # short: the database is shared with whatever else runs on the machine


@dataclass
class Fault:
    name: str
    apply: Callable[[], Awaitable[tuple[float, float]]]
    skip: str | None = None  # why it cannot run here


async def all_ready(system: SupervisedSystem, timeout: float = 180) -> float:
    async def ready() -> bool:
        async with httpx.AsyncClient(timeout=5) as http:
            for name in system.services:
                try:
                    if (await http.get(f"{system.url(name)}/readyz")).status_code != 200:
                        return False
                except httpx.HTTPError:
                    return False
        return True
    await eventually(ready, timeout=timeout, interval=0.3, what="every service ready again")
    return time.monotonic()


def kill_service(system: SupervisedSystem, name: str) -> Fault:
    async def apply() -> tuple[float, float]:
        pid = system.kill(name)
        ended = time.monotonic()
        await system.back(name, pid)
        return ended, await all_ready(system)
    return Fault(f"kill -9 {name}", apply)


def server_fault(system: SupervisedSystem, name: str, take_down: Callable[[], object],
                 down_s: float, bring_back: Callable[[], object], skip: str | None) -> Fault:
    """A server taken down (in a thread: the commands block) for `down_s`, then brought back
    whatever happened meanwhile."""
    async def apply() -> tuple[float, float]:
        try:
            await asyncio.to_thread(take_down)
            await asyncio.sleep(down_s)
        finally:
            await asyncio.to_thread(bring_back)
        return time.monotonic(), await all_ready(system)
    return Fault(name, apply, skip)


def stop_broker(system: SupervisedSystem) -> Fault:
    return server_fault(
        system, f"rabbitmqctl stop_app, {BROKER_DOWN_S:.0f} s, start_app",
        servers.stop_broker_app, BROKER_DOWN_S, servers.start_broker_app,
        None if servers.broker_running() else "rabbitmqctl cannot reach a running broker")


def kill_ferretdb(system: SupervisedSystem) -> Fault:
    def kill_and_wait() -> None:
        pid = servers.kill_ferretdb()
        deadline = time.monotonic() + 30
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    return server_fault(
        system, f"kill -9 FerretDB, {FERRETDB_DOWN_S:.0f} s, start", kill_and_wait,
        FERRETDB_DOWN_S, servers.start_ferretdb,
        None if servers.ferretdb_pid() else "no FerretDB run by scripts/infra.sh")


def all_faults(system: SupervisedSystem) -> list[Fault]:
    """Every fault, or those QMS_FAULTS names (e.g. `intake,broker,ferretdb`)."""
    faults = {name: kill_service(system, name) for name in system.services}
    faults |= {"broker": stop_broker(system), "ferretdb": kill_ferretdb(system)}
    chosen = [n.strip() for n in os.environ.get("QMS_FAULTS", "").split(",") if n.strip()]
    unknown = set(chosen) - set(faults)
    assert not unknown, f"QMS_FAULTS names unknown faults {sorted(unknown)}; use {list(faults)}"
    return [faults[n] for n in chosen] if chosen else list(faults.values())


def restore_servers(ferretdb: bool, broker: bool) -> None:
    """Whatever happened: FerretDB and the broker's application running again (those this
    run may have taken down)."""
    if ferretdb and servers.ferretdb_pid() is None:
        servers.start_ferretdb()
    if broker and not servers.broker_running():
        servers.start_broker_app()
