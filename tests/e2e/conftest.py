"""The system under test: all five services as processes on the real RabbitMQ and FerretDB.

`system` is shared by the e2e tests (settings of a real plant, 3-day deadline);
tests that need the clock to run out use `fast_clock_system` (a deadline of seconds).
Tests never share records: each creates its own feedback with unique data.
"""

import pytest

from tests.conftest import test_namespace
from tests.e2e.harness import Actors, System


@pytest.fixture(scope="session")
async def system():
    sys_ = System(test_namespace("e2e"))
    await sys_.start()
    yield sys_
    await sys_.stop()


@pytest.fixture(scope="session")
async def fast_clock_system():
    sys_ = System(test_namespace("clk"), env={
        "QMS_QUALITY_DEADLINE": "PT8S",
        "QMS_QUALITY_AT_RISK_AFTER": "PT4S",
        "QMS_QUALITY_SLA_CHECK_INTERVAL_S": "0.5",
        "QMS_QUALITY_UNIMPROVED_AFTER": "PT20S",
    })
    await sys_.start()
    yield sys_
    await sys_.stop()


@pytest.fixture
async def actors(system):
    a = Actors(system)
    yield a
    await a.aclose()


@pytest.fixture
async def fast_actors(fast_clock_system):
    a = Actors(fast_clock_system)
    yield a
    await a.aclose()
