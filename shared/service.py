"""The composition every service shares: settings → Mongo → broker → consumer, relay, HTTP.

A service module builds one `Service`, registers its collections and event
handlers, adds its HTTP routers, and `create_app` turns it into a FastAPI app
whose lifespan starts and stops everything. Nothing connects at import time.
"""

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import swagger_ui_bundle
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from faststream.rabbit.prometheus import RabbitPrometheusMiddleware
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import taskdump
from shared.api import NO_TELEMETRY, audit_router, record_refusal
from shared.asyncapi import event_catalogue
from shared.auth import TokenVerifier, document_roles
from shared.dbmetrics import DatabaseMetrics
from shared.domain import Aggregate
from shared.errors import (
    error_response,
    install_error_handlers,
    store_busy,
    store_unreachable,
)
from shared.lifecycle import Lifecycle
from shared.logs import set_correlation
from shared.lookups import Lookup
from shared.messaging import ConsumerMetrics, EventConsumer, EventPublisher, Topology, new_broker
from shared.openapi_errors import document_errors
from shared.outbox import OutboxRelay
from shared.periods import DayIndex
from shared.settings import ServiceSettings
from shared.stallwatch import StallWatch
from shared.store import OpenWork, OutboxMarks, Repository, WriteLocks, database, mongo_client
from shared.wordlists import SHARED_LISTS, WordList, vocabulary_router

log = logging.getLogger("qms.service")
LIFECYCLE = "lifecycle"  # the instances running, and the note of a clean stop
A = TypeVar("A", bound=Aggregate)


class Service:
    def __init__(self, name: str, settings: ServiceSettings, *,
                 single_active_consumer: bool = False):
        self.name = name
        self.settings = settings
        infra = settings.infra
        self.registry = CollectorRegistry()
        self.topology = Topology(infra.namespace, name, infra.retry_delay_ms,
                                 single_active_consumer=single_active_consumer)
        self.broker = new_broker(
            settings.broker_url, prefetch=infra.consumer_prefetch,
            middlewares=[RabbitPrometheusMiddleware(registry=self.registry, app_name=name)],
        )
        self.publisher = EventPublisher(self.broker, self.topology.exchange)
        self.consumer = EventConsumer(name, self.topology, self.broker, infra.max_attempts,
                                      ConsumerMetrics(self.registry))
        self.stall_watch = StallWatch(name, self.consumer.in_flight, self.registry,
                                      infra.stall_after_s)
        self.extra_bindings: list[str] = []
        self.mongo: AsyncMongoClient | None = None
        self.db: AsyncDatabase | None = None  # None until started; see `database`
        self.relay: OutboxRelay | None = None
        self._models: dict[str, type[Aggregate]] = {}
        self._history_by: dict[str, str] = {}  # collection -> the field its history lists use
        self._history_facets: dict[str, tuple[str, ...]] = {}
        self._many_valued: dict[str, tuple[str, ...]] = {}
        self._lookups: dict[str, tuple[str, str]] = {}  # collection -> (lookup, field)
        self._open_work: dict[str, tuple[Callable[[Any], dict[str, Any] | None],
                                         dict[str, Any]]] = {}
        self._repos: dict[str, Repository] = {}
        self.on_start: list[Callable[[], Awaitable[None]]] = []
        self.on_stop: list[Callable[[], Awaitable[None]]] = []
        self.routers: list[APIRouter] = []
        # The word lists of what this service owns, served at `/vocabulary` beside the shared
        # ones (`shared.wordlists`)
        self.word_lists: dict[str, WordList] = {}
        # The service's own readiness checks beyond broker and database: name -> "ok" or why not
        self.readiness_checks: dict[str, Callable[[], Awaitable[str]]] = {}
        self.started = False
        self._rebuilding: asyncio.Task | None = None
        self._reconciled = False  # the start's reconciliation of open work is done
        self._clean_start = False  # the last stop left the open-work summaries as saved
        self.lifecycle: Lifecycle | None = None
        self._heartbeat: asyncio.Task | None = None
        self._watching: asyncio.Task | None = None

    # -- composition -----------------------------------------------------
    def collection(self, name: str, model: type[A], *,
                   open_summary: Callable[[A], dict[str, Any] | None] | None = None,
                   open_query: dict[str, Any] | None = None,
                   history_by: str | None = None, history_facets: tuple[str, ...] = (),
                   many_valued: tuple[str, ...] = (),
                   lookup: tuple[str, str] | None = None) -> None:
        """Declare an aggregate collection; its repository exists once the service starts.

        With `open_summary` (and `open_query`, the same selection as a database filter), the
        repository keeps `<name>_open`: what timers and boards read (see `OpenWork`). With
        `history_by` (the field lists of its history are ordered by, e.g. `received_at`), it
        keeps `<name>_days`, which those lists read by period (see `shared.periods`); its
        `history_facets` are top-level fields that never change once a record is added,
        which a list may filter by without reading more than its page; those of them with
        about as many values as records (`many_valued`, e.g. the complaint a record is for)
        are counted a document per value, not in the day's head. With
        `lookup` (collection, field), a number people quote is found by `_id` there
        (`shared.lookups`); `Repository.add_numbered` claims each number in it first."""
        self._models[name] = model
        if lookup is not None:
            self._lookups[name] = lookup
        if history_by is not None:
            self._history_by[name] = history_by
            self._history_facets[name] = history_facets
            self._many_valued[name] = many_valued
        if open_summary is not None:
            if open_query is None:
                raise ValueError(f"{name}: open_summary needs open_query for the rebuild")
            self._open_work[name] = (open_summary, open_query)

    def repo(self, name: str) -> Repository:
        return self._repos[name]

    @property
    def histories(self) -> list[str]:
        """The collections keeping `<name>_days` (`history_by`)."""
        return list(self._history_by)

    def day_index(self, name: str, db: AsyncDatabase) -> DayIndex:
        """The day index of a collection declared with `history_by`, in `db`."""
        return DayIndex(db[f"{name}_days"], self._history_by[name],
                        facets=self._history_facets[name], many_valued=self._many_valued[name])

    @property
    def database(self) -> AsyncDatabase:
        """The database, for handlers, routes and hooks: they run only once started."""
        if self.db is None:
            raise RuntimeError(f"{self.name} has not started: it has no database yet")
        return self.db

    def background(self, coro_fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """A loop that runs while the service is up (e.g. the 3-day deadline checker)."""
        tasks: list[asyncio.Task] = []

        async def start() -> None:
            tasks.append(asyncio.create_task(coro_fn(), name=f"{self.name}-{coro_fn.__name__}"))

        async def stop() -> None:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.on_start.append(start)
        self.on_stop.insert(0, stop)

    # -- lifecycle ---------------------------------------------------------
    async def start(self) -> None:
        infra = self.settings.infra
        self.mongo = mongo_client(self.settings.database_url,
                                  [DatabaseMetrics(self.name, self.registry)])
        self.db = database(self.mongo, infra.namespace, self.name)
        # The note of a clean stop is taken before anything is written (`shared.lifecycle`).
        self.lifecycle = Lifecycle(self.db[LIFECYCLE])
        self._clean_start = await self.lifecycle.begin()
        self.locks = WriteLocks()
        marks = OutboxMarks(self.db["outbox_due"])
        self.relay = OutboxRelay(self.name, [], self.publisher, infra.relay_interval_s,
                                 self.registry, self.locks, marks, infra.relay_sweep_interval_s)
        for name, model in self._models.items():
            open_work = None
            if name in self._open_work:
                summary, query = self._open_work[name]
                open_work = OpenWork(self.db[f"{name}_open"], model, summary, query,
                                     store=self.db[name], alone=self.lifecycle.alone)
            days = self.day_index(name, self.db) if name in self._history_by else None
            lookup = None
            if name in self._lookups:
                lookup_name, field = self._lookups[name]
                lookup = Lookup(self.db[lookup_name], field)
            repo = Repository(self.db[name], model, on_events=self.relay.notify,
                              locks=self.locks, open_work=open_work, marks=marks, days=days,
                              lookup=lookup, alone=self.lifecycle.alone)
            await repo.ensure_indexes()
            self._repos[name] = repo
            self.relay.collections.append(repo.collection)
        await self.broker.connect()
        await self.topology.declare(self.broker,
                                    self.consumer.routing_keys + self.extra_bindings)
        if self.consumer.handlers or self.consumer.any_handler or self.extra_bindings:
            self.consumer.subscribe()
        await self.broker.start()
        self.relay.start()
        assert self.lifecycle is not None
        self._heartbeat = asyncio.create_task(self.lifecycle.keep_beating(),
                                              name=f"{self.name}-heartbeat")
        self._watching = asyncio.create_task(self.stall_watch.run(),
                                             name=f"{self.name}-stall-watch")
        taskdump.install()  # `kill -USR1 <pid>` logs where every task waits
        self._rebuilding = asyncio.create_task(self._reconcile_at_start(),
                                               name=f"{self.name}-open-work-rebuild")
        for hook in self.on_start:
            await hook()
        self.started = True
        log.info("%s started", self.name)

    def settled(self) -> bool:
        """The start's background work is over (one-time builds, the open-work reconcile,
        the relay's sweeps) and the relay has published everything saved so far."""
        return bool(self._rebuilding is not None and self._rebuilding.done()
                    and self.relay is not None and self.relay.settled())

    async def _reconcile_at_start(self) -> None:
        """Once per start, in the background: build the lookups and day lists a collection
        has never had built (records older than them), then, unless the last stop was clean,
        reconcile each open-work collection with its store. Each reads history (a scan on
        FerretDB: at 100,000 complaints, a minute of CPU); what saves keep is already right
        unless a crash fell between two writes, and a clean stop says none did."""
        clean = self._clean_start
        for name, repo in self._repos.items():
            for index in (repo.lookup, repo.days):
                if index is not None:
                    await self._build_once(index, repo)
            if repo.open_work is None:
                continue
            if clean:
                log.info("%s_open kept as saved: the last stop was clean", name)
                continue
            started = time.perf_counter()
            try:
                count = await repo.open_work.rebuild(repo.collection)
            except Exception as exc:  # noqa: BLE001 - the summaries kept on saves still serve
                log.error("could not reconcile %s_open with the store: %s", name, exc)
                continue
            log.info("%s_open reconciled: %d open in %.1f s", name, count,
                     time.perf_counter() - started)
        if not clean and self.lifecycle is not None:
            await self.lifecycle.forget_dead()
        self._reconciled = True

    async def _note_clean_stop(self) -> None:
        """Every save's summary was written, and the start's reconciliation (if one was due)
        finished: the next start need not read the stores for open work (`shared.lifecycle`:
        only if no other instance is registered)."""
        if self.lifecycle is None:
            return
        clean = self._reconciled and not any(r.open_work_unsure for r in self._repos.values())
        try:
            await self.lifecycle.end(clean)
        except Exception as exc:  # noqa: BLE001 - the next start reconciles, as after a crash
            log.warning("could not note the stop: %s", exc)

    @staticmethod
    async def _build_once(index: Lookup | DayIndex, repo: Repository) -> None:
        if await index.built():
            return
        started = time.perf_counter()
        try:
            count = await index.build(repo.collection)
        except Exception as exc:  # noqa: BLE001 - the next start tries again
            log.error("could not build %s from the store: %s", index.collection.name, exc)
            return
        log.info("%s built: %d records in %.1f s", index.collection.name, count,
                 time.perf_counter() - started)

    async def stop(self) -> None:
        """Stop consuming, finish in-flight work, flush the outbox, then disconnect."""
        if self._rebuilding is not None:
            self._rebuilding.cancel()
            await asyncio.gather(self._rebuilding, return_exceptions=True)
        for hook in self.on_stop:
            await hook()
        for sub in self.broker.subscribers:
            await sub.stop()
        if self.relay:
            await self.relay.stop()
        await self.broker.stop()
        for task in (self._heartbeat, self._watching):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self.mongo:
            await self._note_clean_stop()
            await self.mongo.close()
        self.started = False

    async def ready(self) -> dict[str, str]:
        checks = {"broker": "down", "database": "down"}
        try:
            if await self.broker.ping(timeout=2.0):
                checks["broker"] = "ok"
        except Exception as exc:  # noqa: BLE001 - readiness reports, it doesn't raise
            checks["broker"] = f"down: {exc}"
        try:
            if self.db is not None:
                await asyncio.wait_for(self.db.command("ping"), timeout=2.0)
                checks["database"] = "ok"
        except Exception as exc:  # noqa: BLE001
            checks["database"] = f"down: {exc}"
        for name, check in self.readiness_checks.items():
            try:
                checks[name] = await check()
            except Exception as exc:  # noqa: BLE001
                checks[name] = f"down: {exc}"
        return checks


class BodySizeLimit:
    """413 for a request body larger than the limit, whether it says its length or not."""

    def __init__(self, app: ASGIApp, max_bytes: int,
                 overrides: Callable[[str], int | None] | None = None):
        self.app = app
        self.max_bytes = max_bytes
        self.overrides = overrides or (lambda path: None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.overrides(scope["path"]) or self.max_bytes
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            return await self._too_large(scope, receive, send, limit)
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _TooLarge()
            return message

        try:
            await self.app(scope, counting_receive, send)
        except _TooLarge:
            await self._too_large(scope, receive, send, limit)

    @staticmethod
    async def _too_large(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        response = error_response(413, "too_large",
                                  f"The request body is larger than {limit} bytes.")
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass


STORE_BUSY_RETRY_AFTER_S = 2


class StoreBusy:
    """The store busy or out of reach is not a server error: FerretDB's "database is locked"
    (SQLite busy under load), or a lost connection (FerretDB restarting; the driver reconnects
    by itself). A read (GET, HEAD: it changes nothing) is tried again after a short pause; a
    write, or a read the store still refuses, gets 503 with `Retry-After`, saying which.
    Anything else passes."""

    def __init__(self, app: ASGIApp, read_retries: int = 2, pause_s: float = 0.25):
        self.app = app
        self.read_retries = read_retries
        self.pause_s = pause_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        tries = 1 + (self.read_retries if scope["method"] in ("GET", "HEAD") else 0)
        for attempt in range(tries):
            if attempt:
                await asyncio.sleep(self.pause_s * attempt)
            if (why := await self._refused(scope, receive, send)) is None:
                return
        log.warning("the database %s: %s %s answered 503 after %d attempt(s)", why,
                    scope["method"], scope["path"], tries)
        response = error_response(
            503, "unavailable", f"The database {why}; try again in {STORE_BUSY_RETRY_AFTER_S} "
            "seconds (a registration retried with the same Idempotency-Key is not registered "
            "twice).", headers={"Retry-After": str(STORE_BUSY_RETRY_AFTER_S)})
        await response(scope, receive, send)

    async def _refused(self, scope: Scope, receive: Receive, send: Send) -> str | None:
        """Run the request once; why the store refused it before any answer was sent, or None
        (once an answer has begun, the error goes on as any other)."""
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as exc:
            if started:
                raise
            if store_busy(exc):
                return "is busy under load (it answered \"database is locked\")"
            if store_unreachable(exc):
                return "cannot be reached just now (the connection was lost)"
            raise
        return None


def http_metrics(app: FastAPI, service: str, registry: CollectorRegistry) -> None:
    requests = Counter("qms_http_requests_total", "HTTP requests by route template",
                       ["service", "method", "route", "status"], registry=registry)
    latency = Histogram("qms_http_request_seconds", "HTTP latency by route template",
                        ["service", "method", "route"], registry=registry)

    @app.middleware("http")
    async def measure(request: Request, call_next):
        set_correlation(request.headers.get("x-correlation-id"))
        started = time.perf_counter()

        def count(status: int) -> None:
            route = getattr(request.scope.get("route"), "path", "unmatched")
            requests.labels(service, request.method, route, str(status)).inc()
            latency.labels(service, request.method, route).observe(time.perf_counter() - started)

        try:
            response = await call_next(request)
        except Exception:
            count(500)  # unhandled: the 500 is answered further out, so it is counted here
            raise
        count(response.status_code)
        return response


# Swagger UI's files, served by the service itself (`/docs` loads nothing from the internet:
# on a plant network without it, FastAPI's CDN default leaves the page blank).
DOCS_ASSETS = "/docs-assets"


def _offline_docs(app: FastAPI, title: str) -> None:
    """`/docs` with Swagger UI from the installed `swagger-ui-bundle-v2` (Swagger UI 5, which
    renders OpenAPI 3.1), under `/docs-assets`; no ReDoc (it too would come from a CDN)."""
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(swagger_ui_bundle.swagger_ui_path)),
              name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")  # behind a proxy's prefix
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{title} - API",
            swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon-32x32.png")


def create_app(service: Service, *, title: str, description: str,
               upload_limit: Callable[[str], int | None] | None = None,
               openapi_tags: list[dict[str, Any]] | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title=title, description=description, version="1.0.0", lifespan=lifespan,
                  telemetry=NO_TELEMETRY,
                  openapi_tags=openapi_tags, docs_url=None, redoc_url=None)
    _offline_docs(app, title)
    app.state.service = service
    app.state.token_verifier = TokenVerifier(service.settings.infra)
    app.state.on_refusal = record_refusal
    install_error_handlers(app)
    app.add_middleware(StoreBusy)  # inside the metrics: its 503s are counted
    http_metrics(app, service.name, service.registry)
    app.add_middleware(BodySizeLimit, max_bytes=service.settings.infra.max_body_bytes,
                       overrides=upload_limit)

    @app.get("/healthz", tags=["ops"], summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": service.name}

    @app.get("/readyz", tags=["ops"], summary="Broker and database reachable (and the "
             "service's own checks, e.g. notify's inbound SMTP endpoint listening)")
    async def readyz(response: Response) -> dict[str, Any]:
        checks = await service.ready()
        ok = service.started and all(v == "ok" for v in checks.values())
        response.status_code = 200 if ok else 503
        return {"status": "ready" if ok else "not ready", "service": service.name,
                "checks": checks}

    @app.get("/asyncapi.json", tags=["ops"], summary="The event catalogue (AsyncAPI 3.0) for "
             "plant systems that bind their own queue to the exchange")
    async def asyncapi() -> dict[str, Any]:
        return event_catalogue(service.settings.infra.namespace)

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(service.registry), media_type=CONTENT_TYPE_LATEST)

    vocabulary = vocabulary_router(service.name, SHARED_LISTS | service.word_lists)
    for router in [*service.routers, audit_router(), vocabulary]:
        document_roles(router)
        app.include_router(router)
    document_errors(app)
    return app
