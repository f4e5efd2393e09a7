"""The pure projection of reporting: rows from events, in any order, once; contributions."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from services.reporting import domain
from services.reporting.domain import (
    CapaRow,
    FeedbackRow,
    RecurrenceRow,
    RowKind,
    Status,
    esc,
    unesc,
)
from shared import contracts as c
from shared.events import parse_event
from shared.vocabulary import Category, Channel, Customer, Product, Severity
from tests.unit.test_reporting_scenario import Story, at, known_month

UTC_ZONE = ZoneInfo("UTC")


def parsed(env):
    return parse_event(env.model_dump(mode="json"))


def fold_one(events, name: str, story: Story) -> FeedbackRow:
    rows = domain.fold([parsed(e) for e in events], UTC_ZONE)
    return rows[(RowKind.FEEDBACK, story.fid(name))]


def test_keys_survive_dots_dollars_and_separators():
    for raw in ["C.1001", "$x", "a|b", "50%", "nul\x00", "plain-1/2"]:
        key = esc(raw)
        assert "." not in key and not key.startswith("$") and "|" not in key
        assert "\x00" not in key and unesc(key) == raw


def test_p_5_4_1_register_row_from_the_story():
    story = known_month("d1")
    row = fold_one(story.events, "F2", story)
    assert row.status is Status.CLOSED and not row.open and not row.form_open
    assert row.register_no == "CF-2031-F2" and row.severity == "major"
    assert row.units == ["production", "purchasing"] and row.defect_code == "D01"
    assert row.form_opened_at == at(3, 7) and row.quality_record_at == at(10, 10)
    assert row.first_reply_at == at(8, 6) and row.reopen_count == 1
    assert row.loss_by_currency() == {"CNY": 60000}  # every round's disposition costs
    f1 = fold_one(story.events, "F1", story)
    assert f1.loss_by_currency() == {"CNY": 150000}  # the record's cost, not the estimate
    f3 = fold_one(story.events, "F3", story)
    assert f3.loss_items()[0].unit == domain.UNASSIGNED  # only the estimate


def test_p_5_4_1_status_follows_the_latest_step_whatever_the_order():
    story = known_month("d2")
    f5 = [e for e in story.events if e.correlation_id == story.fid("F5")]
    for events in (f5, list(reversed(f5))):
        row = fold_one(events, "F5", story)
        assert row.status is Status.WITH_QUALITY and row.open and row.form_open
    before_registration = [e for e in f5 if e.type != "feedback.registered"]
    row = fold_one(before_registration, "F5", story)
    assert row.status is Status.AWAITING_REGISTRATION and not row.registered
    assert row.register_no == "CF-2031-F5"  # known from the form already
    assert row.contributions(UTC_ZONE) == {}  # counted once registered


def test_p_5_4_2_withdrawn_feedback_counts_nowhere_but_stays_in_the_register():
    story = known_month("d3")
    row = fold_one(story.events, "F7", story)
    assert row.status is Status.WITHDRAWN and row.register_no == "CF-2031-F7"
    assert row.contributions(UTC_ZONE) == {}


def test_an_event_is_applied_once_and_its_delta_posted_once():
    story = Story("d4")
    story.register("A", received=at(2, 8), category=Category.DELIVERY, channel=Channel.PHONE,
                   customer="X")
    env, payload = parsed(story.events[0])
    row = FeedbackRow(_id=story.fid("A"))
    assert domain.apply(row, env, payload, UTC_ZONE) is True
    delta = domain.settle(row, env.id, UTC_ZONE)
    assert delta is not None and delta.parts["monthly/2031-03"]["fb"] == 1
    assert domain.apply(row, env, payload, UTC_ZONE) is False  # the redelivery
    assert domain.settle(row, env.id, UTC_ZONE) is None         # nothing new to post
    assert len(row.pending) == 1 and row.has_pending


def test_a_later_event_posts_only_the_difference():
    story = Story("d5")
    facts = story.register("A", received=at(2, 8), category=Category.PRODUCT_QUALITY,
                           channel=Channel.PHONE, customer="X")
    story.form("A", facts, at(2, 9), at(2, 10), at(5, 10))
    row = FeedbackRow(_id=story.fid("A"))
    for env in story.events:
        e, p = parsed(env)
        domain.apply(row, e, p, UTC_ZONE)
        domain.settle(row, e.id, UTC_ZONE)
    registered, escalated = row.pending  # the acceptance alone changes no counter
    assert registered.parts["monthly/2031-03"]["fb"] == 1
    assert escalated.parts == {"monthly/2031-03": {"forms": 1}}
    total: dict = {}
    for d in row.pending:
        domain.add_into(total, d.parts)
    assert total == row.contrib  # the deltas add up to the contribution


def test_months_are_counted_in_the_configured_time_zone():
    story = Story("d6")
    late = datetime(2031, 3, 31, 20, 0, tzinfo=UTC)  # 1 April 04:00 in Shanghai
    story.register("A", received=late, category=Category.DELIVERY, channel=Channel.PHONE,
                   customer="X")
    env, payload = parsed(story.events[0])
    row = FeedbackRow(_id=story.fid("A"))
    domain.apply(row, env, payload, ZoneInfo("Asia/Shanghai"))
    assert set(row.contributions(ZoneInfo("Asia/Shanghai"))) == {
        "monthly/2031-04", "monthly_open/2031-04"}
    assert set(row.contributions(UTC_ZONE)) == {"monthly/2031-03", "monthly_open/2031-03"}


def test_every_event_touches_one_row_or_only_the_history():
    story = known_month("d7")
    kinds = {}
    for env in story.events:
        e, p = parsed(env)
        kinds[e.type] = domain.target_of(e, p)[0]
    assert kinds["capa.opened"] is RowKind.CAPA
    assert kinds["complaint.recurrence_detected"] is RowKind.RECURRENCE
    assert kinds["feedback.registered"] is RowKind.FEEDBACK
    mail = c.MailReceived(mail_id="m1", from_address="a@b.example", subject="s", body="b",
                          received_at=at(1))
    env = story.add(mail, "mail", at(1))
    assert domain.target_of(*parsed(env)) is None


def test_capa_and_recurrence_rows():
    story = known_month("d8")
    rows = domain.fold([parsed(e) for e in story.events], UTC_ZONE)
    y = rows[(RowKind.CAPA, "d8-Y")]
    assert isinstance(y, CapaRow) and not y.open
    assert y.contributions(UTC_ZONE) == {"monthly/2031-02": {"capa|opened": 1},
                                         "monthly/2031-03": {"capa|closed": 1}}
    recurrences = [r for (k, _), r in rows.items() if k is RowKind.RECURRENCE]
    assert len(recurrences) == 1 and isinstance(recurrences[0], RecurrenceRow)
    assert recurrences[0].contributions(UTC_ZONE) == {
        "monthly/2031-03": {"rec|n": 1, "rec|defect_code|D01": 1}}


def test_breach_counts_in_the_month_of_its_deadline_once():
    story = Story("d9")
    facts = story.register("A", received=at(28, 8), category=Category.PRODUCT_QUALITY,
                           channel=Channel.PHONE, customer="X", severity=Severity.MAJOR)
    due = at(28, 8) + timedelta(days=4)  # 1 April
    story.form("A", facts, at(28, 8), at(28, 8), due, severity=Severity.MAJOR)
    story.sla("A", due, Severity.MAJOR, breached=True)
    story.record("A", 1, "D9", at(28, 8), due + timedelta(hours=5), due, [])
    row = fold_one(story.events, "A", story)
    april = row.contributions(UTC_ZONE)["monthly/2031-04"]
    assert april["br|n"] == 1 and april["br|severity|major"] == 1  # event and record: 1 breach
    assert april["qr|n"] == 1 and "qr|met" not in april
    assert row.loss_items() == []


def test_cents_are_exact():
    assert domain.cents(Decimal("0.10")) == 10
    assert domain.cents(Decimal("999999999999.99")) == 99999999999999


def test_p_5_2_reclassification_wins_over_the_registration_in_any_order():
    story = Story("d10")
    story.register("A", received=at(2, 8), category=Category.OTHER, channel=Channel.EMAIL,
                   customer="unknown")
    story.add(c.FeedbackClassified(
        feedback_id=story.fid("A"), register_no="CF-2031-A",
        customer=Customer(id=story.customer("K"), name="Known Ltd"),
        category=Category.PRODUCT_QUALITY, severity=Severity.MAJOR, is_complaint=True,
        product=Product(code="P9")), "A", at(2, 9))
    for events in (story.events, list(reversed(story.events))):
        row = fold_one(events, "A", story)
        assert (row.customer_id, row.category, row.severity, row.product_code) == \
            (story.customer("K"), "product_quality", "major", "P9")
        month = row.contributions(UTC_ZONE)["monthly/2031-03"]
        assert month["cp|category|product_quality"] == 1 and "fb|category|other" not in month


def test_p_f_5_a_paper_form_counts_from_when_it_was_opened():
    story = Story("d11")
    facts = story.register("A", received=at(2, 8), category=Category.PRODUCT_QUALITY,
                           channel=Channel.LETTER, customer="X")
    story.add(c.ComplaintEscalated(**facts, form_opened_at=at(2, 9)), "A", at(4, 15))
    row = fold_one(story.events, "A", story)
    assert row.form_opened_at == at(2, 9) and row.status is Status.WITH_QUALITY


def test_p_5_3_5_flagged_major_after_registration_moves_the_counts_once_in_any_order():
    story = Story("d12")
    facts = story.register("A", received=at(2, 8), category=Category.PRODUCT_QUALITY,
                           channel=Channel.PHONE, customer="X")
    story.form("A", facts, at(2, 9), at(2, 10), at(5, 10))  # accepted as a normal form
    story.add(c.MajorAlert(feedback_id=story.fid("A"), register_no="CF-2031-A",
                           customer=facts["customer"], description="line stopped", heads=[]),
              "A", at(3, 8))  # Quality: POST /cases/{ref}/major
    for events in (story.events, list(reversed(story.events))):
        row = fold_one(events, "A", story)
        assert row.severity == "major"
        assert row.round_severity(row.rounds[0]) == "major"  # the open form is a major one
        month = row.contributions(UTC_ZONE)["monthly/2031-03"]
        assert month["fb|severity|major"] == month["cp|severity|major"] == 1
        assert "fb|severity|normal" not in month and "cp|severity|normal" not in month

    # Applied one by one, the deltas move the complaint from normal to major: never both.
    row, total = FeedbackRow(_id=story.fid("A")), {}
    for env in story.events:
        e, p = parsed(env)
        domain.apply(row, e, p, UTC_ZONE)
        delta = domain.settle(row, e.id, UTC_ZONE)
        if delta is not None:
            domain.add_into(total, delta.parts)
    month = {k: v for k, v in total["monthly/2031-03"].items() if v}
    assert month["cp|severity|major"] == 1 and "cp|severity|normal" not in month


def test_p_f_5_a_breached_form_without_a_record_counts_as_not_met_in_its_deadline_month():
    story = Story("d13")
    facts = story.register("A", received=at(28, 8), category=Category.PRODUCT_QUALITY,
                           channel=Channel.PHONE, customer="X")
    due = at(28, 8) + timedelta(days=4)  # 1 April
    story.form("A", facts, at(28, 8), at(28, 8), due)
    row = fold_one(story.events, "A", story)
    assert "tl|n" not in row.contributions(UTC_ZONE).get("monthly/2031-04", {})  # not due yet

    story.sla("A", due, Severity.NORMAL, breached=True)
    april = fold_one(story.events, "A", story).contributions(UTC_ZONE)["monthly/2031-04"]
    assert april["tl|n"] == 1 and "tl|met" not in april  # due, no record: not met

    story.record("A", 1, "D9", at(28, 8), due + timedelta(hours=5), due, [])
    april = fold_one(story.events, "A", story).contributions(UTC_ZONE)["monthly/2031-04"]
    assert april["tl|n"] == 1 and "tl|met" not in april  # the late record: still one, not met


def test_p_f_5_a_record_in_time_counts_as_met_in_its_deadline_month():
    story = Story("d14")
    facts = story.register("A", received=at(30, 8), category=Category.PRODUCT_QUALITY,
                           channel=Channel.PHONE, customer="X")
    due = at(30, 8) + timedelta(days=3)  # 2 April
    story.form("A", facts, at(30, 8), at(30, 8), due)
    story.record("A", 1, "D9", at(30, 8), at(31, 8), due, [])  # in March, within the deadline
    contrib = fold_one(story.events, "A", story).contributions(UTC_ZONE)
    assert contrib["monthly/2031-03"]["qr|n"] == 1  # the record counts when handed over
    assert (contrib["monthly/2031-04"]["tl|n"], contrib["monthly/2031-04"]["tl|met"]) == (1, 1)


def test_a_withdrawn_capa_is_no_longer_open_nor_counted_as_closed():
    story = Story("d10")
    story.add(c.CapaOpened(capa_id="d10-W", number="CAPA-2031-0009", source="manual",
                           title="Opened in error", feedback_ids=[]), "capa", at(3))
    story.add(c.CapaOwnerAssigned(capa_id="d10-W", number="CAPA-2031-0009",
                                  owner_unit="production", feedback_ids=[]), "capa", at(4))
    story.add(c.CapaWithdrawn(capa_id="d10-W", number="CAPA-2031-0009", feedback_ids=[],
                              reason="Duplicate of CAPA-2031-0008", withdrawn_at=at(5)),
              "capa", at(5))
    rows = domain.fold([parsed(e) for e in story.events], UTC_ZONE)
    w = rows[(RowKind.CAPA, "d10-W")]
    assert isinstance(w, CapaRow) and not w.open and w.owner_unit == "production"
    # still opened in its month (it was), and withdrawn in the month of the withdrawal
    assert w.contributions(UTC_ZONE) == {"monthly/2031-03": {"capa|opened": 1,
                                                             "capa|withdrawn": 1}}


def test_p_f_6_a_capa_withdrawn_in_a_later_month_counts_there():
    story = Story("d15")
    story.add(c.CapaWithdrawn(capa_id="d15-W", number="CAPA-2031-0010", feedback_ids=[],
                              reason="Overtaken", withdrawn_at=at(2, month=4)), "capa",
              at(2, month=4))  # ahead of its opening: the row ends up the same
    story.add(c.CapaOpened(capa_id="d15-W", number="CAPA-2031-0010", source="manual",
                           title="Overtaken later", feedback_ids=[]), "capa", at(30))
    w = domain.fold([parsed(e) for e in story.events], UTC_ZONE)[(RowKind.CAPA, "d15-W")]
    assert w.contributions(UTC_ZONE) == {"monthly/2031-03": {"capa|opened": 1},
                                         "monthly/2031-04": {"capa|withdrawn": 1}}


def test_p_f_6_customer_name_is_the_latest_stated_in_any_order_and_once():
    story = Story("d16")
    old = story.facts("A", received=at(2, 8), category=Category.PRODUCT_QUALITY,
                      channel=Channel.PHONE, customer="K")
    old["customer"] = Customer(id=story.customer("K"), name="Old Name Co.")
    story.add(c.FeedbackRegistered(**old, is_complaint=True), "A", at(2, 8))
    new = story.facts("B", received=at(9, 8), category=Category.PRODUCT_QUALITY,
                      channel=Channel.PHONE, customer="K")
    new["customer"] = Customer(id=story.customer("K"), name="New Name Co.")
    story.add(c.FeedbackRegistered(**new, is_complaint=True), "B", at(9, 8))
    # the old feedback's form, later: it repeats what was registered then (not a new name)
    story.add(c.ComplaintEscalated(**old), "A", at(20, 8))
    # Sales reclassifies another feedback to the same customer, with the name as it is now
    story.add(c.FeedbackClassified(
        feedback_id=story.fid("C"), register_no="CF-2031-C",
        customer=Customer(id=story.customer("K"), name="New Name Co. Ltd"),
        category=Category.PRODUCT_QUALITY, severity=Severity.NORMAL, is_complaint=True),
        "C", at(15, 8))
    events = [parsed(e) for e in story.events]
    for order in (events, events[::-1], events + events[:2], events[1:] + events[:1]):
        names = domain.customer_names(order)
        assert {k: v.name for k, v in names.items()} == {story.customer("K"): "New Name Co. Ltd"}
    said = domain.customer_name_of(*events[0])
    assert said is not None and said.name == "Old Name Co."
    assert domain.customer_name_of(*events[2]) is None  # the form copies, it does not state
    assert not domain.latest(domain.customer_names(events)[story.customer("K")], said)
    assert domain.CustomerName.of_document(said.to_document()) == said
