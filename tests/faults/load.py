"""A steady load through the choreography, made as real clients make it.

Sales registers complaints at a steady rate (open loop: a slow answer does not slow the
offer), escalates every second one to Quality, and Quality assigns the responsible unit
for every fourth once its case has arrived. On a lost connection or a 5xx a client sends the
same request again, a registration with the same Idempotency-Key, until it has an answer
(or its patience runs out: then the story is *abandoned*, and says where). Every 2xx is
recorded with when it came: what was acknowledged is what must never be lost.
"""

import asyncio
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.e2e.flow import feedback_body, new_customer
from tests.e2e.harness import System

# What each acknowledged step must make happen downstream, as events of the complaint's
# story (reporting keeps every event of a feedback: GET /register/{id}/history).
STEP_EVENTS: dict[str, tuple[str, ...]] = {
    "register": ("feedback.registered",),
    "escalate": ("complaint.escalated", "complaint.accepted"),
    "assign": ("complaint.responsibility_assigned", "action.requested"),
}
UNIT = "production"
RETRIED = (500, 502, 503, 504)


@dataclass
class Story:
    """One complaint the load carries, and what the system acknowledged of it."""

    n: int
    key: str  # the Idempotency-Key, also written into the description to find the record
    window: str  # the fault (or warm-up) during which it was offered
    escalate: bool
    assign: bool
    fid: str | None = None
    register_no: str | None = None
    acked: dict[str, float] = field(default_factory=dict)  # step -> monotonic time of the 2xx
    abandoned: str | None = None

    def expected(self, until: float = float("inf")) -> set[str]:
        """The events the steps acknowledged by `until` must have produced."""
        return {e for step, at in self.acked.items() if at <= until for e in STEP_EVENTS[step]}


class Client:
    """One person's HTTP client: the same request again on a lost connection or a 5xx,
    waiting as `Retry-After` says (at most 2 s), for up to `patience` seconds."""

    def __init__(self, http: httpx.AsyncClient, load: "Load"):
        self.http, self.load = http, load

    async def send(self, method: str, url: str, **kw: Any) -> tuple[httpx.Response | None, int]:
        """The first answer that is not a server error, and how many attempts it took."""
        give_up = time.monotonic() + self.load.patience
        attempt, delay = 0, 0.3
        while True:
            attempt += 1
            wait = delay
            try:
                resp = await self.http.request(method, url, **kw)
                if resp.status_code not in RETRIED:
                    return resp, attempt
                self.load.count(f"{resp.status_code} answered")
                self.load.server_errors.append(f"{self.load.window}: {method} {url} answered "
                                               f"{resp.status_code} {resp.text[:200]}")
                wait = min(float(resp.headers.get("Retry-After") or delay), 2.0)
            except httpx.TransportError:
                self.load.count("connection failed")
            if time.monotonic() + wait > give_up:
                return None, attempt
            await asyncio.sleep(wait)
            delay = min(delay * 2, 2.0)


class Load:
    def __init__(self, system: System, rate: float = 2.0, patience: float = 180,
                 max_in_flight: int = 400):
        self.rate, self.patience, self.max_in_flight = rate, patience, max_in_flight
        self.sales = Client(system.client("intake", "sales", sub="load.sales"), self)
        self.quality = Client(system.client("quality", "quality", sub="load.quality"), self)
        self.customers = [new_customer() for _ in range(20)]
        self.stories: list[Story] = []
        self.window = "warm-up"
        self.answers: dict[str, Counter[str]] = defaultdict(Counter)  # window -> what happened
        self.server_errors: list[str] = []  # each 5xx a client was given, and where
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self._offering: asyncio.Task | None = None

    def count(self, what: str) -> None:
        self.answers[self.window][what] += 1

    def start(self) -> None:
        self._offering = asyncio.create_task(self._offer(), name="load-offer")

    async def stop(self) -> None:
        """Stop offering; wait for the stories under way to finish (within their patience)."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._offering is not None:
            await self._offering
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for client in (self.sales, self.quality):
            await client.http.aclose()

    async def _offer(self) -> None:
        started, n = time.monotonic(), 0
        while not self._stop.is_set():
            due = started + n / self.rate
            if (wait := due - time.monotonic()) > 0:
                try:  # a steady rate, and a prompt stop
                    await asyncio.wait_for(self._stop.wait(), timeout=wait)
                    return
                except TimeoutError:
                    pass
            if len(self._tasks) >= self.max_in_flight:
                self.count("not offered: too many in flight")
            else:
                story = Story(n=n, key=f"load-{uuid.uuid4()}", window=self.window,
                              escalate=n % 2 == 0, assign=n % 4 == 0)
                self.stories.append(story)
                task = asyncio.create_task(self._carry(story), name=f"load-{n}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            n += 1

    async def _carry(self, story: Story) -> None:
        try:
            if await self._register(story) and story.escalate and await self._escalate(story) \
                    and story.assign:
                await self._assign(story)
        except Exception as exc:  # noqa: BLE001 - a bug of the load itself: said, not hidden
            story.abandoned = f"load error: {exc!r}"

    async def _register(self, story: Story) -> bool:
        body = feedback_body(self.customers[story.n % len(self.customers)],
                             description=f"Housings crack at the mounting boss ({story.key})")
        resp, _ = await self.sales.send("POST", "/feedback", json=body,
                                        headers={"Idempotency-Key": story.key})
        if resp is None or resp.status_code not in (200, 201):
            story.abandoned = f"register: {_said(resp)}"
            return False
        got = resp.json()
        story.fid, story.register_no = got["id"], got["register_no"]
        story.acked["register"] = time.monotonic()
        return True

    async def _escalate(self, story: Story) -> bool:
        resp, attempts = await self.sales.send("POST", f"/feedback/{story.fid}/escalate",
                                               json={"note": "Please analyse"})
        if resp is not None and resp.status_code == 409 and attempts > 1:
            # An earlier attempt went through and its answer was lost: look, as a person would.
            seen, _ = await self.sales.send("GET", f"/feedback/{story.fid}")
            if seen is not None and seen.status_code == 200 \
                    and seen.json()["status"] != "registered":
                resp = seen
        if resp is None or resp.status_code != 200:
            story.abandoned = f"escalate: {_said(resp)}"
            return False
        story.acked["escalate"] = time.monotonic()
        return True

    async def _assign(self, story: Story) -> None:
        give_up = time.monotonic() + self.patience
        while True:  # Quality works on the case once it has arrived
            case, _ = await self.quality.send("GET", f"/cases/{story.fid}")
            if case is not None and case.status_code == 200:
                break
            if time.monotonic() > give_up or (case is not None and case.status_code != 404):
                story.abandoned = f"assign: the case never arrived ({_said(case)})"
                return
            await asyncio.sleep(0.5)
        resp, attempts = await self.quality.send(
            "POST", f"/cases/{story.fid}/responsibility",
            json={"preliminary_cause": "Porosity at the boss from a worn die",
                  "defect_code": "D03",
                  "units": [{"unit": UNIT, "request": "Find the root cause and contain"}]})
        if resp is not None and resp.status_code == 409 and attempts > 1:
            seen, _ = await self.quality.send("GET", f"/cases/{story.fid}")
            if seen is not None and seen.status_code == 200 \
                    and seen.json()["responsible_units"]:
                resp = seen
        if resp is None or resp.status_code != 200:
            story.abandoned = f"assign: {_said(resp)}"
            return
        story.acked["assign"] = time.monotonic()


def _said(resp: httpx.Response | None) -> str:
    if resp is None:
        return "no answer but server errors and lost connections"
    return f"{resp.status_code} {resp.text[:300]}"
