"""The clock watcher (P-F.5, P-5.3.4): at-risk and breach events when they happen.

Every `sla_check_interval_s` it finds the cases whose clock passed a point and
lets the aggregate decide inside a versioned update: the once-per-round flag is
checked and set in the same write as the event, so several instances may watch.
"""

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from services.quality.clock import ClockPolicy, WorkingCalendar, now_ms
from services.quality.domain import RUNNING, Case
from services.quality.settings import Settings
from shared.service import Service
from shared.store import Repository

log = logging.getLogger("qms.quality.sla")
BATCH = 500
RUNNING_VALUES = [s.value for s in RUNNING]


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
        ids = [d["_id"] for d in await repo.collection.find(query, {"_id": 1})
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
        for severity in ("normal", "major"):
            base = {"status": {"$in": RUNNING_VALUES}, "severity": severity}
            states = {"on_time": base | {"at_risk_at": {"$gt": now}},
                      "at_risk": base | {"at_risk_at": {"$lte": now}, "due_at": {"$gte": now}},
                      "breached": base | {"due_at": {"$lt": now}}}
            for state, query in states.items():
                self.gauge.labels(severity, state).set(
                    await repo.collection.count_documents(query))


async def ensure_indexes(service: Service) -> None:
    """Index what the watcher, the lists and the recurrence view query."""
    cases = service.repo("cases").collection
    for keys in (["status", "at_risk_at"], ["status", "due_at"], ["status", "first_received_at"],
                 ["register_no"], ["severity"], ["defect_code"], ["unit_names"],
                 ["first_received_at"], ["customer.id"]):
        await cases.create_index([(k, 1) for k in keys])
    kinds = service.repo("kinds").collection
    for key in ("capa_ids", "count", "customer_id", "product_code", "defect_code"):
        await kinds.create_index(key)


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
