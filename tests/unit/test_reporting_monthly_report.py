"""P-F.6: the monthly report as a PDF, and its life (draft, issued and frozen, corrected).

Rendered from the known month of tests/unit/test_reporting_scenario.py (March 2031, counted
there by hand); the text a reader sees is read back with `pdftotext`, the charts with
`pdfimages`. Also the register and the statistics table as their paper forms (PDF).
"""

import subprocess
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from services.reporting import domain, paper_forms, statistics
from services.reporting.api import RegisterRow
from services.reporting.charts import ChartKit
from services.reporting.documents import IssuedPdf, Signature
from services.reporting.monthly_report import Content, MonthlyReport, Review, figures_of
from services.reporting.monthly_report_pdf import render
from services.reporting.pdf import PdfKit
from services.reporting.settings import Settings
from shared.auth import Principal
from shared.errors import Conflict
from shared.events import parse_event, utcnow
from shared.vocabulary import Language
from tests.unit.test_reporting_scenario import MONTH, known_month

UTC = ZoneInfo("UTC")
QUALITY = Principal(sub="li.wei", name="Li Wei", roles=["quality"])
REVIEW = Review(counts="Six feedbacks, two from customer A. 六条客户意见。",
                timeliness="Two forms missed the 3-day rule: F2 and F5.",
                losses="Production carries most of the loss.",
                overall="Die maintenance is the first action. 模具保养为首要措施。")


@pytest.fixture(scope="module")
def month() -> tuple[statistics.MonthlyTable, dict[str, dict[str, int]], list]:
    return known_month_figures()


def known_month_figures() -> tuple[statistics.MonthlyTable, dict[str, dict[str, int]], list]:
    """March 2031's table, the counters of its months, and its register rows."""
    story = known_month("mr")
    parsed = [parse_event(e.model_dump(mode="json")) for e in story.events]
    rows = domain.fold(parsed, UTC)
    totals = domain.monthly_totals(rows.values())

    def part(kind: str) -> dict[str, dict[str, int]]:
        return {domain.split_part(k)[1]: v for k, v in totals.items()
                if k.startswith(kind + "/")}

    table = statistics.table_at(MONTH, MONTH, part(domain.MONTHLY), part(domain.MONTHLY_OPEN),
                                date(2031, 5, 1), "UTC")
    register = [RegisterRow.of(r).model_dump() for r in rows.values()
                if isinstance(r, domain.FeedbackRow) and r.registered]
    return table, part(domain.MONTHLY), sorted(register, key=lambda r: r["register_no"])


def content_of(month, review: Review = REVIEW, revision: int = 1,
               corrects: str | None = None) -> Content:
    table, monthly, _ = month
    return Content(month=MONTH, revision=revision, corrects=corrects, review=review,
                   figures=figures_of(table, monthly, MONTH, {}))


def pdf_of(content: Content, lang: Language, signed: bool = True) -> bytes:
    settings = Settings()
    signature = Signature.by(QUALITY, "quality", "approved", content.sha256()) \
        if signed else None
    if signature is not None:  # a fixed time: the same content and signature, the same bytes
        signature = signature.model_copy(update={"signed_at": utcnow().replace(
            year=2031, month=4, day=2, hour=9, minute=0, second=0, microsecond=0)})
    return render(content, lang, company="QMS Manufacturing Co., Ltd.", logo=None,
                  kit=PdfKit(settings.cjk_font, settings.cjk_font_index),
                  charts=ChartKit.of(settings, lang), tz=UTC, signature=signature)


def text_of(data: bytes, tmp_path: Path) -> str:
    path = tmp_path / "doc.pdf"
    path.write_bytes(data)
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], check=True,
                          capture_output=True, text=True).stdout


def images_in(data: bytes, tmp_path: Path) -> int:
    path = tmp_path / "doc.pdf"
    path.write_bytes(data)
    listing = subprocess.run(["pdfimages", "-list", str(path)], check=True,
                             capture_output=True, text=True).stdout
    # two heading lines; a PNG with transparency adds its mask (type "smask")
    return sum(1 for line in listing.splitlines()[2:] if line.split()[2] == "image")


def squeeze(text: str) -> str:
    return " ".join(text.split())


def test_p_f_6_monthly_report_in_chinese_shows_the_table_review_charts_and_signature(
        month, tmp_path):
    data = pdf_of(content_of(month), Language.ZH)
    text = squeeze(text_of(data, tmp_path))
    assert "客诉处理月报 2031-03" in text
    # the table's figures of March 2031, counted by hand in test_reporting_scenario
    assert "客户意见数 6 1" in text and "客诉数 5 1" in text and "直接答复数 2 1" in text
    assert "3日内完成率 50.0%" in text
    assert "D01 尺寸 2 2" in text  # the defect's name beside its code
    assert "生产部 CNY 1800.00 0.00 1800.00" in text  # loss by unit, actual
    assert "（未指定） USD 250.50 250.50 0.00" in text  # estimated, no unit yet
    assert "六条客户意见。" in text and "模具保养为首要措施。" in text  # Quality's review
    assert "（无说明）" in text  # a section without comment says so
    assert "六、未结案件账龄" in text and "合计 2" in text  # F5 and F6 open at 03-31
    assert "批准（质量部）" in text and "Li Wei" in text  # the signature, and what it signed
    assert content_of(month).sha256() in text.replace(" ", "")
    assert images_in(data, tmp_path) == 4  # Pareto of counts, timeliness, trend, Pareto of loss


def test_p_f_6_monthly_report_in_english_has_english_labels_and_defect_names(month, tmp_path):
    text = squeeze(text_of(pdf_of(content_of(month), Language.EN), tmp_path))
    assert "Monthly Complaint Handling Report 2031-03" in text
    assert "Feedbacks 6 1" in text and "D01 Dimensional 2 2" in text
    assert "Share met 3-day rule 50.0%" in text
    assert "Die maintenance is the first action." in text
    assert "客诉处理月报" not in text


def test_p_f_6_same_content_renders_the_same_bytes(month):
    assert pdf_of(content_of(month), Language.ZH) == pdf_of(content_of(month), Language.ZH)


def test_p_f_6_draft_is_stamped_and_unsigned(month, tmp_path):
    text = squeeze(text_of(pdf_of(content_of(month), Language.EN, signed=False), tmp_path))
    assert "DRAFT" in text and "Li Wei" not in text


def test_p_f_6_the_signature_covers_review_and_figures(month):
    table, monthly, _ = month
    base = content_of(month)
    assert content_of(month, REVIEW.model_copy(update={"overall": "other"})).sha256() != \
        base.sha256()
    moved = table.model_copy(deep=True)
    moved.counts.feedbacks += 1  # a late event moved a figure
    assert Content(month=MONTH, revision=1, review=REVIEW,
                   figures=figures_of(moved, monthly, MONTH, {})).sha256() != base.sha256()


def test_p_f_6_a_correction_says_what_it_corrects(month, tmp_path):
    content = content_of(month, revision=2, corrects="F2's loss was counted twice.")
    text = squeeze(text_of(pdf_of(content, Language.EN), tmp_path))
    assert "This revision corrects revision 1" in text and "F2's loss was counted twice." in text
    assert "2031-03 · Revision 2" in text


def _issued(report: MonthlyReport, content: Content) -> None:
    sig = Signature.by(QUALITY, "quality", "approved", content.sha256())
    pdfs = {"zh": IssuedPdf(sha256="a" * 64, size=1, filename="x.pdf", issued_at=sig.signed_at)}
    report.issue(content, sig, pdfs, QUALITY)


def test_p_f_6_issued_month_is_frozen_and_corrected_by_a_new_revision(month):
    report = MonthlyReport(id=MONTH)
    report.save_draft(REVIEW, QUALITY)
    assert report.status == "draft" and report.draft_by == "Li Wei"
    _issued(report, content_of(month))
    assert report.status == "issued"
    with pytest.raises(Conflict, match="a correction is a new revision"):
        report.save_draft(Review(overall="changed afterwards"), QUALITY)
    report.start_correction("The loss table of revision 1 is corrected.", QUALITY)
    assert report.status == "correcting" and report.next_number == 2
    assert report.draft == REVIEW  # starts from the issued text
    with pytest.raises(Conflict, match="being drafted already"):
        report.start_correction("again", QUALITY)
    report.save_draft(REVIEW.model_copy(update={"losses": "corrected"}), QUALITY)
    _issued(report, content_of(month, report.draft, 2, report.corrects))
    assert [r.number for r in report.revisions] == [1, 2]
    assert report.revisions[1].corrects == "The loss table of revision 1 is corrected."
    assert Content.model_validate_json(report.revisions[0].content).review == REVIEW
    assert [h.action for h in report.history] == [
        "draft_saved", "issued", "correction_started", "draft_saved", "issued"]


def test_p_f_6_nothing_to_correct_before_the_first_issue():
    with pytest.raises(Conflict, match="has not been issued"):
        MonthlyReport(id=MONTH).start_correction("x", QUALITY)


def test_p_5_4_1_register_as_its_paper_form_a4_landscape(month, tmp_path):
    _, _, rows = month
    settings = Settings()
    data = paper_forms.register_pdf(rows, tz=UTC, lang=Language.ZH, period="2031-03",
                                    company="QMS", kit=PdfKit(settings.cjk_font))
    path = tmp_path / "register.pdf"
    path.write_bytes(data)
    info = subprocess.run(["pdfinfo", str(path)], check=True, capture_output=True,
                          text=True).stdout
    assert "841.89 x 595.276 pts (A4)" in info  # A4 landscape
    text = squeeze(text_of(data, tmp_path))
    assert "客户意见登记表" in text and "登记编号" in text and "责任单位" in text
    assert "CF-2031-F1" in text and "CF-2031-F8" in text
    assert "CF-2031-F3 2031-03-10" in text and "直接答复" in text
    assert "开立客诉处理单" in text and "2031-03-02" in text


def test_p_f_6_statistics_table_as_its_paper_form(month, tmp_path):
    table, _, _ = month
    settings = Settings()
    text = squeeze(text_of(paper_forms.table_pdf(table, lang=Language.ZH, company="QMS",
                                                 kit=PdfKit(settings.cjk_font)), tmp_path))
    assert "客诉处理统计表" in text and "客户意见数 6" in text and "损失" in text
    en = squeeze(text_of(paper_forms.table_pdf(table, lang=Language.EN, company="QMS",
                                               kit=PdfKit(settings.cjk_font)), tmp_path))
    assert "Complaint Handling Statistics Table" in en and "Feedbacks 6" in en


def test_p_5_4_1_a_register_number_prints_on_one_line(month, tmp_path):
    """The number Sales reads out on the phone is never broken over two lines."""
    _, _, rows = month
    numbered = [r | {"register_no": f"CF-2031-{i:06d}"} for i, r in enumerate(rows, 1)]
    data = paper_forms.register_pdf(numbered, tz=UTC, lang=Language.ZH, period="2031-03",
                                    company="QMS", kit=PdfKit(Settings().cjk_font))
    text = text_of(data, tmp_path)
    assert all(f"CF-2031-{i:06d}" in text for i in range(1, len(rows) + 1)), text[:2000]
