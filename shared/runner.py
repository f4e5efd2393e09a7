"""Run one service's app under uvicorn (`python -m services.<name>`)."""

import uvicorn
from fastapi import FastAPI

from shared.logs import setup_logging
from shared.settings import ServiceSettings


def serve(name: str, app: FastAPI, settings: ServiceSettings) -> None:
    setup_logging(name, settings.infra.log_level)
    uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_config=None,
                access_log=False, timeout_graceful_shutdown=20)
