"""What several browser tests do: a customer's call as Sales types it, a real photo, and a
complaint brought through the APIs to the step a test starts from."""

import struct
import uuid
import zlib
from typing import Any

from playwright.async_api import Locator, Page, expect

from tests.browser.conftest import Screen
from tests.e2e.flow import Flow
from tests.support import ok


def phone_call() -> dict[str, str]:
    """What a customer says on the phone, as Sales types it."""
    tag = uuid.uuid4().hex[:6].upper()
    return {"customer_id": f"C-{tag}", "customer_name": f"Shenzhen Bright Motors {tag}",
            "contact_person": "Zhang Min", "phone": "+86 755 1234 5678",
            "product_code": f"HSG-{tag}", "product_name": "Motor housing 220",
            "lot": "L2026-11-03", "quantity": "40", "loss_amount": "1250.00",
            "description": "Housings crack at the mounting boss after torque test."}


async def register_by_phone(screen: Screen, call: dict[str, str]) -> tuple[str, str]:
    """Sales fills the one-screen registration; (feedback id, register number)."""
    page = screen.page
    await screen.goto("/sales/new")
    for name, value in call.items():
        await page.locator(f"#f-{name}").fill(value)
    await page.locator("#f-channel").select_option("phone")
    await page.locator("#f-category").select_option("product_quality")
    await screen.shot("filled")
    await page.locator("form[action='/sales/new'] button[type=submit]").click()
    await page.wait_for_url("**/feedback/*")
    await screen.shot()
    register_no = (await page.locator("h1 .regno").inner_text()).strip()
    feedback_id = page.url.split("/feedback/", 1)[1].split("?")[0]
    return feedback_id, register_no


def photo_png(width: int = 96, height: int = 64) -> bytes:
    """A real PNG (a red-brown rectangle) that a browser can draw."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    rows = b"".join(b"\x00" + bytes((170, 70, 40)) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


async def with_photo(flow: Flow, **kw: Any) -> dict[str, Any]:
    """A complaint registered by Sales with a photo of the crack, sent to Quality."""
    fb = await flow.register(**kw)
    files = {"file": ("crack.png", photo_png(), "image/png")}
    ok(await flow.a.sales.post(f"/feedback/{fb['id']}/attachments", files=files), 201)
    if fb["status"] == "registered":
        await flow.escalate(fb["id"])
    return fb


async def drawn(image: Locator) -> bool:
    """The browser loaded the image and drew it (not a broken-image icon)."""
    return bool(await image.evaluate("img => img.complete && img.naturalWidth > 0"))


async def all_drawn(images: Locator, count: int) -> None:
    """`count` images, each scrolled to (lazy ones load then), loaded and drawn."""
    await expect(images).to_have_count(count)
    for i in range(count):
        await images.nth(i).scroll_into_view_if_needed()
        await expect(images.nth(i)).to_have_js_property("complete", True)
        assert await drawn(images.nth(i)), f"image {i} did not load"


async def quality_opens_new_form(screen: Screen, flow: Flow, selector: str) -> dict[str, Any]:
    """A complaint Sales has just sent to Quality, open on Quality's screen once `selector`
    (the part the test works with) is on it."""
    fb = await flow.register()
    await flow.escalate(fb["id"])
    await screen.sign_in("Li Wei", "quality")
    await screen.until_shown(f"/cases/{fb['id']}", selector)
    return fb


async def fill_investigation(page: Page, containment: str) -> None:
    """The responsible unit's investigation on its request's page, as a supervisor types it
    (containment, five whys, 4M, root cause, one corrective and one preventive action)."""
    await page.locator("#f-containment").fill(containment)
    await page.locator("#f-five_whys").fill("Crack at boss\nPorosity\nDie worn")
    await page.locator("#f-category").select_option("machine")
    await page.locator("#f-statement").fill("Die worn beyond limit")
    for kind, text in (("corrective", "Replace die"), ("preventive", "Die life counter")):
        await page.locator(f"#f-{kind}_1_description").fill(text)
        await page.locator(f"#f-{kind}_1_owner").fill("liu.gang")
        await page.locator(f"#f-{kind}_1_due_date").fill("2026-12-20")


async def quality_assigns_production(page: Page) -> None:
    """Quality, on an open form: preliminary cause, defect code D03 and production asked to
    investigate (P-F.3, P-3.2)."""
    await page.locator("#f-preliminary_cause").fill("Porosity at the boss from a worn die")
    await page.locator("#f-defect_code").select_option("D03")
    await page.get_by_label("Production").check()
    await page.locator("#f-request").fill("Find the root cause, contain stock, sort")
    await page.get_by_role("button", name="Assign", exact=True).click()
    await expect(page.locator("#status")).to_have_text("Awaiting units")
