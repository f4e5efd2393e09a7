"""A known month (March 2031) whose statistics are stated here by hand (P-F.6).

The same events are folded purely here and published to the real reporting
service in tests/e2e/test_reporting.py; both must give the numbers below.

The month, case by case (UTC; hours are exact):
  F1 product quality, phone, normal, customer A, product P1; estimate 1000.00 CNY.
     Received 03-02 08:00; form; Quality received it 03-02 10:00, record 03-03 10:00 (24 h,
     met); unit production, defect D01, rework 1500.00 CNY. Reply 03-04 10:00 (50 h).
     Satisfied; closed 03-05.
  F2 product quality, e-mail, MAJOR, customer A, product P2. Received 03-03 06:00; form
     received 03-03 08:00, due 03-06 08:00: at risk, breached; record 03-07 08:00 (96 h, not
     met); units production (scrap 200.00 CNY) and purchasing (return 300.00 CNY), D01.
     Reply 03-08 06:00 (120 h). Not satisfied -> reopened; round 2 received 03-09 10:00,
     record 03-10 10:00 (24 h, met), production rework 100.00 CNY. Reply, satisfied, closed
     03-12.
  F3 delivery, fax, normal, customer B; estimate 250.50 USD. Received 03-10 00:00, replied
     directly 03-10 12:00 (12 h), closed 03-11.
  F4 suggestion, visit, customer B. Received 03-14, replied directly after 24 h, closed.
  F5 product quality, phone, registered normal, customer C, P1. Received 03-20 08:00, form
     received 03-20 09:00 (normal), due 03-23 09:00; Quality flags it MAJOR on 03-21 08:00
     (POST /cases/{ref}/major): from then on it is a major complaint, so it counts as major
     and its breach is a major one. Breached, no record yet; engineering, D02. Open.
  F6 service/documents, letter, normal, customer C. Received 03-29. Open.
  F7 registered 03-25 and withdrawn: counts nowhere.
  F8 (February) product quality, phone, customer A, P1. Received 02-10 08:00, replied
     directly after 24 h, closed 03-03.
  One recurrence (D01) on 03-12; CAPA X opened 03-13; CAPA Y opened 02-20, closed 03-25.
  Customers are named "Customer A", "Customer B", "Customer C" (shown next to their ids).

A second story, June and July 2031 (`renamed_customer_and_withdrawn_capas`), has a customer
whose name changed and CAPAs withdrawn; its figures are stated in `expected_renamed`.
"""

from datetime import UTC, date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from services.reporting import domain, statistics
from shared import contracts as c
from shared.events import Actor, Contract, Envelope, make_event
from shared.vocabulary import Category, Channel, Customer, Money, Product, Severity

MONTH, PREVIOUS = "2031-03", "2031-02"
UTC_ZONE = ZoneInfo("UTC")


def at(day: int, hour: int = 0, month: int = 3) -> datetime:
    return datetime(2031, month, day, hour, tzinfo=UTC)


def event(payload: Contract, feedback_id: str, when: datetime, producer: str = "test"
          ) -> Envelope:
    env = make_event(payload, producer=producer, correlation_id=feedback_id,
                     actor=Actor(sub="tester", roles=("quality",)))
    return env.model_copy(update={"occurred_at": when})


class Story:
    """Builds one run's events; ids carry `tag` so runs never meet."""

    def __init__(self, tag: str):
        self.tag = tag
        self.events: list[Envelope] = []
        self.ids: dict[str, str] = {}

    def fid(self, name: str) -> str:
        return self.ids.setdefault(name, f"{self.tag}-{name}")

    def customer(self, letter: str) -> str:
        return f"{self.tag}-C{letter}"

    def product(self, name: str) -> str:
        return f"{self.tag}-{name}"

    def add(self, payload: Contract, name: str, when: datetime) -> Envelope:
        env = event(payload, self.fid(name), when)
        self.events.append(env)
        return env

    def facts(self, name: str, *, received: datetime, category: Category, channel: Channel,
              customer: str, severity: Severity = Severity.NORMAL, product: str | None = None,
              estimate: tuple[str, str] | None = None) -> dict:
        return dict(
            feedback_id=self.fid(name), register_no=f"CF-2031-{name}",
            customer=Customer(id=self.customer(customer), name=f"Customer {customer}"),
            channel=channel, received_at=received, category=category, severity=severity,
            product=Product(code=self.product(product)) if product else None,
            description=f"case {name}",
            estimated_loss=Money(amount=Decimal(estimate[0]), currency=estimate[1])
            if estimate else None)

    def register(self, name: str, complaint: bool = True, **facts) -> dict:
        f = self.facts(name, **facts)
        self.add(c.FeedbackRegistered(**f, is_complaint=complaint), name, facts["received"])
        return f

    def form(self, name: str, facts: dict, opened: datetime, received: datetime,
             due: datetime, severity: Severity = Severity.NORMAL, rnd: int = 1) -> None:
        if rnd == 1:
            self.add(c.ComplaintEscalated(**facts), name, opened)
        self.add(c.ComplaintAccepted(feedback_id=self.fid(name), register_no=f"CF-2031-{name}",
                                     round=rnd, received_at=received, due_at=due,
                                     at_risk_at=due.replace(hour=max(0, due.hour - 12)),
                                     severity=severity), name, received)

    def assign(self, name: str, rnd: int, defect: str, units: list[str], when: datetime) -> None:
        self.add(c.ResponsibilityAssigned(
            feedback_id=self.fid(name), register_no=f"CF-2031-{name}", round=rnd,
            preliminary_cause="cause", defect_code=defect, customer_id="x",
            units=[c.UnitRequest(unit=u, request="fix it", action_id=f"{self.fid(name)}-{u}")
                   for u in units]), name, when)

    def record(self, name: str, rnd: int, defect: str, received: datetime, resolved: datetime,
               due: datetime, costs: list[tuple[str, str, str]]) -> Envelope:
        outcomes = [c.UnitOutcome(unit=u, action_id=f"{self.fid(name)}-{u}", root_cause="rc",
                                  countermeasures=["cm"],
                                  disposition=c.Disposition(type="rework", quantity=1,
                                                            cost=Money(amount=Decimal(a),
                                                                       currency=cur)))
                    for u, a, cur in costs]
        return self.add(c.ResolutionReady(
            feedback_id=self.fid(name), register_no=f"CF-2031-{name}", round=rnd, cause="c",
            defect_code=defect, outcomes=outcomes, summary="s", received_at=received,
            resolved_at=resolved, due_at=due, met_deadline=resolved <= due), name, resolved)

    def reply(self, name: str, when: datetime) -> None:
        self.add(c.CustomerReplied(feedback_id=self.fid(name), register_no=f"CF-2031-{name}",
                                   reply="our answer", replied_at=when), name, when)

    def direct(self, name: str, category: Category, when: datetime) -> None:
        self.add(c.RepliedDirectly(feedback_id=self.fid(name), register_no=f"CF-2031-{name}",
                                   category=category, reply="answered"), name, when)

    def satisfied(self, name: str, yes: bool, when: datetime) -> None:
        self.add(c.SatisfactionRecorded(feedback_id=self.fid(name),
                                        register_no=f"CF-2031-{name}", satisfied=yes), name, when)

    def close(self, name: str, when: datetime, had_form: bool) -> None:
        self.add(c.FeedbackClosed(feedback_id=self.fid(name), register_no=f"CF-2031-{name}",
                                  closed_at=when, had_form=had_form), name, when)

    def sla(self, name: str, due: datetime, severity: Severity, breached: bool) -> None:
        kind = c.SlaBreached if breached else c.SlaAtRisk
        self.add(kind(feedback_id=self.fid(name), register_no=f"CF-2031-{name}", round=1,
                      due_at=due, severity=severity), name, due)


def known_month(tag: str) -> Story:
    s = Story(tag)
    pq, normal, major = Category.PRODUCT_QUALITY, Severity.NORMAL, Severity.MAJOR
    # F1
    f1 = s.register("F1", received=at(2, 8), category=pq, channel=Channel.PHONE, customer="A",
                    product="P1", estimate=("1000.00", "CNY"))
    s.form("F1", f1, at(2, 9), at(2, 10), at(5, 10))
    s.assign("F1", 1, "D01", ["production"], at(2, 12))
    s.record("F1", 1, "D01", at(2, 10), at(3, 10), at(5, 10), [("production", "1500.00", "CNY")])
    s.reply("F1", at(4, 10))
    s.satisfied("F1", True, at(5, 9))
    s.close("F1", at(5, 10), True)
    # F2
    f2 = s.register("F2", received=at(3, 6), category=pq, channel=Channel.EMAIL, customer="A",
                    product="P2", severity=major)
    s.form("F2", f2, at(3, 7), at(3, 8), at(6, 8), severity=major)
    s.add(c.MajorAlert(feedback_id=s.fid("F2"), register_no="CF-2031-F2",
                       customer=f2["customer"], description="line stopped", heads=[]),
          "F2", at(3, 7))
    s.assign("F2", 1, "D01", ["production", "purchasing"], at(3, 12))
    s.sla("F2", at(6, 8), major, breached=False)
    s.sla("F2", at(6, 8), major, breached=True)
    s.record("F2", 1, "D01", at(3, 8), at(7, 8), at(6, 8),
             [("production", "200.00", "CNY"), ("purchasing", "300.00", "CNY")])
    s.reply("F2", at(8, 6))
    s.satisfied("F2", False, at(8, 12))
    s.add(c.ComplaintReopened(feedback_id=s.fid("F2"), register_no="CF-2031-F2",
                              reopen_count=1, had_form=True), "F2", at(9, 9))
    s.form("F2", f2, at(9, 10), at(9, 10), at(12, 10), severity=major, rnd=2)
    s.record("F2", 2, "D01", at(9, 10), at(10, 10), at(12, 10),
             [("production", "100.00", "CNY")])
    s.reply("F2", at(11, 10))
    s.satisfied("F2", True, at(11, 12))
    s.close("F2", at(12, 10), True)
    # F3, F4: answered directly
    s.register("F3", received=at(10, 0), category=Category.DELIVERY, channel=Channel.FAX,
               customer="B", estimate=("250.50", "USD"))
    s.direct("F3", Category.DELIVERY, at(10, 12))
    s.close("F3", at(11, 0), False)
    s.register("F4", complaint=False, received=at(14, 0), category=Category.SUGGESTION,
               channel=Channel.VISIT, customer="B")
    s.direct("F4", Category.SUGGESTION, at(15, 0))
    s.close("F4", at(15, 1), False)
    # F5, F6: still open at the end of the month
    f5 = s.register("F5", received=at(20, 8), category=pq, channel=Channel.PHONE, customer="C",
                    product="P1")
    s.form("F5", f5, at(20, 9), at(20, 9), at(23, 9))
    s.assign("F5", 1, "D02", ["engineering"], at(20, 12))
    s.add(c.MajorAlert(feedback_id=s.fid("F5"), register_no="CF-2031-F5",
                       customer=f5["customer"], description="flagged major later", heads=[]),
          "F5", at(21, 8))
    s.sla("F5", at(23, 9), normal, breached=False)
    s.sla("F5", at(23, 9), normal, breached=True)
    s.register("F6", received=at(29, 0), category=Category.SERVICE, channel=Channel.LETTER,
               customer="C")
    # F7: withdrawn
    s.register("F7", received=at(25, 0), category=pq, channel=Channel.PHONE, customer="C")
    s.add(c.FeedbackWithdrawn(feedback_id=s.fid("F7"), register_no="CF-2031-F7",
                              reason="registered twice"), "F7", at(25, 1))
    # F8: February's, closed in March
    s.register("F8", received=at(10, 8, month=2), category=pq, channel=Channel.PHONE,
               customer="A", product="P1")
    s.direct("F8", pq, at(11, 8, month=2))
    s.close("F8", at(3, 10), False)
    # recurrence and CAPAs
    s.add(c.RecurrenceDetected(kind=f"customer:{s.customer('A')}|defect:D01", reason="recurred",
                               feedback_ids=[s.fid("F1"), s.fid("F2")], defect_code="D01",
                               customer_id=s.customer("A")), "F2", at(12, 11))
    s.add(c.CapaOpened(capa_id=f"{tag}-X", number="CAPA-2031-0001", source="recurrence",
                       feedback_ids=[s.fid("F1")], title="D01 at customer A"), "F1", at(13, 0))
    s.add(c.CapaOpened(capa_id=f"{tag}-Y", number="CAPA-2031-0000", source="manual",
                       feedback_ids=[], title="older"), "F8", at(20, 0, month=2))
    s.add(c.CapaClosed(capa_id=f"{tag}-Y", feedback_ids=[], closed_at=at(25, 0)), "F8",
          at(25, 0))
    return s


def expected(s: Story) -> dict:
    """March 2031, by hand (see the module docstring)."""
    A, B, C = s.customer("A"), s.customer("B"), s.customer("C")
    return {
        "feedbacks": 6, "complaints": 5, "suggestions": 1,
        "answered_directly": (2, 1),  # F3 (a complaint) and F4 (a suggestion); F8 is February's
        "by_category": {"product_quality": (3, 3), "delivery": (1, 1),
                        "service_documents": (1, 1), "suggestion": (1, 0)},
        "by_channel": {"phone": (2, 2), "email": (1, 1), "fax": (1, 1), "visit": (1, 0),
                       "letter": (1, 1)},
        "by_customer": {A: (2, 2), B: (2, 1), C: (2, 2)},
        "by_product": {s.product("P1"): (2, 2), s.product("P2"): (1, 1)},
        # F2 registered major; F5 registered normal and flagged major by Quality later
        "by_severity": {"normal": (4, 3), "major": (2, 2)},
        "by_defect_code": {"D01": (2, 2), "D02": (1, 1)},
        "by_unit": {"production": (2, 2), "purchasing": (1, 1), "engineering": (1, 1)},
        "forms_opened": 3,
        # records: F1 24 h (met), F2 96 h (missed), F2 round 2 24 h (met)
        "quality_records": 3,
        # 3-day deadlines in March: F1 (03-05, met), F2 round 1 (03-06, record late), F2 round 2
        # (03-12, met) and F5 (03-23, breached, still no record: not met). Before, F5 was left
        # out (no record) and the share read 2/3 = 0.6667; Quality's silence must not help.
        "forms_due": 4, "met": 2, "share": 0.5,
        "record_mean_h": 48.0,   # (24 + 96 + 24) / 3
        "record_p90_h": 96.0,    # nearest rank: k = ceil(0.9 * 3) = 3rd of [24, 24, 96]
        # first replies: F1 50 h, F2 120 h, F3 12 h, F4 24 h
        "replies": 4, "reply_mean_h": 51.5,  # 206 / 4
        "reply_p90_h": 120.0,                 # k = ceil(0.9 * 4) = 4th of [12, 24, 50, 120]
        "breaches": 2, "breaches_by_severity": {"major": 2},  # F5 was major by its deadline
        "open_total": 2, "open_by_age": {"0-3 days": 1, "4-7 days": 0, "8-30 days": 1,
                                         "over 30 days": 0},
        "loss_total": {"CNY": "2100.00", "USD": "250.50"},
        "loss_by_category": {("product_quality", "CNY"): "2100.00",
                             ("delivery", "USD"): "250.50"},
        "loss_by_unit": {("production", "CNY"): "1800.00", ("purchasing", "CNY"): "300.00",
                         ("(unassigned)", "USD"): "250.50"},
        # (estimated, actual): F1's estimate is replaced by its rework; F3's never assigned
        "loss_split_total": {"CNY": ("0.00", "2100.00"), "USD": ("250.50", "0.00")},
        "loss_split_by_unit": {("production", "CNY"): ("0.00", "1800.00"),
                               ("purchasing", "CNY"): ("0.00", "300.00"),
                               ("(unassigned)", "USD"): ("250.50", "0.00")},
        "loss_by_customer": {(A, "CNY"): "2100.00", (B, "USD"): "250.50"},
        "closures": 5, "reopens": 1, "answers": 3, "satisfied": 2, "satisfaction_rate": 0.6667,
        "recurrences": 1, "capas_opened": 1, "capas_closed": 1, "capas_withdrawn": 0,
        "customer_names": {A: "Customer A", B: "Customer B", C: "Customer C"},
        "change": {"feedbacks": (6, 1, 5), "complaints": (5, 1, 4), "open_cases": (2, 1, 1),
                   "capas_opened": (1, 1, 0), "answered_directly": (2, 1, 1),
                   "registration_to_reply_mean_hours": (51.5, 24.0, 27.5),
                   "loss_CNY": ("2100.00", "0.00", "2100.00")},
    }


def assert_table(table: statistics.MonthlyTable, exp: dict) -> None:
    """The JSON table against the hand-stated figures."""
    t = table
    assert (t.period_from, t.period_to, t.previous_from) == (MONTH, MONTH, PREVIOUS)
    assert (t.counts.feedbacks, t.counts.complaints, t.counts.suggestions) == \
        (exp["feedbacks"], exp["complaints"], exp["suggestions"])
    assert t.feedbacks_not_split == 0
    assert (t.counts.answered_directly, t.counts.complaints_answered_directly) == \
        exp["answered_directly"]
    for dim in ("category", "channel", "customer", "product", "severity", "defect_code", "unit"):
        got = {r.key: (r.feedbacks, r.complaints) for r in getattr(t.counts, f"by_{dim}")}
        assert got == exp[f"by_{dim}"], dim
    tl = t.timeliness
    assert tl.forms_opened == exp["forms_opened"]
    assert (tl.quality_records, tl.forms_due, tl.met_3_day_rule, tl.share_met_3_day_rule) == \
        (exp["quality_records"], exp["forms_due"], exp["met"], exp["share"])
    assert (tl.form_to_quality_record.mean_hours, tl.form_to_quality_record.p90_hours) == \
        (exp["record_mean_h"], exp["record_p90_h"])
    assert (tl.registration_to_reply.count, tl.registration_to_reply.mean_hours,
            tl.registration_to_reply.p90_hours) == \
        (exp["replies"], exp["reply_mean_h"], exp["reply_p90_h"])
    assert t.breaches.count == exp["breaches"]
    assert {r.key: r.count for r in t.breaches.by_severity} == exp["breaches_by_severity"]
    assert t.open_cases.as_of == date(2031, 3, 31)
    assert t.open_cases.total == exp["open_total"]
    assert {r.age: r.cases for r in t.open_cases.by_age} == exp["open_by_age"]
    assert {r.currency: r.amount for r in t.losses.total} == exp["loss_total"]
    for dim in ("category", "unit", "customer"):
        got = {(r.key, r.currency): r.amount for r in getattr(t.losses, f"by_{dim}")}
        assert got == exp[f"loss_by_{dim}"], dim
    assert {r.currency: (r.estimated, r.actual) for r in t.losses.total} == \
        exp["loss_split_total"]
    assert {(r.key, r.currency): (r.estimated, r.actual) for r in t.losses.by_unit} == \
        exp["loss_split_by_unit"]
    fu = t.follow_up
    assert (fu.closures, fu.reopens, fu.satisfaction_answers, fu.satisfied,
            fu.satisfaction_rate) == (exp["closures"], exp["reopens"], exp["answers"],
                                      exp["satisfied"], exp["satisfaction_rate"])
    assert (fu.recurrences, fu.capas_opened, fu.capas_closed, fu.capas_withdrawn) == \
        (exp["recurrences"], exp["capas_opened"], exp["capas_closed"], exp["capas_withdrawn"])
    names = exp["customer_names"]  # the latest name known, next to each customer id
    assert {r.key: r.name for r in t.counts.by_customer} == \
        {k: names[k] for k in exp["by_customer"]}
    assert {r.key: r.name for r in t.losses.by_customer} == \
        {k: names[k] for k, _ in exp["loss_by_customer"]}
    change = {r.measure: (r.current, r.previous, r.change) for r in t.change}
    for measure, values in exp["change"].items():
        assert change[measure] == values, measure


def fold_table(events: list[Envelope], first: str = MONTH, last: str = MONTH,
               today: date = date(2026, 1, 1)) -> statistics.MonthlyTable:
    from shared.events import parse_event
    parsed = [parse_event(e.model_dump(mode="json")) for e in events]
    rows = domain.fold(parsed, UTC_ZONE)
    totals = domain.monthly_totals(rows.values())
    monthly = {domain.split_part(k)[1]: v for k, v in totals.items()
               if k.startswith(domain.MONTHLY + "/")}
    open_docs = {domain.split_part(k)[1]: v for k, v in totals.items()
                 if k.startswith(domain.MONTHLY_OPEN + "/")}
    table = statistics.table_at(first, last, monthly, open_docs, today, "UTC")
    names = {i: said.name for i, said in domain.customer_names(parsed).items()}
    return statistics.name_customers(table, names)


# ------------------------------------------------------- renamed customer, withdrawn CAPAs

JUNE, JULY = "2031-06", "2031-07"


def renamed_customer_and_withdrawn_capas(tag: str) -> Story:
    """June and July 2031 (UTC):
      R1 customer R registered as "Old Name Co." on 06-10, product quality, phone.
      R2 customer R registered as "New Name Co." on 07-03; estimate 300.00 CNY.
      R3 registered 07-05 for customer U ("Unidentified sender"), estimate 40.00 USD; Sales
         classifies it on 07-06 to customer R, "New Name Co. Ltd" (the latest name stated).
      R1's form is opened 07-20: the form repeats R1's facts ("Old Name Co."), which must not
         bring the old name back.
      CAPAs: V1 opened 06-05, withdrawn 06-20; V4 opened 06-25, withdrawn 07-15;
             V2 opened 07-02, withdrawn 07-09; V3 opened 07-04, closed 07-30.
    """
    s = Story(tag)
    pq = Category.PRODUCT_QUALITY

    def named(name: str, customer: str, label: str, **facts) -> dict:
        f = s.facts(name, customer=customer, **facts)
        f["customer"] = Customer(id=s.customer(customer), name=label)
        return f

    r1 = named("R1", "R", "Old Name Co.", received=at(10, 8, month=6), category=pq,
               channel=Channel.PHONE)
    s.add(c.FeedbackRegistered(**r1, is_complaint=True), "R1", at(10, 8, month=6))
    r2 = named("R2", "R", "New Name Co.", received=at(3, 8, month=7), category=pq,
               channel=Channel.EMAIL, estimate=("300.00", "CNY"))
    s.add(c.FeedbackRegistered(**r2, is_complaint=True), "R2", at(3, 8, month=7))
    r3 = named("R3", "U", "Unidentified sender", received=at(5, 8, month=7), category=pq,
               channel=Channel.EMAIL, estimate=("40.00", "USD"))
    s.add(c.FeedbackRegistered(**r3, is_complaint=True), "R3", at(5, 8, month=7))
    s.add(c.FeedbackClassified(
        feedback_id=s.fid("R3"), register_no="CF-2031-R3",
        customer=Customer(id=s.customer("R"), name="New Name Co. Ltd"), category=pq,
        severity=Severity.NORMAL, is_complaint=True), "R3", at(6, 9, month=7))
    s.add(c.ComplaintEscalated(**r1), "R1", at(20, 9, month=7))

    def capa(name: str, opened: datetime, withdrawn: datetime | None = None,
             closed: datetime | None = None) -> None:
        capa_id, number = f"{tag}-{name}", f"CAPA-2031-{name}"
        s.add(c.CapaOpened(capa_id=capa_id, number=number, source="manual", feedback_ids=[],
                           title=f"CAPA {name}"), name, opened)
        if withdrawn is not None:
            s.add(c.CapaWithdrawn(capa_id=capa_id, number=number, feedback_ids=[],
                                  reason="Opened in error", withdrawn_at=withdrawn),
                  name, withdrawn)
        if closed is not None:
            s.add(c.CapaClosed(capa_id=capa_id, feedback_ids=[], closed_at=closed), name, closed)

    capa("V1", at(5, 0, month=6), withdrawn=at(20, 0, month=6))
    capa("V4", at(25, 0, month=6), withdrawn=at(15, 0, month=7))
    capa("V2", at(2, 0, month=7), withdrawn=at(9, 0, month=7))
    capa("V3", at(4, 0, month=7), closed=at(30, 0, month=7))
    return s


def expected_renamed(s: Story) -> dict:
    """July 2031 (and June), by hand (see `renamed_customer_and_withdrawn_capas`)."""
    R = s.customer("R")
    return {
        "july_by_customer": {R: (2, 2)},  # R2 and R3 (classified to R); none left for U
        "june_by_customer": {R: (1, 1)},
        "name": "New Name Co. Ltd",       # latest stated, shown in June's table too
        "july_loss_by_customer": {(R, "CNY"): "300.00", (R, "USD"): "40.00"},
        # July: opened V2, V3; closed V3; withdrawn V2 (opened in July) and V4 (in June)
        "july_capas": (2, 1, 2),
        "june_capas": (2, 0, 1),          # opened V1, V4; withdrawn V1
        "change": {"capas_opened": (2, 2, 0), "capas_closed": (1, 0, 1),
                   "capas_withdrawn": (2, 1, 1)},
    }


def assert_renamed(july: statistics.MonthlyTable, june: statistics.MonthlyTable,
                   exp: dict) -> None:
    """The two gaps of P-F.6, as a quality manager reads them."""
    for table, month in ((july, "july"), (june, "june")):
        assert {r.key: (r.feedbacks, r.complaints) for r in table.counts.by_customer} == \
            exp[f"{month}_by_customer"]
        assert {r.name for r in table.counts.by_customer} == {exp["name"]}
        fu = table.follow_up
        assert (fu.capas_opened, fu.capas_closed, fu.capas_withdrawn) == exp[f"{month}_capas"]
    assert {(r.key, r.currency): r.amount for r in july.losses.by_customer} == \
        exp["july_loss_by_customer"]
    assert {r.name for r in july.losses.by_customer} == {exp["name"]}
    change = {r.measure: (r.current, r.previous, r.change) for r in july.change}
    for measure, values in exp["change"].items():
        assert change[measure] == values, measure


# ------------------------------------------------------------------ the pure checks


def test_p_f_6_known_month_statistics_by_hand():
    story = known_month("u1")
    assert_table(fold_table(story.events), expected(story))


def test_p_f_6_known_month_in_any_event_order():
    story = known_month("u2")
    assert_table(fold_table(list(reversed(story.events))), expected(story))


def test_p_f_6_redelivered_events_count_once():
    story = known_month("u3")
    assert_table(fold_table(story.events + story.events[::3]), expected(story))


def test_p_f_6_february_counts_its_own_feedback_and_open_case():
    story = known_month("u4")
    feb = fold_table(story.events, PREVIOUS, PREVIOUS)
    assert (feb.counts.feedbacks, feb.counts.complaints) == (1, 1)
    assert feb.open_cases.total == 1  # F8, received 02-10, closed only in March
    assert {r.age: r.cases for r in feb.open_cases.by_age}["8-30 days"] == 1
    assert feb.timeliness.registration_to_reply.mean_hours == 24.0
    assert feb.follow_up.capas_opened == 1 and feb.follow_up.capas_closed == 0


def test_p_f_6_a_range_sums_its_months_and_compares_with_the_range_before():
    story = known_month("u5")
    both = fold_table(story.events, PREVIOUS, MONTH)
    assert both.months == [PREVIOUS, MONTH]
    assert (both.previous_from, both.previous_to) == ("2030-12", "2031-01")
    assert both.counts.feedbacks == 7
    assert both.timeliness.registration_to_reply.count == 5
    assert both.open_cases.total == 2  # as of the end of the range
    assert both.follow_up.capas_opened == 2


def test_p_f_6_customer_shown_with_its_latest_name_and_capas_withdrawn_counted():
    story = renamed_customer_and_withdrawn_capas("u6")
    exp = expected_renamed(story)
    for events in (story.events, list(reversed(story.events)), story.events + story.events[:4]):
        assert_renamed(fold_table(events, JULY, JULY), fold_table(events, JUNE, JUNE), exp)
