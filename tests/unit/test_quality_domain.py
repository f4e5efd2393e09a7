"""Quality's pure domain: the 3-day clock and working calendar, the case's state machine,
recurrence counting. No broker, no database."""

from datetime import UTC, date, datetime, timedelta

import bson
import pytest

from services.quality.clock import ClockPolicy, WorkingCalendar, clock_view
from services.quality.domain import (
    Case,
    CaseStatus,
    FollowUp,
    MajorReview,
    UnitStatus,
    check_assignment,
    kinds_of,
)
from services.quality.recurrence import Kind, KindEntry
from services.quality.settings import Settings
from shared.contracts import (
    CapaOpened,
    ComplaintEscalated,
    ComplaintReopened,
    ComplaintReturned,
    CountermeasuresProposed,
    Disposition,
    FeedbackWithdrawn,
)
from shared.errors import Conflict, Invalid
from shared.events import Actor
from shared.vocabulary import Customer, Head, NoActionOutcome, Product

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # a Monday
QUALITY = Actor(sub="li.wei", roles=("quality",))
SALES = Actor(sub="wang.fang", roles=("sales",))
UNIT = Actor(sub="production.lead", roles=("unit",), unit="production")
POLICY = ClockPolicy(timedelta(days=3), timedelta(days=2))
HEADS = [Head(unit="rd", name="R&D head"), Head(unit="production", name="Production head")]


# ------------------------------------------------------------------ the working calendar


def test_p_f_5_calendar_days_by_default():
    assert WorkingCalendar().add(T0, timedelta(days=3)) == T0 + timedelta(days=3)


def test_p_f_5_working_calendar_skips_weekends():
    cal = WorkingCalendar(working_days_only=True)
    thursday = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)
    # Thu 15:00 + 3 working days: Fri, (Sat, Sun skipped), Mon, Tue 15:00
    assert cal.add(thursday, timedelta(days=3)) == datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
    assert cal.add(thursday, timedelta(hours=9)) == datetime(2026, 11, 27, 0, 0, tzinfo=UTC)


def test_p_f_5_working_calendar_skips_holidays_and_starts_on_the_next_working_day():
    cal = WorkingCalendar.of(True, [date(2026, 11, 30)])  # Monday off
    saturday = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
    # nothing counts on Sat, Sun or the holiday: the clock starts Tue 00:00
    assert cal.add(saturday, timedelta(hours=30)) == datetime(2026, 12, 2, 6, 0, tzinfo=UTC)
    assert not cal.is_working_day(date(2026, 11, 30))
    assert cal.is_working_day(date(2026, 12, 1))


def test_p_f_5_working_days_follow_the_plants_time_zone():
    cal = WorkingCalendar.of(True, [], "Asia/Shanghai")
    # Fri 20:00 in Shanghai (12:00 UTC): 4 h of Friday are left there, then Monday.
    friday_evening = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    assert cal.add(friday_evening, timedelta(hours=6)) == \
        datetime(2026, 11, 29, 18, 0, tzinfo=UTC)  # Mon 02:00 in Shanghai


def test_p_f_5_settings_read_iso_durations(monkeypatch):
    monkeypatch.setenv("QMS_QUALITY_DEADLINE", "PT8S")
    monkeypatch.setenv("QMS_QUALITY_AT_RISK_AFTER", "PT4S")
    monkeypatch.setenv("QMS_QUALITY_SLA_CHECK_INTERVAL_S", "0.5")
    monkeypatch.setenv("QMS_QUALITY_UNIMPROVED_AFTER", "PT20S")
    monkeypatch.setenv("QMS_QUALITY_HOLIDAYS", '["2026-10-01"]')
    s = Settings()
    assert (s.deadline, s.at_risk_after) == (timedelta(seconds=8), timedelta(seconds=4))
    assert s.unimproved_after == timedelta(seconds=20) and s.holidays == [date(2026, 10, 1)]
    assert Settings().deadline == timedelta(seconds=8)
    monkeypatch.setenv("QMS_QUALITY_AT_RISK_AFTER", "PT9S")
    with pytest.raises(ValueError, match="shorter than the deadline"):
        Settings()


def test_p_5_3_5_settings_name_the_heads_to_summon():
    heads = Settings().heads_to_summon()
    assert {h.unit for h in heads} == {"rd", "engineering", "production"}


# ------------------------------------------------------------------ the clock


def test_p_f_5_clock_runs_then_flags_at_risk_then_breached():
    def at(hours: float):
        return clock_view(received_at=T0, due_at=T0 + timedelta(days=3),
                          at_risk_at=T0 + timedelta(days=2), resolved_at=None, stopped_at=None,
                          now=T0 + timedelta(hours=hours))
    fresh = at(1)
    assert fresh.running and not fresh.at_risk and not fresh.breached
    assert fresh.time_left_seconds == 71 * 3600
    assert at(48).at_risk and not at(48).breached
    late = at(73)
    assert late.at_risk and late.breached and late.time_left_seconds == -3600
    assert late.met_deadline is None


def test_p_f_5_clock_stops_when_the_record_reaches_sales():
    resolved = T0 + timedelta(hours=30)
    view = clock_view(received_at=T0, due_at=T0 + timedelta(days=3),
                      at_risk_at=T0 + timedelta(days=2), resolved_at=resolved, stopped_at=None,
                      now=T0 + timedelta(days=10))
    assert not view.running and not view.breached and view.met_deadline is True
    assert view.time_left_seconds == 42 * 3600  # frozen at resolution


# ------------------------------------------------------------------ the case


def form(severity: str = "normal", customer_id: str = "C-1", product: str | None = "HSG-1",
         feedback_id: str = "f-1") -> ComplaintEscalated:
    return ComplaintEscalated(
        feedback_id=feedback_id, register_no=f"CF-2026-{feedback_id}",
        customer=Customer(id=customer_id, name="Bright Motors"), channel="phone",
        received_at=T0 - timedelta(hours=2), category="product_quality", severity=severity,
        product=Product(code=product) if product else None, description="Cracked housings")


def new_case(severity: str = "normal", now: datetime = T0) -> Case:
    return Case.receive(form(severity), event_id="e-escalated", actor=SALES, now=now,
                        policy=POLICY, heads=HEADS)


def types(case: Case) -> list[str]:
    return [e.type for e in case.pending_events]


def proposal(action_id: str, unit: str = "production") -> CountermeasuresProposed:
    return CountermeasuresProposed(
        action_id=action_id, feedback_id="f-1", unit=unit, containment="Sort stock",
        root_cause="Die worn", root_cause_category="machine", corrective=["Replace die"],
        preventive=["Die life counter"], disposition=Disposition(type="rework", quantity=40))


def assigned(case: Case, units: tuple[str, ...] = ("production",), now: datetime = T0) -> Case:
    case.assign_responsibility(preliminary_cause="Porosity", defect_code="D03",
                               defect_name="Functional failure",
                               units=[(u, f"{u}: find the cause") for u in units],
                               actor=QUALITY, now=now)
    return case


def test_p_5_3_1_form_arrives_and_the_clock_starts():
    case = new_case()
    assert case.status == CaseStatus.OPEN and case.round_no == 1
    assert types(case) == ["complaint.accepted"]
    accepted = case.pending_events[0].payload
    assert accepted["due_at"].startswith("2026-11-26T09:00") and accepted["round"] == 1
    assert case.has_applied("e-escalated") and case.history[0].action == "received"


def test_p_5_3_5_major_form_alerts_the_heads_in_the_same_write():
    case = new_case("major")
    assert types(case) == ["complaint.accepted", "complaint.major_alert"]
    assert case.pending_events[1].payload["heads"][0]["name"] == "R&D head"
    assert case.major and case.major.heads == HEADS
    with pytest.raises(Conflict, match="already major"):
        case.flag_major("again", HEADS, QUALITY, T0)


def test_p_5_3_5_a_normal_case_flagged_major_later_alerts_once_and_takes_a_review():
    case = new_case()
    review = MajorReview(held_at=T0, participants=["R&D head"], decisions="Stop line 3",
                         drafted_solution="Replace lot", recorded_by="li.wei", recorded_at=T0)
    with pytest.raises(Conflict, match="not major"):
        case.record_major_review(review, QUALITY)
    case.flag_major("Line stopped at the customer", HEADS, QUALITY, T0)
    assert case.severity == "major" and types(case)[-1] == "complaint.major_alert"
    case.record_major_review(review, QUALITY)
    assert case.major is not None and case.major.reviews[0].decisions == "Stop line 3"


def test_p_f_3_responsibility_names_units_with_action_ids():
    case = assigned(new_case(), ("production", "purchasing"))
    assert case.status == CaseStatus.AWAITING_UNITS
    event = case.pending_events[-1]
    assert event.type == "complaint.responsibility_assigned"
    assert [u["action_id"] for u in event.payload["units"]] == \
        ["CF-2026-f-1-production-r1", "CF-2026-f-1-purchasing-r1"]
    assert event.payload["customer_id"] == "C-1" and event.payload["product_code"] == "HSG-1"
    assert case.kinds == ["customer:C-1|defect:D03", "product:HSG-1|defect:D03"]
    with pytest.raises(Conflict, match="already assigned"):
        assigned(case)


def test_p_3_3_each_unit_entry_says_when_it_was_requested():
    """capa opens the action request moments after: until then the case says it was asked."""
    later = T0 + timedelta(hours=2)
    case = assigned(new_case(), ("production", "purchasing"), now=later)
    assert [u.requested_at for u in case.current.units] == [later, later]


def test_p_f_3_assignment_input_is_checked_against_catalogue_and_units():
    catalogue, units = {"D01": "Dimensional", "D03": "Functional"}, ["production", "rd"]
    check_assignment("D03", ["production", "rd"], catalogue, units)
    with pytest.raises(Invalid) as err:
        check_assignment("D77", ["production", "bakery", "production"], catalogue, units)
    locs = {d["loc"]: d["msg"] for d in err.value.details}
    assert "D01, D03" in locs["body.defect_code"]
    assert "unknown unit 'bakery'" in locs["body.units.1.unit"]
    assert "named twice" in locs["body.units.2.unit"]


def test_p_5_3_2_verification_needs_a_proposal_and_a_rejection_a_reason():
    case = assigned(new_case())
    with pytest.raises(Conflict, match="no countermeasures waiting"):
        case.verify(unit="production", accepted=True, reason=None, summary=None, actor=QUALITY,
                    now=T0)
    with pytest.raises(Conflict, match="not a responsible unit"):
        case.verify(unit="rd", accepted=True, reason=None, summary=None, actor=QUALITY, now=T0)
    case.record_proposal(proposal("CF-2026-f-1-production-r1"), actor=UNIT, now=T0,
                         event_id="e-p1")
    with pytest.raises(Invalid):
        case.verify(unit="production", accepted=False, reason=None, summary=None,
                    actor=QUALITY, now=T0)
    case.verify(unit="production", accepted=False, reason="Containment misses WIP",
                summary=None, actor=QUALITY, now=T0)
    entry = case.current.units[0]
    assert entry.status == UnitStatus.REJECTED and entry.rejections[0].reason.startswith("Cont")
    assert types(case)[-1] == "complaint.countermeasures_rejected"
    assert case.status == CaseStatus.AWAITING_UNITS


def test_p_5_3_1_all_units_accepted_hands_the_record_to_sales_and_stops_the_clock():
    case = assigned(new_case(), ("production", "purchasing"))
    for unit in ("production", "purchasing"):
        case.record_proposal(proposal(f"CF-2026-f-1-{unit}-r1", unit), actor=UNIT, now=T0,
                             event_id=f"e-{unit}")
    resolved_at = T0 + timedelta(hours=20)
    case.verify(unit="production", accepted=True, reason=None, summary=None, actor=QUALITY,
                now=resolved_at)
    assert case.status == CaseStatus.AWAITING_UNITS
    case.verify(unit="purchasing", accepted=True, reason=None, summary=None, actor=QUALITY,
                now=resolved_at)
    assert case.status == CaseStatus.RESOLVED
    assert types(case)[-2:] == ["complaint.countermeasures_verified",
                                "complaint.resolution_ready"]
    record = case.pending_events[-1].payload
    assert record["met_deadline"] is True and record["defect_code"] == "D03"
    assert record["outcomes"][0]["disposition"]["type"] == "rework"
    assert "Porosity" in record["summary"] and "Replace die" in record["summary"]
    clock = case.clock(T0 + timedelta(days=9))
    assert not clock.running and not clock.breached and clock.met_deadline is True
    assert not case.check_clock(T0 + timedelta(days=9))  # a stopped clock never breaches


def test_p_f_5_watcher_flags_at_risk_then_breach_once_per_round():
    case = new_case()
    assert not case.check_clock(T0 + timedelta(hours=47))
    assert case.check_clock(T0 + timedelta(hours=49))
    assert not case.check_clock(T0 + timedelta(hours=50))
    assert case.check_clock(T0 + timedelta(hours=73))
    assert not case.check_clock(T0 + timedelta(hours=80))
    assert types(case)[-2:] == ["complaint.sla_at_risk", "complaint.sla_breached"]


def test_p_f_5_late_record_says_so_and_counts_as_a_breach():
    case = assigned(new_case())
    case.record_proposal(proposal("CF-2026-f-1-production-r1"), actor=UNIT, now=T0,
                         event_id="e-p")
    case.verify(unit="production", accepted=True, reason=None, summary="Done late",
                actor=QUALITY, now=T0 + timedelta(days=4))
    assert types(case)[-2:] == ["complaint.sla_breached", "complaint.resolution_ready"]
    assert case.pending_events[-1].payload["met_deadline"] is False
    assert case.pending_events[-1].payload["summary"] == "Done late"


def test_p_f_4_reopen_starts_a_new_round_with_a_new_clock_and_keeps_the_old_one():
    case = assigned(new_case())
    case.record_proposal(proposal("CF-2026-f-1-production-r1"), actor=UNIT, now=T0,
                         event_id="e-p")
    case.verify(unit="production", accepted=True, reason=None, summary=None, actor=QUALITY,
                now=T0 + timedelta(hours=5))
    later = T0 + timedelta(days=5)
    case.reopen(ComplaintReopened(feedback_id="f-1", register_no="CF-2026-f-1",
                                  comment="Still cracking", reopen_count=1, had_form=True),
                actor=SALES, now=later, policy=POLICY, event_id="e-reopen")
    assert case.status == CaseStatus.OPEN and case.round_no == 2
    assert case.current.due_at == later + timedelta(days=3)
    assert case.rounds[0].record is not None and case.current.units == []
    assert types(case)[-1] == "complaint.accepted"
    assigned(case, now=later)
    assert case.current.units[0].action_id == "CF-2026-f-1-production-r2"


def test_p_5_4_2_withdrawn_case_stops_its_clock_and_refuses_work():
    case = new_case()
    case.withdraw(FeedbackWithdrawn(feedback_id="f-1", register_no="CF-2026-f-1",
                                    reason="Registered twice"),
                  actor=SALES, now=T0 + timedelta(hours=1), event_id="e-w")
    assert case.status == CaseStatus.WITHDRAWN and not case.clock(T0 + timedelta(days=9)).breached
    with pytest.raises(Conflict, match="withdrawn"):
        assigned(case)


def test_p_5_3_4_follow_ups_only_after_the_case_was_handled():
    case = new_case()
    check = FollowUp(checked_at=T0, recurred=False, recorded_by="li.wei", recorded_at=T0)
    with pytest.raises(Conflict, match="follow-up"):
        case.record_follow_up(check, QUALITY)


def test_p_5_3_4_unimproved_case_asks_for_a_capa_once():
    case = assigned(new_case())
    after = timedelta(days=30)
    assert not case.check_unimproved(T0 + timedelta(days=29), after)
    assert case.check_unimproved(T0 + timedelta(days=31), after)
    assert not case.check_unimproved(T0 + timedelta(days=40), after)
    event = case.pending_events[-1]
    assert event.type == "complaint.recurrence_detected"
    assert event.payload["reason"] == "unimproved" and event.payload["feedback_ids"] == ["f-1"]


def test_p_5_3_4_case_with_an_open_capa_is_not_reported_unimproved():
    case = assigned(new_case())
    case.link_capa(CapaOpened(capa_id="k1", number="CAPA-2026-0001", source="manual",
                              feedback_ids=["f-1"], title="x"), actor=QUALITY, now=T0,
                   event_id="e-c")
    assert not case.check_unimproved(T0 + timedelta(days=31), timedelta(days=30))


# ------------------------------------------------------------------ recurrence


def entry(feedback_id: str, customer: str = "C-1", product: str | None = "HSG-1") -> KindEntry:
    return KindEntry(feedback_id=feedback_id, register_no=f"CF-{feedback_id}", round=1,
                     customer_id=customer, product_code=product, counted_at=T0)


def test_p_5_3_4_kinds_are_customer_or_product_with_the_defect():
    assert kinds_of("C-1", "HSG-1", "D03") == ["customer:C-1|defect:D03",
                                               "product:HSG-1|defect:D03"]
    assert kinds_of("C-1", None, "D02") == ["customer:C-1|defect:D02"]


def test_p_5_3_4_third_distinct_complaint_of_a_kind_asks_for_a_capa_once():
    kind = Kind.new("customer:C-1|defect:D03")
    for fid in ("f1", "f2", "f2"):  # the same complaint counts once (e.g. its second round)
        kind.count_complaint(entry(fid), threshold=3, now=T0)
    assert kind.count == 2 and kind.pending_events == []
    kind.count_complaint(entry("f3"), threshold=3, now=T0)
    [event] = kind.pending_events
    assert event.type == "complaint.recurrence_detected"
    assert event.payload["feedback_ids"] == ["f1", "f2", "f3"]
    assert event.payload["reason"] == "recurred" and event.payload["product_code"] == "HSG-1"
    assert event.correlation_id == "f3"
    kind.count_complaint(entry("f4"), threshold=3, now=T0)
    assert len(kind.pending_events) == 1  # once per count


def test_p_5_3_4_open_capa_holds_detection_and_its_closing_starts_a_fresh_count():
    kind = Kind.new("product:HSG-1|defect:D03")
    kind.capa_opened("k1", "CAPA-1", actor=QUALITY, now=T0)
    for fid in ("f1", "f2", "f3"):
        kind.count_complaint(entry(fid), threshold=3, now=T0)
    assert kind.pending_events == [] and kind.count == 3
    kind.capa_closed("k1", actor=QUALITY, closed_at=T0)
    assert kind.count == 0 and len(kind.complaints) == 3
    for fid in ("f4", "f5", "f6"):
        kind.count_complaint(entry(fid), threshold=3, now=T0)
    assert [e.payload["feedback_ids"] for e in kind.pending_events] == [["f4", "f5", "f6"]]


def test_p_5_3_4_a_kind_covered_by_another_kinds_detection_does_not_ask_twice():
    kind = Kind.new("product:HSG-1|defect:D03")
    for fid in ("f1", "f2"):
        kind.count_complaint(entry(fid), threshold=3, now=T0)
    covered = ("customer:C-1|defect:D03", {"f1", "f2", "f3"})
    kind.count_complaint(entry("f3"), threshold=3, now=T0, covered=covered)
    assert kind.pending_events == [] and kind.detected
    assert kind.detections[-1].covered_by == "customer:C-1|defect:D03"
    # not covered when the product kind's count holds another customer's complaint
    other = Kind.new("product:HSG-2|defect:D03")
    for fid, cust in (("g1", "C-2"), ("g2", "C-1"), ("g3", "C-1")):
        other.count_complaint(entry(fid, cust, "HSG-2"), threshold=3, now=T0,
                              covered=("customer:C-1|defect:D03", {"g2", "g3"}))
    assert len(other.pending_events) == 1
    assert other.pending_events[0].payload["customer_id"] is None


def test_p_5_4_2_documents_are_bson_safe_and_round_trip():
    case = assigned(new_case())
    case.record_proposal(proposal("CF-2026-f-1-production-r1"), actor=UNIT, now=T0,
                         event_id="e-p")
    doc = case.to_document()
    bson.encode(doc)  # no Decimal, no bare date
    assert doc["due_at"] == T0 + timedelta(days=3) and doc["unit_names"] == ["production"]
    assert doc["clock_breached"] is None and doc["defect_code"] == "D03"
    again = Case.model_validate(doc)
    assert again.current.units[0].proposal == case.current.units[0].proposal


def test_p_f_5_two_instances_flagging_the_same_round_record_the_same_event():
    """Idempotent by design: a breach seen by two checkers is one event id, applied once."""
    doc = new_case().to_document()
    one, two = Case.model_validate(doc), Case.model_validate(doc)
    late = T0 + timedelta(days=4)
    assert one.check_clock(late) and two.check_clock(late)
    breach = [[e.id for e in c.pending_events if e.type == "complaint.sla_breached"]
              for c in (one, two)]
    assert breach[0] == breach[1] and len(breach[0]) == 1


# ------------------------------------------------------------------ concluded without action


def concluded(case: Case, now: datetime = T0 + timedelta(hours=6),
              defect_code: str | None = None) -> Case:
    case.conclude_without_action(
        outcome=NoActionOutcome.CUSTOMER_MISUSE, finding="Torqued to 45 Nm; drawing says 25",
        defect_code=defect_code, defect_name="Functional failure" if defect_code else None,
        summary=None, actor=QUALITY, now=now)
    return case


def test_p_f_3_not_the_plants_fault_hands_a_record_without_units_and_stops_the_clock():
    case = concluded(new_case())
    assert case.status == CaseStatus.RESOLVED
    assert types(case)[-1] == "complaint.resolution_ready"  # no responsibility_assigned
    record = case.pending_events[-1].payload
    assert record["outcome"] == "customer_misuse" and record["outcomes"] == []
    assert record["cause"].startswith("Torqued") and record["defect_code"] == ""
    assert record["met_deadline"] is True and "customer_misuse" in record["summary"]
    assert case.kinds == []  # not the plant's fault: no recurrence count (P-5.3.4)
    clock = case.clock(T0 + timedelta(days=9))
    assert not clock.running and not clock.breached
    assert case.history[-2].action == "concluded_without_action"


def test_p_f_3_conclusion_without_action_is_refused_while_units_have_open_requests():
    case = assigned(new_case(), ("production", "purchasing"))
    with pytest.raises(Conflict, match="production, purchasing") as err:
        concluded(case)
    assert "requests are open" in err.value.message
    assert case.status == CaseStatus.AWAITING_UNITS
    with pytest.raises(Conflict, match="already went to Sales"):
        concluded(concluded(new_case()))


def test_p_f_4_sales_returning_the_record_starts_a_round_that_is_not_a_reopen():
    case = concluded(new_case(), defect_code="D03")
    back = T0 + timedelta(days=1)
    returned = ComplaintReturned(feedback_id="f-1", register_no="CF-2026-f-1", round=1,
                                 reason="Say what torque the customer should use")
    case.return_from_sales(returned, actor=SALES, now=back, policy=POLICY, event_id="e-ret")
    assert case.status == CaseStatus.OPEN and case.round_no == 2
    assert case.current.returned_reason.startswith("Say what")
    assert case.current.reopen_comment is None
    assert case.current.received_at == back and case.current.due_at == back + timedelta(days=3)
    accepted = case.pending_events[-1]
    assert accepted.type == "complaint.accepted" and accepted.payload["trigger"] == "returned"
    assert case.rounds[0].record is not None and case.rounds[0].outcome == "customer_misuse"
    # a stale or repeated return changes nothing
    case.return_from_sales(returned, actor=SALES, now=back, policy=POLICY, event_id="e-ret2")
    assert case.round_no == 2 and case.history[-1].action == "return_noted"


def test_p_5_3_4_a_withdrawn_complaint_stops_counting_towards_its_kind():
    kind = Kind.new("customer:C-1|defect:D03")
    for fid in ("f1", "f2"):
        kind.count_complaint(entry(fid), threshold=3, now=T0)
    kind.withdraw_complaint("f1", actor=SALES, at=T0, threshold=3)
    assert kind.window_ids == ["f2"] and kind.complaints[0].withdrawn_at == T0
    kind.count_complaint(entry("f3"), threshold=3, now=T0)
    assert kind.pending_events == []  # f1 no longer helps reach three
    kind.count_complaint(entry("f4"), threshold=3, now=T0)
    assert kind.pending_events[0].payload["feedback_ids"] == ["f2", "f3", "f4"]


def test_p_f_5_a_rounds_clock_starts_when_its_event_occurred_not_when_it_was_processed():
    from services.quality.handlers import clock_start
    backlog = datetime.now(UTC) - timedelta(hours=5, microseconds=1234)
    assert clock_start(backlog) == backlog.replace(microsecond=backlog.microsecond // 1000 * 1000)
    skewed = datetime.now(UTC) + timedelta(minutes=2)  # a sender's clock ahead of ours
    assert clock_start(skewed) <= datetime.now(UTC)
