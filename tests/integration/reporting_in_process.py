"""The real reporting service in the test's process, with a publisher on its exchange and an
HTTP client signed in as one person: the fixture of the reporting integration tests."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from services.reporting.app import ReportingService, create
from services.reporting.settings import Settings
from shared.auth import make_token
from shared.messaging import EventPublisher, Topology, new_broker

STOP_BOUND_S = 60  # a handler stuck for ever must not hold the test run up


@asynccontextmanager
async def reporting_in_process(settings: Settings, sub: str, roles: list[str]
                               ) -> AsyncIterator[tuple[ReportingService, httpx.AsyncClient,
                                                        EventPublisher]]:
    app = create(settings)
    service: ReportingService = app.state.service
    await service.start()
    broker = new_broker(settings.infra.amqp_url.get_secret_value())
    try:
        await broker.connect()
        exchange = Topology(settings.infra.namespace, "test-publisher").exchange
        await broker.declare_exchange(exchange)
        token = make_token(settings.infra.jwt_secret.get_secret_value(), sub, roles)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://reporting",
                                     headers={"Authorization": f"Bearer {token}"}) as http:
            yield service, http, EventPublisher(broker, exchange)
    finally:
        await broker.stop()
        if service.started:
            await asyncio.wait_for(service.stop(), STOP_BOUND_S)
