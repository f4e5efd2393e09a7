"""Each role's pages of the web console beyond the first slice (issue 10): the responsible
unit's photos and completion, Quality's rejection, no-action conclusion and major review, the
manager's charts and open work, the auditor's timeline. Earlier steps are taken through the
APIs (tests/e2e/flow.py); what a test is about is done in the browser."""

from playwright.async_api import expect

from tests.browser.conftest import Screen
from tests.browser.helpers import drawn, quality_opens_new_form, with_photo
from tests.e2e.flow import Flow
from tests.e2e.harness import Actors
from tests.support import ok


async def test_p_5_3_2_the_unit_sees_the_photos_and_marks_its_actions_done(
        screen: Screen, actors: Actors):
    """P-5.3.2: the responsible unit works with the complaint's photos; after Quality verified
    its countermeasures it marks each action done, and the last one completes the request."""
    flow = Flow(actors)
    fb = await with_photo(flow)
    assigned = await flow.assign(fb["id"], ["production"])
    action_id = assigned["responsible_units"][0]["action_id"]
    await flow.propose(action_id, "production")
    await flow.verify(fb["id"], "production")
    await flow.action(action_id, "production", status="accepted")

    page = screen.page
    await screen.sign_in("Liu Gang", "unit", unit="production")
    await screen.goto(f"/actions/{action_id}")
    await expect(page.locator("#status")).to_have_text("Accepted")
    photo = page.get_by_role("img", name="Photo: crack.png")
    await expect(photo).to_be_visible()
    assert await drawn(photo), "the photo did not load"
    await page.locator("#note-corrective-1").fill("Die replaced; first article FA-2291 OK")
    await page.get_by_role("button", name="Mark done (Corrective 1)").click()
    await expect(page.locator("#item-corrective-1")).to_contain_text("FA-2291")
    await expect(page.locator("#status")).to_have_text("Accepted")  # one action still open
    await screen.shot("one-done")
    await page.get_by_role("button", name="Mark done (Preventive 1)").click()
    await expect(page.locator("#status")).to_have_text("Completed")
    await expect(page.locator("#completed")).to_be_visible()
    await expect(page.get_by_role("button", name="Mark done (Preventive 1)")).to_have_count(0)
    await screen.shot("completed")


async def test_p_5_3_2_quality_rejects_with_a_reason_and_a_rejection_without_one_is_refused(
        screen: Screen, actors: Actors):
    """Quality sees the evidence on the form, rejects a unit's countermeasures: without a
    reason the service refuses (422) and the page says so beside the field, keeping the
    choice; with one, the unit's entry shows it."""
    flow = Flow(actors)
    fb = await with_photo(flow)
    assigned = await flow.assign(fb["id"], ["production"])
    await flow.propose(assigned["responsible_units"][0]["action_id"], "production")

    page = screen.page
    await screen.sign_in("Li Wei", "quality")
    await screen.until_shown(f"/cases/{fb['id']}", "form.verify")
    assert await drawn(page.get_by_role("img", name="Photo: crack.png"))
    await page.get_by_role("radio", name="Reject").check()
    status = await screen.refused(page.get_by_role("button", name="Record the verdict"))
    assert status == 422
    await expect(page.locator("#e-reason")).to_contain_text("Check this field.")
    await expect(page.get_by_role("radio", name="Reject")).to_be_checked()
    await page.locator("#f-reason").fill("Containment misses the WIP on line 3")
    await page.get_by_role("button", name="Record the verdict").click()
    await expect(page.locator(".unit-status")).to_have_text("Rejected")
    await expect(page.locator(".rejection")).to_contain_text("misses the WIP on line 3")
    await expect(page.locator("form.verify")).to_have_count(0)
    await screen.shot("rejected")


async def test_p_5_3_5_quality_flags_a_major_complaint_and_records_the_heads_review(
        screen: Screen, actors: Actors):
    """P-5.3.5: flagged major on the form, the heads are summoned at once (named on the
    page); their review meeting and the drafted solution are recorded there."""
    fb = await quality_opens_new_form(screen, Flow(actors), "form[action$='/major']")
    page = screen.page
    await page.locator("#f-major_reason").fill("The customer's assembly line stopped")
    await page.get_by_role("button", name="Flag major and summon the heads").click()
    await expect(page.locator("#major")).to_contain_text("The customer's assembly line stopped")
    case = ok(await actors.quality.get(f"/cases/{fb['id']}"))
    for head in case["major"]["heads"]:
        await expect(page.locator("#heads")).to_contain_text(head["name"])
    await page.locator("#f-held_at").fill("2026-12-07T10:00")
    await page.locator("#f-participants").fill("Li Wei\nR&D head\nProduction head")
    await page.locator("#f-decisions").fill("Stop line 3; 100% inspection of stock")
    await page.locator("#f-drafted_solution").fill("Replace the lot within 48 h")
    await page.get_by_role("button", name="Record the review").click()
    review = page.locator("#major article.review")
    await expect(review).to_contain_text("Stop line 3; 100% inspection of stock")
    await expect(review).to_contain_text("R&D head")
    await expect(review).to_contain_text("10:00")  # the plant's wall clock, as typed
    await screen.shot("reviewed")


async def test_p_f_3_quality_concludes_a_complaint_without_corrective_action(
        screen: Screen, actors: Actors):
    """P-F.3: not the plant's fault; the record goes to Sales, which can reply."""
    fb = await quality_opens_new_form(screen, Flow(actors), "form[action$='/conclusion']")
    page = screen.page
    await page.locator("#f-outcome").select_option("customer_misuse")
    await page.locator("#f-finding").fill("Torqued to 45 Nm at the customer; drawing allows 25")
    await page.get_by_role("button", name="Conclude without corrective action").click()
    await expect(page.locator("#status")).to_have_text("Resolved")
    await expect(page.locator("#outcome")).to_have_text("Customer misuse")
    await screen.shot("concluded")
    await screen.sign_out()
    await screen.sign_in("Wang Fang", "sales")
    await screen.until_shown(f"/feedback/{fb['id']}", "form[action$='/reply']")
    await expect(page.locator("#qr")).to_be_visible()


async def test_p_f_6_the_manager_sees_charts_open_cases_by_age_major_complaints_and_capas(
        screen: Screen, actors: Actors):
    """P-F.6, P-5.3.5, P-5.3.4: the monthly page with reporting's charts and the open cases
    by age; the open work page with a major complaint (heads summoned) and a CAPA."""
    flow = Flow(actors)
    major = await flow.register(severity="major")  # escalated and alerted at once
    capa = ok(await actors.capa_quality.post("/capas", json={
        "title": "Cracked housings at several customers", "owner_unit": "production",
        "feedback_ids": [major["id"]]}), 201)
    page = screen.page
    await screen.sign_in("Chen Jie", "manager")
    await expect(page.locator("#by-age")).to_contain_text("0-3 days")
    charts = page.locator(".charts img")
    await expect(charts).to_have_count(4)
    for i in range(4):
        await charts.nth(i).scroll_into_view_if_needed()
        await expect(charts.nth(i)).to_have_js_property("complete", True)
        assert await drawn(charts.nth(i)), f"chart {i} did not load"
    await screen.shot("charts")
    await screen.until_shown("/manager/open", f"#majors a:text-is('{major['register_no']}')")
    await expect(page.locator("#capas")).to_contain_text(capa["number"])
    await expect(page.locator("#capas")).to_contain_text("Cracked housings at several customers")


async def test_p_5_4_2_the_auditor_finds_a_complaint_by_number_and_reads_its_timeline(
        screen: Screen, actors: Actors):
    """P-5.4.2: by register number to the complaint's whole history (who, when, what changed
    from what), read-only; an unknown number is refused beside the field."""
    flow = Flow(actors)
    fb = await flow.register()
    await flow.escalate(fb["id"], note="Customer line stopped")
    page = screen.page
    await screen.sign_in("Zhou Yu", "auditor")
    await expect(page.locator("h1")).to_have_text("Complaint history")
    await page.locator("#f-q").fill("CF-1999-999999")
    assert await screen.refused(page.get_by_role("button", name="Show the history")) == 404
    await expect(page.locator("#e-q")).to_have_text("No complaint has this register number.")
    await expect(page.locator("#f-q")).to_have_value("CF-1999-999999")
    for _ in range(60):  # reporting reads the events a moment later
        await page.locator("#f-q").fill(fb["register_no"])
        await page.locator("#f-q").press("Enter")
        await page.wait_for_load_state()
        if await page.locator("li[data-type='complaint.accepted']").count():
            break
        await page.wait_for_timeout(500)
        await screen.goto("/audit")
    await screen.shot("timeline")
    await expect(page.locator("h1 .regno")).to_have_text(fb["register_no"])
    registered = page.locator("li[data-type='feedback.registered']")
    await expect(registered).to_contain_text("Feedback registered")
    await expect(registered).to_contain_text("wang.fang")
    escalated = page.locator("li[data-type='complaint.escalated']")
    await expect(escalated).to_contain_text("Customer line stopped")
    await expect(page.locator("main form[method=post]")).to_have_count(0)


async def test_p_3_3_a_unit_sees_only_its_own_action_requests(screen: Screen, actors: Actors):
    """P-3.3: a complaint asked of production and logistics: production's supervisor lists
    and opens only production's request; logistics' answers "not found" (404), as the
    service says, without telling who else is responsible."""
    flow = Flow(actors)
    fb = await flow.register()
    await flow.escalate(fb["id"])
    assigned = await flow.assign(fb["id"], ["production", "logistics"])
    ids = {u["unit"]: u["action_id"] for u in assigned["responsible_units"]}
    await flow.action(ids["logistics"], "logistics")  # both requests are with the units
    page = screen.page
    await screen.sign_in("Liu Gang", "unit", unit="production")
    await screen.until_shown("/unit", f"#requests a[href='/actions/{ids['production']}']")
    await expect(page.locator(f"#requests a[href='/actions/{ids['logistics']}']")
                 ).to_have_count(0)
    screen.refusals += 1  # the 404 page Chromium notes in its console
    answer = await page.goto(screen.base + f"/actions/{ids['logistics']}")
    assert answer is not None and answer.status == 404
    await expect(page.locator("#f-containment")).to_have_count(0)
    await screen.shot("not-ours")
