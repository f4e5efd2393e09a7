"""Quality's records in the console (issues 10 and 11): a CAPA a recurrence opened, carried
from its default owner to closure on its page (P-5.3.4); the month's report written beside
its figures, issued, frozen and corrected (P-F.6); records past their retention period
disposed of with a reason, and one still kept refused with its day (P-5.4.2).

Steps before the ones under test go through the APIs (tests/e2e/flow.py); the steps under
test are taken in the browser."""

import random
import uuid
from datetime import date, timedelta
from typing import Any

from playwright.async_api import expect

from shared.auth import Actor
from shared.contracts import RecurrenceDetected
from tests.browser.conftest import Screen
from tests.e2e.flow import Flow
from tests.e2e.harness import Actors, System
from tests.support import eventually, ok

QUALITY = Actor(sub="li.wei", name="Li Wei", roles=("quality",))


async def recurrence_capa(actors: Actors) -> dict[str, Any]:
    """Three complaints Quality held production responsible for, then quality's detection of
    their recurrence: capa opens a CAPA owned by default by production's head."""
    flow, ids = Flow(actors), []
    for _ in range(3):
        fb = await flow.register()
        await flow.escalate(fb["id"])
        case = await flow.assign(fb["id"], ["production"])
        for entry in case["responsible_units"]:  # capa knows whom each one concerns
            await flow.action(entry["action_id"], "production")
        ids.append(fb["id"])
    customer = f"C-{uuid.uuid4().hex[:6].upper()}"
    await actors.system.publish(
        RecurrenceDetected(kind=f"customer:{customer}|defect:D03", reason="recurred",
                           feedback_ids=ids, defect_code="D03", customer_id=customer),
        correlation_id=ids[-1], actor=QUALITY, producer="quality")

    async def opened() -> dict[str, Any] | None:
        page = ok(await actors.capa_quality.get("/capas", params={"feedback_id": ids[-1]}))
        return page["items"][0] if page["items"] else None
    return await eventually(opened, what="the CAPA the recurrence opens")


async def test_p_5_3_4_a_recurrence_capa_is_confirmed_verified_effective_and_closed(
        screen: Screen, actors: Actors):
    """The CAPA shows on Quality's board until its owner is confirmed; on its page Quality
    confirms the owner, records root cause and plan, the implementation, a verification
    refused while its window is still open (what was typed kept), then an effective one,
    and closes it. Its complaints link to their forms by register number."""
    capa = await recurrence_capa(actors)
    number, page = capa["number"], screen.page
    assert capa["owner_unit"] == "production" and not capa["owner_confirmed"]

    await screen.sign_in("Li Wei", "quality")
    await screen.until_shown("/quality", f"#capas-to-confirm a:text('{number}')")
    await expect(page.locator("#capas-to-confirm")).to_contain_text("Owner to confirm")
    await screen.goto("/capas")
    await expect(page.locator("#owners-to-confirm")).to_contain_text(number)
    await page.locator(f"tr[data-capa='{number}'] a").click()
    await page.wait_for_url(f"**/capas/{number}")
    await expect(page.locator("#capa-status")).to_have_text("Open")
    await expect(page.locator("#complaints a.regno")).to_have_count(3)
    first = await page.locator("#complaints a.regno").first.inner_text()
    assert first.startswith("CF-"), first
    await expect(page.locator("#owner-now")).to_contain_text("Owner to confirm")

    await page.locator("#f-owner_unit").select_option("production")
    await page.get_by_role("button", name="Confirm or change the owner").click()
    await expect(page.locator("#owner-now")).to_contain_text("Confirmed by Quality")
    await screen.goto("/quality")
    await expect(page.locator("#capas-to-confirm")).not_to_contain_text(number)

    await screen.goto(f"/capas/{number}")
    await page.locator("#f-statement").fill("Die wear is not in the preventive maintenance plan")
    await page.locator("#f-category").select_option("method")
    await page.locator("#f-five_whys").fill("Housings crack\nWall thin at the boss\nDie worn")
    await page.get_by_role("button", name="Save the root cause").click()
    await page.locator("#f-action_1_description").fill("Add a die wear check to the PM plan")
    await page.locator("#f-action_1_owner").fill("Sun Mei")
    await page.locator("#f-action_1_due_date").fill("2027-01-31")
    await page.get_by_role("button", name="Save the plan").click()
    await expect(page.locator("#capa-status")).to_have_text("Planned")
    await expect(page.locator("#plan-actions")).to_contain_text("Sun Mei")
    await page.locator("#f-implemented_note").fill("Wear check added to 42 die PM plans")
    await page.get_by_role("button", name="Record the plan as implemented").click()
    await expect(page.locator("#capa-status")).to_have_text("Implemented")
    await screen.shot("implemented")

    # A verdict before the evaluation window is over says nothing: refused, typing kept.
    today = date.today()
    await page.locator("#f-criteria").fill("No cracked-housing complaint for 3 months")
    await page.locator("#f-window_from").fill(str(today - timedelta(days=30)))
    await page.locator("#f-window_to").fill(str(today + timedelta(days=30)))
    await page.locator("#f-evaluation").fill("0 complaints of this kind; 12 lots shipped")
    status = await screen.refused(page.get_by_role("button", name="Record the verification"))
    assert status == 409
    await expect(page.locator("#error")).to_contain_text("not possible in the record's")
    await expect(page.locator("#f-criteria")).to_have_value(
        "No cracked-housing complaint for 3 months")
    await expect(page.locator("#capa-status")).to_have_text("Implemented")
    await page.locator("#f-window_from").fill(str(today - timedelta(days=95)))
    await page.locator("#f-window_to").fill(str(today - timedelta(days=1)))
    await page.get_by_label("Effective", exact=True).check()
    await page.get_by_role("button", name="Record the verification").click()
    await expect(page.locator("#capa-status")).to_have_text("Effective")
    await expect(page.locator("#effectiveness .verification")).to_contain_text("12 lots shipped")

    await page.get_by_role("button", name="Close the CAPA").click()
    await expect(page.locator("#capa-status")).to_have_text("Closed")
    await expect(page.locator("#close")).to_have_count(0)
    await expect(page.locator("#history")).to_contain_text("Effectiveness verified")
    await screen.shot("closed")


async def test_p_5_3_4_quality_withdraws_a_capa_with_its_reason(screen: Screen,
                                                                actors: Actors):
    capa = ok(await actors.capa_quality.post("/capas", json={
        "title": "Scratched covers, opened twice", "owner_unit": "production"}), 201)
    page = screen.page
    await screen.sign_in("Li Wei", "quality")
    await screen.goto(f"/capas/{capa['number']}")
    await page.locator("#f-withdraw_reason").fill("Opened twice; handled under the other CAPA")
    await page.get_by_role("button", name="Withdraw the CAPA").click()
    await expect(page.locator("#capa-status")).to_have_text("Withdrawn")
    await expect(page.locator("#withdrawal")).to_contain_text("Opened twice")
    await expect(page.locator("#owner form, #root-cause form, #close")).to_have_count(0)
    # Looked back on: the CAPA list's ended ones of the year it was opened, with when.
    await screen.goto("/capas")
    ended = page.locator("#ended-capas")
    await expect(ended.locator(f"tr[data-capa='{capa['number']}']")).to_contain_text(
        "Scratched covers, opened twice")
    await expect(page.locator("#capa-list")).not_to_contain_text(capa["number"])
    await page.locator("#f-year").select_option(str(date.today().year - 1))
    await page.get_by_role("button", name="Show", exact=True).click()
    await expect(page.locator("#f-year")).to_have_value(str(date.today().year - 1))
    await expect(ended).not_to_contain_text(capa["number"])
    await screen.shot("ended-capas")


def quiet_month(low: int, high: int) -> str:
    """A month of a year nobody else's test works in (each run's own system)."""
    return f"{random.randint(low, high)}-{random.randint(1, 12):02d}"


async def test_p_f_6_quality_writes_issues_and_corrects_the_monthly_review(
        screen: Screen, actors: Actors):
    """Quality writes the review beside each section's figures, saves it, previews the PDF
    and issues it (a signature over content that moved since is refused with the fresh
    state); the issued month is frozen, its PDFs download in both languages, and a
    correction starts revision 2 saying what it corrects. The manager reads it from the
    monthly statistics page."""
    month, page = quiet_month(2023, 2025), screen.page
    await screen.sign_in("Li Wei", "quality")
    await screen.goto(f"/monthly-report/{month}")
    await expect(page.locator("#report-status")).to_have_text("Draft: not issued yet")
    await expect(page.locator("#section-timeliness")).to_contain_text("Met the 3-day rule")
    await page.locator("#f-counts").fill("No complaint this month.")
    await page.locator("#f-overall").fill("A quiet month; nothing to act on.")
    await page.get_by_role("button", name="Save the draft").click()
    await page.wait_for_url(f"**/monthly-report/{month}*")
    await expect(page.locator("#f-overall")).to_have_value("A quiet month; nothing to act on.")
    for lang in ("zh", "en"):
        href = await page.locator(f"#preview-{lang}").get_attribute("href")
        preview = await page.request.get(screen.base + (href or ""))
        assert preview.status == 200 and (await preview.body()).startswith(b"%PDF")

    await page.locator("#issue-form input[name=content_sha256]").evaluate(
        "input => input.value = '0'.repeat(64)")
    status = await screen.refused(page.get_by_role("button",
                                                   name="Approve and issue the report"))
    assert status == 409
    await expect(page.locator("#error")).to_contain_text("changed since this page showed it")
    await expect(page.locator("#report-status")).to_have_text("Draft: not issued yet")
    await page.get_by_role("button", name="Approve and issue the report").click()
    await expect(page.locator("#report-status")).to_have_text(
        "Issued and frozen: a correction is a new revision")
    await expect(page.locator("#frozen")).to_contain_text("a new revision")
    await expect(page.locator("#f-overall")).to_have_count(0)
    await expect(page.locator("#review-overall")).to_have_text(
        "A quiet month; nothing to act on.")
    await expect(page.locator("#revision-1 li[data-meaning=approved]")).to_contain_text(
        "Li Wei (Quality)")
    issued = {}
    for link in await page.locator("#revision-1 a.download").all():
        pdf = await page.request.get(screen.base + (await link.get_attribute("href") or ""))
        assert pdf.status == 200 and (await pdf.body()).startswith(b"%PDF")
        issued[await link.get_attribute("data-lang")] = await pdf.body()
    assert set(issued) == {"zh", "en"}
    await screen.shot("issued")

    await page.locator("#f-corrects").fill("The overall review named the wrong month.")
    await page.get_by_role("button", name="Start a correction (a new revision)").click()
    await expect(page.locator("#report-status")).to_have_text(
        "Correction being drafted: issue it as the next revision")
    await expect(page.locator("#correcting")).to_contain_text("Revision 2 corrects")
    await expect(page.locator("#f-overall")).to_have_value("A quiet month; nothing to act on.")
    await expect(page.locator("#revision-1")).to_be_visible()  # revision 1 stays as issued
    await screen.shot("correcting")
    await screen.sign_out()

    await screen.sign_in("Chen Jie", "manager")
    await screen.goto(f"/manager?month={month}")
    await page.locator("#monthly-report-link").click()
    await page.wait_for_url(f"**/monthly-report/{month}")
    await expect(page.locator("#issue-form, #correct-form, #review-form")).to_have_count(0)
    link = page.locator("#revision-1 a.download[data-lang=en]")
    again = await page.request.get(screen.base + (await link.get_attribute("href") or ""))
    assert await again.body() == issued["en"]  # the issued bytes, unchanged


async def issue_month(system: System, month: str) -> None:
    """Quality issues a month's report through reporting's API."""
    async with system.client("reporting", "quality", sub="li.wei") as quality:
        ok(await quality.put(f"/reports/monthly/{month}/draft",
                             json={"overall": f"Review of {month}."}))
        sha = ok(await quality.get(f"/reports/monthly/{month}"))["content_sha256"]
        ok(await quality.post(f"/reports/monthly/{month}/issue",
                              json={"content_sha256": sha}), 201)


async def test_p_5_4_2_records_past_retention_are_disposed_of_and_a_kept_one_refused(
        screen: Screen, actors: Actors, console_system: System):
    """Nothing is due on a fresh system; a monthly report of a month over ten years ago is
    listed with the policy, and Quality disposes of it with a reason (the disposal record
    shows who, when, why and the issued files); a record still kept is refused, with the
    day its period ends."""
    page = screen.page
    await screen.sign_in("Li Wei", "quality")
    await screen.goto("/records")
    await expect(page.locator("#policy")).to_contain_text("monthly report")
    await expect(page.locator("#nothing-due")).to_be_visible()

    old, kept = quiet_month(2010, 2013), quiet_month(2018, 2021)
    await issue_month(console_system, old)
    await issue_month(console_system, kept)
    await screen.goto("/records")
    row = page.locator(f"[id='due-monthly_report:{old}']")
    await expect(row).to_be_visible()
    await expect(page.locator(f"[id='due-monthly_report:{kept}']")).to_have_count(0)

    # A record still within its period, slipped into the form: refused, nothing disposed of.
    box = row.locator("input[name=records]")
    await box.evaluate(f"input => input.value = 'monthly_report:{kept}'")
    await box.check()
    await page.locator("#f-reason").fill("Retention period ended (QP-4.2-01)")
    status = await screen.refused(page.get_by_role("button",
                                                   name="Dispose of the selected records"))
    assert status == 409
    await expect(page.locator("#error")).to_contain_text(f"monthly_report:{kept} is kept until")
    year = int(kept[:4]) + 10
    await expect(page.locator("#retained-until")).to_contain_text(str(year))
    await expect(page.locator(f"[id='due-monthly_report:{old}']")).to_be_visible()

    await screen.goto("/records")
    await page.locator(f"[id='due-monthly_report:{old}'] input[name=records]").check()
    await page.locator("#f-reason").fill("Retention period ended (QP-4.2-01)")
    await page.get_by_role("button", name="Dispose of the selected records").click()
    await page.wait_for_url("**/records/disposals?*")
    disposal = page.locator(f"[id='disposal-monthly_report:{old}']")
    await expect(disposal).to_contain_text("Retention period ended (QP-4.2-01)")
    await expect(disposal).to_contain_text("Li Wei")
    await expect(disposal.locator("code")).to_have_count(2)  # its zh and en PDFs
    await expect(page.locator(f"[id='due-monthly_report:{old}']")).to_have_count(0)
    await screen.shot("disposed")
