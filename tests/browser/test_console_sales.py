"""Sales' pages in a real browser (issue 10): a phone call registered with its photos (chosen and
dropped, previewed) and returned samples, the inbox's groups, Quality's record returned or the
customer not satisfied (what Quality then reads), and the search of the register."""

import base64
import re
from typing import Any

from playwright.async_api import expect

from tests.browser.conftest import Screen
from tests.browser.helpers import all_drawn, phone_call, photo_png
from tests.e2e.flow import Flow, new_customer
from tests.e2e.harness import Actors
from tests.support import ok

DROP_FILE = """([b64, name]) => {
  const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
  const files = new DataTransfer();
  files.items.add(new File([bytes], name, {type: "image/png"}));
  return files;
}"""


async def sales_reviews_quality_s_record(screen: Screen, actors: Actors) -> dict[str, Any]:
    """A complaint brought through the APIs until Quality's record is with Sales, open on
    Sales' screen."""
    fb = await Flow(actors).handle_quality_complaint()
    await screen.sign_in("Wang Fang", "sales")
    await screen.goto(f"/feedback/{fb['id']}")
    return fb


async def quality_reads(screen: Screen, feedback_id: str, selector: str, words: str) -> None:
    """Quality, signed in next, finds `words` at `selector` on the complaint's form."""
    await screen.sign_out()
    await screen.sign_in("Li Wei", "quality")
    await screen.until_shown(f"/cases/{feedback_id}", selector)
    await expect(screen.page.locator(selector)).to_have_text(words)


async def test_p_5_1_p_5_3_1_a_call_registered_with_two_photos_and_a_returned_sample(
        screen: Screen, actors: Actors):
    """P-5.1, P-5.3.1: an earlier customer picked, one photo chosen and one dropped (both
    previewed before sending), returned samples noted; the record holds all of it."""
    page = screen.page
    earlier = await Flow(actors).register()
    await screen.sign_in("Wang Fang", "sales")
    await screen.goto("/sales/new")
    await page.locator("#f-customer_id").fill(earlier["customer"]["id"])
    await page.locator("#f-customer_id").dispatch_event("change")
    await expect(page.locator("#f-customer_name")).to_have_value(earlier["customer"]["name"])
    await expect(page.locator("#f-phone")).to_have_value(earlier["customer"]["phone"])

    call = phone_call()
    for name in ("product_code", "lot", "quantity", "description"):
        await page.locator(f"#f-{name}").fill(call[name])
    await page.locator("#f-photos").set_input_files(
        [{"name": "crack-1.png", "mimeType": "image/png", "buffer": photo_png(96, 64)}])
    dropped = await page.evaluate_handle(
        DROP_FILE, [base64.b64encode(photo_png(80, 60)).decode(), "crack-2.png"])
    await page.dispatch_event("[data-dropzone]", "drop", {"dataTransfer": dropped})
    await all_drawn(page.locator("#previews img"), 2)
    await expect(page.locator("#previews")).to_contain_text("crack-2.png")
    await page.locator("#f-sample_quantity").fill("12")
    await page.locator("#f-sample_received_on").fill("2026-11-20")
    await page.locator("#f-sample_location").fill("QA lab shelf B3")
    await screen.shot("filled")
    await page.locator("form[action='/sales/new'] button[type=submit]").click()
    await page.wait_for_url("**/feedback/*")
    await screen.shot()

    await expect(page.locator("p.done")).to_contain_text("Registered")
    await all_drawn(page.locator("#evidence img"), 2)
    await expect(page.locator("#evidence table")).to_contain_text("QA lab shelf B3")
    feedback_id = page.url.split("/feedback/", 1)[1].split("?")[0]
    fb = ok(await actors.sales.get(f"/feedback/{feedback_id}"))
    assert sorted(a["filename"] for a in fb["attachments"]) == ["crack-1.png", "crack-2.png"]
    assert fb["samples"][0]["quantity"] == 12
    assert fb["customer"]["id"] == earlier["customer"]["id"]


async def test_p_5_3_1_a_refused_file_is_named_and_the_record_keeps_the_rest(
        screen: Screen, actors: Actors):
    """P-5.3.1: evidence added later on the record's page; a file intake does not accept
    (not a photo or document) is named with intake's refusal, the photo beside it is kept."""
    page = screen.page
    fb = await Flow(actors).register()
    await screen.sign_in("Wang Fang", "sales")
    await screen.goto(f"/feedback/{fb['id']}")
    await page.locator("#f-photos").set_input_files([
        {"name": "crack.png", "mimeType": "image/png", "buffer": photo_png()},
        {"name": "tool.exe", "mimeType": "application/octet-stream",
         "buffer": b"MZ\x90\x00" + bytes(200)}])
    await expect(page.locator("#previews li")).to_have_count(2)
    status = await screen.refused(page.get_by_role("button", name="Attach"))
    assert status == 415
    await expect(page.locator("#refused-files")).to_contain_text("tool.exe")
    await expect(page.locator("#evidence img")).to_have_count(1)


async def test_p_f_4_the_inbox_groups_what_waits_for_sales(screen: Screen, actors: Actors):
    """P-F.1 - P-F.4: new feedback, Quality's record to review, replies due (with Quality)
    and customers not yet asked about satisfaction, each in its own group with its count."""
    flow = Flow(actors)
    new = await flow.register()
    sent = await flow.register()
    await flow.escalate(sent["id"])
    ready = await flow.handle_quality_complaint()
    answered = await flow.register(category="delivery")
    ok(await actors.sales.post(f"/feedback/{answered['id']}/direct-reply",
                               json={"reply": "The shipment leaves today."}))
    page = screen.page
    await screen.sign_in("Wang Fang", "sales")
    for status, fb in (("registered", new), ("with_quality", sent),
                       ("quality_record_ready", ready), ("replied", answered)):
        group = page.locator(f"#group-{status}")
        await expect(group.locator(f"a.regno:text-is('{fb['register_no']}')")).to_be_visible()
        assert int(await page.locator(f"#count-{status}").inner_text()) >= 1
    await expect(page.locator("#g-quality_record_ready")).to_contain_text(
        "Quality's record to review")
    await expect(page.locator("#g-with_quality")).to_contain_text("Replies due")
    await expect(page.locator("#g-replied")).to_contain_text("Satisfaction not yet recorded")
    font = await page.locator("a.inbox-regno").first.evaluate(
        "a => parseFloat(getComputedStyle(a).fontSize)")
    body = await page.locator("body").evaluate("b => parseFloat(getComputedStyle(b).fontSize)")
    assert font > body, "the register number is larger than the text around it"
    await screen.shot("groups")


async def test_p_f_4_not_satisfied_reopens_and_quality_reads_the_comment(
        screen: Screen, actors: Actors):
    """P-F.4 "Satisfied? No": Sales replies, records the customer's answer with a comment;
    the complaint is reopened and Quality's form shows the comment."""
    page = screen.page
    fb = await sales_reviews_quality_s_record(screen, actors)
    comment = "Cracks still found in lot L2026-11-09 after the die change."
    await page.locator("#f-reply").fill("Root cause found; die replaced; stock sorted.")
    await page.get_by_role("button", name="Send reply").click()
    await expect(page.locator("#status")).to_have_text("Replied")
    await page.get_by_label("Not satisfied").check()
    await page.locator("#f-comment").fill(comment)
    await page.get_by_role("button", name="Record the answer").click()
    await expect(page.locator("#status")).to_have_text("With Quality")
    await expect(page.locator("#reopen-comment")).to_have_text(comment)
    await expect(page.locator("#rounds")).to_contain_text(comment)
    await expect(page.locator("#form-whereabouts")).to_be_visible()
    await screen.shot("reopened")
    await quality_reads(screen, fb["id"], "#reopen-comment", comment)


async def test_p_f_4_sales_returns_quality_s_record_with_a_reason(screen: Screen,
                                                                   actors: Actors):
    """P-F.4 review: a record not good enough to answer with goes back to Quality with a
    reason (a blank one refused beside the field); the form is on its way, then with
    Quality, who reads the reason."""
    page = screen.page
    fb = await sales_reviews_quality_s_record(screen, actors)
    reason = "No containment for the stock in transit; the customer will ask."
    await page.locator("#f-reason").fill("   ")  # not empty for the browser; blank to intake
    assert await screen.refused(page.get_by_role("button", name="Return to Quality")) == 422
    await expect(page.locator("#e-reason")).to_be_visible()
    await page.locator("#f-reason").fill(reason)
    await page.get_by_role("button", name="Return to Quality").click()
    await expect(page.locator("#status")).to_have_text("With Quality")
    await expect(page.locator("#rounds")).to_contain_text(reason)
    await expect(page.locator("#form-whereabouts")).to_have_attribute(
        "data-state", re.compile(r"^(sent_to_quality|with_quality)$"))  # on its way or there
    await screen.until_shown(f"/feedback/{fb['id']}",
                             "#form-whereabouts[data-state='with_quality']")
    await expect(page.locator("#form-whereabouts")).to_contain_text("Quality has the "
                                                                     "Complaint Handling Form")
    await quality_reads(screen, fb["id"], "#returned-reason", reason)


async def test_p_5_4_1_search_by_register_number_by_customer_and_by_lot(screen: Screen,
                                                                         actors: Actors):
    """P-5.4.1: the header's search opens a register number's record; a customer's name
    finds all their feedback; a customer number too (exact); a lot the customer quotes
    (exact, or as text); an unknown number says so."""
    page = screen.page
    flow, customer = Flow(actors), new_customer()
    lot = f"L{customer['id']}-7"
    first = await flow.register(customer=customer, product={"code": "HSG-220", "lot": lot})
    second = await flow.register(customer=customer, category="delivery")
    await screen.sign_in("Li Wei", "quality")  # any reader of the register searches it
    await page.locator("#header-q").fill(second["register_no"])
    await page.locator("#header-q").press("Enter")
    await page.wait_for_url(f"**/feedback/{second['id']}")
    await expect(page.locator("h1 .regno")).to_have_text(second["register_no"])

    await page.locator("#header-q").fill(customer["name"])
    await page.locator("#header-q").press("Enter")
    await page.wait_for_url("**/search?*")
    await screen.shot("by-name")
    for fb in (first, second):
        await expect(page.locator(f"#results a:text-is('{fb['register_no']}')")).to_be_visible()
    await expect(page.locator("#results tbody tr")).to_have_count(2)

    await page.locator("#f-q").fill(customer["id"])
    await page.locator("#f-in").select_option("customer")
    await page.locator("form[role=search].card button[type=submit]").click()
    await expect(page.locator("#results tbody tr")).to_have_count(2)
    await screen.shot("by-customer-number")

    await page.locator("#f-q").fill(lot)
    await page.locator("#f-in").select_option("lot")
    await page.locator("form[role=search].card button[type=submit]").click()
    await expect(page.locator("#results tbody tr")).to_have_count(1)
    await expect(page.locator(f"#results a:text-is('{first['register_no']}')")).to_be_visible()
    await expect(page.locator("#results")).to_contain_text(f"Lot {lot}")
    await screen.shot("by-lot")
    await page.locator("#header-q").fill(lot.lower())  # as text: any case
    await page.locator("#header-q").press("Enter")
    await expect(page.locator("#f-in")).to_have_value("text")  # the header's search is text
    await expect(page.locator("#results tbody tr")).to_have_count(1)

    await page.locator("#f-q").fill("CF-2099-999999")
    status = await screen.refused(page.locator("form[role=search].card button[type=submit]"))
    assert status == 404
    await expect(page.locator("#not-found")).to_contain_text("CF-2099-999999")
