"""P-5.4.2: the list of every disposal ("what did we destroy, when, who, why") for Quality, the
manager and the auditor, newest first, by year of disposal, read by `_id` only.

The real reporting service runs in this process on the real broker and database, its
retention clock 11 years ahead so that what closes here may be disposed of. The list reads
the years' lists of disposals and then one page of the disposal log, each by `_id`, never
the whole log; disposals recorded before the list existed are listed after the next start.
"""

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest

from services.reporting.app import ReportingService
from services.reporting.retention import BUCKETS, BUILT, DISPOSED, INDEX, RECORDS, field_key
from services.reporting.settings import Settings
from shared import contracts as c
from shared.auth import make_token
from shared.messaging import EventPublisher
from shared.vocabulary import Category, Channel
from tests import reads
from tests.conftest import infra_settings, test_namespace
from tests.integration.reporting_in_process import reporting_in_process
from tests.integration.test_reporting_standby import handled
from tests.integration.test_reporting_steady_state import BOUNDED
from tests.support import eventually, ok, refused
from tests.unit.test_reporting_scenario import Story

pytestmark = pytest.mark.infra

CLOSED_AT = datetime(2026, 3, 10, 9, tzinfo=UTC)  # kept 10 years: due on a clock 11 ahead
LIST = "/records/retention/disposals"
DISPOSE = "/records/retention/dispose"


def settings_for(namespace: str) -> Settings:
    return Settings(infra=infra_settings(namespace, retry_delay_ms=200, max_attempts=3,
                                         relay_interval_s=0.2),
                    gauges_refresh_interval_s=3600, retention_clock_offset_days=11 * 366)


def as_role(settings: Settings, role: str) -> dict[str, str]:
    token = make_token(settings.infra.jwt_secret.get_secret_value(), f"{role}.one", [role])
    return {"Authorization": f"Bearer {token}"}


async def close_complaints(service: ReportingService, publisher: EventPublisher,
                           count: int) -> list[str]:
    """`count` complaints registered and closed: their record ids (`complaint:<id>`)."""
    story = Story(uuid.uuid4().hex[:8])
    for i in range(count):
        name = f"D{i}"
        facts = story.register(name, complaint=False, received=CLOSED_AT - timedelta(days=2),
                               category=Category.DELIVERY, channel=Channel.PHONE, customer="A")
        story.add(c.FeedbackClosed(feedback_id=story.fid(name), register_no=facts["register_no"],
                                   closed_at=CLOSED_AT, had_form=False), name, CLOSED_AT)
    before = handled(service)
    for env in story.events:
        await publisher.publish(env)

    async def applied() -> bool:
        return handled(service) == before + len(story.events)
    await eventually(applied, timeout=60, what="the closures applied")
    return [f"complaint:{story.fid(f'D{i}')}" for i in range(count)]


async def dispose(http: httpx.AsyncClient, records: list[str], reason: str) -> list[dict]:
    answer = ok(await http.post(DISPOSE, json={"records": records, "reason": reason}), 201)
    return answer["disposals"]


def this_year() -> int:
    return datetime.now(ZoneInfo(Settings().timezone)).year


@pytest.fixture
async def reporting() -> AsyncIterator[tuple[ReportingService, httpx.AsyncClient,
                                             EventPublisher, reads.ReadLog, Settings]]:
    namespace = test_namespace(uuid.uuid4().hex[:6])
    log = reads.install(namespace)  # before the service makes its database client
    settings = settings_for(namespace)
    async with reporting_in_process(settings, "li.wei", ["quality"]) as started:
        yield *started, log, settings


async def test_p_5_4_2_every_disposal_is_listed_newest_first_by_year_reading_by_id_only(
        reporting):
    service, http, publisher, log, settings = reporting
    first = await close_complaints(service, publisher, 5)
    older = await dispose(http, first[:3], "Retention period ended (QP-4.2-01)")
    newer = await dispose(http, first[3:], "Retention ended; paper copies shredded")
    second = {d["id"] for d in newer}
    await eventually(lambda: _settled(service), what="the start's background work")

    log.recording = True
    auditor = as_role(settings, "auditor")
    page = ok(await http.get(LIST, params={"page_size": 2}, headers=auditor))
    assert page["total"] == 5 and page["years"] == [this_year()]
    assert {d["id"] for d in page["items"]} == second  # the latest disposals come first
    shown = page["items"][0]
    assert shown["reason"] == "Retention ended; paper copies shredded"
    assert shown["by"]["name"] == "li.wei" and shown["register_no"].startswith("CF-2031-")
    rest = ok(await http.get(LIST, params={"page_size": 2, "page": 2}, headers=auditor))
    last = ok(await http.get(LIST, params={"page_size": 2, "page": 3}, headers=auditor))
    listed = page["items"] + rest["items"] + last["items"]
    assert sorted(d["id"] for d in listed) == sorted(first)
    moments = [d["disposed_at"] for d in listed]
    assert moments == sorted(moments, reverse=True)
    assert {d["id"]: d["reason"] for d in listed if d["id"] not in second} == {
        d["id"]: "Retention period ended (QP-4.2-01)" for d in older}

    # By year of disposal; the manager and Quality read it too.
    year = ok(await http.get(LIST, params={"year": this_year()},
                             headers=as_role(settings, "manager")))
    assert [d["id"] for d in year["items"]] == [d["id"] for d in listed]
    assert ok(await http.get(LIST, params={"year": 2001}))["items"] == []
    log.recording = False

    unbounded = log.unbounded(bounded_collections=BOUNDED)
    assert not unbounded, "reads that grow with the disposal log:\n" + "\n".join(
        f"{r.collection}.{r.command} {r.filter}" for r in unbounded)
    assert any(r.collection == "retention_disposals" for r in log.reads)

    # Sales and responsible units change and read nothing of it (P-3).
    refused(await http.get(LIST, headers=as_role(settings, "sales")), 403)
    refused(await http.get(LIST, params={"year": 1999}), 422)


async def test_p_5_4_2_disposals_recorded_before_the_list_existed_are_listed_after_a_start():
    namespace = test_namespace(uuid.uuid4().hex[:6])
    settings = settings_for(namespace)
    async with reporting_in_process(settings, "li.wei", ["quality"]) as (service, http, pub):
        records = await close_complaints(service, publisher=pub, count=2)
        await dispose(http, records, "Retention period ended (QP-4.2-01)")
        await eventually(lambda: _settled(service), what="the start's background work")
        # As a version before the list left it: the disposal log only.
        await service.database[DISPOSED].drop()
        assert ok(await http.get(LIST))["total"] == 0

    async with reporting_in_process(settings, "zhou.yu", ["auditor"]) as (_, http, _pub):
        async def listed() -> dict | None:
            page = ok(await http.get(LIST))
            return page if page["total"] == 2 else None
        page = await eventually(listed, timeout=30, what="the earlier disposals listed")
        assert sorted(d["id"] for d in page["items"]) == sorted(records)
        assert page["years"] == [this_year()]


async def _settled(service: ReportingService) -> bool:
    """The start's background work is over, the one-time listing of earlier disposals too."""
    built = await service.database[DISPOSED].find_one({"_id": BUILT})
    return service.settled() and built is not None


async def test_p_5_4_2_records_are_held_in_buckets_of_a_day_and_a_years_bucket_still_serves(
        reporting):
    """A closure is listed in the bucket of the day its retention ends (small: FerretDB
    rewrites a whole document per entry); a bucket of a whole year, as written before,
    is still listed as due and emptied by disposal, leaving the index."""
    service, http, publisher, _, _ = reporting
    held = await close_complaints(service, publisher, 2)
    buckets, records = service.database[BUCKETS], service.database[RECORDS]
    day_bucket = (await records.find_one({"_id": held[0]}))["bucket"]
    assert day_bucket == f"complaint:{CLOSED_AT.year + 10}-03-10"
    assert set((await buckets.find_one({"_id": day_bucket}))["entries"]) == {
        field_key(rid.partition(":")[2]) for rid in held}

    # The second record as an older version held it: in its year's bucket.
    ref = held[1].partition(":")[2]
    entry = (await buckets.find_one({"_id": day_bucket}))["entries"][field_key(ref)]
    year_bucket = f"complaint:{CLOSED_AT.year + 10}"
    await buckets.update_one({"_id": day_bucket}, {"$unset": {f"entries.{field_key(ref)}": ""}})
    await buckets.insert_one({"_id": year_bucket, "entries": {field_key(ref): entry}})
    await buckets.update_one({"_id": INDEX}, {"$addToSet": {"buckets": year_bucket}})
    await records.update_one({"_id": held[1]}, {"$set": {"bucket": year_bucket}})

    due = ok(await http.get("/records/retention/due"))
    assert [r["id"] for r in due["items"]] == sorted(held)
    await dispose(http, held, "Retention period ended")
    assert await buckets.find_one({"_id": year_bucket}) is None
    assert await buckets.find_one({"_id": day_bucket}) is None
    index = await buckets.find_one({"_id": INDEX})
    assert year_bucket not in index["buckets"] and day_bucket not in index["buckets"]
    assert ok(await http.get("/records/retention/due"))["items"] == []
