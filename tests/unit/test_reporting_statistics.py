"""The statistics table's arithmetic (P-F.6), checked by hand."""

from datetime import date
from zoneinfo import ZoneInfo

import pytest

from services.reporting import domain
from services.reporting import statistics as st
from shared import contracts as c
from shared.events import parse_event
from shared.vocabulary import Category, Channel
from tests.unit.test_reporting_scenario import Story, at, fold_table


def hist(*values: int) -> dict[int, int]:
    out: dict[int, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


@pytest.mark.parametrize(("values", "p90"), [
    # k = ceil(0.9 * n); the k-th smallest
    (list(range(10, 101, 10)), 90),          # n=10 -> k=9 -> 90 (not 91, as interpolation gives)
    ([24, 24, 96], 96),                       # n=3  -> k=3 -> 96 (interpolation: 81.6)
    ([12, 24, 50, 120], 120),                 # n=4  -> k=4
    ([7], 7),                                 # n=1  -> k=1
    (list(range(1, 21)), 18),                 # n=20 -> k=18
    (list(range(1, 12)), 10),                 # n=11 -> k=ceil(9.9)=10
])
def test_p_f_6_nearest_rank_90th_percentile_by_hand(values, p90):
    assert st.nearest_rank(hist(*values), 0.9) == p90


def test_nearest_rank_of_nothing_is_none_and_repeats_count():
    assert st.nearest_rank({}, 0.9) is None
    assert st.nearest_rank({5: 9, 100: 1}, 0.9) == 5    # k=9: the ninth value is still 5
    assert st.nearest_rank({5: 8, 100: 2}, 0.9) == 100  # k=9: the ninth value is 100


def test_p_f_6_durations_mean_is_exact_and_p90_in_whole_minutes():
    counters = {"qr|n": 2, "qr|sec": 3599 + 7200, "qr|min|59": 1, "qr|min|120": 1}
    d = st._durations(st.Counters([counters]), "qr")
    assert d.count == 2
    assert d.mean_hours == round((3599 + 7200) / 2 / 3600, 2)  # 1.5 h (1.4999 -> 1.5)
    assert d.p90_hours == 2.0
    assert st._durations(st.Counters([]), "qr") == st.Durations(count=0)


def test_p_f_6_open_cases_by_age_at_the_end_of_the_month():
    open_docs = {
        "2031-02": {"recv|2031-02-28": 1},
        "2031-03": {"recv|2031-03-01": 1, "recv|2031-03-27": 2, "recv|2031-03-28": 1,
                    "recv|2031-03-31": 1, "closed|2031-03-27": 1},
        "2031-04": {"closed|2031-03-28": 1},  # closed after the end of March: open at it
    }
    oc = st.open_cases(open_docs, "2031-03", date(2031, 3, 31))
    ages = {r.age: r.cases for r in oc.by_age}
    # ages: 02-28 -> 31 days; 03-01 -> 30; 03-27 -> 4 (one of two closed); 03-28 -> 3; 03-31 -> 0
    assert ages == {"0-3 days": 2, "4-7 days": 1, "8-30 days": 1, "over 30 days": 1}
    assert oc.total == 5
    april = st.open_cases(open_docs, "2031-04", date(2031, 4, 30))
    assert april.total == 4


def test_months_and_periods():
    assert st.shift_month("2031-01", -1) == "2030-12"
    assert st.shift_month("2030-12", 1) == "2031-01"
    assert st.months_between("2030-11", "2031-02") == ["2030-11", "2030-12", "2031-01",
                                                       "2031-02"]
    assert st.previous_period("2031-03", "2031-03") == ("2031-02", "2031-02")
    assert st.previous_period("2031-01", "2031-03") == ("2030-10", "2030-12")
    assert st.last_day("2032-02") == date(2032, 2, 29)
    assert st.as_of_day("2031-03", date(2031, 3, 17)) == date(2031, 3, 17)  # current month
    assert st.as_of_day("2031-03", date(2026, 1, 1)) == date(2031, 3, 31)


def test_p_f_6_change_from_the_previous_month_keeps_money_exact():
    now = {"fb": 3, "cp": 2, "qr|n": 2, "tl|n": 2, "tl|met": 1, "loss|total|all|CNY": 10010}
    before = {"fb": 1, "cp": 1, "qr|n": 1, "tl|n": 1, "tl|met": 1, "loss|total|all|CNY": 20,
              "loss|total|all|USD": 500}
    table = st.table_at("2031-03", "2031-03", {"2031-03": now, "2031-02": before}, {},
                        date(2026, 1, 1), "UTC")
    change = {r.measure: (r.current, r.previous, r.change) for r in table.change}
    assert change["feedbacks"] == (3, 1, 2)
    assert change["share_met_3_day_rule"] == (0.5, 1.0, -0.5)
    assert change["loss_CNY"] == ("100.10", "0.20", "99.90")
    assert change["loss_USD"] == ("0.00", "5.00", "-5.00")
    assert change["satisfaction_rate"] == (None, None, None)


def test_counts_rows_are_sorted_and_keys_unescaped():
    counters = {"fb|customer|C%2E1": 2, "cp|customer|C%2E1": 1, "fb|customer|B": 2,
                "fb|customer|Z": 5, "fb|unit|gone": 0}
    rows = st._count_rows(st.Counters([counters]), "customer")
    assert [(r.key, r.feedbacks, r.complaints) for r in rows] == [
        ("Z", 5, 0), ("C.1", 2, 1), ("B", 2, 0)]
    assert st._count_rows(st.Counters([counters]), "unit") == []


def test_p_f_6_customers_named_by_id_and_capas_withdrawn_in_the_change():
    now = {"fb": 2, "fb|customer|C%2E1": 1, "fb|customer|C2": 1,
           "loss|customer|C%2E1|CNY": 500, "loss|total|all|CNY": 500,
           "capa|opened": 1, "capa|withdrawn": 2}
    before = {"capa|opened": 3, "capa|withdrawn": 1}
    table = st.table_at("2031-03", "2031-03", {"2031-03": now, "2031-02": before}, {},
                        date(2026, 1, 1), "UTC")
    assert st.customer_ids(table) == ["C.1", "C2"]  # counted or with a loss, unescaped
    st.name_customers(table, {"C.1": "Acme Ltd", "other": "unused"})
    assert {r.key: r.name for r in table.counts.by_customer} == {"C.1": "Acme Ltd", "C2": None}
    assert [(r.key, r.name, r.amount) for r in table.losses.by_customer] == \
        [("C.1", "Acme Ltd", "5.00")]
    json_rows = table.model_dump(mode="json")["counts"]["by_customer"]
    assert {r["key"]: r["name"] for r in json_rows} == {"C.1": "Acme Ltd", "C2": None}
    assert (table.follow_up.capas_opened, table.follow_up.capas_withdrawn) == (1, 2)
    change = {r.measure: (r.current, r.previous, r.change) for r in table.change}
    assert change["capas_withdrawn"] == (2, 1, 1)
    assert change["capas_opened"] == (1, 3, -2)


# ------------------------------------------- answered directly, loss by responsible unit


def _story_april(tag: str) -> Story:
    """April 2031 (UTC): G1 a complaint and G2 a suggestion answered directly (G2 on May 1st:
    it still counts in April, when it was received); G3 escalated; G4 answered directly and
    withdrawn (counts nowhere). G5: estimate 100.00 CNY, then Quality's rounds (below)."""
    s = Story(tag)
    pq = Category.PRODUCT_QUALITY
    s.register("G1", received=at(2, 8, month=4), category=Category.DELIVERY,
               channel=Channel.PHONE, customer="A")
    s.direct("G1", Category.DELIVERY, at(2, 9, month=4))
    s.register("G2", complaint=False, received=at(30, 8, month=4),
               category=Category.SUGGESTION, channel=Channel.EMAIL, customer="A")
    s.direct("G2", Category.SUGGESTION, at(1, 9, month=5))
    g3 = s.register("G3", received=at(3, 8, month=4), category=pq, channel=Channel.PHONE,
                    customer="B")
    s.form("G3", g3, at(3, 9, month=4), at(3, 10, month=4), at(6, 10, month=4))
    s.register("G4", received=at(4, 8, month=4), category=Category.DELIVERY,
               channel=Channel.PHONE, customer="B")
    s.direct("G4", Category.DELIVERY, at(4, 9, month=4))
    s.add(c.FeedbackWithdrawn(feedback_id=s.fid("G4"), register_no="CF-2031-G4",
                              reason="registered twice"), "G4", at(4, 10, month=4))
    return s


def _table(events: list, month: str = "2031-04") -> st.MonthlyTable:
    return fold_table(events, month, month)


def _unit_losses(t: st.MonthlyTable) -> dict[str, tuple[str, str | None, str | None]]:
    return {r.key: (r.amount, r.estimated, r.actual) for r in t.losses.by_unit}


def test_p_5_3_3_feedbacks_answered_directly_count_in_the_month_received():
    s = _story_april("s1")
    for events in (s.events, list(reversed(s.events)), s.events + s.events[:3]):
        t = _table(events)
        assert (t.counts.feedbacks, t.counts.complaints) == (3, 2)
        assert (t.counts.answered_directly, t.counts.complaints_answered_directly) == (1 + 1, 1)
        assert t.feedbacks_not_split == 0
    may = _table(s.events, "2031-05")
    assert may.counts.answered_directly == 0  # G2's answer came in May; it counts in April
    change = {r.measure: (r.current, r.previous, r.change) for r in _table(s.events).change}
    assert change["answered_directly"] == (2, 0, 2)


def _g5(s: Story) -> dict:
    return s.register("G5", received=at(10, 8, month=4), category=Category.PRODUCT_QUALITY,
                      channel=Channel.PHONE, customer="C", estimate=("100.00", "CNY"))


def test_p_f_6_estimate_unassigned_until_responsibility_then_the_named_unit():
    s = Story("s2")
    g5 = _g5(s)
    t = _table(s.events)
    assert _unit_losses(t) == {"(unassigned)": ("100.00", "100.00", "0.00")}
    s.form("G5", g5, at(10, 9, month=4), at(10, 10, month=4), at(13, 10, month=4))
    s.assign("G5", 1, "D01", ["production"], at(11, 8, month=4))
    for events in (s.events, list(reversed(s.events))):
        t = _table(events)
        assert _unit_losses(t) == {"production": ("100.00", "100.00", "0.00")}
        assert [(r.amount, r.estimated, r.actual) for r in t.losses.total] == \
            [("100.00", "100.00", "0.00")]
        assert {r.key: r.estimated for r in t.losses.by_defect_code} == {"D01": "100.00"}


def test_p_f_6_estimate_moves_with_a_reassignment_in_a_later_round():
    s = Story("s3")
    g5 = _g5(s)
    s.form("G5", g5, at(10, 9, month=4), at(10, 10, month=4), at(13, 10, month=4))
    s.assign("G5", 1, "D01", ["production"], at(11, 8, month=4))
    s.record("G5", 1, "D01", at(10, 10, month=4), at(12, 8, month=4), at(13, 10, month=4), [])
    s.add(c.ComplaintReopened(feedback_id=s.fid("G5"), register_no="CF-2031-G5",
                              reopen_count=1, had_form=True), "G5", at(14, 8, month=4))
    s.form("G5", g5, at(14, 9, month=4), at(14, 9, month=4), at(17, 9, month=4), rnd=2)
    # round 2 accepted, not yet assigned: the estimate stays with round 1's unit
    assert _unit_losses(_table(s.events)) == {"production": ("100.00", "100.00", "0.00")}
    s.assign("G5", 2, "D07", ["purchasing"], at(15, 8, month=4))
    for events in (s.events, list(reversed(s.events))):
        assert _unit_losses(_table(events)) == {"purchasing": ("100.00", "100.00", "0.00")}


def test_p_f_6_estimate_replaced_by_the_actual_disposition_cost():
    s = Story("s4")
    g5 = _g5(s)
    s.form("G5", g5, at(10, 9, month=4), at(10, 10, month=4), at(13, 10, month=4))
    s.assign("G5", 1, "D01", ["production", "purchasing"], at(11, 8, month=4))
    s.record("G5", 1, "D01", at(10, 10, month=4), at(12, 8, month=4), at(13, 10, month=4),
             [("production", "80.00", "CNY")])
    t = _table(s.events)
    assert _unit_losses(t) == {"production": ("80.00", "0.00", "80.00")}
    assert [(r.amount, r.estimated, r.actual) for r in t.losses.total] == \
        [("80.00", "0.00", "80.00")]


def test_p_f_6_estimate_split_evenly_across_several_units_in_cents():
    s = Story("s5")
    g5 = s.register("G5", received=at(10, 8, month=4), category=Category.PRODUCT_QUALITY,
                    channel=Channel.PHONE, customer="C", estimate=("100.01", "CNY"))
    s.form("G5", g5, at(10, 9, month=4), at(10, 10, month=4), at(13, 10, month=4))
    s.assign("G5", 1, "D01", ["purchasing", "engineering", "production"], at(11, 8, month=4))
    t = _table(s.events)
    # 10001 cents / 3 = 3333 rest 2: the remainder to the first unit in alphabetical order
    assert _unit_losses(t) == {"engineering": ("33.35", "33.35", "0.00"),
                               "production": ("33.33", "33.33", "0.00"),
                               "purchasing": ("33.33", "33.33", "0.00")}
    assert [r.amount for r in t.losses.total] == ["100.01"]
    assert {r.key: r.amount for r in t.losses.by_customer} == {s.customer("C"): "100.01"}


def test_p_f_6_live_deltas_move_the_estimate_as_a_fold_does():
    """Applied one by one (as the service posts them), the deltas add up to the fold."""
    s = Story("s6")
    g5 = _g5(s)
    s.form("G5", g5, at(10, 9, month=4), at(10, 10, month=4), at(13, 10, month=4))
    s.assign("G5", 1, "D01", ["production"], at(11, 8, month=4))
    row, total = domain.FeedbackRow(_id=s.fid("G5")), {}
    for env in s.events:
        e, p = parse_event(env.model_dump(mode="json"))
        domain.apply(row, e, p, ZoneInfo("UTC"))
        delta = domain.settle(row, e.id, ZoneInfo("UTC"))
        if delta is not None:
            domain.add_into(total, delta.parts)
    month = {k: v for k, v in total["monthly/2031-04"].items() if v}
    assert month["lossest|unit|production|CNY"] == month["loss|unit|production|CNY"] == 10000
    assert "loss|unit|(unassigned)|CNY" not in month


def test_p_f_6_months_counted_before_the_split_show_null_until_recounted():
    """Counters posted by the previous version have no `split|fb`, `direct|*` nor `lossest|*`:
    the table says how many feedbacks are such and shows those figures as null, not as 0."""
    old = {"fb": 2, "cp": 2, "loss|total|all|CNY": 500, "loss|unit|(unassigned)|CNY": 500}
    t = st.table_at("2031-04", "2031-04", {"2031-04": old}, {}, date(2026, 1, 1), "UTC")
    assert t.feedbacks_not_split == 2
    assert t.counts.answered_directly is None and t.counts.complaints_answered_directly is None
    assert [(r.amount, r.estimated, r.actual) for r in t.losses.by_unit] == [
        ("5.00", None, None)]
    # one of the two rows changes after the upgrade and posts its whole new contribution
    recounted = old | {"split|fb": 1, "lossest|total|all|CNY": 300}
    t = st.table_at("2031-04", "2031-04", {"2031-04": recounted}, {}, date(2026, 1, 1), "UTC")
    assert t.feedbacks_not_split == 1 and t.losses.total[0].estimated is None
    done = recounted | {"split|fb": 2, "direct|fb": 1}
    t = st.table_at("2031-04", "2031-04", {"2031-04": done}, {}, date(2026, 1, 1), "UTC")
    assert (t.feedbacks_not_split, t.counts.answered_directly) == (0, 1)
    assert (t.losses.total[0].estimated, t.losses.total[0].actual) == ("3.00", "2.00")
