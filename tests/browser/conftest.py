"""The console in a real browser: Playwright driving Debian's Chromium, against the five
services and the console as real processes on the real broker and database.

Every page a test visits is photographed into reports/screenshots/, and every browser console
error or uncaught script error fails the test that caused it.
"""

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Locator,
    Page,
    async_playwright,
    expect,
)

from tests.conftest import test_namespace
from tests.e2e.harness import SERVICES, Actors, System

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "reports" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
REFUSED_PAGE = re.compile(r"Failed to load resource: the server responded with a status of 4\d\d")
WAIT_MS = 30_000  # a deadline to wait for the services' events, never a speed target

pytestmark = pytest.mark.infra


def chromium_path() -> str:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium "
                    "(scripts/infra.sh install)")
    return CHROMIUM


@pytest.fixture(scope="session")
async def console_system() -> AsyncIterator[System]:
    """The five services and the console, in this run's own namespace."""
    system = System(test_namespace("web"), services=(*SERVICES, "console"))
    system.env |= {f"QMS_CONSOLE_{name.upper()}_URL": system.url(name) for name in SERVICES}
    system.env |= {"QMS_CONSOLE_DEV_SIGNIN": "true"}
    await system.start()
    yield system
    await system.stop()


@pytest.fixture
async def actors(console_system: System) -> AsyncIterator[Actors]:
    a = Actors(console_system)
    yield a
    await a.aclose()


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=chromium_path(),
                                            args=["--no-sandbox"])
        yield chromium
        await chromium.close()


class Screen:
    """One person's browser window on the console, with what its console said."""

    def __init__(self, page: Page, base: str, name: str):
        self.page, self.base, self.name = page, base, name
        self.errors: list[str] = []
        self.refusals = 0  # 4xx pages a test expects (a refused form answers with its status)
        self.shots = 0
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"{page.url}: {exc}"))
        page.set_default_timeout(WAIT_MS)
        expect.set_options(timeout=WAIT_MS)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        if self.refusals and REFUSED_PAGE.match(message.text):
            self.refusals -= 1  # Chromium reports the 4xx page the test asked for
            return
        self.errors.append(f"{self.page.url}: {message.text}")

    async def refused(self, button: Locator) -> int:
        """Send a form the services will refuse: the status of the page that comes back (a
        4xx, which Chromium notes in its console: expected here, so no error)."""
        self.refusals += 1
        async with self.page.expect_response(lambda r: r.request.is_navigation_request()
                                             ) as answer:
            await button.click()
        await self.page.wait_for_load_state()
        await self.shot("refused")
        return (await answer.value).status

    async def goto(self, path: str) -> None:
        await self.page.goto(self.base + path)
        await self.shot()

    async def shot(self, label: str = "") -> None:
        """A screenshot of the page as it is now, named after the test and the page."""
        self.shots += 1
        page = re.sub(r"[^a-z0-9]+", "-", self.page.url.split("//", 1)[-1].split("/", 1)[-1]
                      .split("?")[0].lower()).strip("-") or "home"
        name = f"{self.name}-{self.shots:02d}-{page[:40]}{('-' + label) if label else ''}.png"
        await self.page.screenshot(path=SHOTS / name, full_page=True)

    async def sign_in(self, name: str, role: str, unit: str | None = None) -> None:
        await self.goto("/signin")
        await self.page.locator("#f-name").fill(name)
        await self.page.locator("#f-role").select_option(role)
        if unit:
            await self.page.locator("#f-unit").select_option(unit)
        await self.page.locator("form[action='/signin'] button[type=submit]").click()
        await self.page.wait_for_load_state()
        await self.shot("signed-in")

    async def sign_out(self) -> None:
        await self.page.locator("form[action='/signout'] button").click()
        await self.page.wait_for_url("**/signin*")

    async def until_shown(self, path: str, selector: str) -> None:
        """Open `path` until `selector` is on it: the services talk through events, so a
        step taken by someone else reaches this page a moment later (a deadline, polled)."""
        for _ in range(60):
            await self.goto(path)
            if await self.page.locator(selector).count():
                return
            await self.page.wait_for_timeout(500)
        raise AssertionError(f"{selector} never appeared on {path}")


@pytest.fixture
async def screen(request: pytest.FixtureRequest, browser: Browser,
                 console_system: System) -> AsyncIterator[Screen]:
    """A fresh browser window (no cookies: nobody signed in) in English; its console must
    stay free of errors."""
    context = await browser.new_context(locale="en-GB", viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    name = re.sub(r"^test_", "", request.node.name)[:48]
    for old in SHOTS.glob(f"{name}-*.png"):
        old.unlink()
    screen = Screen(page, console_system.url("console"), name)
    yield screen
    await context.close()
    assert not screen.errors, f"browser console errors: {screen.errors}"

