"""The statistics table's arithmetic (P-F.6), checked by hand."""

from datetime import date

import pytest

from services.reporting import statistics as st


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
