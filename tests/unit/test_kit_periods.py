"""The period a list of history covers, and sorting like MongoDB (`shared.periods`)."""

from datetime import UTC, datetime, timedelta

import pytest

from shared.errors import Invalid
from shared.lists import sort_rows
from shared.periods import Period

NOW = datetime(2026, 12, 6, 9, 30, tzinfo=UTC)


def test_without_from_or_to_a_list_covers_the_last_days_up_to_now():
    p = Period.of(None, None, default_days=31, now=NOW)
    assert p.start == NOW + timedelta(hours=1) - timedelta(days=31)
    assert p.holds(NOW) and not p.holds(NOW - timedelta(days=32))
    assert len(p.days()) == 32  # a partial day at each end


def test_a_period_across_a_month_end_reads_each_of_its_days_once():
    p = Period.of(datetime(2026, 1, 30, 22), datetime(2026, 2, 2), default_days=31)
    assert p.days() == ["2026-01-30", "2026-01-31", "2026-02-01"], "2 Feb 00:00 is excluded"


def test_a_naive_time_is_utc_and_an_offset_is_honoured():
    p = Period.of(datetime(2026, 3, 1, 8, tzinfo=UTC) + timedelta(hours=0), None,
                  default_days=5, now=NOW)
    assert p.start == datetime(2026, 3, 1, 8, tzinfo=UTC)
    assert Period.of(datetime(2026, 3, 1), None, default_days=5, now=NOW).start.tzinfo == UTC


def test_an_empty_period_is_refused_with_where_it_went_wrong():
    with pytest.raises(Invalid) as err:
        Period.of(NOW, NOW - timedelta(days=1), default_days=31)
    assert err.value.details[0]["loc"] == "query.from"


def test_an_inclusive_end_holds_the_instant_it_names():
    p = Period.of(None, NOW, default_days=1, end_inclusive=True)
    assert p.holds(NOW)


def test_rows_sort_by_each_key_in_turn_with_missing_values_first_ascending():
    rows = [{"_id": "b", "at": 2}, {"_id": "a", "at": 2}, {"_id": "c"}, {"_id": "d", "at": 5}]
    assert [r["_id"] for r in sort_rows(rows, [("at", -1), ("_id", 1)])] == ["d", "a", "b", "c"]
    assert [r["_id"] for r in sort_rows(rows, [("at", 1), ("_id", 1)])] == ["c", "a", "b", "d"]


def test_a_period_longer_than_allowed_is_refused_saying_how_long_it_may_be():
    with pytest.raises(Invalid) as err:
        Period.of(NOW - timedelta(days=500), NOW, default_days=31, max_days=400)
    assert "400 days" in str(err.value) and err.value.details[0]["loc"] == "query.from"


def test_the_default_period_holds_what_was_received_a_little_in_the_future():
    assert Period.of(None, None, default_days=31, now=NOW).holds(NOW + timedelta(minutes=2))
