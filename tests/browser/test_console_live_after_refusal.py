"""Live updates on a page shown after a refused form.

A refused form comes back as the POST's answer (4xx, the service's words beside the field),
so the page sits at an address that only takes POST. When the record changes meanwhile, the
page's live parts are fetched from the record's own page (never a GET of the POST address:
405), and what Sales typed and the refusal beside it stay on the screen.
"""

from playwright.async_api import Response, expect

from tests.browser.conftest import Screen
from tests.e2e.flow import Flow
from tests.e2e.harness import Actors


async def test_p_5_3_1_a_refused_evidence_form_keeps_its_typing_while_the_record_changes(
        screen: Screen, actors: Actors):
    flow = Flow(actors)
    fb = await flow.register()
    await flow.escalate(fb["id"])
    await flow.case(fb["id"])  # with Quality: the page's whereabouts line is live
    page, record = screen.page, f"/feedback/{fb['id']}"
    await screen.sign_in("Wang Fang", "sales")
    await screen.until_shown(record, "#form-whereabouts[data-state=with_quality]")

    # Returned samples with a quantity the register cannot take: refused beside the field.
    await page.locator("#f-sample_quantity").fill("about forty")
    await page.locator("#f-sample_location").fill("Rack B3, quarantine")
    await page.locator("#f-sample_note").fill("Two housings cracked at the boss")
    assert await screen.refused(page.get_by_role("button", name="Attach", exact=True)) == 422
    assert page.url.endswith(f"{record}/evidence")  # the POST's address
    await expect(page.locator("#error")).to_be_visible()
    await expect(page.locator("#f-sample_quantity")).to_have_attribute("aria-invalid", "true")
    await expect(page.locator("html")).to_have_attribute("data-live", "on")

    answers: list[Response] = []
    page.on("response", lambda answer: answers.append(answer))
    await page.evaluate("() => { window.liveUpdates = 0; document.addEventListener("
                        "'qms:updated', () => { window.liveUpdates += 1; }); }")

    # Quality acts on the complaint: its event reaches the open page.
    async with page.expect_response(lambda r: r.url.endswith(record)
                                    and r.request.method == "GET") as refetched:
        await flow.assign(fb["id"], ["production"])
    assert (await refetched.value).status == 200
    await page.wait_for_function("window.liveUpdates > 0")
    await screen.shot("record-changed")

    assert not [(a.status, a.url) for a in answers if a.status == 405]
    await expect(page.locator("#error")).to_be_visible()
    await expect(page.locator("#f-sample_quantity")).to_have_value("about forty")
    await expect(page.locator("#f-sample_location")).to_have_value("Rack B3, quarantine")
    await expect(page.locator("#f-sample_note")).to_have_value("Two housings cracked at the boss")
    # The note that the record changed offers the record's own page, not the POST's address.
    await expect(page.locator("#changed")).to_be_visible()
    await expect(page.locator("#changed a")).to_have_attribute("href", screen.base + record)
