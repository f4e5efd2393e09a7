"""What the reporting service holds while it runs: the read models, the gate, the metrics."""

from datetime import date
from zoneinfo import ZoneInfo

from prometheus_client import CollectorRegistry
from pymongo.asynchronous.database import AsyncDatabase

from services.reporting.metrics import DomainMetrics
from services.reporting.readmodels import Gate, ReadModels, RebuildReport
from services.reporting.settings import Settings
from shared.events import utcnow
from shared.store import WriteLocks


class Views:
    """Created with the service (no connections); `start` runs once the database is there."""

    def __init__(self, settings: Settings, registry: CollectorRegistry):
        self.settings = settings
        self.tz = ZoneInfo(settings.timezone)
        self.gate = Gate()  # closed until `start` has recovered: events wait
        self.metrics = DomainMetrics(registry)
        self._models: ReadModels | None = None

    @property
    def models(self) -> ReadModels:
        if self._models is None:
            raise RuntimeError("reporting read models used before the service started")
        return self._models

    def use(self, models: ReadModels) -> None:
        """Serve these read models (the benchmark seeds them directly)."""
        self._models = models

    def today(self) -> date:
        return utcnow().astimezone(self.tz).date()

    async def start(self, db: AsyncDatabase, locks: WriteLocks) -> None:
        self._models = ReadModels(db, locks, self.tz, self.gate)
        await self._models.ensure_indexes()
        await self._models.recover()
        await self._reload_gauges()
        await self.gate.open()

    async def rebuild(self) -> RebuildReport:
        async with self.gate.exclusive():
            report = await self.models.rebuild()
            await self._reload_gauges()
        return report

    async def _reload_gauges(self) -> None:
        self.metrics.load([row async for row in self.models.live_rows()])
