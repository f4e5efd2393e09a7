"""Reporting's cost does not grow with history: its reads in steady state.

On FerretDB's SQLite handler any read but an `_id` lookup reads a whole collection (see
tests/reads.py). Once reporting has started and taken over the queue (its first event
posts what a writer that died left pending: a read of the register, once), applying an
event, the gauges' periodic refresh, the monthly table, its charts and the requests about
one register line must read by `_id` only, or read collections whose size follows open
work or the customer directory. The real service runs in this process on the real broker
and database; a month of events lies in the history.

The register report (`GET /register`: a period, a customer, ...) reads the whole register
on FerretDB; on MongoDB it follows the declared index, checked here by `explain` when the
database is MongoDB.
"""

import uuid
from collections.abc import AsyncIterator
from datetime import datetime

import httpx
import pytest

from services.reporting.app import ReportingService, create
from services.reporting.readmodels import REGISTER_ORDER
from services.reporting.settings import Settings
from shared.auth import make_token
from shared.messaging import EventPublisher, Topology, new_broker
from tests import reads
from tests.conftest import infra_settings, test_namespace
from tests.integration.test_reporting_standby import handled
from tests.support import eventually, ok
from tests.unit.test_reporting_scenario import MONTH, known_month

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
    app = create(settings)
    service: ReportingService = app.state.service
    await service.start()
    broker = new_broker(settings.infra.amqp_url.get_secret_value())
    await broker.connect()
    exchange = Topology(namespace, "test-publisher").exchange
    await broker.declare_exchange(exchange)
    token = make_token(settings.infra.jwt_secret.get_secret_value(), "zhao.min", ["manager"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://reporting",
                                 headers={"Authorization": f"Bearer {token}"}) as http:
        yield service, http, EventPublisher(broker, exchange), log
    await broker.stop()
    if service.started:
        await service.stop()


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
    assert service._rebuilding is not None
    await eventually(lambda: _done(service), what="the start-up rebuild")

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
    return service._rebuilding is not None and service._rebuilding.done()


async def test_the_register_report_has_its_index_and_mongodb_uses_it(reporting):
    service, http, _, _ = reporting
    ok(await http.get("/register", params={"month": MONTH}))  # the indexes exist by now
    coll = service.views.models.register.collection
    keys = [[tuple(k) for k in index["key"]] for index in
            (await coll.index_information()).values()]
    assert [tuple(k) for k in REGISTER_ORDER] in keys
    if "ferretdbVersion" in await service.database.client.admin.command("buildInfo"):
        pytest.skip("FerretDB's SQLite handler reads the whole register for a report")
    explained = await service.database.command("explain", {
        "find": coll.name, "filter": {"received_at": {"$gte": datetime(2031, 3, 1),
                                                      "$lt": datetime(2031, 4, 1)}},
        "sort": dict(REGISTER_ORDER), "limit": 50})
    plan = str(explained["queryPlanner"]["winningPlan"])
    assert "received_at_-1__id_1" in plan and "'SORT'" not in plan, plan
