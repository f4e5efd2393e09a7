"""Printing (issue 10, "printable"): the Complaint Handling Form (客诉处理单) and a feedback of
the Customer Feedback Register (客户意见登记表) print on A4 as paper forms, with the record's
headings and values and without the console's menu, buttons or forms; the register itself
prints from reporting's PDF, reached from the console. Printed by headless Chromium
(`page.pdf()`, the print stylesheet applies), read back with poppler's pdftotext; each printed
page is saved as a PNG under reports/screenshots/ (`print-*.png`)."""

import subprocess
from pathlib import Path

from playwright.async_api import expect

from tests.browser.conftest import SHOTS, Screen
from tests.e2e.flow import Flow
from tests.e2e.harness import Actors

NAVIGATION = ("Skip to content", "Sign out", "Quality board", "Inbox", "Register feedback",
              "Complaints console", "Updated")


async def printed(screen: Screen, name: str, tmp_path: Path) -> str:
    """The page as Chromium prints it on A4: its text (pdftotext); its pages saved as
    reports/screenshots/print-<name>-<n>.png."""
    pdf = tmp_path / f"{name}.pdf"
    pdf.write_bytes(await screen.page.pdf(prefer_css_page_size=True, print_background=True))
    info = subprocess.run(["pdfinfo", str(pdf)], check=True, capture_output=True, text=True,
                          timeout=60).stdout
    assert "(A4)" in info, info  # the stylesheet's @page size
    for old in SHOTS.glob(f"print-{name}-*.png"):
        old.unlink()
    subprocess.run(["pdftoppm", "-png", "-r", "60", str(pdf), str(SHOTS / f"print-{name}")],
                   check=True, timeout=60)
    return pdf_text(pdf)


def pdf_text(pdf: Path) -> str:
    return subprocess.run(["pdftotext", str(pdf), "-"], check=True,
                          capture_output=True, text=True, timeout=60).stdout


def one_line(text: str) -> str:
    """The text with its line breaks and runs of spaces as one space (a value may wrap)."""
    return " ".join(text.split())


async def test_p_5_3_1_the_complaint_handling_form_prints_on_a4_as_a_paper_form(
        screen: Screen, actors: Actors, tmp_path: Path):
    flow = Flow(actors)
    fb = await flow.register()
    await flow.escalate(fb["id"], note="Customer line stopped: analyse the cracked housings")
    assigned = await flow.assign(fb["id"], ["production"])
    await flow.propose(assigned["responsible_units"][0]["action_id"], "production")
    await flow.verify(fb["id"], "production", accepted=False, reason="Sorting scope too narrow")

    await screen.sign_in("Li Wei", "quality")
    await screen.goto(f"/cases/{fb['id']}")
    await expect(screen.page.locator("h1 .regno")).to_have_text(fb["register_no"])
    text = one_line(await printed(screen, "complaint-handling-form", tmp_path))

    for shown in ("Complaint Handling Form", fb["register_no"], fb["customer"]["name"],
                  "Customer line stopped: analyse the cracked housings",
                  "Porosity at the boss from a worn die", "Responsible units",
                  "Die worn beyond limit", "Sort all stock at the customer",
                  "Sorting scope too narrow", "Defect code", "D03"):
        assert shown in text, f"{shown!r} is not on the printed form"
    for hidden in (*NAVIGATION, "Record the verdict", "Flag major and summon the heads",
                   "Major complaint?", "中文", "English"):
        assert hidden not in text, f"{hidden!r} is printed: the paper form has no controls"
    await screen.shot("screen")  # the same page on screen, with its controls


async def test_p_5_4_1_a_feedback_prints_as_its_register_entry_and_the_register_as_pdf(
        screen: Screen, actors: Actors, tmp_path: Path):
    flow = Flow(actors)
    fb = await flow.register(category="delivery")
    page = screen.page
    await screen.sign_in("Wang Fang", "sales")
    await screen.goto(f"/feedback/{fb['id']}")
    text = one_line(await printed(screen, "feedback-en", tmp_path))
    for shown in ("Customer Feedback Register", fb["register_no"], fb["customer"]["name"],
                  "Housings crack at the mounting boss after torque test.", "Estimated loss",
                  "Quantity affected", "40"):
        assert shown in text, f"{shown!r} is not on the printed feedback"
    for hidden in (*NAVIGATION, "Escalate to Quality", "Send direct reply", "Add evidence"):
        assert hidden not in text, f"{hidden!r} is printed"

    # In Chinese, the form prints under its Chinese name.
    await page.locator("button[name=lang][value=zh]").click()
    await page.wait_for_load_state()
    await expect(page.locator("html")).to_have_attribute("lang", "zh-Hans")
    text = one_line(await printed(screen, "feedback-zh", tmp_path))
    assert "客户意见登记表" in text and fb["register_no"] in text
    assert "退出" not in text and "中文" not in text

    # The register of this month, from the Sales inbox: reporting's A4 PDF in Chinese, once
    # reporting has read the registration.
    await screen.goto("/sales")
    link = page.locator("#register-pdf-link")
    await expect(link).to_be_visible()
    href = await link.get_attribute("href")
    register = ""
    for _ in range(60):
        resp = await page.request.get(screen.base + href)
        assert resp.status == 200, await resp.text()
        assert resp.headers["content-type"] == "application/pdf"
        pdf = tmp_path / "register.pdf"
        pdf.write_bytes(await resp.body())
        # Without spaces: the PDF's narrow number column wraps a register number in two.
        register = "".join(pdf_text(pdf).split())
        if fb["register_no"] in register:
            break
        await page.wait_for_timeout(500)
    assert fb["register_no"] in register, "the registration never reached the register PDF"
    assert "客户意见登记表" in register
    for old in SHOTS.glob("print-register-*.png"):
        old.unlink()
    subprocess.run(["pdftoppm", "-png", "-r", "60", "-l", "1", str(pdf),
                    str(SHOTS / "print-register")], check=True, timeout=60)
