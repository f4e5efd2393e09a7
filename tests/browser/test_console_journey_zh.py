"""One complaint carried from the customer's call to the satisfied customer entirely in the
Chinese console (简体中文), switching people in one browser: every page asserted by the
Chinese words a person reads there (issue 10)."""

from playwright.async_api import expect

from tests.browser.conftest import Screen
from tests.browser.helpers import phone_call, register_by_phone


async def test_p_f_1_to_p_f_4_a_whole_complaint_in_chinese(screen: Screen):
    """P-F.1 - P-F.4, P-5.3.2 in zh: registration, the form to Quality, responsibility, the
    unit's countermeasures rejected with a reason and proposed again, verified, Sales's
    reply and the customer's satisfaction."""
    page = screen.page
    await screen.goto("/signin")
    await page.get_by_role("button", name="中文").click()
    await expect(page.locator("h1")).to_have_text("登录")

    # Sales (销售部): the call, the register number, the form to Quality
    await screen.sign_in("王芳", "sales")
    await expect(page.locator("h1")).to_have_text("销售部待办")
    feedback_id, register_no = await register_by_phone(screen, phone_call())
    await expect(page.locator("p.done")).to_contain_text("已登记。请告知客户登记号")
    await expect(page.locator("#status")).to_have_text("已登记")
    await page.locator("#f-note").fill("客户生产线停线，请分析壳体开裂原因。")
    await page.get_by_role("button", name="提交质量部").click()
    await expect(page.locator("#status")).to_have_text("质量部处理中")
    await screen.shot("escalated")
    await screen.sign_out()

    # Quality (质量部): cause, defect code, responsible unit
    await screen.sign_in("李伟", "quality")
    await expect(page.locator("h1")).to_contain_text("客诉处理单")
    await screen.until_shown(f"/cases/{feedback_id}", "form[action$='/responsibility']")
    await expect(page.locator("#status")).to_have_text("分析中")
    await expect(page.locator("dl.facts")).to_contain_text("客户生产线停线")
    await page.locator("#f-preliminary_cause").fill("模具磨损导致安装凸台处气孔")
    await page.locator("#f-defect_code").select_option("D03")
    await page.get_by_label("生产部").check()
    await page.locator("#f-request").fill("查明根本原因，隔离库存并挑选")
    await page.locator("form[action$='/responsibility'] button[type=submit]").click()
    await expect(page.locator("#status")).to_have_text("等待责任部门")
    await screen.shot("assigned")
    await screen.sign_out()

    # The responsible unit (生产部): its investigation, submitted
    await screen.sign_in("刘刚", "unit", unit="production")
    await expect(page.locator("h1")).to_contain_text("措施要求")
    await screen.until_shown("/unit", f"#requests a:text-is('{register_no}')")
    await page.locator(f"#requests a:text-is('{register_no}')").click()
    await expect(page.locator("#status")).to_have_text("待调查")
    await page.locator("#f-containment").fill("挑选客户处及仓库的全部库存")
    await page.locator("#f-five_whys").fill("凸台开裂\n气孔\n模具磨损")
    await page.locator("#f-category").select_option("machine")
    await page.locator("#f-statement").fill("模具磨损超出寿命")
    for kind, text in (("corrective", "更换模具"), ("preventive", "模具寿命计数器")):
        await page.locator(f"#f-{kind}_1_description").fill(text)
        await page.locator(f"#f-{kind}_1_owner").fill("liu.gang")
        await page.locator(f"#f-{kind}_1_due_date").fill("2026-12-20")
    await page.get_by_role("button", name="提交质量部").click()
    await expect(page.locator("#status")).to_have_text("对策待验证")
    await screen.shot("submitted")
    await screen.sign_out()

    # Quality rejects, with a reason the unit can act on
    await screen.sign_in("李伟", "quality")
    await screen.until_shown(f"/cases/{feedback_id}", "form.verify")
    await page.get_by_role("radio", name="驳回").check()
    await page.locator("#f-reason").fill("隔离措施未包括在制品")
    await page.get_by_role("button", name="记录结论").click()
    await expect(page.locator(".unit-status")).to_have_text("对策被退回")
    await expect(page.locator(".rejection")).to_contain_text("隔离措施未包括在制品")
    await screen.shot("rejected")
    await screen.sign_out()

    # The unit reads the reason and proposes again
    await screen.sign_in("刘刚", "unit", unit="production")
    await screen.until_shown(f"/actions/{register_no}-production-r1",
                             "#status:text-is('被退回')")
    await expect(page.locator(".rejection")).to_contain_text("隔离措施未包括在制品")
    await page.locator("#f-containment").fill("挑选客户处、仓库及在制品的全部库存")
    await page.get_by_role("button", name="提交质量部").click()
    await expect(page.locator("#status")).to_have_text("对策待验证")
    await screen.sign_out()

    # Quality accepts: the record goes to Sales
    await screen.sign_in("李伟", "quality")
    await screen.until_shown(f"/cases/{feedback_id}", "form.verify")
    await page.get_by_role("radio", name="接受").check()
    await page.get_by_role("button", name="记录结论").click()
    await expect(page.locator("#status")).to_have_text("已交销售")
    await screen.shot("verified")
    await screen.sign_out()

    # Sales replies and records the customer's answer
    await screen.sign_in("王芳", "sales")
    await screen.until_shown(f"/feedback/{feedback_id}", "form[action$='/reply']")
    await expect(page.locator("#qr")).to_have_text("质量部记录")
    await page.locator("#f-reply").fill("已查明原因：模具磨损。已更换模具并挑选全部库存。")
    await page.get_by_role("button", name="发送答复").click()
    await expect(page.locator("#status")).to_have_text("已答复客户")
    await page.get_by_label("满意", exact=True).check()
    await page.get_by_role("button", name="记录客户答复").click()
    await expect(page.locator("#status")).to_have_text("已关闭")
    await expect(page.locator("dl.facts").first).to_contain_text("客户满意是")
    await screen.shot("closed")
    assert await page.locator("html").get_attribute("lang") == "zh-Hans"
