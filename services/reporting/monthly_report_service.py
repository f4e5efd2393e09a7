"""The monthly report's service layer: figures, drafts, issuing, reading, verifying.

Reads on a request path: the report by `_id` (the month), the months' counters by `_id`, the
open-case counters (one small document per month), the customers named by the table; the
index of issued PDFs by `_id` (the sha256).
"""

import asyncio
import threading
from zoneinfo import ZoneInfo

from services.reporting import api, statistics
from services.reporting.charts import ChartKit
from services.reporting.documents import IssuedPdf, Signature, Verdict
from services.reporting.monthly_report import (
    LANGUAGES,
    TREND_MONTHS,
    Content,
    IssuedMonthly,
    MonthlyReport,
    MonthlyRevision,
    Review,
    Verifier,
    check_month,
    figures_of,
    filename,
    read_issued,
)
from services.reporting.monthly_report_pdf import render
from services.reporting.pdf import PdfKit
from services.reporting.settings import Settings
from services.reporting.views import Views
from shared.attachments import AttachmentStore
from shared.auth import Principal
from shared.errors import Conflict
from shared.store import Repository
from shared.vocabulary import Language

_RENDERING = threading.Lock()  # reportlab and matplotlib keep process-wide state


class MonthlyReports:
    def __init__(self, settings: Settings, views: Views, reports: Repository[MonthlyReport],
                 verifier: Verifier):
        self.settings, self.views, self.reports, self.verifier = settings, views, reports, \
            verifier
        self.store = AttachmentStore(settings.attachment_dir)
        self.kit = PdfKit(settings.cjk_font, settings.cjk_font_index)
        self.tz = ZoneInfo(settings.timezone)

    # -- content -------------------------------------------------------------------
    async def load(self, month: str) -> MonthlyReport:
        check_month(month, self.views.today().strftime("%Y-%m"))
        return await self.reports.get(month) or MonthlyReport(id=month)

    async def content(self, report: MonthlyReport) -> Content:
        """What issuing the report now would sign: its draft and the month's figures."""
        month = report.id
        first = statistics.shift_month(month, 1 - TREND_MONTHS)
        table, monthly = await asyncio.gather(
            api.monthly_table(self.views, month, month),
            self.views.models.monthly(statistics.months_between(first, month)))
        return Content(month=month, revision=report.next_number, corrects=report.corrects,
                       review=report.draft,
                       figures=figures_of(table, monthly, month, self.settings.defect_labels))

    async def current(self, month: str) -> tuple[MonthlyReport, Content]:
        report = await self.load(month)
        return report, await self.content(report)

    # -- changes -------------------------------------------------------------------
    async def save_draft(self, month: str, review: Review, who: Principal
                         ) -> tuple[MonthlyReport, Content]:
        report = await self.load(month)
        report.save_draft(review, who)
        return await self._stored(report)

    async def start_correction(self, month: str, corrects: str, who: Principal
                               ) -> tuple[MonthlyReport, Content]:
        report = await self.load(month)
        report.start_correction(corrects, who)
        return await self._stored(report)

    async def _stored(self, report: MonthlyReport) -> tuple[MonthlyReport, Content]:
        """Save the report (a first save inserts it); as stored, with what it would sign."""
        saved = await (self.reports.add(report) if report.version == 0
                       else self.reports.save(report))
        return saved, await self.content(saved)

    async def issue(self, month: str, seen_sha256: str, who: Principal
                    ) -> tuple[MonthlyRevision, bool]:
        """The issued revision, and whether this call issued it (False: a retried request)."""
        report, content = await self.current(month)
        latest = report.latest
        if report.status == "issued" and latest and latest.content_sha256 == seen_sha256:
            return latest, False
        report.check_open()
        sha = content.sha256()
        if seen_sha256 != sha:
            raise Conflict(
                f"The monthly report changed since you read it (you saw {seen_sha256}, it is "
                f"now {sha}: a figure or the draft moved): read it again and sign what it says "
                "now. / 月报内容在您阅读后已变化，请重新读取后再签核。",
                [{"loc": "body.content_sha256", "msg": "not the current content"}])
        if not content.review.overall.strip():
            raise Conflict("Write the overall review (section `overall`) before issuing: P-F.6 "
                           "asks for explanation and review. / 签发前请填写总体说明与检讨。",
                           [{"loc": "draft.overall", "msg": "empty"}])
        approval = Signature.by(who, "quality", "approved", sha)
        pdfs: dict[str, IssuedPdf] = {}
        for lang in LANGUAGES:
            data = await self._render(content, lang, approval)
            digest = await asyncio.to_thread(self.store.put_bytes, data)
            pdfs[lang.value] = IssuedPdf(sha256=digest, size=len(data),
                                         issued_at=approval.signed_at,
                                         filename=filename(month, content.revision, lang))
            await self.verifier.index(IssuedMonthly(
                sha256=digest, month=month, revision=content.revision, language=lang.value,
                filename=pdfs[lang.value].filename, size=len(data),
                issued_at=approval.signed_at))
        revision = report.issue(content, approval, pdfs, who)
        saved = await (self.reports.add(report) if report.version == 0
                       else self.reports.save(report))
        for hook in self.views.month_hooks:  # records retention (P-5.4.2): kept from now on
            await hook({"_id": month, "revisions": [r.number for r in saved.revisions]})
        return saved.revision(revision.number), True  # as stored (times in milliseconds)

    # -- reading -------------------------------------------------------------------
    async def _render(self, content: Content, lang: Language, signature: Signature | None
                      ) -> bytes:
        charts = ChartKit.of(self.settings, lang)

        def run() -> bytes:
            with _RENDERING:
                return render(content, lang, company=self.settings.company_name,
                              logo=self.settings.company_logo, kit=self.kit, charts=charts,
                              tz=self.tz, signature=signature)
        return await asyncio.to_thread(run)

    async def draft_pdf(self, month: str, lang: Language) -> tuple[str, bytes]:
        """A preview of what issuing now would say (stamped draft, not stored)."""
        _, content = await self.current(month)
        return filename(month, None, lang), await self._render(content, lang, None)

    async def revision_pdf(self, month: str, number: int, lang: Language
                           ) -> tuple[IssuedPdf, bytes]:
        await self.views.check_kept(month, "monthly_report")  # 410 once disposed of
        report = await self.load(month)
        pdf = report.revision(number).pdfs[lang.value]
        data = await asyncio.to_thread(read_issued, self.store, pdf,
                                       f"revision {number} of {month}")
        return pdf, data

    async def verify(self, sha: str) -> Verdict | None:
        return await self.verifier.verify(sha)

