"""P-5.4.2 in the console: the list of every disposal on the records retention page, for the
auditor and the quality manager ("what did we destroy, when, who, why"), in both languages.

The record is disposed of through reporting's API (the console's disposal form has its own
test in test_console_quality_records.py); what is under test is the list a reader sees.
"""

from datetime import datetime
from zoneinfo import ZoneInfo

from babel.support import NullTranslations
from playwright.async_api import expect

from services.console.i18n import Translator
from services.console.settings import Settings as ConsoleSettings
from tests.browser.conftest import Screen
from tests.browser.test_console_quality_records import issue_month, quiet_month
from tests.e2e.harness import System
from tests.support import ok

REASON = "Retention period ended; paper copies shredded under QP-4.2-01"


async def test_p_5_4_2_an_auditor_reads_every_disposal_with_when_who_why_and_the_pdfs(
        screen: Screen, console_system: System):
    month = quiet_month(2003, 2008)  # kept ten years after its month: long due
    await issue_month(console_system, month)
    async with console_system.client("reporting", "quality", sub="li.wei") as quality:
        (disposal,) = ok(await quality.post("/records/retention/dispose", json={
            "records": [f"monthly_report:{month}"], "reason": REASON}), 201)["disposals"]
    plant = ConsoleSettings().plant_timezone
    disposed_at = datetime.fromisoformat(disposal["disposed_at"])
    shown_at = Translator("en", NullTranslations(), plant).datetime(disposed_at)

    page = screen.page
    await screen.sign_in("Zhou Yu", "auditor")
    await screen.goto("/records")
    log = page.locator("#disposal-log")
    row = log.locator(f"[id='logged-monthly_report:{month}']")
    await expect(row).to_contain_text(REASON)
    await expect(row).to_contain_text("li.wei")
    await expect(row).to_contain_text(shown_at)  # the plant's clock, not UTC
    await expect(row.locator("code.sha256")).to_have_text(disposal["files"])  # zh and en PDFs
    assert len(disposal["files"]) == 2 and all(len(f) == 64 for f in disposal["files"])
    await expect(log.locator("tbody tr").first).to_have_id(f"logged-monthly_report:{month}")

    # By year of disposal: the year it was disposed of in the plant's time zone.
    year = str(disposed_at.astimezone(ZoneInfo(plant)).year)
    await log.locator("#f-year").select_option(year)
    await log.get_by_role("button", name="Show").click()
    await page.wait_for_url(lambda url: url.endswith(f"/records?year={year}"))
    await expect(page.locator("#f-year")).to_have_value(year)
    await expect(row).to_contain_text(REASON)
    await screen.shot("by-year")

    await page.get_by_role("button", name="中文").click()
    await expect(page.locator("#disposal-log-h")).to_contain_text("全部处置记录")
    await expect(page.locator("#disposal-log label[for=f-year]")).to_have_text("处置年份")
    await expect(row).to_contain_text(REASON)
    await screen.shot("zh")
