"""Composition root of the quality service."""

from fastapi import FastAPI

from services.quality.settings import Settings
from shared.service import Service, create_app

NAME = "quality"


def build(settings: Settings) -> Service:
    return Service(NAME, settings)


def create(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    return create_app(build(settings), title="Quality",
                      description=__import__("services.quality", fromlist=["x"]).__doc__ or "")
