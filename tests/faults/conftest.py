"""The fault suite's system, and its place in the run: last, because it takes the broker and
the database down for a moment (every other test of the run keeps its servers), and its
table printed at the end of the run."""

import pytest

from shared.settings import InfraSettings
from tests.conftest import test_namespace
from tests.faults.supervised import SupervisedSystem

PRINTED: list[str] = []  # the table, once the test has written it


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    faults = [i for i in items if i.get_closest_marker("faults")]
    items[:] = [i for i in items if not i.get_closest_marker("faults")] + faults


def pytest_terminal_summary(terminalreporter) -> None:
    for text in PRINTED:
        terminalreporter.write_sep("=", "fault injection (reports/faults.md)")
        terminalreporter.write_line(text)


@pytest.fixture(scope="module")
async def faults_system():
    """The five services under make up's supervisor, with a plant's retry settings (not the
    other end-to-end tests' quick ones): a fault lasting seconds must not dead-letter."""
    defaults = InfraSettings.model_fields
    system = SupervisedSystem(test_namespace("faults"), env={
        "QMS_MAX_ATTEMPTS": str(defaults["max_attempts"].default),
        "QMS_RETRY_DELAY_MS": str(defaults["retry_delay_ms"].default),
        "QMS_RELAY_INTERVAL_S": str(defaults["relay_interval_s"].default),
    })
    try:
        await system.start()
        yield system
    finally:
        await system.stop()
