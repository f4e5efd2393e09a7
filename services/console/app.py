"""Composition root of the web console."""

import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import quote

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

import services.console as package
from services.console import (
    audit,
    capa_pages,
    documents,
    evidence,
    manager,
    monthly_report,
    register_print,
    retention,
    sales,
)
from services.console.backend import ApiError, Backend
from services.console.i18n import N_, load_catalogues
from services.console.live import LiveFeed
from services.console.pages import Console, CsrfRefused, NotAllowed, SignInNeeded, router
from services.console.session import Sessions
from services.console.settings import Settings
from shared.api import NO_TELEMETRY
from shared.service import http_metrics

HERE = Path(__file__).resolve().parent
logging.getLogger("httpx").setLevel(logging.WARNING)  # not a log line per call to a service
SERVICE_TIMEOUT_S = 20.0


def create(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    secret = (settings.session_secret.get_secret_value() if settings.session_secret
              else secrets.token_urlsafe(32))
    env = Environment(loader=FileSystemLoader(HERE / "templates"),
                      autoescape=select_autoescape(["html"]), trim_blocks=True,
                      lstrip_blocks=True)
    http = httpx.AsyncClient(timeout=SERVICE_TIMEOUT_S)
    feed = LiveFeed(settings.broker_url, settings.infra.namespace) if settings.live else None
    console = Console(settings, env, Backend(http, settings.service_urls()),
                      Sessions(secret, settings.session_max_age_s), load_catalogues(), feed)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if feed is not None:
            await feed.start()
        try:
            yield
        finally:
            if feed is not None:
                await feed.stop()
            await http.aclose()

    app = FastAPI(title="Console", description=package.__doc__ or "", lifespan=lifespan,
                  telemetry=NO_TELEMETRY,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    # The services' HTTP metrics (qms_http_requests_total, qms_http_request_seconds), labelled
    # service="console": the dashboard and the 5xx alert see the console like the others.
    registry = CollectorRegistry()
    http_metrics(app, "console", registry)
    app.include_router(router(console))
    for pages in (sales, evidence, manager, audit, documents, capa_pages, monthly_report,
                  retention, register_print):
        app.include_router(pages.router(console))

    @app.exception_handler(SignInNeeded)
    async def sign_in(request: Request, _: Exception) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if request.method != "GET":
            target = "/"
        return (await console.ctx(request)).redirect(f"/signin?next={quote(target)}")

    @app.exception_handler(NotAllowed)
    async def not_allowed(request: Request, _: Exception) -> Response:
        return (await console.ctx(request)).render("error.html", status=403, error=None,
                                           message=N_("Your role may not open this page."))

    @app.exception_handler(CsrfRefused)
    async def csrf_refused(request: Request, exc: Exception) -> Response:
        ctx = exc.ctx if isinstance(exc, CsrfRefused) else await console.ctx(request)
        return ctx.render("error.html", status=403, error=None,
                          message=N_("This form has expired or did not come from this "
                                     "console; go back, reload the page and send it again."))

    @app.exception_handler(ApiError)
    async def refused(request: Request, exc: Exception) -> Response:
        ctx = await console.ctx(request)
        if isinstance(exc, ApiError) and exc.status == 401:
            return await sign_in(request, exc)
        error = ctx.error(exc) if isinstance(exc, ApiError) else None
        status = exc.status if isinstance(exc, ApiError) else 500
        return ctx.render("error.html", status=status, error=error, message=None)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": "console"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(response: Response) -> dict[str, object]:
        checks = {"broker": await feed.ready() if feed is not None else "off"}
        ok = all(v in ("ok", "off") for v in checks.values())
        response.status_code = 200 if ok else 503
        return {"status": "ready" if ok else "not ready", "service": "console",
                "checks": checks}

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
