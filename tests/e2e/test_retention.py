"""P-5.4.2 records retention on the real services: a closed complaint with an issued report is
kept for its period, listed once the period has ended, disposed of by a person with a
recorded reason, and answered 410 Gone afterwards; an auditor retrieves each issued revision
by register number and checks it against its recorded hash.

The system here runs reporting's retention clock 11 years ahead
(`QMS_REPORTING_RETENTION_CLOCK_OFFSET_DAYS`), with complaints kept 10 years and reports 15:
what closes today is due on that clock, its report is not.
"""

import calendar
import hashlib
from datetime import date, timedelta

import httpx
import pytest

from tests.conftest import test_namespace
from tests.e2e.flow import Flow, new_customer
from tests.e2e.harness import Actors, System
from tests.support import eventually, ok, refused

DOCS = "/documents/complaint-reports"
DUE = "/records/retention/due"
DISPOSE = "/records/retention/dispose"
AHEAD_DAYS = 11 * 366


@pytest.fixture(scope="module")
async def retention_system():
    sys_ = System(test_namespace("ret"), env={
        "QMS_REPORTING_RETENTION_CLOCK_OFFSET_DAYS": str(AHEAD_DAYS),
        "QMS_REPORTING_RETENTION_YEARS": '{"complaint": 10, "complaint_report": 15}'})
    await sys_.start()
    yield sys_
    await sys_.stop()


@pytest.fixture
async def people(retention_system):
    a = Actors(retention_system)
    clients = {role: httpx.AsyncClient(
        base_url=retention_system.url("reporting"), timeout=30, headers={
            "Authorization": f"Bearer {retention_system.token(role, f'{role}.one', name=name)}"})
        for role, name in (("quality", "李伟"), ("sales", "王芳"), ("auditor", "Zhou Yu"),
                           ("manager", "Chen Jie"))}
    yield a, clients
    for client in clients.values():
        await client.aclose()
    await a.aclose()


async def closed_with_report(actors: Actors, quality: httpx.AsyncClient,
                             sales: httpx.AsyncClient) -> tuple[dict, dict]:
    """A complaint carried to an issued report, replied with it and closed (satisfied)."""
    flow = Flow(actors)
    fb = await flow.handle_quality_complaint(customer=new_customer("en"))

    async def drafted() -> dict | None:
        resp = await quality.get(f"{DOCS}/{fb['register_no']}")
        return resp.json() if resp.status_code == 200 and "D6" in resp.json()["sections"] \
            else None
    sha = (await eventually(drafted, timeout=30, what="the report's content"))["content_sha256"]
    ok(await quality.post(f"{DOCS}/{fb['id']}/approve", json={"content_sha256": sha}), 201)
    issued = ok(await sales.post(f"{DOCS}/{fb['id']}/issue", json={"content_sha256": sha}), 201)
    ok(await actors.sales.post(f"/feedback/{fb['id']}/reply", json={
        "reply": "Root cause found; the die is replaced.",
        "report": {"sha256": issued["pdf"]["sha256"], "filename": issued["pdf"]["filename"]}}))
    ok(await actors.sales.post(f"/feedback/{fb['id']}/satisfaction", json={"satisfied": True}))
    return fb, issued


async def listed(client: httpx.AsyncClient, record: str, **params: str) -> dict:
    async def there() -> dict | None:
        page = ok(await client.get(DUE, params={"limit": "500", **params}))
        return next((i for i in page["items"] if i["id"] == record), None)
    return await eventually(there, timeout=30, what=f"{record} in the due list")



def years_after(day: date, years: int) -> date:
    """The same day `years` later; a 29 February closure is kept until 28 February."""
    year = day.year + years
    return date(year, day.month, min(day.day, calendar.monthrange(year, day.month)[1]))


async def test_p_5_4_2_a_closed_complaint_is_listed_disposed_of_with_a_reason_then_gone(
        people):
    actors, c = people
    quality, sales, auditor, manager = c["quality"], c["sales"], c["auditor"], c["manager"]
    fb, issued = await closed_with_report(actors, quality, sales)
    complaint, report = f"complaint:{fb['id']}", f"complaint_report:{fb['id']}"

    # Due on the retention clock (11 years ahead): the complaint (10 years), not its report.
    due = await listed(quality, complaint)
    closed_on = date.fromisoformat(due["ended_at"][:10])
    assert due["register_no"] == fb["register_no"] and due["type"] == "complaint"
    assert due["retain_until"] == years_after(closed_on, 10).isoformat()
    page = ok(await quality.get(DUE, params={"limit": "500"}))
    assert report not in [i["id"] for i in page["items"]]

    # A manager or an auditor may look further ahead; Quality may not choose the day.
    later = (date.today() + timedelta(days=16 * 366)).isoformat()
    assert (await listed(auditor, report, as_of=later))["retain_until"] == \
        years_after(closed_on, 15).isoformat()
    assert "as_of" in refused(await quality.get(DUE, params={"as_of": later}), 403)["message"]

    # Not yet: the report is kept 15 years. Nothing is disposed of when one record refuses.
    kept = refused(await quality.post(DISPOSE, json={
        "records": [complaint, report], "reason": "Retention period ended"}), 409)
    assert f"kept until {years_after(closed_on, 15)}" in kept["message"]
    assert "须保存至" in kept["message"]
    ok(await auditor.get(f"/register/{fb['id']}"))
    # Disposing is Quality's act; managers and auditors change nothing (P-3).
    for reader in (auditor, manager):
        refused(await reader.post(DISPOSE, json={"records": [complaint], "reason": "x" * 5}),
                403)

    done = ok(await quality.post(DISPOSE, json={
        "records": [complaint], "reason": "Retention period ended (QP-4.2-01)"}), 201)
    (disposal,) = done["disposals"]
    assert done["created"] == [True]
    assert (disposal["id"], disposal["by"]["name"], disposal["reason"]) == (
        complaint, "李伟", "Retention period ended (QP-4.2-01)")
    assert disposal["clock_offset_days"] == AHEAD_DAYS
    again = ok(await quality.post(DISPOSE, json={"records": [complaint], "reason": "again"}),
               200)  # a repeat changes nothing: the first disposal stands
    assert again["created"] == [False] and again["disposals"][0]["reason"] == \
        "Retention period ended (QP-4.2-01)"

    gone = refused(await manager.get(f"/register/{fb['id']}"), 410)
    assert "disposed of" in gone["message"] and "处置" in gone["message"]
    assert gone["details"][0]["disposal"]["reason"] == "Retention period ended (QP-4.2-01)"
    refused(await auditor.get(f"/register/{fb['id']}/history"), 410)
    assert ok(await auditor.get(f"/records/retention/disposals/{complaint}"))["by"]["roles"] \
        == ["quality"]
    page = ok(await quality.get(DUE, params={"limit": "500"}))
    assert complaint not in [i["id"] for i in page["items"]]

    # The report is still kept: an auditor fetches it and checks it against its hash.
    pdf = await auditor.get(f"{DOCS}/{fb['register_no']}/revisions/1.pdf")
    assert pdf.status_code == 200
    assert pdf.headers["X-Content-SHA256"] == issued["pdf"]["sha256"] \
        == hashlib.sha256(pdf.content).hexdigest()


async def test_p_5_4_2_an_auditor_lists_each_revision_and_checks_it_against_its_hash(people):
    actors, c = people
    fb, issued = await closed_with_report(actors, c["quality"], c["sales"])
    auditor = c["auditor"]
    state = ok(await auditor.get(f"{DOCS}/{fb['register_no']}"))
    (revision,) = state["revisions"]
    assert revision["number"] == 1 and revision["pdf"]["sha256"] == issued["pdf"]["sha256"]
    resp = await auditor.get(revision["download"])
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/pdf"
    assert hashlib.sha256(resp.content).hexdigest() == resp.headers["X-Content-SHA256"] \
        == revision["pdf"]["sha256"]
    verdict = ok(await auditor.get(f"/documents/verify/{resp.headers['X-Content-SHA256']}"))
    assert verdict["issued"] and verdict["register_no"] == fb["register_no"]


async def test_p_5_4_2_an_open_complaint_cannot_be_disposed_of(people):
    actors, c = people
    fb = await Flow(actors).register(customer=new_customer("zh"))
    record = f"complaint:{fb['id']}"
    err = refused(await c["quality"].post(DISPOSE, json={"records": [record],
                                                          "reason": "tidy up"}), 409)
    assert "retention period has not begun" in err["message"] and "保存期限尚未开始" in \
        err["message"]
    assert err["details"][0]["loc"] == "body.records.0"
    bad = refused(await c["quality"].post(DISPOSE, json={"records": ["invoice:1"],
                                                          "reason": "tidy up"}), 422)
    assert "records.0" in bad["message"]
    refused(await c["quality"].get(DUE, params={"type": "contracts"}), 422)
