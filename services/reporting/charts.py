"""PNG charts of the statistics (matplotlib, Agg backend, no pyplot: safe in a worker thread).

Every text a chart shows exists in Chinese and English (`LABELS`); the caller picks the
reader's language. Defects are shown as code and name ("D03 Functional failure"), and axes
that count things have whole-number ticks only. Chinese needs a CJK font: `use_font` adds
Debian's WenQuanYi Micro Hei (the documents' font) to matplotlib once per process.
"""

import io
import textwrap
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib
from matplotlib import font_manager
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from services.reporting.defects import defect_names
from services.reporting.statistics import ratio
from shared.vocabulary import Language

if TYPE_CHECKING:
    from services.reporting.settings import Settings

THREE_DAYS_H = 72
DEFAULT_FONT = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")

# key -> (zh, en)
LABELS: dict[str, tuple[str, str]] = {
    "no_data": ("本期无数据", "no data in this period"),
    "no_records": ("本期无质量记录", "no quality records in this period"),
    "others": ("其他", "others"),
    "cumulative": ("累计占比", "cumulative share"),
    "per_month": ("每月件数", "count per month"),
    "target": ("目标 {value}%", "target {value}%"),
    "share_due": ("到期处理单：3日内交质量记录", "forms due: record within 3 days"),
    "hours": ("收到处理单至质量记录（小时）", "form received -> quality record (hours)"),
    "records": ("质量记录数", "quality records"),
    "three_days": ("3日（P-F.5）", "3 days (P-F.5)"),
    "feedbacks": ("客户意见", "feedbacks"),
    "complaints": ("客诉", "complaints"),
    "quality_records": ("质量记录", "quality records"),
    "breaches": ("超3日期限", "3-day breaches"),
    "closures": ("结案", "closures"),
    # titles; {period}: "2026-11" or "2026-09 to 2026-11"
    "pareto_count": ("按缺陷分类的客诉件数，{period}", "Complaints by defect, {period}"),
    "pareto_loss": ("按缺陷分类的损失金额，{period}（{currency}）",
                    "Loss by defect, {period} ({currency})"),
    "loss": ("损失（{currency}）", "loss ({currency})"),
    "trend": ("月度趋势，{first} 至 {last}", "Monthly trend, {first} to {last}"),
    "timeliness": ("3日规则（P-F.5）及时率，{period}",
                   "Timeliness against the 3-day rule (P-F.5), {period}"),
    "to": ("{first} 至 {last}", "{first} to {last}"),
}


def text(key: str, lang: Language = Language.EN, **values: object) -> str:
    """A chart's text in `lang`."""
    zh, en = LABELS[key]
    return (zh if lang is Language.ZH else en).format(**values)


def period_text(first: str, last: str, lang: Language = Language.EN) -> str:
    return first if first == last else text("to", lang, first=first, last=last)


@cache
def use_font(path: Path = DEFAULT_FONT) -> str | None:
    """Set the charts in this font (it has Chinese and Latin glyphs); once per process.
    Without the file, matplotlib's default font stays (Chinese then shows as boxes)."""
    if not path.is_file():
        return None
    font_manager.fontManager.addfont(str(path))
    name = font_manager.FontProperties(fname=str(path)).get_name()
    matplotlib.rcParams["font.family"] = [name, "DejaVu Sans"]
    matplotlib.rcParams["axes.unicode_minus"] = False  # the CJK font has no U+2212
    return name


def defect_label(code: str, names: Mapping[str, str] | None) -> str:
    """"D03 Functional failure": the code people quote and the name they understand."""
    name = (names or {}).get(code)
    return f"{code} {name}" if name and name != code else code


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    out = io.BytesIO()
    # No metadata that changes between runs: the same figures give the same bytes.
    fig.savefig(out, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    return out.getvalue()


def _empty(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_xticks([])
    ax.set_yticks([])


def _whole_numbers(ax: Axes) -> None:
    """Counts have no fractions: ticks on whole numbers only."""
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def pareto(items: Sequence[tuple[str, float]], title: str, value_label: str,
           top: int = 15, *, names: Mapping[str, str] | None = None, counts: bool = True,
           lang: Language = Language.EN, font: Path = DEFAULT_FONT) -> bytes:
    """Bars largest first, with the cumulative share as a line (the 80/20 view). `items` are
    (defect code, value); `names` the defects' names in `lang`; `counts`: whole numbers."""
    use_font(font)
    items = sorted(items, key=lambda x: (-x[1], x[0]))
    labels = [defect_label(k, names) for k, _ in items]
    if len(items) > top:
        rest = sum(v for _, v in items[top:])
        items = [*items[:top], ("others", rest)]
        labels = [*labels[:top], text("others", lang)]
    fig = Figure(figsize=(9, 4.8))
    ax = fig.add_subplot()
    ax.set_title(title)
    total = sum(v for _, v in items)
    if not items or total <= 0:
        _empty(ax, text("no_data", lang))
        return _png(fig)
    values = [v for _, v in items]
    ax.bar(range(len(values)), values, color="#4C72B0")
    ax.set_xticks(range(len(values)), [textwrap.fill(label, 18) for label in labels],
                  rotation=45, ha="right")
    ax.set_ylabel(value_label)
    if counts:
        _whole_numbers(ax)
    share, cumulative = ax.twinx(), []
    running = 0.0
    for v in values:
        running += v
        cumulative.append(100 * running / total)
    share.plot(range(len(values)), cumulative, color="#C44E52", marker="o")
    share.axhline(80, color="#C44E52", linestyle=":", linewidth=1)
    share.set_ylim(0, 105)
    share.yaxis.set_major_formatter(PercentFormatter())
    share.set_ylabel(text("cumulative", lang))
    return _png(fig)


def trend(months: Sequence[str], series: Mapping[str, Sequence[float]], title: str, *,
          lang: Language = Language.EN, font: Path = DEFAULT_FONT) -> bytes:
    """Counts per month, one line per series (keys of `LABELS`, else shown as given)."""
    use_font(font)
    fig = Figure(figsize=(9, 4.5))
    ax = fig.add_subplot()
    ax.set_title(title)
    for name, values in series.items():
        ax.plot(months, values, marker="o", label=text(name, lang) if name in LABELS else name)
    ax.set_ylabel(text("per_month", lang))
    ax.set_ylim(bottom=0)
    _whole_numbers(ax)
    ax.tick_params(axis="x", rotation=45)
    ax.legend(loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def timeliness(months: Sequence[str], shares: Sequence[float | None],
               record_hours: dict[float, int], target: float, title: str, *,
               lang: Language = Language.EN, font: Path = DEFAULT_FONT) -> bytes:
    """Left: share of the forms due per month whose record came within 3 days, against the
    target.
    Right: how long the period's quality records took, against the 72-hour line."""
    use_font(font)
    fig = Figure(figsize=(12, 4.5))
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    fig.suptitle(title)
    values = [100 * s if s is not None else 0 for s in shares]
    colors = ["#55A868" if s is not None and s >= target else "#C44E52" for s in shares]
    left.bar(months, values, color=colors)
    left.axhline(100 * target, color="black", linestyle="--", linewidth=1,
                 label=text("target", lang, value=f"{100 * target:.0f}"))
    left.set_ylim(0, 105)
    left.yaxis.set_major_formatter(PercentFormatter())
    left.set_ylabel(text("share_due", lang))
    left.tick_params(axis="x", rotation=45)
    left.legend(loc="lower left")
    if record_hours:
        bins = list(range(0, max(96, int(max(record_hours)) + 13), 12))
        right.hist(list(record_hours), bins=bins, weights=list(record_hours.values()),
                   color="#4C72B0")
        right.axvline(THREE_DAYS_H, color="#C44E52", linestyle="--",
                      label=text("three_days", lang))
        right.set_xlabel(text("hours", lang))
        right.set_ylabel(text("records", lang))
        _whole_numbers(right)
        right.legend()
    else:
        _empty(right, text("no_records", lang))
    return _png(fig)


class ChartKit:
    """The statistics' charts in one language, with the defects' names: what the chart
    routes and the monthly report draw, from the same figures."""

    def __init__(self, lang: Language, names: Mapping[str, str], target: float,
                 font: Path = DEFAULT_FONT):
        self.lang, self.names, self.target, self.font = lang, names, target, font

    @classmethod
    def of(cls, settings: "Settings", lang: Language) -> "ChartKit":
        return cls(lang, defect_names(settings.defect_labels, lang), settings.timeliness_target,
                   settings.cjk_font)

    def pareto_count(self, counts: Sequence[tuple[str, int]], period: str) -> bytes:
        """Complaints by defect code."""
        return pareto(counts, text("pareto_count", self.lang, period=period),
                      text("complaints", self.lang), names=self.names, lang=self.lang,
                      font=self.font)

    def pareto_loss(self, cents: Sequence[tuple[str, int]], currency: str, period: str
                    ) -> bytes:
        """Loss by defect code in one currency (amounts in cents)."""
        return pareto([(k, v / 100) for k, v in cents],
                      text("pareto_loss", self.lang, period=period, currency=currency),
                      text("loss", self.lang, currency=currency), names=self.names,
                      counts=False, lang=self.lang, font=self.font)

    def trend(self, rows: Sequence[Mapping[str, Any]]) -> bytes:
        """Feedbacks, complaints, quality records and breaches per month."""
        months = [row["month"] for row in rows]
        series = {name: [row[name] for row in rows]
                  for name in ("feedbacks", "complaints", "quality_records", "breaches")}
        return trend(months, series, text("trend", self.lang, first=months[0], last=months[-1]),
                     lang=self.lang, font=self.font)

    def timeliness(self, rows: Sequence[Mapping[str, Any]], minutes: Mapping[int, int],
                   period: str) -> bytes:
        """Share within 3 days per month, and the period's record times (minutes -> count)."""
        shares = [ratio(row["met"], row["forms_due"]) for row in rows]
        return timeliness([row["month"] for row in rows], shares,
                          {m / 60: n for m, n in minutes.items()}, self.target,
                          text("timeliness", self.lang, period=period), lang=self.lang,
                          font=self.font)
