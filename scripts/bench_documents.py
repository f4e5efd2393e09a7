"""How long one Complaint Handling Report takes to build and render (figures only).

    .venv/bin/python scripts/bench_documents.py [--runs 20]

Folds one complaint's events into the report's content (`dossier.fold`: the complaint of
the unit tests, carried through every 8D section, with a reopen and a second round) and
renders its PDF with reportlab, in Chinese and in English, as `POST .../issue` and
`GET .../draft.pdf` do, without HTTP or database. Prints the median and the slowest of
`--runs` renderings, the pages and the size. No thresholds.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.reporting import complaint_report, dossier, pdf  # noqa: E402
from services.reporting.settings import Settings  # noqa: E402
from shared import contracts as c  # noqa: E402
from tests.unit.test_reporting_dossier import SALES, Story  # noqa: E402


def story(language: str) -> Story:
    s = Story(language=language, major=True).registered_and_escalated().handled()
    s.add(c.ComplaintReopened(feedback_id=s.fid, register_no=s.no, comment="Cracks again",
                              reopen_count=1, had_form=True), SALES)
    return s.handled(round_=2)


def timed(fn, runs: int) -> tuple[list[float], object]:
    seconds, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - started)
    return seconds, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    settings = Settings()
    kit = pdf.PdfKit(settings.cjk_font, settings.cjk_font_index)
    tz = ZoneInfo("Asia/Shanghai")
    print(f"font: {settings.cjk_font} ({kit.font}); {args.runs} runs each")
    for language in ("zh", "en"):
        s = story(language)
        fold_s, content = timed(lambda s=s: dossier.fold(s.fid, s.events), args.runs)
        assert isinstance(content, dossier.Dossier)
        render_s, data = timed(lambda content=content: complaint_report.render(
            content, company=settings.company_name, logo=settings.company_logo, kit=kit, tz=tz,
            revision=1, signatures=[]), args.runs)
        assert isinstance(data, bytes)
        pages = data.count(b"/Type /Page\n") or data.count(b"/Type /Page")
        print(f"{language}: {len(s.events)} events folded in "
              f"{statistics.median(fold_s) * 1000:.1f} ms; PDF rendered in "
              f"{statistics.median(render_s) * 1000:.0f} ms median, "
              f"{max(render_s) * 1000:.0f} ms slowest (the first includes loading the font); "
              f"{len(data) / 1024:.0f} KB, {pages} page(s)")
    bench_monthly(settings, kit, tz, args.runs)


def bench_monthly(settings: Settings, kit: pdf.PdfKit, tz: ZoneInfo, runs: int) -> None:
    """One monthly report (P-F.6): the known month of the unit tests, its four charts and
    tables, as `POST /reports/monthly/{month}/issue` renders each language."""
    from services.reporting.charts import ChartKit
    from services.reporting.monthly_report import Content, figures_of
    from services.reporting.monthly_report_pdf import render
    from shared.vocabulary import Language
    from tests.unit.test_reporting_monthly_report import REVIEW, known_month_figures

    table, monthly, _ = known_month_figures()
    content = Content(month=table.period_from, revision=1, review=REVIEW,
                      figures=figures_of(table, monthly, table.period_from, {}))
    for lang in Language:
        render_s, data = timed(lambda lang=lang: render(
            content, lang, company=settings.company_name, logo=settings.company_logo, kit=kit,
            charts=ChartKit.of(settings, lang), tz=tz, signature=None), runs)
        assert isinstance(data, bytes)
        print(f"monthly report {lang.value}: rendered with its 4 charts in "
              f"{statistics.median(render_s) * 1000:.0f} ms median, "
              f"{max(render_s) * 1000:.0f} ms slowest; {len(data) / 1024:.0f} KB")


if __name__ == "__main__":
    main()
