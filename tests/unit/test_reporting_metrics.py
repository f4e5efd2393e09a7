"""Reporting's gauges of what is open: recomputed from the database while events are applied."""

from collections.abc import AsyncIterator
from datetime import timedelta

from prometheus_client import CollectorRegistry

from services.reporting.domain import FeedbackRow, ReadRow
from services.reporting.metrics import DomainMetrics
from services.reporting.readmodels import Projected
from shared import contracts as c
from shared.events import Actor, make_event, utcnow


def open_complaint(row_id: str, severity: str) -> FeedbackRow:
    return FeedbackRow(_id=row_id, registered=True, is_complaint=True, open=True,
                       severity=severity, received_at=utcnow() - timedelta(hours=2))


def open_cases(registry: CollectorRegistry, severity: str) -> float:
    return registry.get_sample_value("qms_open_cases", {"severity": severity, "age": "lt_1d"})


async def test_a_reload_keeps_what_an_event_changed_while_the_database_was_read():
    registry = CollectorRegistry()
    metrics = DomainMetrics(registry)
    event = make_event(c.FeedbackClosed(feedback_id="A", register_no="CF-1", closed_at=utcnow(),
                                        had_form=False),
                       producer="test", correlation_id="A", actor=Actor(sub="t", roles=("sales",)))

    async def rows_read_before_a_change() -> AsyncIterator[ReadRow]:
        yield open_complaint("A", "normal")  # read from the database: still open
        # meanwhile the active consumer applies A's closure...
        closed = open_complaint("A", "normal")
        closed.open = False
        metrics.observe(event, event.payload, Projected(closed.kind, closed, applied=False))
        yield open_complaint("B", "major")

    await metrics.reload(rows_read_before_a_change())
    assert open_cases(registry, "normal") == 0  # A's closure is not undone by the stale read
    assert open_cases(registry, "major") == 1   # B, which this replica had not seen, counts


def test_time_to_close_is_observed_once_from_receipt_to_closure():
    registry = CollectorRegistry()
    metrics = DomainMetrics(registry)
    row = open_complaint("A", "normal")
    closed_at = row.received_at + timedelta(days=2)
    closure = c.FeedbackClosed(feedback_id="A", register_no="CF-1", closed_at=closed_at,
                               had_form=True)
    event = make_event(closure, producer="intake", correlation_id="A",
                       actor=Actor(sub="t", roles=("sales",)))
    row.open = False
    metrics.observe(event, closure, Projected(row.kind, row, applied=True))
    metrics.observe(event, closure, Projected(row.kind, row, applied=False))  # a redelivery
    labels = {"had_form": "true"}
    assert registry.get_sample_value("qms_time_to_close_seconds_count", labels) == 1
    assert registry.get_sample_value("qms_time_to_close_seconds_sum", labels) == 2 * 86400
