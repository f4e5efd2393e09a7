"""CAPA gauges for ops: open CAPAs and overdue actions, from the database.

Computed at start and every `metrics_interval_s`, so they are right after a
restart and need no event to move (an action becomes overdue by time alone).
"""

import asyncio
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Gauge

from services.capa.domain import (
    ENDED_CAPA_STATUSES,
    OPEN_ACTION_STATUSES,
    CapaStatus,
    ItemStatus,
)
from shared.service import Service

log = logging.getLogger("qms.capa.metrics")
OPEN_ACTIONS = [s.value for s in OPEN_ACTION_STATUSES]  # withdrawn ones ask nothing more
PLANNING = [CapaStatus.OPEN.value, CapaStatus.PLANNED.value]


def overdue_items(docs: Iterable[dict[str, Any]], today: str, fields: tuple[str, ...]) -> int:
    """Items not done whose due date (ISO, as stored) is before `today`."""
    return sum(1 for doc in docs for field in fields for item in doc.get(field) or []
               if item.get("status", ItemStatus.OPEN.value) != ItemStatus.DONE.value
               and str(item.get("due_date", "9999")) < today)


def register(service: Service, interval_s: float) -> None:
    open_capas = Gauge("qms_capa_open", "Formal CAPAs not closed, by status", ["status"],
                       registry=service.registry)
    overdue = Gauge("qms_capa_overdue_actions", "Corrective and preventive actions past their "
                    "due date and not done", ["record"], registry=service.registry)

    async def refresh() -> None:
        today = datetime.now(UTC).date().isoformat()
        actions = service.repo("actions").collection
        capas = service.repo("capas").collection
        for status in CapaStatus:
            if status not in ENDED_CAPA_STATUSES:
                open_capas.labels(status.value).set(
                    await capas.count_documents({"status": status.value}))
        docs = await actions.find({"status": {"$in": OPEN_ACTIONS}},
                                  {"corrective": 1, "preventive": 1}).to_list(None)
        overdue.labels("action_request").set(overdue_items(docs, today,
                                                           ("corrective", "preventive")))
        # A CAPA's plan is overdue until it is implemented.
        plans = await capas.find({"status": {"$in": PLANNING}}, {"actions": 1}).to_list(None)
        overdue.labels("capa").set(overdue_items(plans, today, ("actions",)))

    async def keep_current() -> None:
        while True:
            try:
                await refresh()
            except Exception as exc:  # noqa: BLE001 - a metric must not stop the service
                log.warning("could not refresh CAPA metrics: %s", exc)
            await asyncio.sleep(interval_s)

    service.background(keep_current)
