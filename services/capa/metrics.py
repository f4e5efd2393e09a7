"""CAPA gauges for ops: open CAPAs and overdue actions, from the open-work collections.

Computed at start and every `metrics_interval_s`, so they are right after a
restart and need no event to move (an action becomes overdue by time alone). They read
`actions_open` and `capas_open` only (see `services.capa.open_work`): the cost follows the
open work, not the history.
"""

import asyncio
import logging
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Gauge

from services.capa.domain import ENDED_CAPA_STATUSES, CapaStatus, ItemStatus
from shared.service import Service

log = logging.getLogger("qms.capa.metrics")
PLANNING = [CapaStatus.OPEN.value, CapaStatus.PLANNED.value]
REBUILD_POLL_S = 1.0
ITEMS = {"corrective": 1, "preventive": 1}  # what an action request's overdue count reads


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
        overdue_actions = 0  # folded a batch at a time: open requests may be thousands
        async for action in service.repo("actions").kept_open().each(projection=ITEMS):
            overdue_actions += overdue_items([action], today, ("corrective", "preventive"))
        capas = await service.repo("capas").kept_open().all()
        by_status = Counter(c["status"] for c in capas)
        for status in CapaStatus:
            if status not in ENDED_CAPA_STATUSES:
                open_capas.labels(status.value).set(by_status[status.value])
        overdue.labels("action_request").set(overdue_actions)
        # A CAPA's plan is overdue until it is implemented.
        plans = [c for c in capas if c["status"] in PLANNING]
        overdue.labels("capa").set(overdue_items(plans, today, ("actions",)))

    def rebuilt() -> bool:
        task = service._rebuilding
        return task is None or task.done()

    async def keep_current() -> None:
        while True:
            try:
                await refresh()
            except Exception as exc:  # noqa: BLE001 - a metric must not stop the service
                log.warning("could not refresh CAPA metrics: %s", exc)
            # Until the start's reconciliation of the open work is done (the first start
            # after an upgrade fills it), look again soon: it is cheap.
            await asyncio.sleep(interval_s if rebuilt() else min(interval_s, REBUILD_POLL_S))

    service.background(keep_current)
