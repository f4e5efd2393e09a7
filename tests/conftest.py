"""Test-wide fixtures: every run gets its own namespace (exchange, queues, databases).

Integration and e2e tests need the real RabbitMQ and FerretDB that `make test`
starts; they are not replaced by in-memory fakes.
"""

import asyncio
import os
import shutil
import uuid
from pathlib import Path

import aio_pika
import httpx
import pytest
from pymongo import AsyncMongoClient

from shared.settings import InfraSettings

ROOT = Path(__file__).resolve().parents[1]

RUN_ID = uuid.uuid4().hex[:8]


def test_namespace(suffix: str = "") -> str:
    """A fresh namespace for this run (and optionally one test)."""
    return f"t{RUN_ID}{suffix}"


test_namespace.__test__ = False  # a helper, not a test


def infra_settings(namespace: str, **overrides) -> InfraSettings:
    return InfraSettings(namespace=namespace, **overrides)


@pytest.fixture(scope="session")
def amqp_url() -> str:
    return os.environ.get("QMS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


@pytest.fixture(scope="session")
def mongo_url() -> str:
    return os.environ.get("QMS_MONGO_URL", "mongodb://127.0.0.1:27017/")


def _only_unit_tests(session: pytest.Session) -> bool:
    unit = Path(__file__).resolve().parent / "unit"
    return all(unit in Path(item.fspath).parents for item in session.items)


async def _broker_round_trip(url: str) -> None:
    connection = await aio_pika.connect(url, timeout=10)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        await channel.default_exchange.publish(aio_pika.Message(b"ping"), routing_key=queue.name)
        await queue.get(timeout=10)


async def _database_round_trip(url: str) -> None:
    client = AsyncMongoClient(url, serverSelectionTimeoutMS=10_000)
    try:
        await client[test_namespace("_ping")].ping.insert_one({"ok": 1})
        await client.drop_database(test_namespace("_ping"))
    finally:
        await client.close()


@pytest.fixture(scope="session", autouse=True)
async def _servers_answer(request, amqp_url, mongo_url):
    """Stop at once, saying why, when the broker or database does not work: otherwise every
    test would wait out its own timeout, and a run would take an hour to say nothing."""
    if _only_unit_tests(request.session):
        return
    for name, check, url in (("RabbitMQ", _broker_round_trip, amqp_url),
                             ("FerretDB/MongoDB", _database_round_trip, mongo_url)):
        try:
            await asyncio.wait_for(check(url), timeout=40)
        except Exception as exc:  # noqa: BLE001 - any failure means the same: stop here
            pytest.exit(f"{name} at {url} does not take and return a message within 40 s "
                        f"({exc!r}); see scripts/diagnose.sh", returncode=3)


@pytest.fixture(scope="session", autouse=True)
async def _clean_up_this_runs_namespaces(request, amqp_url, mongo_url, _servers_answer):
    """Leave the broker and database as we found them: drop this run's queues and databases.

    Unit tests touch neither, so a run of unit tests alone needs no broker or database."""
    yield
    if _only_unit_tests(request.session):
        return
    prefix = test_namespace()
    for folder in (ROOT / "var" / "test-attachments").glob(f"{prefix}*"):
        shutil.rmtree(folder, ignore_errors=True)
    client = AsyncMongoClient(mongo_url)
    try:
        for name in await client.list_database_names():
            if name.startswith(prefix):
                await client.drop_database(name)
    finally:
        await client.close()
    api = os.environ.get("QMS_RABBIT_API", "http://127.0.0.1:15672/api")
    async with httpx.AsyncClient(auth=("guest", "guest"), timeout=10) as http:
        try:
            for kind in ("queues", "exchanges"):
                resp = await http.get(f"{api}/{kind}/%2F", params={"columns": "name"})
                for item in resp.json():
                    if item["name"].startswith(prefix):
                        await http.delete(f"{api}/{kind}/%2F/{item['name']}")
        except httpx.HTTPError:
            pass  # the management API is a convenience here, not a test subject
