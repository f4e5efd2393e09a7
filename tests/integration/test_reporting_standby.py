"""Several reporting replicas on the real broker and database (what Kubernetes runs).

Reporting's read models have one writer: the monthly counters are read, added to and
written back under the process's own locks. Its queue is therefore declared with
RabbitMQ's single active consumer: every replica subscribes, one consumes, the others
stand by and one of them takes over when the active one goes. The standbys' gauges follow
the database (recomputed every `gauges_refresh_interval_s`), so every replica exports the
same open forms and Prometheus takes the `max`.

The replicas are two reporting services in this process, each with its own broker
connection, database client and locks, as two pods would have. The events are the known
month of tests/unit/test_reporting_scenario.py, whose figures are stated there by hand.
"""

import json
import os
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client import CollectorRegistry

from services.reporting.api import monthly_table
from services.reporting.app import ReportingService, build
from services.reporting.domain import Delta
from services.reporting.settings import Settings
from shared.messaging import EventPublisher, Topology, new_broker
from tests.conftest import infra_settings, test_namespace
from tests.support import eventually
from tests.unit.test_reporting_scenario import MONTH, assert_table, expected, known_month

pytestmark = pytest.mark.infra


@pytest.fixture
def settings() -> Settings:
    infra = infra_settings(test_namespace(uuid.uuid4().hex[:6]), retry_delay_ms=200,
                           max_attempts=3, relay_interval_s=0.2)
    return Settings(infra=infra, gauges_refresh_interval_s=0.5)


@pytest.fixture
async def replicas(settings) -> AsyncIterator[list[ReportingService]]:
    started: list[ReportingService] = []
    for _ in range(2):
        replica = build(settings)
        await replica.start()
        started.append(replica)
    yield started
    for replica in started:
        if replica.started:
            await replica.stop()


@pytest.fixture
async def publisher(settings) -> AsyncIterator[EventPublisher]:
    """Publishes as intake, quality and capa would (its own connection)."""
    topology = Topology(settings.infra.namespace, "test-publisher")
    broker = new_broker(settings.infra.amqp_url.get_secret_value())
    await broker.connect()
    await broker.declare_exchange(topology.exchange)
    yield EventPublisher(broker, topology.exchange)
    await broker.stop()


def handled(replica: ReportingService) -> int:
    """Events this replica's consumer took from the queue (its own metrics)."""
    return int(_sum(replica.registry, "qms_events_consumed_total"))


async def queue_state(replica: ReportingService) -> dict:
    """The queue as RabbitMQ's management API shows it (consumers, arguments)."""
    api = os.environ.get("QMS_RABBIT_API", "http://127.0.0.1:15672/api")
    async with httpx.AsyncClient(auth=("guest", "guest"), timeout=10) as http:
        consumers = (await http.get(f"{api}/consumers/%2F")).json()
        queue = (await http.get(f"{api}/queues/%2F/{replica.topology.queue_name}")).json()
    queue["consumer_tags"] = [c["consumer_tag"] for c in consumers
                              if c["queue"]["name"] == replica.topology.queue_name]
    return queue


def open_cases(replica: ReportingService) -> int:
    return int(_sum(replica.registry, "qms_open_cases"))


def _sum(registry: CollectorRegistry, sample: str, **labels: str) -> float:
    return sum(s.value for family in registry.collect() for s in family.samples
               if s.name == sample and labels.items() <= s.labels.items())


async def test_one_replica_consumes_the_other_takes_over_and_every_event_counts_once(
        replicas, publisher):
    first, second = replicas
    async def both_subscribed() -> dict | None:  # the management API's view lags a little
        queue = await queue_state(first)
        return queue if len(queue.get("consumer_tags", [])) == 2 else None
    queue = await eventually(both_subscribed, what="both replicas on the queue")
    assert queue["arguments"]["x-single-active-consumer"] is True
    story = known_month(f"s{uuid.uuid4().hex[:6]}")
    half = len(story.events) // 2
    for env in story.events[:half]:
        await publisher.publish(env)

    async def first_half_applied() -> bool:
        return handled(first) + handled(second) == half
    await eventually(first_half_applied, timeout=60, what="the first half applied")
    active, standby = (first, second) if handled(first) else (second, first)
    assert handled(standby) == 0, "only the active replica consumes"

    # F2 is open at this point of the story. The standby, which applied nothing, exports
    # what the active replica does: its gauges follow the database.
    async def standby_gauges_follow() -> bool:
        return open_cases(standby) == open_cases(active) == 1
    await eventually(standby_gauges_follow, what="the standby's gauges to follow the database")

    # What a writer that died between its two writes leaves: a delta on a row, not yet added
    # to the month (here a marker counter the table does not show). The replica taking over
    # posts it (before its first event), once.
    f1 = await standby.views.models.register.get(story.fid("F1"))
    assert f1 is not None and not f1.pending
    f1.pending = [Delta(id=f"crashed-{uuid.uuid4().hex}", parts={f"monthly/{MONTH}": {"probe": 1}})]
    f1.has_pending = True
    await standby.views.models.register.save(f1)

    await active.stop()  # the active replica goes (a drain, a crash, a rolling update)
    for env in story.events[half:]:
        await publisher.publish(env)
    for env in story.events[:5]:  # and some redeliveries
        await publisher.publish(env)

    async def taken_over() -> bool:
        return handled(standby) == len(story.events) - half + 5
    await eventually(taken_over, timeout=60, what="the standby to take over the queue")
    table = await monthly_table(standby.views, MONTH, MONTH)
    assert_table(table, expected(story))  # every event counted once, as stated by hand
    march = (await standby.views.models.monthly([MONTH]))[MONTH]
    assert march["probe"] == 1  # the dead writer's delta, posted once by the new one
    f1 = await standby.views.models.register.get(story.fid("F1"))
    assert f1 is not None and not f1.pending


async def test_a_writer_that_comes_back_after_another_wrote_counts_on_from_the_database(
        mongo_url):
    """A replica remembers the month documents it wrote (one read fewer per event). When
    another replica wrote in between (it took over, then gave the queue back), the first
    one's copy is stale: its write must not match, and the counters must still add up to
    the fold of every event."""
    from zoneinfo import ZoneInfo

    from services.reporting import domain
    from services.reporting.readmodels import ReadModels, add_counters, month_of_document
    from shared.events import parse_event
    from shared.store import WriteLocks, database, mongo_client

    client = mongo_client(mongo_url)
    db = database(client, test_namespace(uuid.uuid4().hex[:6]), "reporting")
    utc = ZoneInfo("UTC")
    first, second = ReadModels(db, WriteLocks(), utc), ReadModels(db, WriteLocks(), utc)
    story = known_month(f"w{uuid.uuid4().hex[:6]}")
    parsed = [parse_event(e.model_dump(mode="json")) for e in story.events]
    third = len(parsed) // 3
    for writer, part in ((first, parsed[:third]), (second, parsed[third:2 * third]),
                         (first, parsed[2 * third:])):
        for env, payload in part:
            await writer.project(env, payload)
    totals = domain.monthly_totals(domain.fold(parsed, utc).values())
    for collection in (domain.MONTHLY, domain.MONTHLY_OPEN):
        stored = {d["_id"]: d async for d in db[collection].find({})}
        wanted = {domain.split_part(k)[1]: v for k, v in totals.items()
                  if k.startswith(collection + "/")}
        got: dict[str, dict[str, int]] = {}  # a month's documents (its shards) added up
        for doc_id, doc in stored.items():
            add_counters(got.setdefault(month_of_document(doc_id), {}), json.loads(doc["data"]))
        assert got == {m: {k: v for k, v in c.items() if v} for m, c in wanted.items()}, \
            collection
    await client.drop_database(db.name)
    await client.close()
