"""What notify's handlers, API and loops share: repositories, channels, the dispatcher.

Created in `app.build` (nothing connects then); `start()` runs in the service's
lifespan once the database is there: indexes, the directory seed, the channels.
"""

import asyncio
import logging
import time
from typing import Any, TypeVar

from services.notify.channels import Channel, EmailChannel, WebhookChannel
from services.notify.dispatcher import Dispatcher
from services.notify.domain import (
    SYSTEM,
    CaseView,
    ChannelName,
    CustomerEntry,
    DirectoryEntry,
    InboundMail,
    Notification,
    RetryPolicy,
    Subscription,
)
from services.notify.metrics import NotifyMetrics
from services.notify.open_work import CREATED_AT, OPEN_QUERY, RECEIVED_AT, notification_summary
from services.notify.settings import Settings
from services.notify.templates import Renderer
from shared.domain import Aggregate
from shared.service import Service
from shared.store import AlreadyExists, Repository

log = logging.getLogger("qms.notify")
A = TypeVar("A", bound=Aggregate)

NOTIFICATIONS = "notifications"
SUBSCRIPTIONS = "webhook_subscriptions"
DIRECTORY = "directory"
CUSTOMERS = "customers"
MAIL = "inbound_mail"
CASES = "cases"
META = "meta"
SEEDED = "directory_seeded"


class ConfigCopy:
    """A configuration collection's entries (webhook subscriptions, the directory), read at
    most once per `ttl_s` rather than once per event: configuration that changes a few times a
    year, consulted for every event. Bounded by the configuration, not by history.

    A change through this replica's API is seen at once (`forget`); another replica's
    within `ttl_s`. A read that began before a `forget` is not kept."""

    def __init__(self, query: dict[str, Any], ttl_s: float = 5.0):
        self.query = query
        self.ttl_s = ttl_s
        self._docs: list[dict[str, Any]] | None = None
        self._read_at = 0.0
        self._generation = 0

    async def all(self, repo: Repository[Any]) -> list[dict[str, Any]]:
        """The entries matching the query, in `_id` order. Shared: callers must not change
        them."""
        if self._docs is not None and time.monotonic() - self._read_at < self.ttl_s:
            return self._docs
        generation, read_at = self._generation, time.monotonic()
        docs = await repo.collection.find(self.query).sort("_id", 1).to_list(None)
        if generation == self._generation:
            self._docs, self._read_at = docs, read_at
        return docs

    def forget(self) -> None:
        self._docs = None
        self._generation += 1


class Notify:
    def __init__(self, service: Service, settings: Settings):
        self.service = service
        self.settings = settings
        self.metrics = NotifyMetrics(service.registry)
        self.renderer = Renderer(settings.display_timezone)
        self.ready = asyncio.Event()
        self.channels: dict[ChannelName, Channel] = {}
        self._dispatcher: Dispatcher | None = None
        self.active_subscriptions = ConfigCopy({"active": True})
        self.directory_copy = ConfigCopy({})  # inactive entries too: a head on leave
        service.collection(NOTIFICATIONS, Notification, open_summary=notification_summary,
                           open_query=OPEN_QUERY, history_by=CREATED_AT,
                           history_facets=("feedback_id", "channel", "purpose"),
                           many_valued=("feedback_id",))
        service.collection(MAIL, InboundMail, history_by=RECEIVED_AT)
        for name, model in ((SUBSCRIPTIONS, Subscription), (DIRECTORY, DirectoryEntry),
                            (CUSTOMERS, CustomerEntry), (CASES, CaseView)):
            service.collection(name, model)

    # -- repositories (they exist once the service has started) -------------
    @property
    def notifications(self) -> Repository[Notification]:
        return self.service.repo(NOTIFICATIONS)

    @property
    def subscriptions(self) -> Repository[Subscription]:
        return self.service.repo(SUBSCRIPTIONS)

    @property
    def directory(self) -> Repository[DirectoryEntry]:
        return self.service.repo(DIRECTORY)

    @property
    def customers(self) -> Repository[CustomerEntry]:
        return self.service.repo(CUSTOMERS)

    @property
    def mail(self) -> Repository[InboundMail]:
        return self.service.repo(MAIL)

    @property
    def cases(self) -> Repository[CaseView]:
        return self.service.repo(CASES)

    @property
    def dispatcher(self) -> Dispatcher:
        assert self._dispatcher is not None, "notify has not started"
        return self._dispatcher

    def policies(self) -> dict[ChannelName, RetryPolicy]:
        s = self.settings
        return {
            ChannelName.EMAIL: RetryPolicy(s.email_max_attempts, s.email_backoff_base_s,
                                           s.email_backoff_max_s),
            ChannelName.WEBHOOK: RetryPolicy(s.webhook_max_attempts, s.webhook_backoff_base_s,
                                             s.webhook_backoff_max_s),
        }

    # -- lifecycle -----------------------------------------------------------
    async def start(self) -> None:
        await self._indexes()
        await self._seed_directory()
        s = self.settings
        self.channels = {
            ChannelName.EMAIL: EmailChannel(s),
            ChannelName.WEBHOOK: WebhookChannel(self.subscriptions.get, s.webhook_timeout_s),
        }
        self._dispatcher = Dispatcher(self.notifications, self.channels, self.policies(),
                                      self.metrics, interval_s=s.dispatch_interval_s,
                                      batch=s.dispatch_batch, concurrency=s.dispatch_concurrency,
                                      lease_s=s.dispatch_lease_s)
        self._dispatcher.start()
        self.ready.set()

    async def stop(self) -> None:
        if self._dispatcher is not None:
            await self._dispatcher.stop()
        for channel in self.channels.values():
            await channel.close()

    async def _indexes(self) -> None:
        # On MongoDB (FerretDB's SQLite handler reads the whole collection whatever its
        # indexes): the start's rebuild of `notifications_open` reads the store by status; the
        # webhook subscriptions are listed newest first; the directory and the customers are
        # matched by group, address and domain. The dispatcher reads `notifications_open`, the
        # lists `notifications_open`, or `*_days` and then the records by `_id`.
        await self.notifications.collection.create_index("status")
        await self.subscriptions.collection.create_index([("created_at", -1), ("_id", 1)])
        await self.directory.collection.create_index("groups")
        await self.customers.collection.create_index("emails")
        await self.customers.collection.create_index("domains")

    async def _seed_directory(self) -> None:
        """At first start only: later edits through the API are never overwritten."""
        meta = self.service.database[META]
        if await meta.find_one({"_id": SEEDED}):
            return
        for seed in self.settings.directory_seed:
            entry = DirectoryEntry.create(email=seed.email, name=seed.name,
                                          language=seed.language, groups=seed.groups,
                                          actor=SYSTEM)
            try:
                await self.directory.add(entry)
            except AlreadyExists:
                pass
        await meta.update_one({"_id": SEEDED}, {"$set": {"entries": len(
            self.settings.directory_seed)}}, upsert=True)
        self.directory_copy.forget()
        log.info("directory seeded with %d entries", len(self.settings.directory_seed))


async def add_once(repo: Repository[A], record: A) -> A | None:
    """Add `record` and return it as saved, unless one with its id was added before (a
    redelivered event, a mail delivered twice): None then. Not asked first: the insert
    refuses the id, and the kit takes back the day entry it wrote for the refused add."""
    try:
        return await repo.add(record)
    except AlreadyExists:
        return None
