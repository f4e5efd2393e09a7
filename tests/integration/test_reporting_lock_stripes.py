"""Reporting never waits on a lock it holds itself (the soak's stall, issue 12).

The kit's `WriteLocks` is striped: two documents may share one `asyncio.Lock`. Records
retention held a record's lock (`retention_records`) while it took its bucket's
(`retention_due`): when both fell on one stripe (1 in 256 ended complaints, depending on the
process's hash seed), the handler of the closing event waited on itself for ever. Reporting
has a single active consumer, so its whole queue stopped being acknowledged, with nothing in
its log. The buckets now have a lock of their own. Here the real service runs in this process,
on the real broker and database: closing complaints (each holding its record's lock while its
bucket is written), the events after them, and disposing of them all finish.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from services.reporting.app import ReportingService
from services.reporting.settings import Settings
from shared import contracts as c
from shared.messaging import EventPublisher
from shared.vocabulary import Category, Channel
from tests.conftest import infra_settings, test_namespace
from tests.integration.reporting_in_process import reporting_in_process
from tests.integration.test_reporting_standby import handled
from tests.support import eventually, ok
from tests.unit.test_reporting_scenario import Story

pytestmark = pytest.mark.infra

CLOSED_AT = datetime(2026, 6, 15, 12, tzinfo=UTC)  # kept 10 years: bucket `complaint:2036`
CLOSED = 40
BOUND_S = 30  # a bounded wait for what takes milliseconds; a deadlock never ends


@pytest.fixture
async def reporting() -> AsyncIterator[tuple[ReportingService, httpx.AsyncClient,
                                             EventPublisher]]:
    namespace = test_namespace(uuid.uuid4().hex[:6])
    # The retention clock 11 years ahead: the complaint closed here may be disposed of.
    settings = Settings(infra=infra_settings(namespace, retry_delay_ms=200, max_attempts=3,
                                             relay_interval_s=0.2),
                        gauges_refresh_interval_s=3600,
                        retention_clock_offset_days=11 * 366)
    async with reporting_in_process(settings, "li.qiang", ["quality"]) as started:
        yield started


async def test_p_5_4_2_a_closure_whose_record_shares_a_lock_with_its_bucket_is_applied(
        reporting: tuple[ReportingService, httpx.AsyncClient, EventPublisher]) -> None:
    service, http, publisher = reporting
    story = Story(uuid.uuid4().hex[:8])
    fids = []
    for i in range(CLOSED):
        name = f"S{i}"
        fids.append(fid := story.fid(name))
        facts = story.register(name, complaint=False, received=CLOSED_AT - timedelta(days=1),
                               category=Category.DELIVERY, channel=Channel.PHONE, customer="A")
        story.add(c.FeedbackClosed(feedback_id=fid, register_no=facts["register_no"],
                                   closed_at=CLOSED_AT, had_form=False), name, CLOSED_AT)
    story.register("after", complaint=False, received=CLOSED_AT, category=Category.DELIVERY,
                   channel=Channel.PHONE, customer="B")  # the queue must move on past it
    before = handled(service)
    for env in story.events:
        await publisher.publish(env)

    async def applied() -> bool:
        return handled(service) == before + len(story.events)
    await eventually(applied, timeout=BOUND_S, what="the closure and the event after it applied "
                     "(a handler waiting on its own lock never finishes)")

    # Held under its bucket, so due 11 years on; and disposing of it finishes too.
    due = ok(await http.get("/records/retention/due", params={"type": "complaint",
                                                                "limit": 500}))
    assert sorted(r["ref"] for r in due["items"]) == sorted(fids)
    answer = await asyncio.wait_for(http.post("/records/retention/dispose", json={
        "records": [f"complaint:{fid}" for fid in fids], "reason": "Retention ended (test)."}),
        BOUND_S)
    assert ok(answer, 201)["created"] == [True] * CLOSED
    due = ok(await http.get("/records/retention/due", params={"type": "complaint"}))
    assert due["items"] == []
