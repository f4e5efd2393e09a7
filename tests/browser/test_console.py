"""The web console in a real browser: people doing their part of the procedure, in English and
Chinese, with the keyboard alone, and a board that updates itself (issue 10, first slice)."""

from playwright.async_api import expect

from tests.browser.conftest import Screen
from tests.browser.helpers import (
    fill_investigation,
    phone_call,
    quality_assigns_production,
    register_by_phone,
)
from tests.e2e.flow import Flow, feedback_body
from tests.e2e.harness import Actors
from tests.support import ok


async def test_p_f_1_to_p_f_4_a_complaint_from_the_phone_call_to_the_satisfied_customer(
        screen: Screen):
    """P-F.1 - P-F.4, P-5.3.1, P-5.3.2: one complaint carried through every role's pages,
    switching people in one browser, nothing but clicks and typing."""
    page = screen.page
    await screen.sign_in("Wang Fang", "sales")
    await expect(page.locator("h1")).to_have_text("What waits for Sales")

    feedback_id, register_no = await register_by_phone(screen, phone_call())
    assert register_no.startswith("CF-")
    await expect(page.locator("#status")).to_have_text("Registered")
    await page.locator("#f-note").fill("Customer line stopped; please analyse the housings.")
    await page.get_by_role("button", name="Escalate to Quality").click()
    await expect(page.locator("#status")).to_have_text("With Quality")
    await screen.shot("escalated")
    await screen.goto("/sales")
    await expect(page.locator("#inbox")).to_contain_text(register_no)
    await screen.sign_out()

    # Quality: the form reaches the board; cause, defect code and responsible unit
    await screen.sign_in("Li Wei", "quality")
    await screen.until_shown("/quality", f"#board a:text-is('{register_no}')")
    await page.locator(f"#board a:text-is('{register_no}')").click()
    await expect(page.locator("#status")).to_have_text("Open")
    await screen.shot()
    await quality_assigns_production(page)
    await screen.shot("assigned")
    await screen.sign_out()

    # The responsible unit: its own request, the investigation, submitted to Quality
    await screen.sign_in("Liu Gang", "unit", unit="production")
    await screen.until_shown("/unit", f"#requests a:text-is('{register_no}')")
    await page.locator(f"#requests a:text-is('{register_no}')").click()
    await expect(page.locator("#status")).to_have_text("Requested")
    await fill_investigation(page, "Sort all stock at the customer and in the warehouse")
    await page.locator("#f-disposition_type").select_option("rework")
    await page.locator("#f-disposition_quantity").fill("40")
    await page.locator("#f-disposition_cost").fill("860.00")
    await screen.shot("filled")
    await page.get_by_role("button", name="Submit to Quality").click()
    await expect(page.locator("#status")).to_have_text("Proposed")
    await screen.shot("submitted")
    await screen.sign_out()

    # Quality verifies the countermeasures; the record goes to Sales
    await screen.sign_in("Li Wei", "quality")
    await screen.until_shown(f"/cases/{feedback_id}", "form.verify")
    await page.get_by_label("Accept").check()
    await page.get_by_role("button", name="Record the verdict").click()
    await expect(page.locator("#status")).to_have_text("Resolved")
    await screen.shot("verified")
    await screen.sign_out()

    # Sales: Quality's record, the reply, the customer's answer
    await screen.sign_in("Wang Fang", "sales")
    await screen.until_shown(f"/feedback/{feedback_id}", "form[action$='/reply']")
    await expect(page.locator("#qr")).to_have_text("Quality's record")
    await page.locator("#f-reply").fill("Root cause found; die replaced; stock sorted.")
    await page.get_by_role("button", name="Send reply").click()
    await expect(page.locator("#status")).to_have_text("Replied")
    await page.get_by_label("Satisfied", exact=True).check()
    await page.get_by_role("button", name="Record the answer").click()
    await expect(page.locator("#status")).to_have_text("Closed")
    await screen.shot("closed")
    await screen.sign_out()

    # The manager: this month's table and its files
    await screen.sign_in("Chen Jie", "manager")
    await expect(page.locator("h1")).to_have_text("Complaint Handling Statistics Table")
    for kind in ("xlsx", "csv"):
        link = page.locator(f"a[href*='format={kind}']")
        resp = await page.request.get(screen.base + (await link.get_attribute("href") or ""))
        assert resp.status == 200 and "complaint-statistics" in (
            resp.headers.get("content-disposition") or ""), await resp.text()


async def test_p_5_1_registration_in_chinese_shows_chinese_words(screen: Screen):
    """P-5.1, P-5.2 in 简体中文: the language switch, remembered, and the pages in Chinese."""
    page = screen.page
    await screen.goto("/signin")
    await page.get_by_role("button", name="中文").click()
    await expect(page.locator("h1")).to_have_text("登录")
    assert await page.locator("html").get_attribute("lang") == "zh-Hans"
    await screen.shot("chinese")
    await screen.sign_in("王芳", "sales")
    await expect(page.locator("h1")).to_have_text("销售部待办")
    feedback_id, register_no = await register_by_phone(screen, phone_call())
    await expect(page.locator("p.done")).to_contain_text("已登记。请告知客户登记号")
    await expect(page.locator("#status")).to_have_text("已登记")
    await expect(page.locator("dl.facts")).to_contain_text("产品质量")
    await expect(page.get_by_role("button", name="提交质量部")).to_be_visible()
    # A refusal in the person's language, keeping what they typed: an empty description
    await screen.goto("/sales/new")
    await page.locator("#f-customer_id").fill("C-ZH-1")
    await page.locator("#f-customer_name").fill("深圳明亮电机有限公司")
    status = await screen.refused(page.locator("form[action='/sales/new'] button[type=submit]"))
    assert status == 422
    await expect(page.locator("#error")).to_contain_text("部分字段无效，请检查后重新提交。")
    await expect(page.locator("#e-description")).to_contain_text("请检查此项。")
    await expect(page.locator("#f-customer_name")).to_have_value("深圳明亮电机有限公司")
    await expect(page.locator("#f-description")).to_have_attribute("aria-invalid", "true")
    await screen.shot("refused")


async def tab_to(screen: Screen, selector: str) -> None:
    """Press Tab until the element has the focus (the keyboard alone; fails if it never does)."""
    element = screen.page.locator(selector).first
    for _ in range(60):
        if await element.evaluate("el => el === document.activeElement"):
            return
        await screen.page.keyboard.press("Tab")
    raise AssertionError(f"{selector} cannot be reached with Tab")


async def test_p_5_1_registration_with_the_keyboard_alone(screen: Screen):
    """Sign-in and a whole registration without the mouse: Tab, typing, arrow keys, Enter."""
    page, keys = screen.page, screen.page.keyboard
    await screen.goto("/signin")
    await tab_to(screen, "#f-name")
    await keys.type("Zhao Min")
    await tab_to(screen, "#f-role")  # sales is the first role: left as it is
    await tab_to(screen, "#signin-submit")
    await keys.press("Enter")
    await page.wait_for_url("**/sales")
    await screen.shot("signed-in")
    await tab_to(screen, "main a[href='/sales/new']")
    await keys.press("Enter")
    await page.wait_for_url("**/sales/new")
    call = phone_call()
    for name in ("customer_id", "customer_name", "product_code", "lot", "quantity",
                 "description"):
        await tab_to(screen, f"#f-{name}")
        await keys.type(call[name])
    await tab_to(screen, "#f-severity")
    await keys.press("ArrowDown")  # normal -> major: escalated at once (P-5.3.5)
    await screen.shot("typed")
    await tab_to(screen, "#f-loss_amount")
    await keys.type("300.00")
    await keys.press("Enter")  # submits the form
    await page.wait_for_url("**/feedback/*")
    await expect(page.locator("p.done")).to_contain_text("Registered")
    await expect(page.locator("dl.facts")).to_contain_text("Major")
    await screen.shot()


async def test_p_5_3_2_quality_assigns_and_rejects_with_the_keyboard_alone(screen: Screen,
                                                                         actors: Actors):
    """Quality's part without the mouse: from the board to the form (Tab, Enter), the cause,
    a defect code (arrow keys), a unit (Space), the request; later the unit's
    countermeasures rejected with a reason (arrow keys move the radio choice)."""
    flow = Flow(actors)
    fb = await flow.register()
    await flow.escalate(fb["id"])
    await flow.case(fb["id"])
    page, keys = screen.page, screen.page.keyboard
    await screen.sign_in("Li Wei", "quality")
    await screen.until_shown("/quality", f"#board a[href='/cases/{fb['id']}']")
    await tab_to(screen, f"#board a[href='/cases/{fb['id']}']")
    await keys.press("Enter")
    await page.wait_for_url(f"**/cases/{fb['id']}")
    await tab_to(screen, "#f-preliminary_cause")
    await keys.type("Porosity at the mounting boss")
    await tab_to(screen, "#f-defect_code")
    await keys.press("ArrowDown")  # D01 -> D02
    await tab_to(screen, "input[name=units][value=production]")
    await keys.press("Space")
    await tab_to(screen, "#f-request")
    await keys.type("Find the root cause; sort the stock")
    await tab_to(screen, "form[action$='/responsibility'] button[type=submit]")
    await keys.press("Enter")
    await expect(page.locator("#status")).to_have_text("Awaiting units")
    await screen.shot("assigned-by-keyboard")

    await flow.propose(f"{fb['register_no']}-production-r1", "production")
    await screen.until_shown(f"/cases/{fb['id']}", "form.verify")
    await tab_to(screen, "form.verify input[value=accept]")
    await keys.press("ArrowDown")  # the radio group: accept -> reject
    await tab_to(screen, "#f-reason")
    await keys.type("Containment does not cover the work in progress")
    await tab_to(screen, "form.verify button[type=submit]")
    await keys.press("Enter")
    await expect(page.locator(".unit-status")).to_have_text("Rejected")
    await expect(page.locator(".rejection")).to_contain_text("work in progress")
    await screen.shot("rejected-by-keyboard")


async def test_no_browser_console_errors_on_any_page_of_any_role(screen: Screen,
                                                                 actors: Actors):
    """Every page of every role opens without a console error (the fixture checks), and
    each is photographed; a form without its CSRF token is refused with a page."""
    fb = await Flow(actors).register(**{})
    pages = {
        ("Wang Fang", "sales", None): ["/sales", "/sales/new", f"/feedback/{fb['id']}"],
        ("Li Wei", "quality", None): ["/quality", f"/cases/{fb['id']}", "/manager"],
        ("Liu Gang", "unit", "production"): ["/unit"],
        ("Chen Jie", "manager", None): ["/manager", "/manager/open", "/quality", "/sales",
                                        "/audit"],
        ("Zhou Yu", "auditor", None): ["/audit", f"/cases/{fb['id']}", f"/feedback/{fb['id']}"],
    }
    for (name, role, unit), paths in pages.items():
        await screen.sign_in(name, role, unit)
        for path in paths:
            await screen.goto(path)
            assert await screen.page.locator("h1").count() == 1, path
        await screen.sign_out()
    resp = await screen.page.request.post(screen.base + "/signin",
                                          form={"name": "x", "role": "sales"},
                                          headers={"Accept-Language": "en"})
    assert resp.status == 403 and "did not come from this console" in await resp.text()


async def test_p_f_5_the_quality_board_shows_a_new_form_without_reloading(screen: Screen,
                                                                          actors: Actors):
    """P-F.5: a form Sales opens appears on Quality's open board by itself (Server-Sent
    Events fed from the domain events), without the page being loaded again."""
    page = screen.page
    await screen.sign_in("Li Wei", "quality")
    await expect(page.locator("html")).to_have_attribute("data-live", "on")
    await page.evaluate("window.loadedOnce = true")
    body = feedback_body(severity="major")  # major: escalated at registration
    created = ok(await actors.sales.post("/feedback", json=body), 201)
    await expect(page.locator("#board")).to_contain_text(created["register_no"])
    assert await page.evaluate("window.loadedOnce === true"), "the page was loaded again"
    await screen.shot("live")
