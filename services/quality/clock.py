"""The 3-day clock (P-F.5) and the working calendar it may count in. Pure: no I/O.

A deadline is `received_at` plus a duration. With `working_days_only`, only
time on working days counts: weekends and configured holidays are skipped
whole, in the calendar's time zone (where a plant's day starts and ends).
"""

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field

MAX_DAYS_SCANNED = 3660  # a calendar with no working day in ten years is a configuration error


def now_ms() -> datetime:
    """Now in UTC to the millisecond, as BSON stores it: what is shown is what was saved."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


@dataclass(frozen=True)
class WorkingCalendar:
    working_days_only: bool = False
    holidays: frozenset[date] = field(default_factory=frozenset)
    tz: tzinfo = UTC

    @classmethod
    def of(cls, working_days_only: bool, holidays: list[date] | None = None,
           timezone: str = "UTC") -> "WorkingCalendar":
        tz: tzinfo = UTC if timezone.upper() == "UTC" else ZoneInfo(timezone)
        return cls(working_days_only, frozenset(holidays or ()), tz)

    def is_working_day(self, day: date) -> bool:
        if not self.working_days_only:
            return True
        return day.weekday() < 5 and day not in self.holidays

    def _day_start(self, day: date) -> datetime:
        """Midnight of `day` in the calendar's zone, as UTC (DST-safe)."""
        return datetime.combine(day, time(0), tzinfo=self.tz).astimezone(UTC)

    def add(self, start: datetime, duration: timedelta) -> datetime:
        """`start` plus `duration` of working time."""
        if not self.working_days_only or duration <= timedelta(0):
            return start + duration
        left = duration
        at = start.astimezone(UTC)
        for _ in range(MAX_DAYS_SCANNED):
            day = at.astimezone(self.tz).date()
            next_day_start = self._day_start(day + timedelta(days=1))
            if self.is_working_day(day):
                available = next_day_start - at
                if left <= available:
                    return at + left
                left -= available
            at = next_day_start
        raise ValueError("the working calendar has no working day in ten years")


@dataclass(frozen=True)
class ClockPolicy:
    """The deadline and at-risk point of P-F.5, counted in a working calendar."""

    deadline: timedelta
    at_risk_after: timedelta
    calendar: WorkingCalendar = field(default_factory=WorkingCalendar)

    def due_at(self, received_at: datetime) -> datetime:
        return self.calendar.add(received_at, self.deadline)

    def at_risk_at(self, received_at: datetime) -> datetime:
        return self.calendar.add(received_at, self.at_risk_after)


class Clock(BaseModel):
    """The 3-day clock of the current round, as seen at read time (P-F.5)."""

    received_at: datetime = Field(..., description="Quality received the form (this round)")
    due_at: datetime = Field(..., description="The quality record is due to Sales by then")
    at_risk_at: datetime
    time_left_seconds: float = Field(..., description="Until due_at; negative when overdue; "
                                                      "frozen once the clock stopped")
    at_risk: bool = Field(..., description="The at-risk point passed before the clock stopped")
    breached: bool = Field(..., description="The deadline passed before the record reached Sales")
    running: bool = Field(..., description="False once resolved, closed or withdrawn")
    resolved_at: datetime | None = Field(None, description="The record went to Sales")
    stopped_at: datetime | None = Field(None, description="Stopped without a record (withdrawn)")
    met_deadline: bool | None = Field(None, description="Set once resolved")


def clock_view(*, received_at: datetime, due_at: datetime, at_risk_at: datetime,
               resolved_at: datetime | None, stopped_at: datetime | None,
               now: datetime) -> Clock:
    """What the clock shows at `now`: it runs until resolved (or stopped), then freezes."""
    end = resolved_at or stopped_at or now
    return Clock(
        received_at=received_at, due_at=due_at, at_risk_at=at_risk_at,
        time_left_seconds=round((due_at - end).total_seconds(), 3),
        at_risk=end >= at_risk_at, breached=end > due_at,
        running=resolved_at is None and stopped_at is None,
        resolved_at=resolved_at, stopped_at=stopped_at,
        met_deadline=None if resolved_at is None else resolved_at <= due_at,
    )
