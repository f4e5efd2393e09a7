"""Test-wide fixtures: every run gets its own namespace (exchange, queues, databases).

Integration and e2e tests need the real RabbitMQ and FerretDB that `make test`
starts; they are not replaced by in-memory fakes.
"""

import os
import shutil
import uuid
from pathlib import Path

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


@pytest.fixture(scope="session", autouse=True)
async def _clean_up_this_runs_namespaces(request, amqp_url, mongo_url):
    """Leave the broker and database as we found them: drop this run's queues and databases.

    Unit tests touch neither, so a run of unit tests alone needs no broker or database."""
    yield
    unit = Path(__file__).resolve().parent / "unit"
    if all(unit in Path(item.fspath).parents for item in request.session.items):
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
