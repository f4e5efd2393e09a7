"""Accessible (issue 10): "every control has a label, every flow works with the keyboard alone,
colour is never the only signal". axe-core (bundled by the axe-playwright-python package:
nothing loads from the internet) checks every page each role sees against the WCAG 2 A and
AA rules, in English and in Chinese; a serious or critical violation fails, naming the page,
the rule and the elements. The quality board's late rows say so in words, not only colour.

This module runs its own system whose 3-day clock lasts seconds, so that the pages show forms
at risk and breached (the other browser tests keep the plant's 3 days). Records are made
through the APIs (tests/e2e/flow.py), once for the module; the pages are read in the browser.
"""

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import expect

from tests.browser.conftest import Screen
from tests.browser.helpers import photo_png, with_photo
from tests.browser.test_console_documents import issued_by_api
from tests.browser.test_console_quality_records import recurrence_capa
from tests.conftest import test_namespace
from tests.e2e.flow import Flow
from tests.e2e.harness import SERVICES, Actors, System
from tests.support import eventually, ok

# WCAG 2.0, 2.1 and 2.2, levels A and AA (axe's rule tags); best practices are not asked for.
WCAG_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22a", "wcag22aa"]
BLOCKING = ("serious", "critical")
DEADLINE = "PT20S"  # the 3-day clock of this module's system
AT_RISK_AFTER = "PT2S"
LANG = {"en": re.compile(r"^en\b"), "zh": re.compile(r"^zh-(CN|Hans)$")}
AXE = Axe()
SECOND_VERDICT = "article.unit-entry:nth-of-type(2) form.verify"  # two forms on one page

pytestmark = pytest.mark.timeout(300)  # the module's system and records come first


@pytest.fixture(scope="module")
async def console_system() -> AsyncIterator[System]:
    """The five services and the console, with a 3-day clock of seconds."""
    system = System(test_namespace("a11y"), services=(*SERVICES, "console"), env={
        "QMS_QUALITY_DEADLINE": DEADLINE, "QMS_QUALITY_AT_RISK_AFTER": AT_RISK_AFTER,
        "QMS_QUALITY_SLA_CHECK_INTERVAL_S": "0.5"})
    system.env |= {f"QMS_CONSOLE_{name.upper()}_URL": system.url(name) for name in SERVICES}
    system.env |= {"QMS_CONSOLE_DEV_SIGNIN": "true"}
    await system.start()
    yield system
    await system.stop()


@dataclass
class Records:
    """One complaint at each step a page shows differently, and a CAPA."""

    fresh: dict[str, Any]       # registered by Sales, with a photo, not yet escalated
    open: dict[str, Any]        # with Quality, nothing decided yet
    major: dict[str, Any]       # flagged major at registration: the heads summoned
    two_units: dict[str, Any]   # two units' countermeasures to verify on one form
    requested: str              # an action request production has still to investigate
    ready: dict[str, Any]       # Quality's record with Sales, its report issued
    accepted: str               # production's verified request of `ready`: actions to mark
    other_unit: str             # logistics' request: not production's to see
    sha256: str                 # the issued report's PDF
    capa: dict[str, Any]
    month: str


@pytest.fixture(scope="module")
async def records(console_system: System) -> AsyncIterator[Records]:
    actors = Actors(console_system)
    flow = Flow(actors)
    fresh = await flow.register()
    ok(await actors.sales.post(f"/feedback/{fresh['id']}/attachments",
                               files={"file": ("crack.png", photo_png(), "image/png")}), 201)
    opened = await with_photo(flow)
    await flow.case(opened["id"])
    major = await flow.register(severity="major")  # escalated at registration
    await flow.case(major["id"])

    two = await flow.register()
    await flow.escalate(two["id"])
    units = {u["unit"]: u["action_id"] for u in
             (await flow.assign(two["id"], ["production", "logistics"]))["responsible_units"]}
    for unit, action_id in units.items():
        await flow.propose(action_id, unit)

    async def both_proposed() -> bool:
        case = ok(await actors.quality.get(f"/cases/{two['id']}"))
        return all(u["status"] == "proposed" for u in case["responsible_units"])
    await eventually(both_proposed, what="both units' proposals on the form")

    asked = await flow.register()
    await flow.escalate(asked["id"])
    requested = (await flow.assign(asked["id"], ["production"]))["responsible_units"][0]
    await flow.action(requested["action_id"], "production")

    ready = await flow.handle_quality_complaint()
    case = ok(await actors.quality.get(f"/cases/{ready['id']}"))
    accepted = case["responsible_units"][0]["action_id"]
    await flow.action(accepted, "production", status="accepted")
    issued = await issued_by_api(actors, ready["id"])
    capa = await recurrence_capa(actors)
    yield Records(fresh=fresh, open=opened, major=major, two_units=two,
                  requested=requested["action_id"], ready=ready, accepted=accepted,
                  other_unit=units["logistics"], sha256=issued["pdf"]["sha256"], capa=capa,
                  month=datetime.now(UTC).strftime("%Y-%m"))
    await actors.aclose()


@dataclass(frozen=True)
class Stop:
    """A page on a person's tour: its address, and what shows it has everything it will
    (events reach the projections a moment later); `refused` for a 4xx page."""

    path: str
    ready: str = "main h1"
    refused: bool = False


PEOPLE: dict[str, tuple[str, str, str | None]] = {
    "sales": ("Wang Fang", "sales", None),
    "quality": ("Li Wei", "quality", None),
    "unit": ("Liu Gang", "unit", "production"),
    "manager": ("Chen Jie", "manager", None),
    "auditor": ("Zhou Yu", "auditor", None),
}


def tour(role: str, r: Records) -> list[Stop]:
    """Every page `role` has: its menu's pages, and the records it opens from them."""
    number = r.capa["number"]
    report = Stop(f"/reports/{r.ready['id']}", "#revisions")
    timeline = Stop(f"/audit/{r.ready['id']}", "li[data-type='complaint.resolution_ready']")
    verify = Stop(f"/documents/verify?sha256={r.sha256}", "#verdict")
    retention = Stop("/records", "#policy")
    return {
        "sales": [Stop("/sales", f"a:text-is('{r.ready['register_no']}')"), Stop("/sales/new"),
                  Stop(f"/feedback/{r.fresh['id']}", "#evidence img"),
                  Stop(f"/feedback/{r.ready['id']}", "#report-attached"), report,
                  Stop(f"/search?in=customer&q={r.ready['customer']['id']}", "#results tbody tr")],
        "quality": [Stop("/quality", "#capas-to-confirm .badge"),
                    Stop(f"/cases/{r.open['id']}", "form[action$='/responsibility']"),
                    Stop(f"/cases/{r.major['id']}", "#major"),
                    Stop(f"/cases/{r.two_units['id']}", SECOND_VERDICT),
                    Stop(f"/cases/{r.ready['id']}", "#report"), report,
                    Stop("/manager/open", f"#majors a:text-is('{r.major['register_no']}')"),
                    Stop("/capas", f"#owners-to-confirm a:text-is('{number}')"),
                    Stop(f"/capas/{number}", "#owner form"), Stop("/recurrences", "tbody tr"),
                    Stop(f"/monthly-report/{r.month}", "#review-form"), Stop("/audit"), timeline,
                    retention],
        "unit": [Stop("/unit", f"#requests a[href='/actions/{r.requested}']"),
                 Stop(f"/actions/{r.requested}", "#f-containment"),
                 Stop(f"/actions/{r.accepted}", "#items form"),
                 Stop(f"/actions/{r.other_unit}", refused=True), Stop("/capas")],
        "manager": [Stop(f"/manager?month={r.month}", "#by-age"),
                    Stop("/manager/open", f"#capas a:text-is('{number}')"), Stop("/quality"),
                    Stop(f"/monthly-report/{r.month}", "#review"), timeline, verify, retention],
        "auditor": [Stop("/audit"), Stop("/audit?q=CF-1999-999999", "#e-q", refused=True),
                    timeline, Stop("/documents/verify"), verify, Stop(f"/capas/{number}"),
                    Stop(f"/cases/{r.ready['id']}"), Stop(f"/feedback/{r.ready['id']}"),
                    report, retention],
    }[role]


# Ids said twice: a label (or aria reference) reaches only the first element, so the second
# field has no name. axe leaves this to a person's review ("incomplete"): checked here.
REPEATED_IDS = """() => { const seen = {};
  for (const e of document.querySelectorAll('[id]')) seen[e.id] = (seen[e.id] || 0) + 1;
  return Object.keys(seen).filter(id => seen[id] > 1); }"""


async def serious_violations(screen: Screen) -> list[str]:
    """axe's serious and critical WCAG 2 A/AA violations on the page as it is now, and ids
    said twice, each as `page: rule (impact) what it asks: the elements' selectors`."""
    results = await AXE.run(screen.page, options={
        "runOnly": {"type": "tag", "values": WCAG_AA}, "resultTypes": ["violations"]})
    path = screen.page.url.removeprefix(screen.base)
    found = [f"{path}: {v['id']} ({v['impact']}) {v['help']}: "
             + " | ".join(" ".join(map(str, node["target"])) for node in v["nodes"])
             for v in results.response["violations"] if v["impact"] in BLOCKING]
    repeated = await screen.page.evaluate(REPEATED_IDS)
    if repeated:
        found.append(f"{path}: duplicate-id (serious) ids must be unique, a label reaches "
                     f"only the first: " + " | ".join(f"#{id_}" for id_ in repeated))
    return found


async def open_and_check(screen: Screen, stop: Stop, lang: str) -> list[str]:
    """Open the page (until it shows what it will), its language said, then axe's verdict."""
    if stop.refused:
        screen.refusals += 1  # Chromium notes the 4xx page in its console
        await screen.goto(stop.path)
    else:
        await screen.until_shown(stop.path, stop.ready)
    await expect(screen.page.locator("html")).to_have_attribute("lang", LANG[lang])
    return await serious_violations(screen)


async def choose_language(screen: Screen, lang: str) -> None:
    await screen.goto("/signin")
    if lang == "zh":
        await screen.page.get_by_role("button", name="中文").click()
        await expect(screen.page.locator("h1")).to_have_text("登录")


@pytest.mark.parametrize("lang", ["en", "zh"])
async def test_issue_10_the_sign_in_page_passes_axe(screen: Screen, lang: str):
    await choose_language(screen, lang)
    assert await open_and_check(screen, Stop("/signin"), lang) == []


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("role", list(PEOPLE))
async def test_issue_10_every_page_of_each_role_passes_axe(screen: Screen, records: Records,
                                                           role: str, lang: str):
    """Each page of the role's tour, with records at every step: no serious or critical
    WCAG 2 A/AA violation (contrast, names and labels, ids, lists, tables, language)."""
    await choose_language(screen, lang)
    name, role_, unit = PEOPLE[role]
    await screen.sign_in(name, role_, unit)
    found = [v for stop in tour(role, records) for v in await open_and_check(screen, stop, lang)]
    assert not found, "axe found:\n" + "\n".join(found)


@pytest.mark.parametrize("lang", ["en", "zh"])
async def test_issue_10_a_refused_registration_passes_axe(screen: Screen, lang: str):
    """The registration sent empty: the refusal, the fields marked and what to check beside
    each, with no serious or critical violation."""
    await choose_language(screen, lang)
    await screen.sign_in("Wang Fang", "sales")
    await screen.goto("/sales/new")
    status = await screen.refused(screen.page.locator(
        "form[action='/sales/new'] button[type=submit]"))
    assert status == 422
    await expect(screen.page.locator("#f-description")).to_have_attribute("aria-invalid", "true")
    assert await serious_violations(screen) == []


async def test_issue_10_two_verdict_forms_on_one_page_each_label_their_own_reason(
        screen: Screen, records: Records):
    """Two units' countermeasures on one form: each verdict has its own reason field, named
    by its label; a rejection without a reason is refused beside the second unit's field."""
    await screen.sign_in("Li Wei", "quality")
    await screen.until_shown(f"/cases/{records.two_units['id']}", SECOND_VERDICT)
    page = screen.page
    await expect(page.get_by_label("Reason (required to reject)")).to_have_count(2)
    logistics = page.locator("article.unit-entry").nth(1)
    await expect(logistics.locator("h3")).to_contain_text("Logistics")
    await logistics.get_by_role("radio", name="Reject").check()
    status = await screen.refused(logistics.get_by_role("button", name="Record the verdict"))
    assert status == 422
    reasons = page.get_by_label("Reason (required to reject)")
    await expect(reasons).to_have_count(2)
    await expect(reasons.nth(1)).to_have_attribute("aria-invalid", "true")
    await expect(reasons.nth(1)).to_have_accessible_description(re.compile("Check this field"))
    await expect(reasons.nth(0)).not_to_have_attribute("aria-invalid", "true")
    assert await serious_violations(screen) == []


async def test_p_f_5_late_forms_on_the_board_say_so_in_words_not_only_colour(
        screen: Screen, actors: Actors):
    """A breached and an at-risk form on Quality's board: each row's colour comes with the
    clock's word in the row itself ("Breached", "At risk"), which also passes axe."""
    flow = Flow(actors)
    late = await flow.register()
    await flow.escalate(late["id"])

    async def breached() -> bool:
        return bool((await flow.case(late["id"]))["clock"]["breached"])
    await eventually(breached, timeout=40, interval=1, what="the first form's deadline")
    risky = await flow.register()
    await flow.escalate(risky["id"])
    await screen.sign_in("Li Wei", "quality")
    page = screen.page
    for feedback, state, word in ((risky, "at-risk", "At risk"), (late, "breached", "Breached")):
        row = page.locator(f"#board tr:has(a:text-is('{feedback['register_no']}'))")
        await screen.until_shown("/quality", f"#board tr.{state} a:text-is("
                                              f"'{feedback['register_no']}')")
        await expect(row).to_have_class(state)
        await expect(row.locator(".badge")).to_have_text(word)
        await expect(row.locator(".badge")).to_be_visible()
    await screen.shot("late-rows")
    assert await serious_violations(screen) == []
