"""The clock watcher (P-F.5, P-5.3.4): at-risk and breach events when they happen.

Every `sla_check_interval_s` it finds the cases whose clock passed a point and
lets the aggregate decide inside a versioned update: the once-per-round flag is
checked and set in the same write as the event, so several instances may watch.

It finds them in `cases_open` (one summary per open case, `Case.open_summary`), not in
the store: a query on the store reads all of history on FerretDB, every interval. A
summary a moment behind its case is harmless, since the case itself decides.
"""

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Gauge
from pymongo.asynchronous.collection import AsyncCollection

from services.quality.clock import ClockPolicy, WorkingCalendar, now_ms
from services.quality.domain import RUNNING, Case
from services.quality.settings import Settings
from shared.periods import ALL_AT_ONCE
from shared.service import Service
from shared.store import Repository

log = logging.getLogger("qms.quality.sla")
BATCH = 500
RUNNING_VALUES = [s.value for s in RUNNING]
HISTORY_BY = "first_received_at"  # when the form first reached Quality: never changes
NEWEST_FIRST = [(HISTORY_BY, -1), ("_id", 1)]  # the order of GET /cases
MOST_FREQUENT_FIRST = [("count", -1), ("_id", 1)]        # the order of GET /recurrence


def policy_of(settings: Settings) -> ClockPolicy:
    return ClockPolicy(settings.deadline, settings.at_risk_after,
                       WorkingCalendar.of(settings.working_days_only, settings.holidays,
                                          settings.calendar_timezone))


def due_checks(settings: Settings, now: datetime) -> list[tuple[dict[str, Any],
                                                                Callable[[Case], bool]]]:
    """(query for candidates, the aggregate's own check) pairs."""
    running = {"status": {"$in": RUNNING_VALUES}}
    return [
        (running | {"at_risk_flagged": False, "at_risk_at": {"$lte": now}},
         lambda c: c.check_clock(now)),
        (running | {"breached_flagged": False, "due_at": {"$lt": now}},
         lambda c: c.check_clock(now)),
        (running | {"unimproved_flagged": False, "defect_code": {"$ne": None},
                    "first_received_at": {"$lte": now - settings.unimproved_after}},
         lambda c: c.check_unimproved(now, settings.unimproved_after)),
    ]


async def check_once(repo: Repository[Case], settings: Settings,
                     now: datetime | None = None) -> int:
    """One sweep; returns how many cases changed."""
    now = now or now_ms()
    changed = 0
    for query, check in due_checks(settings, now):
        ids = [d["_id"] for d in await _open(repo).find(query, {"_id": 1})
               .limit(BATCH).to_list(None)]
        for case_id in ids:
            changed += await _apply_check(repo, case_id, check)
    return changed


async def _apply_check(repo: Repository[Case], case_id: str,
                       check: Callable[[Case], bool]) -> int:
    """Run the aggregate's check in a versioned update; 1 when it changed the case."""
    _, changed = await repo.change_and_tell(case_id, check)
    return int(changed)


class ClockGauge:
    """Open cases by severity and clock state, for dashboards and alert rules (P-F.5)."""

    def __init__(self, registry: CollectorRegistry):
        self.gauge = Gauge("qms_quality_open_cases", "Open cases by severity and clock state",
                           ["severity", "clock"], registry=registry)

    async def update(self, repo: Repository[Case], now: datetime) -> None:
        # One read of the open summaries, counted here (a count is an aggregation, which
        # FerretDB runs over the whole collection).
        counts = {(severity, state): 0 for severity in ("normal", "major")
                  for state in ("on_time", "at_risk", "breached")}
        running = await _open(repo).find({"status": {"$in": RUNNING_VALUES}},
                                         {"severity": 1, "at_risk_at": 1, "due_at": 1},
                                         batch_size=ALL_AT_ONCE).to_list(None)
        for case in running:
            if case["due_at"] < now:
                state = "breached"
            elif case["at_risk_at"] <= now:
                state = "at_risk"
            else:
                state = "on_time"
            key = (case["severity"], state)
            if key in counts:
                counts[key] += 1
        for (severity, state), count in counts.items():
            self.gauge.labels(severity, state).set(count)


def _open(repo: Repository[Case]) -> AsyncCollection:
    """`cases_open`: bounded by open work, whatever the history."""
    assert repo.open_work is not None, "cases are declared with open_summary (app.build)"
    return repo.open_work.collection


async def ensure_indexes(service: Service) -> None:
    """Index what still reads the store by another field than `_id`, on MongoDB (FerretDB's
    SQLite handler uses none of them): the start's rebuild of `cases_open` (status). A
    register number is found through `case_numbers` by `_id`; the lists read `cases_open`
    (open work) or `cases_days` and then the cases by `_id` (a period), the watcher and the
    gauge `cases_open`. The kinds are listed by count (GET /recurrence) and found by CAPA
    (the lookups' fallback)."""
    cases = service.repo("cases").collection
    await cases.create_index("status")
    kinds = service.repo("kinds").collection
    await kinds.create_index(MOST_FREQUENT_FIRST)
    for key in ("customer_id", "product_code", "defect_code"):
        await kinds.create_index([(key, 1), *MOST_FREQUENT_FIRST])
    await kinds.create_index("capa_ids")


def register(service: Service, settings: Settings) -> None:
    async def indexes() -> None:
        await ensure_indexes(service)

    gauge = ClockGauge(service.registry)

    async def watch_clock() -> None:
        while True:
            try:
                await check_once(service.repo("cases"), settings)
                await gauge.update(service.repo("cases"), now_ms())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the watcher must outlive a hiccup
                log.error("clock check failed: %s", exc, exc_info=exc)
            await asyncio.sleep(settings.sla_check_interval_s)

    service.on_start.append(indexes)
    service.background(watch_clock)
