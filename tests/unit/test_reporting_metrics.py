"""Reporting's gauges of what is open: recomputed from the database while events are applied."""

from collections.abc import AsyncIterator
from datetime import timedelta
from zoneinfo import ZoneInfo

from prometheus_client import CollectorRegistry

from services.reporting import domain
from services.reporting.domain import FeedbackRow, ReadRow, Round
from services.reporting.metrics import DomainMetrics
from services.reporting.readmodels import Projected
from shared import contracts as c
from shared.events import Actor, make_event, parse_event, utcnow
from tests.unit.test_reporting_scenario import known_month


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


def gauges(metrics_items: list) -> dict[str, object]:
    """What the open-work gauges hold after loading these rows or their open work."""
    metrics = DomainMetrics(CollectorRegistry())
    metrics.load(metrics_items)
    live = metrics.live
    return {"cases": dict(live.cases), "forms": dict(live.forms), "capas": set(live.capas)}


def test_open_work_kept_aside_gives_the_gauges_the_rows_give():
    """The gauges' refresh reads `open_work` (one small document per row with open work), not
    the register: stored and read back, it gives the very figures the rows give."""
    story = known_month("ow1")
    rows = domain.fold([parse_event(e.model_dump(mode="json")) for e in story.events],
                       ZoneInfo("UTC")).values()
    kept = [domain.OpenWork.of(row) for row in rows]
    stored = [domain.OpenWork.of_document(w.to_document()) for w in kept if w.is_open]
    assert stored == [w for w in kept if w.is_open]
    assert gauges(list(rows)) == gauges(stored)
    # F5 (flagged major, breached, no record) and F6 (no form) are the month's open
    # complaints; only F5 has a form on the clock; CAPA X is open, Y closed.
    assert set(gauges(stored)["cases"]) == {story.fid("F5"), story.fid("F6")}  # type: ignore[arg-type]
    (form,) = gauges(stored)["forms"].values()  # type: ignore[attr-defined]
    assert form[0] == "major"
    open_capas = {r.id for r in rows if isinstance(r, domain.CapaRow) and r.open}
    assert open_capas and {w.row_id for w in stored if w.capa} == open_capas


def test_open_work_of_a_row_that_closes_is_none_and_clears_the_gauges():
    row = open_complaint("A", "normal")
    row.form_open, row.rounds = True, [Round(round=1, received_at=row.received_at,
                                               due_at=row.received_at + timedelta(days=3))]
    work = domain.OpenWork.of(row)
    assert work.is_open and work.key == "feedback:A" and work.form is not None
    metrics = DomainMetrics(CollectorRegistry())
    metrics.live.track(work)
    row.open = row.form_open = False
    closed = domain.OpenWork.of(row)
    assert not closed.is_open and closed != work
    metrics.live.track(closed)
    assert metrics.live.cases == {} and metrics.live.forms == {}
    capa = domain.CapaRow(_id="X", opened_at=utcnow(), open=True)
    assert domain.OpenWork.of(capa).capa and domain.OpenWork.of(capa).key == "capa:X"
