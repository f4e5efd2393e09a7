"""The fault table: printed, and kept as reports/faults.md and reports/faults.json."""

import json
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from tests.e2e.harness import ROOT

REPORTS = ROOT / "reports"


@dataclass
class Row:
    fault: str
    offered: int = 0  # complaints offered while this fault was under way
    acknowledged: int = 0  # of which intake acknowledged the registration (2xx)
    abandoned: int = 0  # stories whose client gave up (patience run out) on some step
    lost: int = 0
    duplicated: int = 0
    dead_lettered: int = 0
    restarts: int = 0  # service exits the supervisor saw (and restarted)
    down_s: float | None = None  # from the fault to the service/server answering again
    catch_up_s: float | None = None  # from the fault's end to every acknowledgement seen
    clients_saw: dict[str, int] = field(default_factory=dict)  # 5xx / connection failures
    note: str = ""


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def markdown(rows: list[Row], context: dict[str, Any]) -> str:
    lines = [
        "# Fault injection under load (tests/faults)",
        "",
        f"{context['when']}, commit {context['commit']}, load {context['rate']} complaints/s "
        f"(every 2nd escalated, every 4th assigned to a unit), catch-up limit "
        f"{context['limit_s']:.0f} s.",
        "",
        "| fault | load: offered / acknowledged | lost | duplicated | dead-lettered "
        "| down s | catch-up s | restarts | clients saw |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        saw = ", ".join(f"{k} x{v}" for k, v in sorted(r.clients_saw.items())) or "-"
        note = f" ({r.note})" if r.note else ""
        lines.append(f"| {r.fault}{note} | {r.offered} / {r.acknowledged}"
                     f"{f' ({r.abandoned} abandoned)' if r.abandoned else ''} | {r.lost} "
                     f"| {r.duplicated} | {r.dead_lettered} | {_s(r.down_s)} "
                     f"| {_s(r.catch_up_s)} | {r.restarts} | {saw} |")
    lines += ["", "*down s*: from the fault until every service answered ready again; "
              "*catch-up s*: from the end of the fault (the kill; the server started again) "
              "until everything acknowledged before it had reached reporting and notify, "
              "while the load goes on; on the last line, from the end of the last fault until "
              "the whole backlog had drained (every story complete downstream, every queue "
              "and outbox empty); *restarts*: service exits the supervisor saw and restarted; "
              "*clients saw*: answers the load's clients retried (same request, same "
              "Idempotency-Key).", ""]
    if context.get("interrupted"):
        lines += [f"**Interrupted**: {context['interrupted']}", ""]
    if context.get("findings"):
        lines += ["## Findings", ""] + [f"- {f}" for f in context["findings"]] + [""]
    return "\n".join(lines)


def write(rows: list[Row], context: dict[str, Any]) -> str:
    context = {"when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
               "commit": _commit()} | context
    text = markdown(rows, context)
    REPORTS.mkdir(exist_ok=True)
    (REPORTS / "faults.md").write_text(text)
    (REPORTS / "faults.json").write_text(json.dumps(
        context | {"rows": [asdict(r) for r in rows]}, indent=2, ensure_ascii=False))
    return text


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
