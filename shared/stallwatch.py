"""The consumer's watchdog: an event handled for too long says so, with where it waits.

A handler that never finishes (a lock its own task holds, an await on something that never
answers) stops its queue: the consumer's other deliveries wait unacked behind it, and
nothing fails, so nothing is logged (issue 12: reporting's queue stalled this way). The
consumer notes each event it is handling (`InFlight`); `StallWatch` exports the age of the
oldest (`qms_event_handling_oldest_seconds`, 0 when idle: the alert
`QmsEventHandlingStuck`) and, once an event has been handled `stall_after_s`, logs it at
ERROR with its handler's await chain (`shared.taskdump`) and counts it
(`qms_event_handling_stalls_total`). It only reports: a restart redelivers the event.
"""

import asyncio
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

from shared.taskdump import await_chain

log = logging.getLogger("qms.stallwatch")


@dataclass
class Handling:
    message_id: str
    event_type: str
    started: float  # time.monotonic()
    task: asyncio.Task | None
    reported: bool = False

    def age(self, now: float) -> float:
        return now - self.started


class InFlight:
    """The events a consumer is handling now."""

    def __init__(self) -> None:
        self._now: dict[int, Handling] = {}

    @contextmanager
    def handling(self, message_id: str, event_type: str) -> Iterator[None]:
        entry = Handling(message_id, event_type, time.monotonic(), asyncio.current_task())
        self._now[id(entry)] = entry
        try:
            yield
        finally:
            self._now.pop(id(entry), None)

    def oldest_age(self) -> float:
        now = time.monotonic()
        return max((h.age(now) for h in self._now.values()), default=0.0)

    def overdue(self, after_s: float) -> list[Handling]:
        """Those handled `after_s` or longer and not reported yet."""
        now = time.monotonic()
        return [h for h in self._now.values() if not h.reported and h.age(now) >= after_s]


class StallWatch:
    def __init__(self, service: str, in_flight: InFlight, registry: CollectorRegistry,
                 after_s: float):
        self.service = service
        self.in_flight = in_flight
        self.after_s = after_s
        oldest = Gauge("qms_event_handling_oldest_seconds", "How long the event this process "
                       "has been handling longest is in its handler (0: none)", ["service"],
                       registry=registry)
        oldest.labels(service).set_function(in_flight.oldest_age)
        self.stalls = Counter("qms_event_handling_stalls_total", "Events handled longer than "
                              "the stall threshold (each logged once with its await chain)",
                              ["service"], registry=registry)
        self.stalls.labels(service)  # exported at 0 from the start

    def check(self) -> int:
        """Report each event newly past the threshold; how many."""
        overdue = self.in_flight.overdue(self.after_s)
        now = time.monotonic()
        for h in overdue:
            h.reported = True
            self.stalls.labels(self.service).inc()
            chain = "\n".join(f"    {step}" for step in await_chain(h.task)) if h.task else ""
            log.error("%s has been handling event %s (%s) for %.0f s, its queue waiting behind "
                      "it; the handler waits at:\n%s", self.service, h.message_id,
                      h.event_type, h.age(now), chain or "    (unknown)")
        return len(overdue)

    async def run(self) -> None:
        interval = min(5.0, self.after_s / 2)  # reported at most half a threshold late
        while True:
            await asyncio.sleep(interval)
            self.check()
