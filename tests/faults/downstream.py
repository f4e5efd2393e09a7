"""What the ends of the choreography have seen of each story: the events reporting keeps for
the feedback (GET /register/{id}/history: every service's events reach it) and the
notifications notify made of them. A story has caught up once both hold everything its
acknowledged steps must have caused."""

import asyncio
import time
from collections import defaultdict

import httpx

from tests.e2e.harness import System
from tests.faults.load import Story
from tests.support import ok

# Notify's part: the e-mail each acknowledged step makes (services/notify/rules.py).
NOTIFIED = {"escalate": "notify:form_arrived", "assign": "notify:action_requested"}


def expected(story: Story, until: float = float("inf")) -> set[str]:
    return story.expected(until) | {NOTIFIED[step] for step, at in story.acked.items()
                                    if at <= until and step in NOTIFIED}


class Downstream:
    def __init__(self, system: System, concurrency: int = 6):
        self.reporting = system.client("reporting", "auditor", sub="load.auditor")
        self.notify = system.client("notify", "auditor", sub="load.auditor")
        self.seen: dict[int, set[str]] = defaultdict(set)  # story -> events and notifications
        self._limit = asyncio.Semaphore(concurrency)

    async def aclose(self) -> None:
        await self.reporting.aclose()
        await self.notify.aclose()

    def missing(self, story: Story, until: float = float("inf")) -> set[str]:
        return expected(story, until) - self.seen[story.n] if story.fid else set()

    async def _look(self, story: Story, until: float) -> None:
        async with self._limit:
            try:
                events = await self.reporting.get(f"/register/{story.fid}/history")
                if events.status_code == 200:
                    self.seen[story.n] |= {e["type"] for e in events.json()}
                if any(m.startswith("notify:") for m in self.missing(story, until)):
                    page = ok(await self.notify.get("/notifications", params={
                        "feedback_id": story.fid, "page_size": 100}))
                    self.seen[story.n] |= {f"notify:{n['purpose']}" for n in page["items"]}
            except (httpx.TransportError, AssertionError):
                pass  # down for the moment: asked again on the next round

    async def outstanding(self, stories: list[Story], until: float) -> list[Story]:
        """The stories still missing something their steps acknowledged by `until` caused."""
        behind = [s for s in stories if self.missing(s, until)]
        await asyncio.gather(*(self._look(s, until) for s in behind))
        return [s for s in behind if self.missing(s, until)]

    async def caught_up(self, stories: list[Story], until: float,
                        timeout: float) -> float | None:
        """When (monotonic) everything acknowledged by `until` had been seen downstream;
        None when it had not after `timeout` (`missing` says what)."""
        deadline = time.monotonic() + timeout
        while await self.outstanding(stories, until):
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.5)
        return time.monotonic()
