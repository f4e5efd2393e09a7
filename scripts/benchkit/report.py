"""The targets of issue 9, judged on the figures, and the Markdown the README can quote."""

from typing import Any

STEP_P99_MS = 100.0
STEP_GROWTH = 1.5
INTAKE_SHARE = 0.5
HOP_FACTOR = 3.0
TABLE_S = 1.0
EXPORT_S = 2.0
IDLE_CPU = 5.0
RSS_MB = 150.0


def _size(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def _ms(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with its figure and whether it is met (at the largest size)."""
    runs = result["runs"]
    sizes = sorted(int(s) for s in runs)
    big, small = runs[str(sizes[-1])], runs[str(sizes[0])]
    out: list[dict[str, Any]] = []

    def add(name: str, figure: str, met: bool | None) -> None:
        out.append({"target": name, "figure": figure,
                    "met": None if met is None else bool(met)})

    for step, stats in big["steps"].items():
        p99, base = stats.get("p99_ms"), small["steps"].get(step, {}).get("p99_ms")
        if stats.get("skipped"):
            add(f"{step}: p99 < {STEP_P99_MS:.0f} ms at {_size(sizes[-1])}",
                f"not run: ~{stats['expected_s']:,.0f} s expected from the smaller history",
                False)
            continue
        if p99 is None:
            add(f"{step}: p99 < {STEP_P99_MS:.0f} ms at {_size(sizes[-1])}", "no samples", False)
            continue
        growth = p99 / base if base else None
        figure = f"p99 {_ms(p99)} ms" + (f" ({growth:.2f}x of {_ms(base)} ms at "
                                         f"{_size(sizes[0])})" if growth else "")
        add(f"{step}: p99 < {STEP_P99_MS:.0f} ms and <= {STEP_GROWTH}x its p99 at "
            f"{_size(sizes[0])}", figure,
            p99 < STEP_P99_MS and (growth is None or growth <= STEP_GROWTH))
    intake = {t["concurrency"]: t for t in big.get("intake", [])}
    bare = {t["concurrency"]: t for t in big.get("bare", [])}
    if 32 in intake and 32 in bare and bare[32]["rate_per_s"]:
        share = intake[32]["rate_per_s"] / bare[32]["rate_per_s"]
        add(f"intake at concurrency 32 >= {INTAKE_SHARE:.0%} of the bare endpoint's rate",
            f"{intake[32]['rate_per_s']} / {bare[32]['rate_per_s']} req/s = {share:.1%}",
            share >= INTAKE_SHARE)
    hop = big.get("hop", {})
    if hop.get("hop", {}).get("p99_ms") and hop.get("limit_p99_ms"):
        ratio = hop["hop"]["p99_ms"] / hop["limit_p99_ms"]
        add(f"hop p99 <= {HOP_FACTOR:.0f}x (raw bus round trip + one update) p99",
            f"{_ms(hop['hop']['p99_ms'])} ms vs {_ms(hop['limit_p99_ms'])} ms = {ratio:.1f}x",
            ratio <= HOP_FACTOR)
    for label, stats in big.get("reports", {}).items():
        limit = TABLE_S if label.startswith("monthly table, one month (JSON)") else \
            EXPORT_S if label.startswith("register export") else None
        if limit is not None and stats.get("max_ms") is not None:
            add(f"{label} < {limit:.0f} s at {_size(sizes[-1])} (slowest of {stats['n']})",
                f"{stats['max_ms'] / 1000:.2f} s", stats["max_ms"] < limit * 1000)
    idle = big.get("idle_cpu", {})
    if idle:
        total = sum(idle["percent"].values())
        add(f"idle CPU of the whole system < {IDLE_CPU:.0f} % of a core "
            f"(over {idle['seconds']:.0f} s)", f"{total:.1f} %", total < IDLE_CPU)
    for service, rss in sorted(big.get("rss_mb", {}).items()):
        worst = max(v for v in rss.values() if v is not None)
        add(f"{service} RSS < {RSS_MB:.0f} MB (idle and after load)",
            f"{rss.get('idle')} / {rss.get('after_load')} MB", worst < RSS_MB)
    return out


def markdown(result: dict[str, Any]) -> str:
    runs = result["runs"]
    sizes = sorted(int(s) for s in runs)
    m = result["machine"]
    lines = [
        f"# `make bench`: {result['started_at']}, commit {result['git']['commit'][:10]}"
        f"{' (with local changes)' if result['git']['dirty'] else ''}",
        "",
        f"{m['cpu']} × {m['cores']} cores, {m['memory_gb']} GB, Python {m['python']}, "
        f"RabbitMQ {m.get('rabbitmq', '?')}, FerretDB `{m.get('ferretdb', '?')}`. "
        f"History sizes {', '.join(_size(s) for s in sizes)} complaints "
        f"({result['config']['open']} open at most, the rest closed over the past "
        f"{result['config'].get('years', 1)} years); "
        f"{result['config']['reps']} complaints carried through per size; "
        f"whole run {result['duration_s'] / 60:.1f} min.",
        "",
        "## Every step, one user (ms)",
        "",
        "| step | " + " | ".join(f"p50 / p99 at {_size(s)}" for s in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    steps = list(dict.fromkeys(k for s in sizes for k in runs[str(s)]["steps"]))
    for step in steps:
        cells = []
        for s in sizes:
            st = runs[str(s)]["steps"].get(step, {})
            cell = f"{_ms(st.get('p50_ms'))} / {_ms(st.get('p99_ms'))}"
            if st.get("skipped"):
                cell = f"not run (~{st['expected_s']:,.0f} s expected)"
            if st.get("failed"):
                cell += f" ({st['failed']} failed)"
            cells.append(cell)
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    lines += ["", "## Registration rate, intake against the bare endpoint", "",
              "| history | concurrency | intake req/s | intake p50 / p99 ms | bare req/s | "
              "bare p50 / p99 ms | intake / bare |", "|---|---|---|---|---|---|---|"]
    for s in sizes:
        bare = {t["concurrency"]: t for t in runs[str(s)].get("bare", [])}
        for t in runs[str(s)].get("intake", []):
            b = bare.get(t["concurrency"], {})
            ratio = f"{t['rate_per_s'] / b['rate_per_s']:.1%}" if b.get("rate_per_s") else "–"
            lines.append(f"| {_size(s)} | {t['concurrency']} | {t['rate_per_s']} | "
                         f"{_ms(t['p50_ms'])} / {_ms(t['p99_ms'])} | {b.get('rate_per_s', '–')} "
                         f"| {_ms(b.get('p50_ms'))} / {_ms(b.get('p99_ms'))} | {ratio} |")
    lines += ["", "## One hop: escalation answered → Quality's case readable (ms)", "",
              "| history | hop p50 / p99 | raw bus round trip p50 / p99 | one update by "
              "{_id, version} p50 / p99 | hop p99 / (bus + update) p99 |",
              "|---|---|---|---|---|"]
    for s in sizes:
        h = runs[str(s)].get("hop", {})
        if not h:
            continue
        ratio = (f"{h['hop']['p99_ms'] / h['limit_p99_ms']:.1f}x"
                 if h["hop"].get("p99_ms") and h.get("limit_p99_ms") else "–")
        lines.append(f"| {_size(s)} | {_ms(h['hop']['p50_ms'])} / {_ms(h['hop']['p99_ms'])} | "
                     f"{_ms(h['bus']['p50_ms'])} / {_ms(h['bus']['p99_ms'])} | "
                     f"{_ms(h['update']['p50_ms'])} / {_ms(h['update']['p99_ms'])} | {ratio} |")
    lines += ["", "## Reports (ms: median / slowest)", "",
              "| report | " + " | ".join(_size(s) for s in sizes) + " |",
              "|---|" + "---|" * len(sizes)]
    labels = list(dict.fromkeys(k for s in sizes for k in runs[str(s)].get("reports", {})))
    for label in labels:
        cells = [runs[str(s)].get("reports", {}).get(label, {}) for s in sizes]
        lines.append(f"| {label} | " + " | ".join(
            f"{_ms(c.get('p50_ms'))} / {_ms(c.get('max_ms'))}" for c in cells) + " |")
    lines += ["", "## Idle CPU (% of one core, over "
              f"{result['config']['idle_seconds']:.0f} s) and RSS (MB, idle → after load)", "",
              "| process | " + " | ".join(f"CPU at {_size(s)}" for s in sizes) + " | " +
              " | ".join(f"RSS at {_size(s)}" for s in sizes) + " |",
              "|---|" + "---|" * (2 * len(sizes))]
    names = list(dict.fromkeys(k for s in sizes
                               for k in runs[str(s)].get("idle_cpu", {}).get("percent", {})))
    for name in names + ["total", "whole machine (other work included)"]:
        cpu = []
        for s in sizes:
            idle = runs[str(s)].get("idle_cpu", {})
            pct = idle.get("percent", {})
            value = sum(pct.values()) if name == "total" else \
                idle.get("machine_percent") if name.startswith("whole") else pct.get(name)
            cpu.append(f"{value:.1f}" if value is not None else "–")
        rss = []
        for s in sizes:
            r = runs[str(s)].get("rss_mb", {}).get(name)
            rss.append(f"{r['idle']:.0f} → {r['after_load']:.0f}" if r else "")
        lines.append(f"| {name} | " + " | ".join(cpu) + " | " + " | ".join(rss) + " |")
    lines += _profile(runs, sizes)
    lines += ["", "## Loading the history, and starting on it", "",
              "| history | documents loaded | load s | services ready s | first escalation "
              "readable at Quality, s after ready |", "|---|---|---|---|---|"]
    for s in sizes:
        run = runs[str(s)]
        ld = run.get("load") or {"documents": {}, "total_s": 0}
        first = run.get("first_hop_s")
        lines.append(f"| {_size(s)} | {sum(ld['documents'].values()):,} | {ld['total_s']} | "
                     f"{run.get('start_s', '–')} | "
                     f"{first if first is not None else 'not within the wait'} |")
    lines += ["", f"## Targets (at {_size(sizes[-1])} complaints)", "",
              "| target | figure | |", "|---|---|---|"]
    for t in result["targets"]:
        verdict = "met" if t["met"] else "**not met**"
        lines.append(f"| {t['target']} | {t['figure']} | {verdict} |")
    return "\n".join(lines) + "\n"


def _profile(runs: dict[str, Any], sizes: list[int]) -> list[str]:
    """Where the time goes, at the largest history profiled: per unit of work, each
    service's database commands, the time it waited for them and its CPU, and the CPU of
    FerretDB and RabbitMQ."""
    size = next((s for s in reversed(sizes) if runs[str(s)].get("profile")), None)
    if size is None:
        return []
    lines = ["", f"## Where the time goes (at {_size(size)} complaints, per unit of work, "
             "whole system)", "",
             "| work | process | database commands | database ms | CPU ms | "
             "heaviest (collection.command: commands, ms) |", "|---|---|---|---|---|---|"]
    for work, prof in runs[str(size)]["profile"].items():
        for service, p in prof["services"].items():
            heavy = "; ".join(f"{h['what']}: {h['commands']}, {h['db_ms']}"
                              for h in p["heaviest"])
            lines.append(f"| {work} | {service} | {p['commands']} | {p['db_ms']} | "
                         f"{p['cpu_ms']} | {heavy} |")
        for name, cpu in prof["other_cpu_ms"].items():
            lines.append(f"| {work} | {name} | | | {cpu} | |")
    return lines
