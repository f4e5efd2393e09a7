"""P-5.4.2 records retention: the period arithmetic and its settings."""

from datetime import UTC, date, datetime

import pytest
from pydantic import ValidationError

from services.reporting.retention import (
    Held,
    RecordType,
    Retention,
    add_years,
    bucket_id,
    bucket_starts,
    field_key,
    is_due,
    month_end,
    parse_record_id,
    retain_until,
)
from services.reporting.settings import Settings
from shared.errors import NotFound


def test_p_5_4_2_kept_ten_years_after_closure_by_default():
    years = Settings().retention_years
    assert years == {"complaint": 10, "complaint_report": 10, "monthly_report": 10}
    assert retain_until(date(2026, 3, 15), years["complaint"]) == date(2036, 3, 15)


def test_p_5_4_2_due_only_the_day_after_the_last_day_kept():
    until = date(2036, 3, 15)
    assert not is_due(until, date(2036, 3, 14))
    assert not is_due(until, until)
    assert is_due(until, date(2036, 3, 16))


def test_p_5_4_2_a_leap_day_is_kept_until_28_february():
    assert add_years(date(2028, 2, 29), 10) == date(2038, 2, 28)
    assert add_years(date(2028, 2, 29), 4) == date(2032, 2, 29)


def test_p_5_4_2_a_monthly_report_is_kept_from_the_end_of_its_month():
    assert month_end("2026-02") == date(2026, 2, 28)
    assert month_end("2028-02") == date(2028, 2, 29)
    assert month_end("2026-12") == date(2026, 12, 31)
    assert retain_until(month_end("2026-11"), 10) == date(2036, 11, 30)


def test_p_5_4_2_settings_per_record_type_fill_the_rest_with_ten_years():
    s = Settings(retention_years={"complaint_report": 15})
    assert s.retention_years == {"complaint": 10, "complaint_report": 15,
                                 "monthly_report": 10}


@pytest.mark.parametrize("years, says", [
    ({"complaint": 0}, "outside 1..100"),
    ({"complaint": 101}, "outside 1..100"),
    ({"contracts": 10}, "unknown record type 'contracts'"),
])
def test_p_5_4_2_settings_refuse_a_period_out_of_range_or_an_unknown_type(years, says):
    with pytest.raises(ValidationError, match=says):
        Settings(retention_years=years)


def test_p_5_4_2_settings_read_the_periods_from_the_environment(monkeypatch):
    monkeypatch.setenv("QMS_REPORTING_RETENTION_YEARS", '{"monthly_report": 30}')
    assert Settings().retention_years["monthly_report"] == 30
    monkeypatch.setenv("QMS_REPORTING_RETENTION_CLOCK_OFFSET_DAYS", "-1")
    with pytest.raises(ValidationError):
        Settings()


def test_p_5_4_2_a_record_is_bucketed_by_the_day_its_retention_ends():
    """A day's bucket stays small (FerretDB rewrites a whole document per entry added); the
    buckets of a whole year written before are still read from the year's first day."""
    held = Held(id="complaint:f1", type=RecordType.COMPLAINT, ref="f1",
                ended_at=datetime(2026, 12, 31, 20, tzinfo=UTC), retain_until=date(2036, 12, 31))
    assert held.bucket == bucket_id(RecordType.COMPLAINT, date(2036, 12, 31)) == \
        "complaint:2036-12-31"
    assert bucket_starts("complaint:2036-12-31") == date(2036, 12, 31)
    assert bucket_starts("monthly_report:2036") == date(2036, 1, 1)


def test_p_5_4_2_the_retention_clock_may_run_ahead_on_a_test_system_only_by_setting():
    clock = Retention.__new__(Retention)  # the clock alone: no database
    clock._today, clock.offset_days = (lambda: date(2026, 1, 1)), 4018
    assert clock.today() == date(2037, 1, 1)


def test_p_5_4_2_record_ids_name_their_type():
    assert parse_record_id("monthly_report:2026-11") == (RecordType.MONTHLY_REPORT, "2026-11")
    with pytest.raises(NotFound, match="not a record id"):
        parse_record_id("invoice:1")


def test_p_5_4_2_a_reference_becomes_a_field_name_ferretdb_accepts():
    assert field_key("a.b$c%") == "a%2Eb%24c%25"
    assert "." not in field_key("v1.2") and not field_key("$x").startswith("$")
