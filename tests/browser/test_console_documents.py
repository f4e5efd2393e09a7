"""The Complaint Handling Report in the console (issue 11 through issue 10's screens): Quality
approves it on the form, Sales reviews, issues and replies with it, a revision downloads, and
an auditor checks a genuine and an altered PDF. The complaint is carried to Quality's record
through the APIs (tests/e2e/flow.py); the report's steps are taken in the browser."""

import hashlib
from typing import Any

from playwright.async_api import expect

from tests.browser.conftest import Screen
from tests.e2e.flow import Flow
from tests.e2e.harness import Actors
from tests.support import eventually, ok

BASE = "/documents/complaint-reports"


async def report_ready(actors: Actors, ref: str) -> dict[str, Any]:
    """The report's state once reporting has read the verification and the record (D6, D8):
    before that its content is still moving."""
    async with actors.as_role("reporting", "auditor", sub="zhou.yu") as reader:
        async def ready() -> dict[str, Any] | None:
            resp = await reader.get(f"{BASE}/{ref}")
            body = resp.json() if resp.status_code == 200 else None
            return body if body and {"D6", "D8"} <= set(body["sections"]) else None
        return await eventually(ready, timeout=30, what=f"the report of {ref} with D6 and D8")


async def issued_by_api(actors: Actors, ref: str) -> dict[str, Any]:
    """Quality approves and Sales issues the report through reporting's API: the issue
    answer (revision 1 with its `pdf`)."""
    sha = (await report_ready(actors, ref))["content_sha256"]
    system = actors.system
    for role, sub, step in (("quality", "li.wei", "approve"), ("sales", "wang.fang", "issue")):
        async with system.client("reporting", role, sub=sub) as signer:
            answer = ok(await signer.post(f"{BASE}/{ref}/{step}",
                                          json={"content_sha256": sha}), 201)
    return answer


async def test_p_5_3_1_quality_approves_sales_issues_and_replies_with_the_report(
        screen: Screen, actors: Actors):
    """P-5.3.1: Quality approves (批准) the content its page showed; an approval of content
    that moved since is refused (409) with the fresh state beside the message. Sales previews,
    reviews and issues (审核) it, downloads the revision (a PDF of the size stated), and the
    reply form attaches it: the feedback shows the report sent with the reply."""
    flow = Flow(actors)
    fb = await flow.handle_quality_complaint()
    await report_ready(actors, fb["id"])
    page = screen.page

    await screen.sign_in("Li Wei", "quality")
    await screen.goto(f"/cases/{fb['id']}")
    await expect(page.locator("#report-status")).to_have_text("Not yet approved by Quality")
    preview = await page.request.get(
        screen.base + (await page.locator("#report-preview").get_attribute("href") or ""))
    assert preview.status == 200 and preview.headers["content-type"] == "application/pdf"
    assert (await preview.body()).startswith(b"%PDF")
    # The content moved after the page showed it (as a reopen would move it): refused.
    await page.locator("#report-approve input[name=content_sha256]").evaluate(
        "input => input.value = '0'.repeat(64)")
    status = await screen.refused(page.get_by_role("button", name="Approve the report"))
    assert status == 409
    await expect(page.locator("#error")).to_contain_text(
        "The report changed since this page showed it")
    await expect(page.locator("#report-status")).to_have_text("Not yet approved by Quality")
    await page.get_by_role("button", name="Approve the report").click()
    await page.wait_for_url(f"**/cases/{fb['id']}*")
    await expect(page.locator("#report-status")).to_contain_text(
        "Approved by Quality as revision 1")
    approval = page.locator("#revision-1 li[data-meaning=approved]")
    await expect(approval).to_contain_text("Li Wei (Quality)")
    await expect(page.locator("#report-approve")).to_have_count(0)
    await screen.shot("approved")
    await screen.sign_out()

    await screen.sign_in("Wang Fang", "sales")
    await screen.goto(f"/feedback/{fb['id']}")
    await expect(page.locator("#report-not-attached")).to_be_visible()
    await page.get_by_role("button", name="Review and issue the report").click()
    await page.wait_for_url(f"**/feedback/{fb['id']}*")
    await expect(page.locator("#report-status")).to_have_text("Issued: revision 1")
    signatures = page.locator("#revision-1 li")
    await expect(signatures.nth(0)).to_contain_text("Approved (批准): Li Wei")
    await expect(signatures.nth(1)).to_contain_text("Reviewed and issued (审核): Wang Fang")
    filename = f"{fb['register_no']}-rev1.pdf"
    await expect(page.locator("#report-attached")).to_contain_text(f"revision 1 ({filename})")
    await screen.shot("issued")

    link = page.locator("#revision-1 a.download")
    async with page.expect_download() as download:
        await link.click()
    data = (await (await download.value).path()).read_bytes()
    assert data.startswith(b"%PDF") and len(data) == int(
        await link.get_attribute("data-size") or -1), "the revision is the PDF stated"
    assert (await download.value).suggested_filename == filename

    await page.locator("#f-reply").fill("Our analysis and the countermeasures are attached.")
    await page.get_by_role("button", name="Send reply").click()
    await expect(page.locator("#status")).to_have_text("Replied")
    await expect(page.locator("#reply-report")).to_contain_text(filename)
    await expect(page.locator("#reply-report")).to_contain_text(
        "Complaint Handling Report, revision 1")
    await screen.shot("replied")
    sent = ok(await actors.sales.get(f"/feedback/{fb['id']}"))["customer_reply"]["report"]
    assert sent["sha256"] == hashlib.sha256(data).hexdigest()


async def test_p_5_4_2_an_auditor_verifies_a_genuine_and_an_altered_pdf_in_both_languages(
        screen: Screen, actors: Actors):
    """P-5.4.2: the auditor uploads an issued revision (register number, revision and
    signatures shown), the same PDF altered by one byte (not issued by this system, in
    Chinese once the language is switched), and a malformed hash is refused beside its
    field."""
    flow = Flow(actors)
    fb = await flow.handle_quality_complaint()
    issued = await issued_by_api(actors, fb["id"])
    async with actors.as_role("reporting", "auditor", sub="zhou.yu") as reader:
        answer = await reader.get(issued["download"])
        assert answer.status_code == 200, answer.text
        genuine = answer.content
    assert hashlib.sha256(genuine).hexdigest() == issued["pdf"]["sha256"]
    page = screen.page

    await screen.sign_in("Zhou Yu", "auditor")
    await page.get_by_role("link", name="Verify a document").click()
    await expect(page.locator("h1")).to_have_text("Verify a document")
    await page.locator("#f-file").set_input_files(
        {"name": "report.pdf", "mimeType": "application/pdf", "buffer": genuine})
    await page.get_by_role("button", name="Check the file").click()
    verdict = page.locator("#verdict")
    await expect(verdict).to_have_attribute("data-issued", "true")
    await expect(verdict).to_contain_text("Issued by this system")
    await expect(page.locator("#verdict-regno")).to_have_text(fb["register_no"])
    await expect(page.locator("#verdict-revision")).to_have_text("1")
    await expect(page.locator("#verdict-signatures li")).to_have_count(2)
    await expect(page.locator("#verdict-signatures")).to_contain_text("li.wei")
    await screen.shot("genuine")

    await page.locator("#f-sha256").fill("not-a-hash")
    assert await screen.refused(page.get_by_role("button", name="Check the hash")) == 422
    await expect(page.locator("#e-sha256")).to_contain_text("64 digits")
    await expect(page.locator("#f-sha256")).to_have_value("not-a-hash")

    await page.get_by_role("button", name="中文").click()
    await expect(page.locator("h1")).to_have_text("验证文件")
    altered = genuine.replace(b"/Producer", b"/Producex", 1)
    assert altered != genuine
    await page.locator("#f-file").set_input_files(
        {"name": "report.pdf", "mimeType": "application/pdf", "buffer": altered})
    await page.get_by_role("button", name="检查文件").click()
    await expect(verdict).to_have_attribute("data-issued", "false")
    await expect(verdict).to_contain_text("非本系统签发")
    await screen.shot("altered-zh")

    await screen.goto(f"/reports/{fb['register_no']}")
    await expect(page.locator("#report-h")).to_have_text("客诉处理报告")
    await expect(page.locator("#report-status")).to_have_text("已签发：第 1 版")
    await expect(page.locator("#revision-1 li[data-meaning=reviewed]")).to_contain_text(
        "审核并签发")
    await expect(page.locator("#report-approve, #report-issue")).to_have_count(0)
    await screen.shot("report-zh")
