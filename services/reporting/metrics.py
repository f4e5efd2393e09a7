"""Domain metrics of the procedure, from the events (Prometheus, on `service.registry`).

Counters and histograms count what this process applied (a redelivery counts
nothing). The gauges of what is open (cases, forms and their 3-day state,
CAPAs) are computed at scrape time from an in-memory index of the open rows,
which is loaded from the database at start and after a rebuild, kept current
as events are applied, and recomputed from the database every
`gauges_refresh_interval_s`: right after a restart, and right on a standby
replica that applies no events (so Prometheus takes the `max` over replicas).
"""

from collections.abc import AsyncIterator, Iterable
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.reporting.domain import FeedbackRow, OpenWork, ReadRow, RowKind, epoch
from services.reporting.readmodels import Projected
from shared import contracts as c
from shared.events import Contract, Envelope, utcnow
from shared.vocabulary import Category, Channel, Severity

HOUR, DAY = 3600.0, 86400.0
# Around the 3-day rule (P-F.5): the 3d bucket is the rule itself.
QUALITY_RECORD_BUCKETS = (0.5 * DAY, DAY, 2 * DAY, 2.5 * DAY, 3 * DAY, 4 * DAY, 7 * DAY,
                          14 * DAY)
REPLY_BUCKETS = (4 * HOUR, DAY, 2 * DAY, 3 * DAY, 5 * DAY, 7 * DAY, 14 * DAY, 30 * DAY)
LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
AGES: tuple[tuple[str, float, float | None], ...] = (
    ("lt_1d", 0, DAY), ("1d_3d", DAY, 3 * DAY), ("3d_7d", 3 * DAY, 7 * DAY),
    ("7d_30d", 7 * DAY, 30 * DAY), ("gt_30d", 30 * DAY, None))
SEVERITIES = [s.value for s in Severity]
SLA_STATES = ("on_time", "at_risk", "breached")


class LiveState:
    """What is open now: complaints, forms on the 3-day clock, CAPAs."""

    def __init__(self) -> None:
        self.cases: dict[str, tuple[str, datetime]] = {}
        self.forms: dict[str, tuple[str, datetime | None, datetime | None]] = {}
        self.capas: set[str] = set()

    def clear(self) -> None:
        self.cases.clear()
        self.forms.clear()
        self.capas.clear()

    def take(self, other: "LiveState") -> None:
        self.cases, self.forms, self.capas = other.cases, other.forms, other.capas

    def track(self, item: ReadRow | OpenWork) -> None:
        """A row as applied, or its open work as stored (`OpenWork`, the same figures)."""
        work = item if isinstance(item, OpenWork) else OpenWork.of(item)
        if work.kind is RowKind.FEEDBACK:
            if work.case is not None:
                self.cases[work.row_id] = work.case
            else:
                self.cases.pop(work.row_id, None)
            if work.form is not None:
                self.forms[work.row_id] = work.form
            else:
                self.forms.pop(work.row_id, None)
        elif work.kind is RowKind.CAPA:
            if work.capa:
                self.capas.add(work.row_id)
            else:
                self.capas.discard(work.row_id)


def age_bucket(age_s: float) -> str:
    for name, low, high in AGES:
        if age_s >= low and (high is None or age_s < high):
            return name
    return AGES[0][0]


def sla_state(now: datetime, at_risk_at: datetime | None, due_at: datetime | None) -> str:
    if due_at is not None and now >= due_at:
        return "breached"
    if at_risk_at is not None and now >= at_risk_at:
        return "at_risk"
    return "on_time"


class LiveCollector(Collector):
    def __init__(self, state: LiveState):
        self.state = state

    def collect(self) -> Iterable[GaugeMetricFamily]:
        now = utcnow()
        cases = GaugeMetricFamily("qms_open_cases", "Open complaints (not closed nor withdrawn) "
                                  "by severity and age since received", labels=["severity", "age"])
        oldest = GaugeMetricFamily("qms_open_case_oldest_age_seconds",
                                   "Age of the oldest open complaint", labels=["severity"])
        forms = GaugeMetricFamily("qms_open_forms", "Complaint Handling Forms waiting for the "
                                  "quality record, by 3-day state (P-F.5)",
                                  labels=["severity", "sla"])
        counts = {(s, a): 0 for s in SEVERITIES for a, _, _ in AGES}
        ages = {s: 0.0 for s in SEVERITIES}
        for severity, received_at in self.state.cases.values():
            age = max(0.0, (now - received_at).total_seconds())
            counts[(severity, age_bucket(age))] = counts.get((severity, age_bucket(age)), 0) + 1
            ages[severity] = max(ages.get(severity, 0.0), age)
        for (severity, age_range), n in counts.items():
            cases.add_metric([severity, age_range], n)
        for severity, age in ages.items():
            oldest.add_metric([severity], age)
        states = {(s, st): 0 for s in SEVERITIES for st in SLA_STATES}
        for severity, at_risk_at, due_at in self.state.forms.values():
            key = (severity, sla_state(now, at_risk_at, due_at))
            states[key] = states.get(key, 0) + 1
        for (severity, state), n in states.items():
            forms.add_metric([severity, state], n)
        capas = GaugeMetricFamily("qms_capas_open", "Formal CAPAs opened and not closed")
        capas.add_metric([], len(self.state.capas))
        yield from (cases, oldest, forms, capas)


class DomainMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.live = LiveState()
        self._meanwhile: list[ReadRow] | None = None  # rows tracked during a `reload`
        registry.register(LiveCollector(self.live))
        self.registered = Counter("qms_feedbacks_registered_total",
                                  "Feedback entered in the register (P-5.4.1)",
                                  ["channel", "category", "severity"], registry=registry)
        self.forms_opened = Counter("qms_complaint_forms_opened_total",
                                    "Complaint Handling Forms opened (P-F.2 no)", ["severity"],
                                    registry=registry)
        self.time_to_record = Histogram(
            "qms_time_to_quality_record_seconds",
            "Form received by Quality -> quality record handed to Sales (P-F.5: 3 days)",
            ["severity"], buckets=QUALITY_RECORD_BUCKETS, registry=registry)
        self.quality_records = Counter("qms_quality_records_total",
                                       "Quality records handed to Sales, by 3-day rule met",
                                       ["met_deadline"], registry=registry)
        self.time_to_reply = Histogram(
            "qms_time_to_customer_reply_seconds", "Feedback received -> first customer reply",
            ["kind"], buckets=REPLY_BUCKETS, registry=registry)
        self.at_risk = Counter("qms_sla_at_risk_total", "3-day deadlines reported at risk",
                               ["severity"], registry=registry)
        self.breached = Counter("qms_sla_breached_total", "3-day deadlines missed (P-F.5)",
                                ["severity"], registry=registry)
        self.major = Counter("qms_major_alerts_total", "Major complaints alerted (P-5.3.5)",
                             registry=registry)
        self.closed = Counter("qms_feedbacks_closed_total", "Cases closed (P-F.4 satisfied)",
                              ["had_form"], registry=registry)
        self.time_to_close = Histogram(
            "qms_time_to_close_seconds", "Feedback received -> closed (customer satisfied)",
            ["had_form"], buckets=REPLY_BUCKETS, registry=registry)
        self.reopened = Counter("qms_complaints_reopened_total",
                                "Cases reopened (P-F.4 not satisfied)", registry=registry)
        self.withdrawn = Counter("qms_feedbacks_withdrawn_total", "Feedback withdrawn",
                                 registry=registry)
        self.satisfaction = Counter("qms_satisfaction_answers_total", "Customer answers",
                                    ["satisfied"], registry=registry)
        self.recurrences = Counter("qms_recurrences_detected_total",
                                   "Recurrences detected (P-5.3.4)", ["reason"], registry=registry)
        self.capas_opened = Counter("qms_capas_opened_total", "Formal CAPAs opened",
                                    registry=registry)
        self.capas_closed = Counter("qms_capas_closed_total", "Formal CAPAs closed",
                                    registry=registry)
        self.lag = Histogram("qms_reporting_event_lag_seconds",
                             "Event occurred -> applied to the read models", buckets=LAG_BUCKETS,
                             registry=registry)
        self._zero_series()

    def _zero_series(self) -> None:
        """Series exist from the start (at 0), so rates and alerts have something to read."""
        for severity in SEVERITIES:
            for metric in (self.forms_opened, self.at_risk, self.breached, self.time_to_record):
                metric.labels(severity)
            for channel in Channel:
                for category in Category:
                    self.registered.labels(channel.value, category.value, severity)
        for flag in ("true", "false"):
            self.quality_records.labels(flag)
            self.closed.labels(flag)
            self.time_to_close.labels(flag)
            self.satisfaction.labels(flag)
        for kind in ("direct", "after_quality_record"):
            self.time_to_reply.labels(kind)

    def load(self, rows: Iterable[ReadRow | OpenWork]) -> None:
        """At start and after a rebuild (events wait at the gate meanwhile)."""
        self.live.clear()
        for row in rows:
            self.live.track(row)

    async def reload(self, rows: AsyncIterator[ReadRow | OpenWork]) -> None:
        """From the database while events are applied: a row tracked meanwhile may have been
        read before its change, so it is tracked again on the fresh state before the swap."""
        fresh, self._meanwhile = LiveState(), []
        try:
            async for row in rows:
                fresh.track(row)
            for row in self._meanwhile:
                fresh.track(row)
        finally:
            self._meanwhile = None
        self.live.take(fresh)

    def observe(self, env: Envelope, payload: Contract, result: Projected) -> None:
        self.live.track(result.row)
        if self._meanwhile is not None:
            self._meanwhile.append(result.row)
        if not result.applied:
            return
        self.lag.observe(max(0.0, (utcnow() - env.occurred_at).total_seconds()))
        row = result.row
        match payload:
            case c.FeedbackRegistered():
                self.registered.labels(payload.channel.value, payload.category.value,
                                       payload.severity.value).inc()
            case c.ComplaintEscalated():
                self.forms_opened.labels(payload.severity.value).inc()
            case c.ResolutionReady():
                seconds = (payload.resolved_at - payload.received_at).total_seconds()
                severity = getattr(row, "severity", None) or "normal"
                self.time_to_record.labels(severity).observe(max(0.0, seconds))
                self.quality_records.labels(str(payload.met_deadline).lower()).inc()
            case c.RepliedDirectly():
                self._first_reply(row, env.occurred_at, "direct")
            case c.CustomerReplied():
                self._first_reply(row, payload.replied_at, "after_quality_record")
            case c.SlaAtRisk():
                self.at_risk.labels(payload.severity.value).inc()
            case c.SlaBreached():
                self.breached.labels(payload.severity.value).inc()
            case c.MajorAlert():
                self.major.inc()
            case c.FeedbackClosed():
                had_form = str(payload.had_form).lower()
                self.closed.labels(had_form).inc()
                if isinstance(row, FeedbackRow) and row.received_at is not None:
                    self.time_to_close.labels(had_form).observe(
                        max(0.0, (payload.closed_at - row.received_at).total_seconds()))
            case c.ComplaintReopened():
                self.reopened.inc()
            case c.FeedbackWithdrawn():
                self.withdrawn.inc()
            case c.SatisfactionRecorded():
                self.satisfaction.labels(str(payload.satisfied).lower()).inc()
            case c.RecurrenceDetected():
                self.recurrences.labels(payload.reason).inc()
            case c.CapaOpened():
                self.capas_opened.inc()
            case c.CapaClosed():
                self.capas_closed.inc()

    def _first_reply(self, row: ReadRow, at: datetime, kind: str) -> None:
        if not isinstance(row, FeedbackRow) or row.received_at is None:
            return
        if row.first_reply_at is not None and epoch(row.first_reply_at) == epoch(at):
            self.time_to_reply.labels(kind).observe(
                max(0.0, (at - row.received_at).total_seconds()))
