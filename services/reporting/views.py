"""What the reporting service holds while it runs: the read models, the gate, the metrics."""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

from prometheus_client import CollectorRegistry
from pymongo.asynchronous.database import AsyncDatabase

from services.reporting.metrics import DomainMetrics
from services.reporting.readmodels import Gate, ReadModels, RebuildReport
from services.reporting.settings import Settings
from shared.events import utcnow
from shared.store import WriteLocks

log = logging.getLogger("qms.reporting")


class Views:
    """Created with the service (no connections); `start` runs once the database is there."""

    def __init__(self, settings: Settings, registry: CollectorRegistry):
        self.settings = settings
        self.tz = ZoneInfo(settings.timezone)
        self.gate = Gate()  # closed until `start` has run: events wait
        self.metrics = DomainMetrics(registry)
        self._models: ReadModels | None = None
        self._taken_over = False
        self._taking_over = asyncio.Lock()
        # The one-time indexing of the register by day, in the background (`index_days`).
        self.indexing: asyncio.Task | None = None
        # Records retention (`retention_api.mount`): told of each projected row and issued
        # report and monthly report; asked before a record is served (410 Gone once disposed
        # of).
        self.row_hooks: list[Callable[[Any], Awaitable[None]]] = []
        self.report_hooks: list[Callable[[Any, Any], Awaitable[None]]] = []
        self.month_hooks: list[Callable[[dict[str, Any]], Awaitable[None]]] = []
        self.fetch_guards: list[Callable[..., Awaitable[None]]] = []

    @property
    def models(self) -> ReadModels:
        if self._models is None:
            raise RuntimeError("reporting read models used before the service started")
        return self._models

    def use(self, models: ReadModels) -> None:
        """Serve these read models (the benchmark seeds them directly)."""
        self._models = models

    async def check_kept(self, feedback_id: str, *kinds: str) -> None:
        """Refuse (410) a complaint's records of these types once disposed of
        (`fetch_guards`)."""
        for guard in self.fetch_guards:
            await guard(feedback_id, *kinds)

    def today(self) -> date:
        return utcnow().astimezone(self.tz).date()

    async def start(self, db: AsyncDatabase, locks: WriteLocks) -> None:
        self._models = ReadModels(db, locks, self.tz, self.gate)
        await self._models.ensure_indexes()
        await self._reload_gauges()
        await self.gate.open()
        self.indexing = asyncio.create_task(self._index_days(), name="reporting-register-days")

    async def stop(self) -> None:
        if self.indexing is not None:
            self.indexing.cancel()
            await asyncio.gather(self.indexing, return_exceptions=True)

    async def _index_days(self) -> None:
        started = time.perf_counter()
        try:
            count = await self.models.index_days()
        except Exception as exc:  # noqa: BLE001 - the next start tries again
            log.error("could not index the register by day: %s", exc)
            return
        if count:
            log.info("register_days built: %d rows in %.1f s", count,
                     time.perf_counter() - started)

    async def take_over(self) -> None:
        """Before the first event this replica applies: post what a writer that died left
        pending. Not at start: a standby starts while the active replica writes, and RabbitMQ
        delivers to it only once that one is gone (single active consumer), so the first
        delivery is when this replica becomes the one writer."""
        if self._taken_over:
            return
        async with self._taking_over:
            if not self._taken_over:
                async with self.gate.exclusive():
                    await self.models.recover()
                self._taken_over = True

    async def rebuild(self) -> RebuildReport:
        async with self.gate.exclusive():
            report = await self.models.rebuild()
            await self._reload_gauges()
        return report

    async def refresh_gauges(self) -> None:
        """Recompute the gauges from the database while events go on being applied."""
        async with self.gate.shared():
            await self.metrics.reload(self.models.live_rows())

    async def _reload_gauges(self) -> None:
        self.metrics.load([row async for row in self.models.live_rows()])
