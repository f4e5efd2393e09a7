"""Where the time goes: database commands, database time and CPU per unit of work.

Each service counts the commands it sends (`qms_db_commands_total`,
`qms_db_command_seconds_total`, by collection and command: `shared.dbmetrics`); the
kernel counts every process's CPU (`procs.cpu_seconds`). A snapshot before and after some
work, divided by the units of work done (registrations, complaints carried through), says
what one unit costs each process, and which collections the database time goes to: the
profile issue 9 asks for where a target is not met.
"""

from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from benchkit import procs

COMMANDS, SECONDS = "qms_db_commands_total", "qms_db_command_seconds_total"


@dataclass
class Snapshot:
    # service -> (collection, command) -> [commands, seconds]
    db: dict[str, dict[tuple[str, str], list[float]]] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # process -> CPU seconds so far


async def snapshot(urls: dict[str, str], pids: dict[str, int]) -> Snapshot:
    """Every service's database counters (its /metrics) and every process's CPU."""
    snap = Snapshot(cpu={name: procs.cpu_seconds(pid) for name, pid in pids.items()})
    async with httpx.AsyncClient(timeout=10) as http:
        for service, url in urls.items():
            text = (await http.get(f"{url}/metrics")).text
            counts: dict[tuple[str, str], list[float]] = {}
            for family in text_string_to_metric_families(text):
                for s in family.samples:
                    if s.name in (COMMANDS, SECONDS):
                        entry = counts.setdefault((s.labels["collection"], s.labels["command"]),
                                                  [0.0, 0.0])
                        entry[0 if s.name == COMMANDS else 1] += s.value
            snap.db[service] = counts
    return snap


def per_unit(before: Snapshot, after: Snapshot, units: int, top: int = 4) -> dict[str, Any]:
    """What one unit of work cost: per service its commands, database ms and CPU ms, with
    the collections that took most database time; per other process its CPU ms."""
    units = max(units, 1)
    services: dict[str, Any] = {}
    for service, counts in after.db.items():
        old = before.db.get(service, {})
        diffs = {key: (n - old.get(key, [0, 0])[0], s - old.get(key, [0, 0])[1])
                 for key, (n, s) in counts.items()}
        diffs = {k: v for k, v in diffs.items() if v[0] > 0}
        heaviest = sorted(diffs.items(), key=lambda kv: -kv[1][1])[:top]
        services[service] = {
            "commands": round(sum(n for n, _ in diffs.values()) / units, 1),
            "db_ms": round(sum(s for _, s in diffs.values()) * 1000 / units, 1),
            "cpu_ms": round((after.cpu.get(service, 0) - before.cpu.get(service, 0))
                            * 1000 / units, 1),
            "heaviest": [{"what": f"{coll}.{cmd}", "commands": round(n / units, 2),
                          "db_ms": round(s * 1000 / units, 1)} for (coll, cmd), (n, s) in heaviest],
        }
    others = {name: round((after.cpu[name] - before.cpu.get(name, 0)) * 1000 / units, 1)
              for name in after.cpu if name not in after.db}
    return {"units": units, "services": services, "other_cpu_ms": others}
