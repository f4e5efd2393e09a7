"""Reporting's cost does not grow with history: its reads in steady state.

On FerretDB's SQLite handler any read but an `_id` lookup reads a whole collection (see
tests/reads.py). Once reporting has started and taken over the queue (its first event
posts what a writer that died left pending: a read of the register, once), applying an
event, the gauges' periodic refresh, the monthly table, its charts, the requests about
one register line and the register report (`GET /register` of a period: its days in
`register_days`, then its rows by `_id`; JSON pages and CSV/XLSX exports) must read by
`_id` only, or read collections whose size follows open work or the customer directory.
The real service runs in this process on the real broker and database; a month of events
lies in the history.
"""

import csv
import io
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from services.reporting.app import ReportingService
from services.reporting.readmodels import REGISTER_DAYS
from services.reporting.settings import Settings
from shared.messaging import EventPublisher
from shared.vocabulary import Category, Channel
from tests import reads
from tests.conftest import infra_settings, test_namespace
from tests.integration.reporting_in_process import reporting_in_process
from tests.integration.test_reporting_standby import handled
from tests.support import eventually, ok, refused
from tests.unit.test_reporting_scenario import MONTH, Story, known_month

pytestmark = pytest.mark.infra

# Small by construction, read whole on purpose:
BOUNDED = {
    "open_work",       # one document per open complaint, form and CAPA (the gauges' source)
    "customer_names",  # one document per customer: the directory, not the complaints
}
# (`monthly_open`, one document per month of receipts and closures, reads as `*_open`.)


@pytest.fixture
async def reporting() -> AsyncIterator[tuple[ReportingService, httpx.AsyncClient,
                                             EventPublisher, reads.ReadLog]]:
    namespace = test_namespace(uuid.uuid4().hex[:6])
    log = reads.install(namespace)  # before the service makes its database client
    # The gauges' timer is called by the test (once), not left to its interval.
    settings = Settings(infra=infra_settings(namespace, retry_delay_ms=200, max_attempts=3,
                                             relay_interval_s=0.2),
                        gauges_refresh_interval_s=3600)
    async with reporting_in_process(settings, "zhao.min", ["manager"]) as (service, http,
                                                                           publisher):
        yield service, http, publisher, log


async def publish_all(service: ReportingService, publisher: EventPublisher, events) -> None:
    before = handled(service)
    for env in events:
        await publisher.publish(env)

    async def applied() -> bool:
        return handled(service) == before + len(events)
    await eventually(applied, timeout=60, what="every event applied")


async def test_events_gauges_table_and_lines_read_by_id_or_small_collections(reporting):
    service, http, publisher, log = reporting
    history = known_month(f"h{uuid.uuid4().hex[:6]}")
    await publish_all(service, publisher, history.events)  # and the take-over before them
    await eventually(lambda: _done(service), what="the start-up rebuild and indexing")

    log.recording = True
    story = known_month(f"s{uuid.uuid4().hex[:6]}")
    await publish_all(service, publisher, story.events)
    await publish_all(service, publisher, story.events[:5])  # redeliveries
    await service.views.refresh_gauges()  # the timer, once
    table = ok(await http.get("/statistics/monthly", params={"month": MONTH}))
    assert table["counts"]["feedbacks"] > 0
    ok(await http.get("/statistics/monthly", params={"from": "2030-01", "to": MONTH}))
    chart = await http.get("/charts/trend.png", params={"month": MONTH})
    assert chart.status_code == 200 and chart.content.startswith(b"\x89PNG")
    line = ok(await http.get(f"/register/{story.fid('F1')}"))
    assert line["feedback_id"] == story.fid("F1")
    events = ok(await http.get(f"/register/{story.fid('F1')}/history"))
    assert [e["occurred_at"] for e in events] == sorted(e["occurred_at"] for e in events)
    row = await service.views.models.register.get(story.fid("F1"))
    assert row is not None and {e["id"] for e in events} == set(row.applied_events)
    assert (await http.get("/metrics")).status_code == 200
    log.recording = False

    assert log.reads, "the listener saw no command: it is not installed"
    unbounded = log.unbounded(bounded_collections=BOUNDED)
    assert not unbounded, "reads that grow with history:\n" + "\n".join(
        f"{r.collection}.{r.command} {r.filter}" for r in unbounded)


async def _done(service: ReportingService) -> bool:
    """The start's background work that reads history once is over: the kit's rebuild and
    the indexing of the register by day."""
    indexing = service.views.indexing
    return service.settled() and indexing is not None and indexing.done()


async def test_the_register_report_and_its_exports_read_their_period_by_id_only(reporting):
    service, http, publisher, log = reporting
    history = known_month(f"h{uuid.uuid4().hex[:6]}")
    story = known_month(f"s{uuid.uuid4().hex[:6]}")
    await publish_all(service, publisher, history.events + story.events)
    await eventually(lambda: _done(service), what="the start-up rebuild and indexing")
    customer = story.customer("A")

    log.recording = True
    month = ok(await http.get("/register", params={"month": MONTH, "sort": "register_no"}))
    closed = ok(await http.get("/register", params={"month": MONTH, "status": "closed",
                                                    "sort": "-closed_at"}))
    mine = ok(await http.get("/register", params={"month": MONTH, "customer": customer}))
    days = ok(await http.get("/register", params={"received_from": "2031-03-10",
                                                  "received_to": "2031-03-20",
                                                  "page_size": 2, "page": 2}))
    default = ok(await http.get("/register"))
    exported = await http.get("/register", params={"month": MONTH, "format": "csv"})
    xlsx = await http.get("/register", params={"month": MONTH, "format": "xlsx",
                                               "customer": customer})
    log.recording = False

    assert month["total"] == 14 and month["period"] == {"start": "2031-03-01T00:00:00Z",
                                                        "end": "2031-04-01T00:00:00Z"}
    assert [r["register_no"] for r in month["items"][:2]] == ["CF-2031-F1", "CF-2031-F1"]
    assert closed["total"] == 8 and closed["items"][0]["closed_at"] >= \
        closed["items"][-1]["closed_at"]
    assert {r["register_no"] for r in mine["items"]} == {"CF-2031-F1", "CF-2031-F2"}
    assert days["total"] == 6 and len(days["items"]) == 2  # F3, F4, F5 of both stories
    assert default["total"] == 0, "March 2031 is not in the last 31 days"
    assert exported.status_code == 200 and xlsx.status_code == 200
    rows = list(csv.DictReader(io.StringIO(exported.content.decode("utf-8-sig"))))
    assert len(rows) == 14
    unbounded = log.unbounded(bounded_collections=BOUNDED)
    assert not unbounded, "reads that grow with history:\n" + "\n".join(
        f"{r.collection}.{r.command} {r.filter}" for r in unbounded)


async def test_a_row_older_than_the_default_period_is_listed_only_when_asked_for(reporting):
    service, http, publisher, _ = reporting
    now = datetime.now(UTC).replace(microsecond=0)
    old_at, recent_at = now - timedelta(days=45), now - timedelta(hours=2)
    story = Story(f"p{uuid.uuid4().hex[:6]}")
    for name, received in (("OLD", old_at), ("NEW", recent_at)):
        story.register(name, received=received, category=Category.DELIVERY,
                       channel=Channel.PHONE, customer="A")
    await publish_all(service, publisher, story.events)

    default = ok(await http.get("/register"))
    assert [r["feedback_id"] for r in default["items"]] == [story.fid("NEW")]
    start, end = (datetime.fromisoformat(default["period"][k]) for k in ("start", "end"))
    assert end - start == timedelta(days=31) and start > old_at  # QMS_HISTORY_DAYS
    day = old_at.date()
    asked = ok(await http.get("/register", params={"received_from": day.isoformat(),
                                                   "received_to": day.isoformat()}))
    assert [r["feedback_id"] for r in asked["items"]] == [story.fid("OLD")]
    assert asked["period"]["start"].startswith(day.isoformat())  # the plant's zone: UTC here
    month = ok(await http.get("/register", params={"month": old_at.strftime("%Y-%m")}))
    assert story.fid("OLD") in {r["feedback_id"] for r in month["items"]}


async def test_a_reversed_or_empty_register_period_is_refused_naming_the_parameter(reporting):
    _, http, _, _ = reporting
    for fmt in ("json", "csv"):
        error = refused(await http.get("/register", params={
            "received_from": "2031-03-20", "received_to": "2031-03-10", "format": fmt}), 422)
        assert "received_from must be before received_to" in error["message"], error
        assert error["details"][0]["loc"] == "query.received_from"
    error = refused(await http.get("/register", params={"month": MONTH,
                                                        "received_from": "2031-04-02"}), 422)
    assert "outside 2031-03" in error["message"] and error["details"][0]["loc"] == "query.month"


async def test_the_register_days_are_built_once_for_old_rows_and_by_a_rebuild(reporting):
    service, http, publisher, _ = reporting
    story = known_month(f"r{uuid.uuid4().hex[:6]}")
    await publish_all(service, publisher, story.events)
    await eventually(lambda: _done(service), what="the start-up indexing")
    before = ok(await http.get("/register", params={"month": MONTH, "sort": "register_no"}))
    assert before["total"] == 7
    models = service.views.models
    # Rows written before the index existed (an upgrade): indexed once, at the next start.
    await service.database[REGISTER_DAYS].drop()
    assert ok(await http.get("/register", params={"month": MONTH}))["total"] == 0
    assert await models.index_days() == 8  # and F8 of February
    assert await models.index_days() == 0  # once only
    assert ok(await http.get("/register", params={"month": MONTH, "sort": "register_no"})) \
        == before
    # A rebuild of the read models writes the days along with the rows.
    await service.database[REGISTER_DAYS].drop()
    await service.views.rebuild()
    assert ok(await http.get("/register", params={"month": MONTH, "sort": "register_no"})) \
        == before
    assert await models.register_days.built()


async def test_p_f_6_a_busy_month_is_written_in_small_documents_and_grouped_writes(reporting):
    """Every event of a month changes its counters. In one document, they grew with the
    month's customers and products, and each event rewrote it in turn: the queue a busy
    month stood in (the soak: 350 KB after 10 minutes). The counters by customer and product
    live in the month's shards, and the events that wait for a document's write go out in
    one; each still counts once, a redelivery not again."""
    service, http, publisher, log = reporting
    await publish_all(service, publisher, known_month(f"w{uuid.uuid4().hex[:6]}").events[:3])
    await eventually(lambda: _done(service), what="the start-up rebuild and indexing")
    story = Story(f"g{uuid.uuid4().hex[:6]}")
    received = datetime(2031, 9, 10, 8, tzinfo=UTC)
    for n in range(BUSY):  # every complaint from a customer new to the month, as in the soak
        story.register(f"B{n}", received=received + timedelta(minutes=n),
                       category=Category.DELIVERY, channel=Channel.EMAIL, customer=f"N{n}",
                       product=f"P{n}")

    log.recording = True
    await publish_all(service, publisher, story.events)
    await publish_all(service, publisher, story.events[:5])  # redeliveries
    log.recording = False

    table = ok(await http.get("/statistics/monthly", params={"month": "2031-09"}))
    assert table["counts"]["feedbacks"] == BUSY and table["counts"]["complaints"] == BUSY
    by_customer = {r["key"]: (r["feedbacks"], r["complaints"])
                   for r in table["counts"]["by_customer"]}
    assert by_customer == {story.customer(f"N{n}"): (1, 1) for n in range(BUSY)}
    assert {r["key"]: r["feedbacks"] for r in table["counts"]["by_product"]} == {
        story.product(f"P{n}"): 1 for n in range(BUSY)}

    main = await service.views.models.db["monthly"].find_one({"_id": "2031-09"})
    assert main is not None and "customer" not in main["data"] and "product" not in main["data"], \
        "the month's main document does not grow with its customers and products"
    writes = [r for r in log.reads if r.collection == "monthly" and r.command == "update"
              and r.filter.get("_id") == "2031-09"]
    assert 0 < len(writes) < BUSY * 3 // 4, \
        f"{len(writes)} writes of the month's main document for {BUSY} registrations"


BUSY = 40
