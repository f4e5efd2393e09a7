"""Composition root of the reporting service."""

from fastapi import FastAPI

from services.reporting import handlers
from services.reporting.settings import Settings
from shared.service import Service, create_app

NAME = "reporting"


def build(settings: Settings) -> Service:
    service = Service(NAME, settings)
    handlers.register(service)
    return service


def create(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    return create_app(build(settings), title="Reporting", description=(
        "Read models built only from events: the register, the monthly statistics table."))
