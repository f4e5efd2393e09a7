"""Composition root of the capa service."""

from fastapi import FastAPI

from services.capa.settings import Settings
from shared.service import Service, create_app

NAME = "capa"


def build(settings: Settings) -> Service:
    return Service(NAME, settings)


def create(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    return create_app(build(settings), title="CAPA (responsible units and Quality)",
                      description=__import__("services.capa", fromlist=["x"]).__doc__ or "")
