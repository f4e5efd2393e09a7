"""The delivery loop: sends what is due, records each attempt, backs off, parks.

All delivery state is in the `notifications` collection, so the loop picks up
after a restart exactly where it was (an attempt cut off by a crash is due again
once its lease expires). Handlers insert notifications already taken for their first
attempt and hand them over (`deliver`): no write to claim them, no sweep to find them.

What is due, and the parked gauge, come from `notifications_open` (see
`services.notify.open_work`), whose size follows the open work, not the history; taking
one for an attempt stays a conditional update of the record by `_id` and version.
"""

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any

from services.notify.channels import Channel, Delivered, DeliveryFailed
from services.notify.domain import ChannelName, Notification, NotificationStatus, RetryPolicy
from services.notify.metrics import NotifyMetrics
from shared.events import utcnow
from shared.store import OpenWork, Repository

log = logging.getLogger("qms.notify.dispatcher")
PARKED_GAUGE_EVERY_S = 5.0


class Dispatcher:
    def __init__(self, repo: Repository[Notification], channels: dict[ChannelName, Channel],
                 policies: dict[ChannelName, RetryPolicy], metrics: NotifyMetrics, *,
                 interval_s: float, batch: int, concurrency: int, lease_s: float):
        self.repo = repo
        self.channels = channels
        self.policies = policies
        self.metrics = metrics
        self.interval_s = interval_s
        self.batch = batch
        self.lease = timedelta(seconds=lease_s)
        self.concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()
        self._gauge_at = 0.0
        self._stopping = False
        self._task: asyncio.Task | None = None
        self._handed: set[asyncio.Task] = set()  # first attempts in flight (`deliver`)

    def wake(self) -> None:
        """New notifications (or a manual retry): look now, not at the next tick."""
        self._gauge_at = 0.0
        self._wake.set()

    def take_first(self, n: Notification) -> bool:
        """Take `n`, about to be added, for its first attempt by this process (saved with
        it, `deliver` once added), while fewer first attempts than `concurrency` are under way.
        So a crash leaves no more notifications taken and not attempted than the attempts in
        flight it cuts off (their leases run out, then the sweep attempts them), and a burst
        of events piles up no attempts in memory: the rest are added due, for the sweep."""
        return len(self._handed) < self.concurrency and n.claim(n.created_at, self.lease)

    def deliver(self, n: Notification) -> None:
        """Attempt `n` now: just added, already taken for this attempt (`take_first`). Should
        this process stop first, its lease runs out and the sweep attempts it."""
        task = asyncio.create_task(self._bounded(self._attempt(n), n.id))
        self._handed.add(task)
        task.add_done_callback(self._handed.discard)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="notify-dispatcher")

    async def stop(self, grace_s: float = 15.0) -> None:
        """Let attempts in flight finish and be recorded, then stop (cancel after the grace)."""
        self._stopping = True
        self._wake.set()
        running = set(self._handed) | ({self._task} if self._task else set())
        if not running:
            return
        _, late = await asyncio.wait(running, timeout=grace_s)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    async def run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            full = False
            try:
                full = await self.sweep()
                await self._update_parked_gauge()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the loop must outlive a database hiccup
                log.error("delivery sweep failed: %s", exc)
            if full or self._stopping:
                continue  # more is due right now (or leave the loop)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval_s)
            except TimeoutError:
                pass

    async def sweep(self) -> bool:
        """Attempt everything due now; True when the batch was full."""
        due = await self.open_work.all(
            {"status": NotificationStatus.PENDING.value, "next_attempt_at": {"$lte": utcnow()}},
            projection={"next_attempt_at": 1})
        due = sorted(due, key=lambda d: d["next_attempt_at"])[:self.batch]
        await asyncio.gather(*(self._bounded(self.attempt(doc["_id"]), doc["_id"])
                               for doc in due))
        return len(due) >= self.batch

    @property
    def open_work(self) -> OpenWork[Notification]:
        assert self.repo.open_work is not None, "notifications are declared with open work"
        return self.repo.open_work

    async def _bounded(self, attempt: Coroutine[Any, Any, None], notification_id: str) -> None:
        async with self._slots:
            try:
                await attempt
            except Exception as exc:  # noqa: BLE001 - one bad record must not stop the rest
                log.error("attempt of %s failed unexpectedly: %s", notification_id, exc,
                          exc_info=exc)

    async def attempt(self, notification_id: str) -> None:
        n = await self._claim(notification_id)
        if n is not None:
            await self._attempt(n)

    async def _attempt(self, n: Notification) -> None:
        """One attempt of `n`, taken for it (as saved: `_record` writes without a read)."""
        channel = self.channels[n.channel]
        started = time.perf_counter()
        outcome: Delivered | DeliveryFailed
        try:
            outcome = await channel.send(n)
        except DeliveryFailed as exc:
            outcome = exc
        except Exception as exc:  # noqa: BLE001 - a channel bug is a failed attempt, retried
            outcome = DeliveryFailed(f"{type(exc).__name__}: {exc}")
        duration_ms = int((time.perf_counter() - started) * 1000)
        await self._record(n, outcome, duration_ms)

    async def _claim(self, notification_id: str) -> Notification | None:
        claimed: list[Notification] = []

        def take(n: Notification) -> bool | None:
            if not n.claim(utcnow(), self.lease):
                return False
            claimed.append(n)
            return None

        current = await self.repo.change(notification_id, take)
        if not claimed and self.repo.open_work is not None:
            # Not due after all (another replica took it, or its summary outlived a crash
            # between the two writes): the summary follows the record, or it would be due
            # again at every sweep.
            await self.repo.open_work.record(current, current.version)
        return current if claimed else None  # as saved: `_record` changes it without a read

    async def _record(self, n: Notification, outcome: Delivered | DeliveryFailed,
                      duration_ms: int) -> None:
        policy = self.policies[n.channel]
        parked: list[bool] = []

        def record(current: Notification) -> None:
            now = utcnow()
            if isinstance(outcome, Delivered):
                current.delivered(now, outcome.detail, outcome.status_code, duration_ms)
            else:
                parked.append(current.failed(now, str(outcome), policy,
                                             permanent=outcome.permanent,
                                             status_code=outcome.status_code,
                                             duration_ms=duration_ms))

        # The outcome's event (`notification.sent`, or `notification.failed` once parked; none
        # for an attempt still retried) is written by this same update: the outbox publishes it.
        await self.repo.change(n.id, record, loaded=n)
        result = "sent" if isinstance(outcome, Delivered) else \
            "parked" if parked and parked[-1] else "failed"
        self.metrics.attempts.labels(n.channel.value, result).inc()
        if n.channel == ChannelName.WEBHOOK:
            self.metrics.webhooks.labels("delivered" if result == "sent" else result).inc()
        if result == "sent":
            log.info("%s %s to %s sent (%s)", n.channel.value, n.purpose, n.recipient, n.id)
        else:
            log.warning("%s %s to %s %s: %s", n.channel.value, n.purpose, n.recipient,
                        "parked" if result == "parked" else "failed, will retry", outcome)
        if result == "parked":
            self._gauge_at = 0.0

    async def _update_parked_gauge(self) -> None:
        if time.monotonic() - self._gauge_at < PARKED_GAUGE_EVERY_S:
            return
        self._gauge_at = time.monotonic()
        parked = await self.open_work.all({"status": NotificationStatus.PARKED.value},
                                          projection={"channel": 1})
        counts = Counter(doc["channel"] for doc in parked)
        for channel in ChannelName:
            self.metrics.parked.labels(channel.value).set(counts[channel.value])
