"""PNG charts of the statistics (matplotlib, Agg backend, no pyplot: safe in a worker thread)."""

import io
from collections.abc import Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

THREE_DAYS_H = 72


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=110, bbox_inches="tight")
    return out.getvalue()


def _empty(ax, text: str) -> None:  # noqa: ANN001 - a matplotlib Axes
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_xticks([])
    ax.set_yticks([])


def pareto(items: Sequence[tuple[str, float]], title: str, value_label: str,
           top: int = 15) -> bytes:
    """Bars largest first, with the cumulative share as a line (the 80/20 view)."""
    items = sorted(items, key=lambda x: (-x[1], x[0]))
    if len(items) > top:
        rest = sum(v for _, v in items[top:])
        items = [*items[:top], ("others", rest)]
    fig = Figure(figsize=(9, 4.8))
    ax = fig.add_subplot()
    ax.set_title(title)
    total = sum(v for _, v in items)
    if not items or total <= 0:
        _empty(ax, "no data in this period")
        return _png(fig)
    labels, values = [k for k, _ in items], [v for _, v in items]
    ax.bar(range(len(values)), values, color="#4C72B0")
    ax.set_xticks(range(len(values)), labels, rotation=45, ha="right")
    ax.set_ylabel(value_label)
    share, cumulative = ax.twinx(), []
    running = 0.0
    for v in values:
        running += v
        cumulative.append(100 * running / total)
    share.plot(range(len(values)), cumulative, color="#C44E52", marker="o")
    share.axhline(80, color="#C44E52", linestyle=":", linewidth=1)
    share.set_ylim(0, 105)
    share.yaxis.set_major_formatter(PercentFormatter())
    share.set_ylabel("cumulative share")
    return _png(fig)


def trend(months: Sequence[str], series: Mapping[str, Sequence[float]], title: str) -> bytes:
    fig = Figure(figsize=(9, 4.5))
    ax = fig.add_subplot()
    ax.set_title(title)
    for name, values in series.items():
        ax.plot(months, values, marker="o", label=name)
    ax.set_ylabel("count per month")
    ax.set_ylim(bottom=0)
    ax.tick_params(axis="x", rotation=45)
    ax.legend(loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def timeliness(months: Sequence[str], shares: Sequence[float | None],
               record_hours: dict[float, int], target: float, title: str) -> bytes:
    """Left: share of the forms due per month whose record came within 3 days, against the
    target.
    Right: how long the period's quality records took, against the 72-hour line."""
    fig = Figure(figsize=(12, 4.5))
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    fig.suptitle(title)
    values = [100 * s if s is not None else 0 for s in shares]
    colors = ["#55A868" if s is not None and s >= target else "#C44E52" for s in shares]
    left.bar(months, values, color=colors)
    left.axhline(100 * target, color="black", linestyle="--", linewidth=1,
                 label=f"target {100 * target:.0f}%")
    left.set_ylim(0, 105)
    left.yaxis.set_major_formatter(PercentFormatter())
    left.set_ylabel("forms due: record within 3 days")
    left.tick_params(axis="x", rotation=45)
    left.legend(loc="lower left")
    if record_hours:
        bins = list(range(0, max(96, int(max(record_hours)) + 13), 12))
        right.hist(list(record_hours), bins=bins, weights=list(record_hours.values()),
                   color="#4C72B0")
        right.axvline(THREE_DAYS_H, color="#C44E52", linestyle="--", label="3 days (P-F.5)")
        right.set_xlabel("form received -> quality record (hours)")
        right.set_ylabel("quality records")
        right.legend()
    else:
        _empty(right, "no quality records in this period")
    return _png(fig)
