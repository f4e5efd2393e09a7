"""Composition root of the reporting service."""

import asyncio
import logging

from fastapi import FastAPI

from services.reporting import (
    api,
    documents,
    documents_api,
    handlers,
    monthly_report_api,
    retention_api,
    wordlists,
)
from services.reporting.settings import Settings
from services.reporting.views import Views
from shared.service import Service, create_app

NAME = "reporting"
log = logging.getLogger("qms.reporting")


class ReportingService(Service):
    """The kit's service, plus the read models it serves (`views`)."""

    def __init__(self, settings: Settings):
        # The read models have one writer: the monthly counters are read, added to and written
        # back, under this process's locks. So one replica consumes and the others stand by
        # (RabbitMQ hands the queue to one of them when the active one goes).
        super().__init__(NAME, settings, single_active_consumer=True)
        self.views = Views(settings, self.registry)
        self.collection(documents.REPORTS, documents.ComplaintReport)
        self._documents: documents.Documents | None = None

    @property
    def documents(self) -> documents.Documents:
        """The issued documents (the Complaint Handling Report), once started."""
        if self._documents is None:
            self._documents = documents.Documents(
                self.views.settings, self.views, self.repo(documents.REPORTS),
                self.database[documents.ISSUED])
        return self._documents


def build(settings: Settings) -> ReportingService:
    service = ReportingService(settings)
    handlers.register(service, service.views)

    async def start_views() -> None:
        await service.views.start(service.database, service.locks)

    async def index_numbers() -> None:  # once: register numbers of rows older than the lookup
        try:
            await service.views.models.index_numbers()
        except Exception as exc:  # noqa: BLE001 - the next start tries again
            log.error("could not index the register numbers: %s", exc)

    async def keep_gauges_current() -> None:
        while True:  # a standby applies no events: its gauges follow the database
            await asyncio.sleep(settings.gauges_refresh_interval_s)
            try:
                await service.views.refresh_gauges()
            except Exception as exc:  # noqa: BLE001 - a metric must not stop the service
                log.warning("could not refresh the reporting gauges: %s", exc)

    service.on_start.append(start_views)
    service.on_stop.append(service.views.stop)
    service.background(keep_gauges_current)
    service.background(index_numbers)
    service.routers.append(api.router())
    service.routers.append(documents_api.router())
    monthly_report_api.mount(service)  # P-F.6: the monthly report, drafted and issued
    retention_api.mount(service, service.views)  # P-5.4.2: retention and disposal
    service.word_lists.update(wordlists.word_lists())
    return service


def create(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    def upload_limit(path: str) -> int | None:  # a PDF to verify may exceed the JSON limit
        return settings.max_verify_bytes if path == documents_api.VERIFY_PATH else None

    return create_app(build(settings), title="Reporting", upload_limit=upload_limit, description=(
        "Read models built only from events: the Customer Feedback Register (P-5.4.1), the "
        "Monthly Complaint Handling Statistics Table (P-F.6) with CSV/XLSX exports and charts, "
        "the procedure's metrics for Prometheus, and the issued documents: the Complaint "
        "Handling Report (P-5.3.1), signed, kept by hash and verifiable (P-5.4.2). Rebuildable "
        "from the stored event history."),
        openapi_tags=[
            {"name": "register", "description": "The Customer Feedback Register (P-5.4.1)"},
            {"name": "statistics", "description": "Monthly statistics table and charts (P-F.6)"},
            {"name": "documents", "description": "Issued documents: the Complaint Handling "
                                                 "Report, signed and verifiable (P-5.3.1, "
                                                 "P-5.4.2)"},
            {"name": "ops", "description": "Health, metrics, rebuild"}])
