"""Composition root of the intake service."""

from fastapi import FastAPI

from services.intake.settings import Settings
from shared.service import Service, create_app

NAME = "intake"


def build(settings: Settings) -> Service:
    return Service(NAME, settings)


def create(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    return create_app(build(settings), title="Intake (Sales)",
                      description=__import__("services.intake", fromlist=["x"]).__doc__ or "")
