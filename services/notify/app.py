"""Composition root of the notify service."""

from fastapi import FastAPI

from services.notify.settings import Settings
from shared.service import Service, create_app

NAME = "notify"


def build(settings: Settings) -> Service:
    return Service(NAME, settings)


def create(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    return create_app(build(settings), title="Notify",
                      description=__import__("services.notify", fromlist=["x"]).__doc__ or "")
