"""One complaint from the customer's call to the satisfied customer, purely through the
console's pages, switching people (issue 10): a major complaint and the heads' review, a
rejected countermeasure proposed again, the Complaint Handling Report approved, issued and
attached to the reply, the customer not satisfied (reopened, a new round), then satisfied;
meanwhile a second window keeps Sales' inbox open and sees it change by itself."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from playwright.async_api import Browser, expect

from tests.browser.conftest import Screen
from tests.browser.helpers import (
    fill_investigation,
    phone_call,
    quality_assigns_production,
    register_by_phone,
)
from tests.e2e.harness import System

COMMENT = "Cracks still found in lot L2026-11-09 after the die change."
REJECTION = "Containment misses the WIP on line 3"
# The report's sections once reporting has read the verification and Quality's record.
REPORT_COMPLETE = "#report p:has-text('D6'):has-text('D8')"


@asynccontextmanager
async def second_window(browser: Browser, system: System, name: str) -> AsyncIterator[Screen]:
    """Another person's browser window beside the test's own; its console must stay clean."""
    context = await browser.new_context(locale="en-GB", viewport={"width": 1280, "height": 900})
    window = Screen(await context.new_page(), system.url("console"), name)
    try:
        yield window
    finally:
        await context.close()
    assert not window.errors, f"browser console errors in {name}: {window.errors}"


async def in_inbox(window: Screen, group: str, register_no: str) -> None:
    """The open inbox shows the complaint in `group`, and was never loaded again."""
    row = window.page.locator(f"#group-{group} tr:has(a.regno:text-is('{register_no}'))")
    await expect(row).to_be_visible()
    assert await window.page.evaluate("window.loadedOnce === true"), "the inbox was reloaded"
    await window.shot(group)


async def test_p_f_1_to_p_f_4_p_5_3_5_a_major_complaint_rejected_reopened_and_closed(
        screen: Screen, browser: Browser, console_system: System):
    """P-F.1 - P-F.4, P-5.3.1, P-5.3.2, P-5.3.5, P-5.1: Sales registers a call and escalates;
    Quality flags it major (heads summoned), records their review, assigns production; the
    unit's countermeasures are rejected with a reason and proposed again; Quality verifies
    and approves the report; Sales issues it and replies with it attached; the customer is
    not satisfied (Quality reads the comment in round 2 and concludes); then satisfied:
    closed. Sales' inbox, open in a second window all along, follows it live."""
    page = screen.page
    await screen.sign_in("Wang Fang", "sales")
    feedback_id, register_no = await register_by_phone(screen, phone_call())
    await page.locator("#f-note").fill("Customer's assembly line stopped.")
    await page.get_by_role("button", name="Escalate to Quality").click()
    await expect(page.locator("#status")).to_have_text("With Quality")
    await screen.sign_out()

    async with second_window(browser, console_system, f"{screen.name}-inbox") as inbox:
        await inbox.sign_in("Zhao Min", "sales")  # a colleague's inbox, left open
        await expect(inbox.page.locator("html")).to_have_attribute("data-live", "on")
        await inbox.page.evaluate("window.loadedOnce = true")
        await in_inbox(inbox, "with_quality", register_no)

        # Quality: a major complaint; the heads are summoned and review it; then responsibility
        await screen.sign_in("Li Wei", "quality")
        await screen.until_shown(f"/cases/{feedback_id}", "form[action$='/major']")
        await page.locator("#f-major_reason").fill("The customer's assembly line stopped")
        await page.get_by_role("button", name="Flag major and summon the heads").click()
        await expect(page.locator("#major")).to_contain_text("assembly line stopped")
        await expect(page.locator("#heads li").first).to_be_visible()
        await expect(page.locator("#heads")).not_to_contain_text("Nobody is configured")
        await page.locator("#f-held_at").fill("2026-12-07T10:00")
        await page.locator("#f-participants").fill("Li Wei\nProduction head\nR&D head")
        await page.locator("#f-decisions").fill("Stop line 3; 100% inspection of stock")
        await page.locator("#f-drafted_solution").fill("Replace the lot within 48 h")
        await page.get_by_role("button", name="Record the review").click()
        await expect(page.locator("#major article.review")).to_contain_text("Stop line 3")
        await quality_assigns_production(page)
        await screen.shot("major-assigned")
        await screen.sign_out()

        # The unit proposes; Quality rejects with a reason; the unit reads it and proposes again
        await unit_proposes(screen, register_no, "Sort all stock at the customer")
        await screen.sign_in("Li Wei", "quality")
        await screen.until_shown(f"/cases/{feedback_id}", "form.verify")
        await page.get_by_role("radio", name="Reject").check()
        await page.locator("#f-reason").fill(REJECTION)
        await page.get_by_role("button", name="Record the verdict").click()
        await expect(page.locator(".rejection")).to_contain_text(REJECTION)
        await screen.sign_out()
        await unit_proposes(screen, register_no, "Sort all stock, WIP on line 3 included",
                            rejected=True)

        # Quality accepts; the record reaches Sales' open inbox by itself; the report approved
        await screen.sign_in("Li Wei", "quality")
        await screen.until_shown(f"/cases/{feedback_id}", "form.verify")
        await page.get_by_role("radio", name="Accept").check()
        await page.get_by_role("button", name="Record the verdict").click()
        await expect(page.locator("#status")).to_have_text("Resolved")
        await in_inbox(inbox, "quality_record_ready", register_no)
        await screen.until_shown(f"/cases/{feedback_id}", REPORT_COMPLETE)
        await page.get_by_role("button", name="Approve the report").click()
        await expect(page.locator("#report-status")).to_contain_text(
            "Approved by Quality as revision 1")
        await screen.sign_out()

        # Sales issues the report, replies with it; the customer is not satisfied: reopened
        await screen.sign_in("Wang Fang", "sales")
        await screen.goto(f"/feedback/{feedback_id}")
        await page.get_by_role("button", name="Review and issue the report").click()
        await expect(page.locator("#report-status")).to_have_text("Issued: revision 1")
        await page.locator("#f-reply").fill("Root cause found; die replaced; stock sorted.")
        await page.get_by_role("button", name="Send reply").click()
        await expect(page.locator("#status")).to_have_text("Replied")
        await expect(page.locator("#reply-report")).to_contain_text(f"{register_no}-rev1.pdf")
        await page.get_by_label("Not satisfied").check()
        await page.locator("#f-comment").fill(COMMENT)
        await page.get_by_role("button", name="Record the answer").click()
        await expect(page.locator("#status")).to_have_text("With Quality")
        await expect(page.locator("#reopen-comment")).to_have_text(COMMENT)
        await screen.shot("reopened")
        await in_inbox(inbox, "with_quality", register_no)
        await expect(inbox.page.locator(f"#group-with_quality tr:has-text('{register_no}')")
                     ).to_contain_text("Reopened")
        await screen.sign_out()

    # Round 2: Quality reads the customer's comment and concludes (the customer's own torque)
    await screen.sign_in("Li Wei", "quality")
    await screen.until_shown(f"/cases/{feedback_id}", "#reopen-comment")
    await expect(page.locator("#reopen-comment")).to_have_text(COMMENT)
    await page.locator("#f-outcome").select_option("customer_misuse")
    await page.locator("#f-finding").fill("Lot L2026-11-09 torqued to 45 Nm; drawing allows 25")
    await page.get_by_role("button", name="Conclude without corrective action").click()
    await expect(page.locator("#status")).to_have_text("Resolved")
    await expect(page.locator("#outcome")).to_have_text("Customer misuse")
    await screen.sign_out()

    # Sales answers again; the customer is satisfied: closed
    await screen.sign_in("Wang Fang", "sales")
    await screen.until_shown(f"/feedback/{feedback_id}", "form[action$='/reply']")
    await page.locator("#f-reply").fill("Please torque to 25 Nm as drawn; we will visit.")
    await page.get_by_role("button", name="Send reply").click()
    await expect(page.locator("#status")).to_have_text("Replied")
    await page.get_by_label("Satisfied", exact=True).check()
    await page.get_by_role("button", name="Record the answer").click()
    await expect(page.locator("#status")).to_have_text("Closed")
    await expect(page.locator("#rounds")).to_contain_text(COMMENT)
    await screen.shot("closed")


async def unit_proposes(screen: Screen, register_no: str, containment: str,
                        rejected: bool = False) -> None:
    """Production's supervisor opens round 1's request (after a rejection, reading Quality's
    reason) and submits the investigation to Quality."""
    page = screen.page
    await screen.sign_in("Liu Gang", "unit", unit="production")
    await screen.until_shown(f"/actions/{register_no}-production-r1",
                             ".rejection" if rejected else "#f-containment")
    if rejected:
        await expect(page.locator(".rejection")).to_contain_text(REJECTION)
        await page.locator("#f-containment").fill(containment)
    else:
        await fill_investigation(page, containment)
    await page.get_by_role("button", name="Submit to Quality").click()
    await expect(page.locator("#status")).to_have_text("Proposed")
    await screen.shot("proposed")
    await screen.sign_out()
