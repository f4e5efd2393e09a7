"""The Monthly Complaint Handling Statistics Table (P-F.6), from the monthly counters. Pure.

Definitions (also in the README):
- A feedback counts in the month it was *received* (its `received_at`, in the
  configured time zone): counts by category, channel, customer, product,
  severity, defect code (its latest quality record's or assignment's code) and
  responsible unit (every unit named for it; a complaint with two units counts
  under both). Its loss is counted in that month too. Withdrawn feedback counts
  nowhere.
- Every other figure counts in the month the thing happened: forms opened (the
  escalation), quality records (handed over, `resolved_at`), first customer
  replies, closures, reopens, satisfaction answers, recurrences, CAPAs opened,
  closed and withdrawn (a withdrawn CAPA still counts as opened in the month it was
  opened; it never counts as closed); a 3-day breach in the month of its deadline.
- Customers: keyed by customer id; `name` is the latest name known for that id
  (stated by the latest `feedback.registered` or `feedback.classified` for it,
  whatever the period), from the `customer_names` read model beside the counters.
- Timeliness: the forms whose 3-day deadline falls in the period and is decided
  (the quality record came, in time or late, or the deadline passed without
  one); met = the quality record came within the deadline (`met_deadline`);
  share = met / those forms. A form past its deadline with no record yet counts
  as not met, so a month in which Quality does not answer does not look good.
  Each round of a reopened form has its own 3-day clock and counts once.
- Durations: form -> quality record is `resolved_at - received_at` of the round
  (Quality's receipt of the form); registration -> customer reply is the
  feedback's `received_at` to its first reply to the customer (direct reply or
  reply built on the quality record). Seconds are whole seconds; the mean is
  exact (sum of seconds / count). The 90th percentile is the **nearest-rank**
  percentile of the durations truncated to whole minutes: sort the n values,
  take the k-th smallest with k = ceil(0.9 * n). Both are shown in hours
  (rounded to 2 decimals).
- Open cases: complaints received and neither closed nor withdrawn at the end of
  the period (or now, for the current month), by age in whole days from the day
  received to that day: 0-3, 4-7, 8-30, over 30.
- Answered directly (P-F.2 yes, P-5.3.3): feedbacks Sales answered without a form,
  counted in the month they were received (as the register lists them); one that was
  escalated later still counts.
- Loss: per currency, decimal strings. A feedback's loss is the sum of the
  disposition costs in its quality records (every round: `actual`); without any, the
  estimated loss given at registration (`estimated`), attributed to the units Quality
  named in the latest round that names any (split evenly in cents, the remainder to
  the first unit in alphabetical order), "(unassigned)" before that. Every loss row
  says how much of its `amount` is estimated and how much actual.
- Months posted before those two figures existed (an upgrade without a rebuild) lack
  them: the table says how many of its feedbacks are such (`feedbacks_not_split`) and
  shows the figures as null until a rebuild recounts them.
- Change: each headline figure against the previous period of the same length
  (the previous month for one month).
"""

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import TypedDict

from pydantic import BaseModel, Field

from services.reporting.domain import SPLIT, unesc

AGE_BUCKETS: tuple[tuple[str, int, int | None], ...] = (
    ("0-3 days", 0, 3), ("4-7 days", 4, 7), ("8-30 days", 8, 30), ("over 30 days", 31, None))
DIMENSIONS = ("category", "channel", "customer", "product", "defect_code", "unit", "severity")
LOSS_DIMENSIONS = ("category", "unit", "customer", "defect_code")


# ------------------------------------------------------------------ months


def parse_month(text: str) -> tuple[int, int]:
    year, month = text.split("-")
    return int(year), int(month)


def month_text(year: int, month: int) -> str:
    return f"{year:04d}-{month:02d}"


def shift_month(text: str, by: int) -> str:
    year, month = parse_month(text)
    index = year * 12 + (month - 1) + by
    return month_text(index // 12, index % 12 + 1)


def months_between(first: str, last: str) -> list[str]:
    out, current = [], first
    while current <= last:
        out.append(current)
        current = shift_month(current, 1)
    return out


def last_day(text: str) -> date:
    return date.fromisoformat(f"{shift_month(text, 1)}-01") - timedelta(days=1)


def previous_period(first: str, last: str) -> tuple[str, str]:
    length = len(months_between(first, last))
    return shift_month(first, -length), shift_month(first, -1)


# ------------------------------------------------------------------ figures


def nearest_rank(histogram: dict[int, int], q: float = 0.9) -> int | None:
    """The nearest-rank q-percentile of values given as {value: how many}: the k-th smallest
    value with k = ceil(q * n). None when there are no values."""
    n = sum(histogram.values())
    if n <= 0:
        return None
    k = max(1, math.ceil(q * n))
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= k:
            return value
    return max(histogram)


def hours(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 3600, 2)


def ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def money(cents: int) -> str:
    return str((Decimal(cents) / 100).quantize(Decimal("0.01")))


# ------------------------------------------------------------------ the table's shape


class CountRow(BaseModel):
    key: str = Field(..., examples=["product_quality"])
    feedbacks: int = Field(..., description="Feedback received in the period")
    complaints: int = Field(..., description="Of which complaints (not suggestions)")


class CustomerCountRow(CountRow):
    key: str = Field(..., examples=["C-1001"], description="The customer id")
    name: str | None = Field(None, examples=["Shenzhen Bright Motors Co."],
                             description="The latest name known for the customer id")


class Counts(BaseModel):
    feedbacks: int
    complaints: int
    suggestions: int
    answered_directly: int | None = Field(
        None, examples=[12], description="Of `feedbacks`: answered directly by Sales (P-F.2 "
        "yes, P-5.3.3), received in the period; null while `feedbacks_not_split` > 0")
    complaints_answered_directly: int | None = Field(
        None, examples=[4], description="Of `complaints`: answered directly; null as above")
    by_category: list[CountRow]
    by_channel: list[CountRow]
    by_customer: list[CustomerCountRow] = Field(..., description="Keyed by customer id, "
                                                "with the latest name known for it")
    by_product: list[CountRow] = Field(..., description="Keyed by product code")
    by_defect_code: list[CountRow]
    by_unit: list[CountRow] = Field(..., description="Responsible units")
    by_severity: list[CountRow]


class Durations(BaseModel):
    count: int
    mean_hours: float | None = Field(None, description="Exact mean, hours, 2 decimals")
    p90_hours: float | None = Field(None, description="Nearest-rank 90th percentile of the "
                                    "durations in whole minutes, in hours")


class Timeliness(BaseModel):
    forms_opened: int = Field(..., description="Complaint Handling Forms opened in the period")
    quality_records: int = Field(..., description="Quality records handed to Sales")
    forms_due: int = Field(0, description="Forms whose 3-day deadline fell in the period and "
                                          "is decided: record handed over, or deadline passed")
    met_3_day_rule: int = Field(..., description="Of `forms_due`: record within the deadline")
    share_met_3_day_rule: float | None = Field(None, examples=[0.9412],
                                               description="met_3_day_rule / forms_due")
    form_to_quality_record: Durations
    registration_to_reply: Durations = Field(..., description="Received -> first customer reply")


class AgeRow(BaseModel):
    age: str = Field(..., examples=["0-3 days"])
    cases: int


class OpenCases(BaseModel):
    as_of: date = Field(..., description="End of the period, or today for the current month")
    total: int
    by_age: list[AgeRow]


class KeyCount(BaseModel):
    key: str
    count: int


class Breaches(BaseModel):
    count: int = Field(..., description="3-day deadlines (P-F.5) in the period that were missed")
    by_severity: list[KeyCount]


class LossRow(BaseModel):
    key: str
    currency: str = Field(..., examples=["CNY"])
    amount: str = Field(..., examples=["1250.00"], description="Decimal string: actual "
                        "disposition costs, else the estimate (= estimated + actual)")
    estimated: str | None = Field(None, examples=["250.00"], description="Of `amount`: "
                                  "estimated at registration, no disposition cost yet; null "
                                  "while `feedbacks_not_split` > 0")
    actual: str | None = Field(None, examples=["1000.00"], description="Of `amount`: "
                               "disposition costs in quality records; null as `estimated`")


class CustomerLossRow(LossRow):
    key: str = Field(..., examples=["C-1001"], description="The customer id")
    name: str | None = Field(None, examples=["Shenzhen Bright Motors Co."],
                             description="The latest name known for the customer id")


class Losses(BaseModel):
    total: list[LossRow] = Field(..., description="Per currency (key = 'all')")
    by_category: list[LossRow]
    by_unit: list[LossRow] = Field(..., description="Responsible units: an estimate goes to "
                                   "the units Quality named (split evenly), '(unassigned)' "
                                   "before responsibility is assigned")
    by_customer: list[CustomerLossRow] = Field(..., description="Keyed by customer id, with "
                                               "the latest name known for it")
    by_defect_code: list[LossRow]


class FollowUp(BaseModel):
    closures: int
    reopens: int
    satisfaction_answers: int
    satisfied: int
    satisfaction_rate: float | None
    recurrences: int
    recurrences_by_defect_code: list[KeyCount]
    capas_opened: int = Field(..., description="Opened in the period (withdrawn ones too)")
    capas_closed: int
    capas_withdrawn: int = Field(0, description="Withdrawn in the period (opened in error or "
                                 "overtaken; not closures)")


class ChangeRow(BaseModel):
    measure: str = Field(..., examples=["complaints"])
    current: float | int | str | None
    previous: float | int | str | None
    change: float | int | str | None = Field(None, description="current - previous")


class MonthlyTable(BaseModel):
    """P-F.6: the Complaint Handling Statistics Table of one month or a range of months."""

    period_from: str = Field(..., examples=["2026-11"])
    period_to: str = Field(..., examples=["2026-11"])
    months: list[str]
    timezone: str = Field(..., examples=["Asia/Shanghai"])
    feedbacks_not_split: int = Field(
        0, description="Feedbacks of the period counted before `answered_directly` and the "
        "estimated/actual loss existed (months posted before that upgrade): while above 0, "
        "those figures are null; `POST /admin/rebuild` recounts them")
    counts: Counts
    timeliness: Timeliness
    breaches: Breaches
    open_cases: OpenCases
    losses: Losses
    follow_up: FollowUp
    previous_from: str
    previous_to: str
    change: list[ChangeRow] = Field(..., description="Headline figures against the previous "
                                    "period of the same length")


# Dimensions whose rows carry more than the key (customers: their name).
COUNT_ROWS: dict[str, type[CountRow]] = {"customer": CustomerCountRow}
LOSS_ROWS: dict[str, type[LossRow]] = {"customer": CustomerLossRow}


# ------------------------------------------------------------------ building it


class Counters:
    """The counters of a period, summed over its months and grouped by `kind|dimension` in
    one pass (a busy month has thousands of keys: parse each once)."""

    def __init__(self, docs: Iterable[dict[str, int]]):
        self.plain: dict[str, int] = defaultdict(int)
        self.groups: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for doc in docs:
            for key, value in doc.items():
                parts = key.split("|", 2)
                if len(parts) == 3:
                    self.groups[f"{parts[0]}|{parts[1]}"][parts[2]] += value
                else:
                    self.plain[key] += value

    def get(self, key: str) -> int:
        return self.plain.get(key, 0)

    def group(self, name: str) -> dict[str, int]:
        return self.groups.get(name, {})


def _count_rows(k: Counters, dim: str, row: type[CountRow] = CountRow) -> list[CountRow]:
    feedbacks, complaints = k.group(f"fb|{dim}"), k.group(f"cp|{dim}")
    out = [row(key=unesc(key), feedbacks=feedbacks.get(key, 0),
               complaints=complaints.get(key, 0))
           for key in feedbacks.keys() | complaints.keys()
           if feedbacks.get(key, 0) or complaints.get(key, 0)]
    return sorted(out, key=lambda r: (-r.feedbacks, -r.complaints, r.key))


def _key_counts(k: Counters, group: str) -> list[KeyCount]:
    out = [KeyCount(key=unesc(key), count=v) for key, v in k.group(group).items() if v]
    return sorted(out, key=lambda r: (-r.count, r.key))


def minutes_histogram(k: Counters, name: str) -> dict[int, int]:
    return {int(m): v for m, v in k.group(f"{name}|min").items() if v}


def _durations(k: Counters, name: str) -> Durations:
    n = k.get(f"{name}|n")
    p90 = nearest_rank(minutes_histogram(k, name), 0.9)
    return Durations(count=n,
                     mean_hours=hours(k.get(f"{name}|sec") / n) if n else None,
                     p90_hours=hours(p90 * 60) if p90 is not None else None)


def _loss_cents(k: Counters, dim: str, kind: str = "loss") -> list[tuple[str, str, int]]:
    """(key, currency, cents) of one loss dimension (`lossest`: its estimated part)."""
    out = []
    for rest, value in k.group(f"{kind}|{dim}").items():
        key, _, currency = rest.rpartition("|")
        if value:
            out.append((unesc(key), currency, value))
    return out


def _losses(k: Counters, dim: str, row: type[LossRow] = LossRow) -> list[LossRow]:
    out = sorted(_loss_cents(k, dim), key=lambda r: (r[1], -r[2], r[0]))
    if not_split(k):
        return [row(key=key, currency=cur, amount=money(v)) for key, cur, v in out]
    est = {(key, cur): v for key, cur, v in _loss_cents(k, dim, "lossest")}
    return [row(key=key, currency=cur, amount=money(v), estimated=money(est.get((key, cur), 0)),
                actual=money(v - est.get((key, cur), 0))) for key, cur, v in out]


def not_split(k: Counters) -> int:
    """Feedbacks whose counters were posted before the direct answers and the estimated part
    of the loss were counted (each feedback posts `SPLIT` once, beside `fb`)."""
    return max(0, k.get("fb") - k.get(SPLIT))


def _if_split(k: Counters, key: str) -> int | None:
    return None if not_split(k) else k.get(key)


def open_cases(open_docs: dict[str, dict[str, int]], last_month: str, as_of: date) -> OpenCases:
    """Complaints open at `as_of`: received (by day) minus closed up to the end of `last_month`.

    `open_docs` are the `monthly_open` counters of every month up to `last_month`."""
    open_by_day: dict[str, int] = defaultdict(int)
    for month, counters in open_docs.items():
        if month > last_month:
            continue
        for key, value in counters.items():
            kind, _, day = key.partition("|")
            if kind == "recv" and day <= as_of.isoformat():
                open_by_day[day] += value
            elif kind == "closed":
                open_by_day[day] -= value
    buckets = {name: 0 for name, _, _ in AGE_BUCKETS}
    for day, cases in open_by_day.items():
        if cases <= 0 or day > as_of.isoformat():
            continue
        age = (as_of - date.fromisoformat(day)).days
        for name, low, high in AGE_BUCKETS:
            if age >= low and (high is None or age <= high):
                buckets[name] += cases
    return OpenCases(as_of=as_of, total=sum(buckets.values()),
                     by_age=[AgeRow(age=k, cases=v) for k, v in buckets.items()])


def as_of_day(last_month: str, today: date) -> date:
    """The end of the period, or today when the period ends in the current month."""
    return today if today.strftime("%Y-%m") == last_month else last_day(last_month)


@dataclass
class Period:
    first: str
    last: str
    counters: Counters
    open_cases: OpenCases


def _table(period: Period, previous: tuple[str, str], tz_name: str) -> MonthlyTable:
    k = period.counters
    qr = k.get("qr|n")
    answers = k.get("sat|n")
    return MonthlyTable(
        period_from=period.first, period_to=period.last,
        months=months_between(period.first, period.last), timezone=tz_name,
        feedbacks_not_split=not_split(k),
        counts=Counts(
            feedbacks=k.get("fb"), complaints=k.get("cp"),
            suggestions=k.get("fb") - k.get("cp"),
            answered_directly=_if_split(k, "direct|fb"),
            complaints_answered_directly=_if_split(k, "direct|cp"),
            **{f"by_{dim}": _count_rows(k, dim, COUNT_ROWS.get(dim, CountRow))
               for dim in DIMENSIONS}),
        timeliness=Timeliness(
            forms_opened=k.get("forms"), quality_records=qr, forms_due=k.get("tl|n"),
            met_3_day_rule=k.get("tl|met"),
            share_met_3_day_rule=ratio(k.get("tl|met"), k.get("tl|n")),
            form_to_quality_record=_durations(k, "qr"),
            registration_to_reply=_durations(k, "rp")),
        breaches=Breaches(count=k.get("br|n"), by_severity=_key_counts(k, "br|severity")),
        open_cases=period.open_cases,
        losses=Losses(total=_losses(k, "total"),
                      **{f"by_{dim}": _losses(k, dim, LOSS_ROWS.get(dim, LossRow))
                         for dim in LOSS_DIMENSIONS}),
        follow_up=FollowUp(
            closures=k.get("closed"), reopens=k.get("reopens"),
            satisfaction_answers=answers, satisfied=k.get("sat|yes"),
            satisfaction_rate=ratio(k.get("sat|yes"), answers),
            recurrences=k.get("rec|n"),
            recurrences_by_defect_code=_key_counts(k, "rec|defect_code"),
            capas_opened=k.get("capa|opened"), capas_closed=k.get("capa|closed"),
            capas_withdrawn=k.get("capa|withdrawn")),
        previous_from=previous[0], previous_to=previous[1], change=[])


def customer_ids(t: MonthlyTable) -> list[str]:
    """The customer ids the table shows (to look up their names)."""
    return sorted({r.key for r in t.counts.by_customer} | {r.key for r in t.losses.by_customer})


def name_customers(t: MonthlyTable, names: Mapping[str, str]) -> MonthlyTable:
    """Put the latest known name next to each customer id (None when none is known)."""
    for count in t.counts.by_customer:
        count.name = names.get(count.key)
    for loss in t.losses.by_customer:
        loss.name = names.get(loss.key)
    return t


def build_table(current: Period, previous: Period, tz_name: str) -> MonthlyTable:
    table = _table(current, (previous.first, previous.last), tz_name)
    before = _table(previous, previous_period(previous.first, previous.last), tz_name)
    table.change = changes(table, before)
    return table


def headline(t: MonthlyTable) -> dict[str, float | int | str | None]:
    """The figures compared with the previous period."""
    out: dict[str, float | int | str | None] = {
        "feedbacks": t.counts.feedbacks,
        "complaints": t.counts.complaints,
        "answered_directly": t.counts.answered_directly,
        "forms_opened": t.timeliness.forms_opened,
        "quality_records": t.timeliness.quality_records,
        "forms_due": t.timeliness.forms_due,
        "share_met_3_day_rule": t.timeliness.share_met_3_day_rule,
        "form_to_quality_record_mean_hours": t.timeliness.form_to_quality_record.mean_hours,
        "form_to_quality_record_p90_hours": t.timeliness.form_to_quality_record.p90_hours,
        "registration_to_reply_mean_hours": t.timeliness.registration_to_reply.mean_hours,
        "registration_to_reply_p90_hours": t.timeliness.registration_to_reply.p90_hours,
        "breaches": t.breaches.count,
        "open_cases": t.open_cases.total,
        "closures": t.follow_up.closures,
        "reopens": t.follow_up.reopens,
        "satisfaction_rate": t.follow_up.satisfaction_rate,
        "recurrences": t.follow_up.recurrences,
        "capas_opened": t.follow_up.capas_opened,
        "capas_closed": t.follow_up.capas_closed,
        "capas_withdrawn": t.follow_up.capas_withdrawn,
    }
    for row in t.losses.total:
        out[f"loss_{row.currency}"] = row.amount
    return out


def changes(current: MonthlyTable, previous: MonthlyTable) -> list[ChangeRow]:
    now, before = headline(current), headline(previous)
    rows = []
    for measure in list(now) + [m for m in before if m not in now]:
        a, b = now.get(measure), before.get(measure)
        if measure.startswith("loss_"):
            a, b = a or "0.00", b or "0.00"
            change: float | int | str | None = str(Decimal(a) - Decimal(b))
        elif isinstance(a, int | float) and isinstance(b, int | float):
            change = round(a - b, 4) if isinstance(a, float) or isinstance(b, float) else a - b
        else:  # missing in one of the periods (only the losses are text)
            change = None
        rows.append(ChangeRow(measure=measure, current=a, previous=b, change=change))
    return rows


def table_at(first: str, last: str, monthly: dict[str, dict[str, int]],
             open_docs: dict[str, dict[str, int]], today: date, tz_name: str) -> MonthlyTable:
    """The table of `first`..`last` from the monthly counters (which must cover the previous
    period too) and the open-case counters of every month up to `last`."""
    prev_first, prev_last = previous_period(first, last)

    def period(a: str, b: str) -> Period:
        counters = Counters(monthly.get(m, {}) for m in months_between(a, b))
        return Period(first=a, last=b, counters=counters,
                      open_cases=open_cases(open_docs, b, as_of_day(b, today)))

    return build_table(period(first, last), period(prev_first, prev_last), tz_name)


class TrendMonth(TypedDict):
    month: str
    feedbacks: int
    complaints: int
    quality_records: int
    forms_due: int
    met: int
    breaches: int
    closures: int


def trend(monthly: dict[str, dict[str, int]], months: list[str]) -> list[TrendMonth]:
    """Per-month figures for the trend and timeliness charts."""
    out: list[TrendMonth] = []
    for m in months:
        k = monthly.get(m, {})
        out.append({"month": m, "feedbacks": k.get("fb", 0), "complaints": k.get("cp", 0),
                    "quality_records": k.get("qr|n", 0), "forms_due": k.get("tl|n", 0),
                    "met": k.get("tl|met", 0),
                    "breaches": k.get("br|n", 0), "closures": k.get("closed", 0)})
    return out


def defect_pareto(k: Counters) -> tuple[list[tuple[str, int]],
                                         dict[str, list[tuple[str, int]]]]:
    """Complaints by defect code, and loss cents by defect code per currency, largest first."""
    counts = [(r.key, r.complaints) for r in _count_rows(k, "defect_code") if r.complaints]
    losses: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for key, currency, cents in _loss_cents(k, "defect_code"):
        losses[currency].append((key, cents))
    return counts, {cur: sorted(v, key=lambda x: (-x[1], x[0])) for cur, v in losses.items()}
