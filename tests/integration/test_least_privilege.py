"""Least privilege on the real local broker, with the users scripts/rabbitmq_users.sh created
from deploy/rabbitmq/definitions.json (the same users docker compose and Kubernetes get).

Each service's user may declare, publish to and consume only its own queues and the events
exchange, in any namespace (so the test namespaces work like `qms`).
"""

import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import httpx
import pytest
from aiormq.exceptions import ChannelAccessRefused, ProbableAuthenticationError

from services.console.live import LiveFeed
from shared.events import Actor, Envelope
from shared.service import Service
from shared.settings import InfraSettings, ServiceSettings
from tests.conftest import infra_settings, test_namespace
from tests.integration.kit_fixtures import Counter, CounterBumped, Tally
from tests.support import eventually, load_script

ROOT = Path(__file__).resolve().parents[2]
ACTOR = Actor(sub="tester", roles=("sales",))


def load_users_module():
    return load_script("deploy/rabbitmq/users.py", "qms_rabbitmq_users")


users = load_users_module()


@pytest.fixture(scope="module", autouse=True)
def local_users() -> None:
    """The users exist on the local broker (`make up` creates them; idempotent)."""
    subprocess.run([str(ROOT / "scripts" / "rabbitmq_users.sh")], check=True,
                   capture_output=True, timeout=120)


def url_of(user: str) -> str:
    password = users.password_of(user, local=True)  # this installation's generated one
    return f"amqp://{user}:{password}@127.0.0.1:5672/"


@pytest.fixture
def infra() -> InfraSettings:
    return infra_settings(test_namespace(uuid.uuid4().hex[:6]), retry_delay_ms=200,
                          max_attempts=3, relay_interval_s=0.2)


@pytest.fixture
async def started() -> AsyncIterator[list[Service]]:
    services: list[Service] = []
    yield services
    for svc in services:
        if svc.started:
            await svc.stop()


def own_user_service(name: str, infra: InfraSettings) -> Service:
    """A kit service named like a real one, connected as that service's own broker user.

    It owns Counters (their events go out through the outbox and the exchange) and consumes
    them into Tallies, failing each event once so the retry path (publishing to its own retry
    queue through the default exchange) runs under the restricted user too."""
    svc = Service(name, ServiceSettings(amqp_url=url_of(f"qms-{name}"), infra=infra))
    svc.collection("counters", Counter)
    svc.collection("tallies", Tally)
    failed: set[str] = set()

    @svc.consumer.on("kit.counter_bumped")
    async def on_bumped(event: Envelope, payload: CounterBumped) -> None:
        if event.id not in failed:
            failed.add(event.id)
            raise RuntimeError("first delivery fails on purpose: exercise the retry queue")
        repo = svc.repo("tallies")
        if await repo.get(payload.counter_id) is None:
            await repo.add(Tally(_id=payload.counter_id))

        def add(t: Tally) -> None:
            t.total += payload.by

        await repo.apply_event(payload.counter_id, event, add)

    return svc


async def ignore(*_args) -> None:
    """A consumer callback / event handler that does nothing."""


async def refused(channel_action) -> str:
    """Run one action on a fresh channel as the given connection; return the refusal text."""
    with pytest.raises(ChannelAccessRefused) as info:
        await channel_action()
    return str(info.value)


async def test_the_documented_development_passwords_no_longer_open_the_local_broker():
    """The local broker's service users have this installation's generated passwords
    (var/secrets/broker.env), not the development values written in .env.example."""
    documented = users.read_env_file(ROOT / ".env.example")
    for name in (*users.SERVICES, "scaler"):
        user = f"qms-{name}"
        dev_password = documented[users.password_variable(user)]
        assert users.password_of(user, local=True) != dev_password
        with pytest.raises(ProbableAuthenticationError):
            connection = await aio_pika.connect(
                f"amqp://{user}:{dev_password}@127.0.0.1:5672/", timeout=10)
            await connection.close()
        connection = await aio_pika.connect(url_of(user), timeout=10)  # the generated one
        await connection.close()


async def test_each_service_user_runs_its_service_declare_publish_consume_retry(infra, started):
    for name in users.SERVICES:
        svc = own_user_service(name, infra)
        await svc.start()
        started.append(svc)
        counter = Counter(_id=f"{name}-{uuid.uuid4()}")
        counter.bump(2, ACTOR)
        await svc.repo("counters").add(counter)

        async def tallied(svc: Service = svc, counter_id: str = counter.id) -> bool:
            tally = await svc.repo("tallies").get(counter_id)
            return tally is not None and tally.total == 2
        await eventually(tallied, what=f"{name} to apply its own event after one retry")


async def test_intake_user_cannot_consume_or_steal_the_quality_queue(infra, started):
    quality = Service("quality", ServiceSettings(amqp_url=url_of("qms-quality"), infra=infra))
    quality.consumer.on("kit.counter_bumped")(ignore)
    await quality.start()  # declares <ns>.quality as the quality user
    started.append(quality)
    quality_queue = quality.topology.queue_name
    exchange = quality.topology.exchange.name

    connection = await aio_pika.connect(url_of("qms-intake"))
    try:
        async def consume() -> None:
            channel = await connection.channel()
            queue = await channel.get_queue(quality_queue, ensure=False)
            await queue.consume(ignore)

        async def get_one() -> None:
            channel = await connection.channel()
            queue = await channel.get_queue(quality_queue, ensure=False)
            await queue.get(fail=False)

        async def bind_to_own_queue() -> None:  # route quality's events to itself: no
            channel = await connection.channel()
            queue = await channel.get_queue(quality_queue, ensure=False)
            await queue.bind(exchange, routing_key="#")

        async def declare_a_foreign_queue() -> None:
            channel = await connection.channel()
            await channel.declare_queue(f"{infra.namespace}.quality-copy", durable=True)

        for action in (consume, get_one, bind_to_own_queue, declare_a_foreign_queue):
            assert "ACCESS_REFUSED" in await refused(action), action.__name__

        # ...while its own queue is its to consume.
        channel = await connection.channel()
        own = await channel.declare_queue(f"{infra.namespace}.intake", durable=True,
                                          arguments={"x-queue-type": "quorum"})
        await own.consume(ignore)
    finally:
        await connection.close()


async def test_scaler_user_reads_queue_depth_but_cannot_consume(infra, started):
    quality = Service("quality", ServiceSettings(amqp_url=url_of("qms-quality"), infra=infra))
    quality.consumer.on("kit.counter_bumped")(ignore)
    await quality.start()
    started.append(quality)

    connection = await aio_pika.connect(url_of("qms-scaler"))
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(quality.topology.queue_name, passive=True)
        assert queue.declaration_result.message_count == 0  # what KEDA scales on

        async def consume() -> None:
            channel = await connection.channel()
            q = await channel.get_queue(quality.topology.queue_name, ensure=False)
            await q.consume(ignore)

        assert "ACCESS_REFUSED" in await refused(consume)
    finally:
        await connection.close()


async def test_a_service_user_publishes_only_its_own_event_types(infra, started):
    """The topic permissions `qms.events` has in definitions.json, given to this test's own
    exchange: intake may publish feedback.registered but not Quality's resolution_ready."""
    intake = Service("intake", ServiceSettings(amqp_url=url_of("qms-intake"), infra=infra))
    intake.consumer.on("kit.counter_bumped")(ignore)
    await intake.start()  # declares this namespace's events exchange
    started.append(intake)
    exchange = intake.topology.exchange.name
    (rule,) = [t for t in users.load()["topic_permissions"]
               if t["user"] == "qms-intake" and t["exchange"] == "qms.events"]
    api = "http://127.0.0.1:15672/api/topic-permissions/%2F/qms-intake"
    async with httpx.AsyncClient(auth=("guest", "guest"), timeout=10) as http:
        resp = await http.put(api, json={"exchange": exchange, "write": rule["write"],
                                         "read": rule["read"]})
        assert resp.status_code in (201, 204), resp.text
    connection = await aio_pika.connect(url_of("qms-intake"))
    try:
        async def publish(routing_key: str) -> None:
            channel = await connection.channel(publisher_confirms=True)
            events = await channel.get_exchange(exchange, ensure=False)
            await events.publish(aio_pika.Message(b"{}"), routing_key=routing_key)

        await publish("feedback.registered")
        assert "ACCESS_REFUSED" in await refused(
            lambda: publish("complaint.resolution_ready"))
    finally:
        await connection.close()
        async with httpx.AsyncClient(auth=("guest", "guest"), timeout=10) as http:
            await http.request("DELETE", api + "/" + exchange)


async def test_console_user_follows_the_events_on_its_own_queue_but_never_publishes(infra,
                                                                                   started):
    """The console's live feed, as `qms-console`: its own exclusive queue bound to the events
    exchange receives what a service publishes; publishing to the exchange (or to a service's
    queue through the default exchange) is refused, and so is a queue not named like its own."""
    intake = Service("intake", ServiceSettings(amqp_url=url_of("qms-intake"), infra=infra))
    intake.consumer.on("kit.counter_bumped")(ignore)
    await intake.start()  # declares this namespace's events exchange
    started.append(intake)
    exchange = intake.topology.exchange.name

    feed = LiveFeed(url_of("qms-console"), infra.namespace)
    await feed.start()
    try:
        assert await feed.ready() == "ok"
        notes: list[dict] = []
        feed.publish = notes.append  # type: ignore[method-assign]
        sender = await aio_pika.connect(url_of("qms-intake"))
        try:
            channel = await sender.channel()
            events = await channel.get_exchange(exchange, ensure=False)
            await events.publish(aio_pika.Message(
                b'{"type": "feedback.registered", "correlation_id": "f1"}'),
                routing_key="feedback.registered")
        finally:
            await sender.close()
        async def noted() -> bool:
            return notes == [{"type": "feedback.registered", "feedback_id": "f1"}]

        await eventually(noted, what="the console's note of the event")
    finally:
        await feed.stop()

    connection = await aio_pika.connect(url_of("qms-console"))
    try:
        async def publish_to_the_exchange() -> None:
            channel = await connection.channel(publisher_confirms=True)
            events = await channel.get_exchange(exchange, ensure=False)
            await events.publish(aio_pika.Message(b"{}"), routing_key="feedback.registered")

        async def publish_to_a_service_queue() -> None:
            channel = await connection.channel(publisher_confirms=True)
            await channel.default_exchange.publish(aio_pika.Message(b"{}"),
                                                   routing_key=intake.topology.queue_name)

        async def declare_a_queue_not_its_own() -> None:
            channel = await connection.channel()
            await channel.declare_queue(f"{infra.namespace}.console-copy", exclusive=True)

        for action in (publish_to_the_exchange, publish_to_a_service_queue,
                       declare_a_queue_not_its_own):
            assert "ACCESS_REFUSED" in await refused(action), action.__name__
    finally:
        await connection.close()
