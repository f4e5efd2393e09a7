"""What a form in a browser needs from the services, on the real processes: the word lists
in both languages, "on its way" instead of a bare "not found" while an event travels, and
`/docs` that loads nothing from the internet (a plant network has none)."""

import re
import uuid
from datetime import UTC, datetime, timedelta

import httpx

from shared.wordlists import SHARED_LISTS
from tests.e2e.flow import Flow
from tests.e2e.harness import SERVICES, Actors, System
from tests.support import ok, refused

OWN_LISTS = {
    "intake": {"feedback_statuses", "form_states"},
    "quality": {"units", "defect_codes", "case_statuses", "unit_statuses"},
    "capa": {"action_statuses", "capa_statuses", "capa_sources", "root_cause_categories",
             "item_kinds", "item_statuses"},
    "notify": {"notification_statuses", "notification_channels"},
    "reporting": {"register_statuses"},
}


async def test_every_service_serves_the_word_lists_of_its_forms_in_chinese_and_english(
        system: System):
    for service in SERVICES:
        async with system.client(service, "unit", unit="production") as client:
            body = ok(await client.get("/vocabulary"))
        assert body["service"] == service and body["languages"] == ["zh-Hans", "en"]
        assert set(body["lists"]) == set(SHARED_LISTS) | OWN_LISTS[service], service
        for name, words in body["lists"].items():
            assert words, (service, name)
            for word in words:
                assert set(word["labels"]) == {"zh-Hans", "en"}, (service, name, word)
                assert all(word["labels"].values()), (service, name, word)
    async with system.client("quality", "sales") as sales:
        lists = ok(await sales.get("/vocabulary"))["lists"]
    units = {w["code"]: w["labels"] for w in lists["units"]}
    assert units["production"] == {"zh-Hans": "生产部", "en": "Production"}
    defects = {w["code"]: w["labels"] for w in lists["defect_codes"]}
    assert defects["D03"] == {"zh-Hans": "功能失效", "en": "Functional failure"}
    channels = [w["code"] for w in lists["channels"]]
    assert channels[:2] == ["phone", "fax"]
    async with httpx.AsyncClient(base_url=system.url("quality")) as anonymous:
        assert (await anonymous.get("/vocabulary")).status_code == 401


async def test_every_service_s_docs_load_nothing_from_outside_the_service(system: System):
    for service in SERVICES:
        async with httpx.AsyncClient(base_url=system.url(service), timeout=20) as client:
            page = await client.get("/docs")
            assert page.status_code == 200 and "SwaggerUIBundle" in page.text, service
            assert "http://" not in page.text and "https://" not in page.text, service
            urls = re.findall(r'(?:src|href)="([^"]+)"', page.text) + \
                re.findall(r"url: '([^']+)'", page.text)
            assert len(urls) >= 4, (service, urls)  # CSS, favicon, JS and the OpenAPI document
            for url in urls:
                assert url.startswith("/") and not url.startswith("//"), (service, url)
                assert (await client.get(url)).status_code == 200, (service, url)
            js = [u for u in urls if u.endswith(".js")]
            css = [u for u in urls if u.endswith(".css")]
            assert js and css, (service, urls)
            assert "javascript" in (await client.get(js[0])).headers["content-type"]
            assert (await client.get(css[0])).headers["content-type"].startswith("text/css")
            assert (await client.get("/redoc")).status_code == 404  # it too came from a CDN


async def test_a_form_is_on_its_way_to_quality_until_quality_has_it(actors: Actors):
    flow = Flow(actors)
    fb = await flow.register()
    sent = await flow.escalate(fb["id"])
    # The form travels as an event: the register says so at once, and since when.
    assert sent["form"]["state"] == "sent_to_quality" and sent["form"]["round"] == 1
    since = datetime.fromisoformat(sent["form"]["since"])
    assert abs(since - datetime.now(UTC)) < timedelta(seconds=30)
    # Quality's 404 for a form it has not received says it may be on its way.
    missing = refused(await actors.quality.get(f"/cases/{uuid.uuid4()}"), 404)
    assert "on its way" in missing["message"] and "sent_to_quality" in missing["message"]
    # Once Quality has it, the register says since when: the start of Quality's clock.
    case = await flow.case(fb["id"])
    landed = await flow.feedback(fb["id"], form={
        "state": "with_quality", "round": 1, "since": case["rounds"][0]["received_at"]})
    assert landed["quality_due_at"] == case["clock"]["due_at"]


async def test_a_units_request_is_dated_at_quality_before_capa_has_opened_it(actors: Actors):
    flow = Flow(actors)
    fb = await flow.register()
    await flow.escalate(fb["id"])
    before = datetime.now(UTC)
    assigned = await flow.assign(fb["id"], ["production"])
    [entry] = assigned["responsible_units"]
    requested_at = datetime.fromisoformat(entry["requested_at"])
    assert before - timedelta(seconds=1) <= requested_at <= datetime.now(UTC)
    # capa's 404 for a request it does not have (yet) says one may be on its way.
    async with actors.unit("production") as production:
        missing = refused(await production.get(f"/actions/{uuid.uuid4()}"), 404)
    assert "does not exist (yet)" in missing["message"] and "requested_at" in missing["message"]
    action = await flow.action(entry["action_id"], "production")
    assert datetime.fromisoformat(action["requested_at"]) >= requested_at
    later = ok(await actors.quality.get(f"/cases/{fb['id']}"))["responsible_units"][0]
    assert later["requested_at"] == entry["requested_at"]


async def test_feedback_form_whereabouts_and_capa_owner_are_documented(system: System):
    async with system.client("intake", "auditor") as intake, \
            system.client("capa", "auditor") as capa:
        intake_spec = ok(await intake.get("/openapi.json"))
        capa_spec = ok(await capa.get("/openapi.json"))
    schemas = intake_spec["components"]["schemas"]
    assert set(schemas["FormWhereabouts"]["properties"]) == {"state", "since", "round"}
    assert schemas["FormState"]["enum"] == ["sent_to_quality", "with_quality",
                                            "record_with_sales", "withdrawn"]
    capa_view = capa_spec["components"]["schemas"]["CapaView"]["properties"]
    assert {"owner", "owner_confirmed"} <= set(capa_view)
