"""The soak's targets (issue 12), its row as printed while it runs, and its Markdown."""

from typing import Any

from benchkit.report import _ms
from benchkit.soak import FLOWS

BACKLOG_S = 5.0
RSS_GROWTH = 0.10
SERVICES = ("intake", "quality", "capa", "reporting", "notify")

HEADER = (f"{'t s':>5} {'phase':<5} {'started':>7} {'answered':>8} {'/s':>5} {'in flight':>9} "
          f"| {'outbox':>6} {'oldest s':>8} | {'broker':>6} {'dead':>4} {'est s':>5} "
          f"| {'waited s':>8} {'waiting s':>9} | {'backlog s':>9} {'outbox of':<9} | RSS MB "
          + " ".join(f"{s:>9}" for s in SERVICES))


def _s(value: float | None, stalled: str = "–") -> str:
    return stalled if value is None else f"{value:.1f}"


def heading(result: dict[str, Any]) -> str:
    """The report's first lines when the soak ran alone."""
    m = result["machine"]
    dirty = " (with local changes)" if result["git"]["dirty"] else ""
    return (f"# `make bench` (the soak alone): {result['started_at']}, commit "
            f"{result['git']['commit'][:10]}{dirty}"
            f"\n\n{m['cpu']} × {m['cores']} cores, {m['memory_gb']} GB, Python {m['python']}, "
            f"RabbitMQ {m.get('rabbitmq', '?')}, FerretDB `{m.get('ferretdb', '?')}`.\n")


def line(row: dict[str, Any]) -> str:
    """One row as the soak prints it every interval."""
    o, b = row["outbox"], row["broker"]
    return (f"{row['t_s']:>5} {row['phase']:<5} {row['started']:>7} {row['answered']:>8} "
            f"{row['answered_per_s']:>5.2f} {row['in_flight']:>9} "
            f"| {o['marks']:>6} {_s(o['oldest_s']):>8} "
            f"| {_count(b):>6} {b['dead']:>4} {_s(b['wait_s'], 'stall'):>5} "
            f"| {_s(row['longest_wait_s']):>8} {_s(row['oldest_open_wait_s']):>9} "
            f"| {_s(row['backlog_s'], 'stall'):>9} {o['service'] or '':<9} | "
            + " ".join(f"{row['rss_mb'].get(s, 0):>9.1f}" for s in SERVICES))


def targets(soak: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with its figure and whether it is met."""
    load = [r for r in soak["rows"] if r["phase"] == "load"]
    out: list[dict[str, Any]] = []

    def add(name: str, figure: str, met: bool) -> None:
        out.append({"target": name, "figure": figure, "met": bool(met)})

    if not load:
        return out
    backlogs = [r["backlog_s"] for r in load]
    worst = None if None in backlogs else max(backlogs)
    add(f"backlog < {BACKLOG_S:.0f} s throughout the load "
        f"(every {soak['settings']['interval_s']:.0f} s)",
        "stalled: messages ready, nobody acking" if worst is None else f"at most {worst:.1f} s",
        worst is not None and worst < BACKLOG_S)
    first, last = load[0]["rss_mb"], load[-1]["rss_mb"]
    for service in SERVICES:
        if not first.get(service):
            continue
        growth = last[service] / first[service] - 1
        add(f"{service}: RSS growth <= {RSS_GROWTH:.0%} (first row of the load → last)",
            f"{first[service]:.0f} → {last[service]:.0f} MB ({growth:+.1%})",
            growth <= RSS_GROWTH)
    lost = sum(soak["failed"].values()) + soak["cut_short"]
    add("every complaint started is answered (none failed, none cut short)",
        f"{soak['answered']} of {soak['started']} answered"
        + (f"; failed at {soak['failed']}" if soak["failed"] else "")
        + (f"; {soak['cut_short']} still in flight at the end" if soak["cut_short"] else "")
        + (f"; {soak['skipped']} arrivals skipped (too many in flight)" if soak["skipped"]
           else ""),
        not lost and not soak["skipped"] and soak["answered"] == soak["started"])
    dead = max((r["broker"]["dead"] for r in soak["rows"] if r["broker"].get("seen", True)),
               default=0)
    add("nothing dead-lettered", f"{dead} in the dead-letter queues", dead == 0)
    return out


def markdown(soak: dict[str, Any]) -> list[str]:
    st = soak["settings"]
    drained = soak["drained_after_load_s"]
    lines = [
        "", f"## Soak: {st['rate']:g} complaints/s for {st['seconds'] / 60:g} min",
        "",
        f"Each complaint, started at a fixed rate, {FLOWS[st.get('flow', 'whole')]}, each step "
        "as soon as the previous one shows. Every "
        f"{st['interval_s']:g} s: *outbox*, saves whose events are not published yet (all "
        "services' `outbox_due` marks) and the oldest one's age; *broker*, messages ready or "
        "unacked in the namespace's queues (retry queues included), in the dead-letter queues, "
        "and the longest consumed queue's ready / ack rate (RabbitMQ does not give a quorum "
        "queue's head age); *waited* / *waiting*, the longest a person waited for an event's "
        "effect to show (from the answer of the request that saved it; polled every "
        f"max(0.1 s, people waiting / {st.get('polls_per_s', 20):g}), so late by at most that) "
        "in that row, and the oldest wait still open. *Backlog* = the largest of these "
        "ages: the oldest pending event as far as it shows.",
        "",
        "| t s | phase | started | answered | answered/s | in flight | outbox | oldest s | "
        "broker | dead | est s | waited s | waiting s | backlog s | "
        + " | ".join(f"{s} MB" for s in SERVICES) + " |",
        "|" + "---|" * (14 + len(SERVICES)),
    ]
    for r in soak["rows"]:
        o, b = r["outbox"], r["broker"]
        lines.append(
            f"| {r['t_s']} | {r['phase']} | {r['started']} | {r['answered']} | "
            f"{r['answered_per_s']:.2f} | {r['in_flight']} | {o['marks']} | "
            f"{_s(o['oldest_s'])}{_where(o['service'])} | "
            f"{_count(b)} | {b['dead']} | {_s(b['wait_s'], 'stalled')} | "
            f"{_s(r['longest_wait_s'])} | {_s(r['oldest_open_wait_s'])} | "
            f"{_s(r['backlog_s'], 'stalled')} | "
            + " | ".join(f"{r['rss_mb'].get(s, 0):.0f}" for s in SERVICES) + " |")
    after = f"drained {drained} s after the load ended" if drained is not None else \
        f"not drained within {st['drain_s']:g} s after the load"
    lines += ["", f"Everything in flight {after}. RSS before the load (MB): "
              + ", ".join(f"{n} {v:.0f}" for n, v in soak["rss_before_mb"].items()) + ".",
              "", "| waited for (ms) | n | p50 | p99 | max |", "|---|---|---|---|---|"]
    for what, w in soak["waits"].items():
        lines.append(f"| {what} | {w['n']} | {_ms(w['p50_ms'])} | {_ms(w['p99_ms'])} | "
                     f"{_ms(w['max_ms'])} |")
    lines += ["", "| request (ms) | n | p50 | p99 | max | failed |", "|---|---|---|---|---|---|"]
    for step, x in soak["steps"].items():
        lines.append(f"| {step} | {x['n']} | {_ms(x['p50_ms'])} | {_ms(x['p99_ms'])} | "
                     f"{_ms(x['max_ms'])} | {x.get('failed', '')} |")
    cpu = _mean_cpu(soak["rows"])
    lines += ["", "CPU during the load (mean, % of one core): "
              + ", ".join(f"{n} {v:.0f}" for n, v in cpu.items()) + ".",
              "", "| soak target | figure | |", "|---|---|---|"]
    for t in soak["targets"]:
        lines.append(f"| {t['target']} | {t['figure']} | {'met' if t['met'] else '**not met**'} |")
    return lines


def _count(broker: dict[str, Any]) -> str:
    return str(broker["ready"] + broker["unacked"]) if broker.get("seen", True) else "?"


def _where(service: str | None) -> str:
    return f" ({service})" if service else ""


def _mean_cpu(rows: list[dict[str, Any]]) -> dict[str, float]:
    load = [r["cpu"] for r in rows if r["phase"] == "load"]
    names = list(dict.fromkeys(n for c in load for n in c))
    return {n: sum(c.get(n, 0) for c in load) / len(load) for n in names} if load else {}
