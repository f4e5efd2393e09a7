"""After the faults, through the public APIs: every acknowledged complaint is in intake's
and reporting's register exactly once, every acknowledged escalation has exactly one Quality
case, every acknowledged assignment exactly one action request, and no event was applied
twice (reporting's per-feedback event history and its monthly counters, the histories of
intake's, Quality's and capa's records, notify's notifications per event).

Each finding is attributed to the fault window its complaint was offered in."""

import asyncio
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.e2e.harness import System
from tests.faults.downstream import NOTIFIED
from tests.faults.load import STEP_EVENTS, UNIT, Story
from tests.support import ok

KEY = re.compile(r"\((load-[0-9a-f-]{36})\)")  # the story's key in the description


@dataclass
class Findings:
    lost: list[tuple[str, str]] = field(default_factory=list)  # (window, what)
    duplicated: list[tuple[str, str]] = field(default_factory=list)

    def count(self, times: int, allowed: set[int], story: Story, what: str) -> None:
        """`what` was found `times` times for `story`, and may be `allowed` times."""
        if times in allowed:
            return
        where = self.lost if times < min(allowed) else self.duplicated
        where.append((story.window, f"{story.register_no or story.key}: {what} x{times}"))

    def of(self, window: str) -> tuple[int, int]:
        return (sum(w == window for w, _ in self.lost),
                sum(w == window for w, _ in self.duplicated))


def allowed(story: Story, step: str) -> set[int]:
    """How many times a step's effect may exist: once when acknowledged; none or once when
    tried and never acknowledged (the answer may have been lost); none when never tried."""
    if step in story.acked:
        return {1}
    tried = {"register": True, "escalate": story.escalate, "assign": story.assign}[step]
    return {0, 1} if tried and story.abandoned else {0}


async def pages(http: httpx.AsyncClient, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every item of a paged list (its default period: the last 31 days, which hold the
    whole run in its own namespace)."""
    items: list[dict[str, Any]] = []
    page = 1
    while True:
        body = ok(await http.get(path, params=params | {"page": page, "page_size": 500}))
        items += body["items"]
        if not body["items"] or len(items) >= body["total"]:
            return items
        page += 1


async def _listed(http: httpx.AsyncClient, path: str) -> list[dict[str, Any]]:
    """A record's history; none when the record is not there (that is counted elsewhere)."""
    resp = await http.get(path)
    return [] if resp.status_code == 404 else ok(resp)


class Audit:
    def __init__(self, system: System, stories: list[Story], statistics: bool = True):
        self.system, self.statistics = system, statistics
        self.stories = [s for s in stories if s.fid or s.abandoned]
        self.by_fid = {s.fid: s for s in stories if s.fid}
        self.by_key = {s.key: s for s in stories}
        self.found = Findings()
        self.summary: dict[str, Any] = {}
        self.action_ids: dict[str, str] = {}
        # (form_arrived, action_requested) notifications of a story -> how many stories
        self.notifications: Counter[tuple[int, int]] = Counter()
        self._limit = asyncio.Semaphore(6)

    def _client(self, service: str) -> httpx.AsyncClient:
        return self.system.client(service, "auditor", sub="load.auditor")

    async def run(self) -> Findings:
        async with self._client("intake") as intake, self._client("quality") as quality, \
                self._client("capa") as capa, self._client("reporting") as reporting, \
                self._client("notify") as notify:
            await self._registers(intake, reporting)
            await self._cases_and_actions(quality, capa)
            await asyncio.gather(*(self._story(s, intake, quality, capa, reporting, notify)
                                   for s in self.stories if s.fid))
            if self.statistics:
                await self._statistics(reporting)
        return self.found

    def _by_key(self, items: Iterable[dict[str, Any]]) -> Counter[str]:
        return Counter(m.group(1) for i in items if (m := KEY.search(i.get("description") or "")))

    def _each(self, step: str, what: str, times: Callable[[Story], int]) -> None:
        for story in self.stories:
            self.found.count(times(story), allowed(story, step), story, what)

    async def _registers(self, intake: httpx.AsyncClient, reporting: httpx.AsyncClient) -> None:
        register = await pages(intake, "/feedback")
        rows = await pages(reporting, "/register")
        in_intake, in_reporting = self._by_key(register), self._by_key(rows)
        self._each("register", "in intake's register", lambda s: in_intake[s.key])
        self._each("register", "in reporting's register", lambda s: in_reporting[s.key])
        for number, times in Counter(i["register_no"] for i in register).items():
            if times > 1:
                story = self.by_fid.get(next(i["id"] for i in register
                                             if i["register_no"] == number))
                self.found.duplicated.append((story.window if story else "?",
                                              f"register number {number} given {times} times"))
        self.summary |= {"intake register": len(register), "reporting register": len(rows)}

    async def _cases_and_actions(self, quality: httpx.AsyncClient,
                                 capa: httpx.AsyncClient) -> None:
        cases = Counter(c["id"] for c in await pages(quality, "/cases"))
        actions = await pages(capa, "/actions")
        per_story = Counter(a["feedback_id"] for a in actions if a["unit"] == UNIT)
        self._each("escalate", "Quality case", lambda s: cases[s.fid or ""])
        self._each("assign", "action request", lambda s: per_story[s.fid or ""])
        self.action_ids = {a["feedback_id"]: a["id"] for a in actions}
        self.summary |= {"cases": sum(cases.values()), "action requests": len(actions)}

    async def _story(self, story: Story, *clients: httpx.AsyncClient) -> None:
        intake, quality, capa, reporting, notify = clients
        async with self._limit:
            events = await _listed(reporting, f"/register/{story.fid}/history")
            types = Counter(e["type"] for e in events)
            for step, names in STEP_EVENTS.items():
                for name in names:
                    self.found.count(types[name], allowed(story, step), story, f"event {name}")
            self._twice(story, "reporting applied", [e["id"] for e in events])
            histories = {"intake": (intake, f"/feedback/{story.fid}/history")}
            if story.fid in self.action_ids:
                histories["capa"] = (capa, f"/actions/{self.action_ids[story.fid]}/history")
            if "escalate" in story.acked:
                histories["quality"] = (quality, f"/cases/{story.fid}/history")
            for service, (http, path) in histories.items():
                entries = await _listed(http, path)
                self._twice(story, f"{service} applied",
                            [e["event_id"] for e in entries if e.get("event_id")])
            made = await pages(notify, "/notifications", feedback_id=story.fid)
            self._twice(story, "notify made", [n["id"] for n in made])
            purposes = Counter(f"notify:{n['purpose']}" for n in made)
            for step, purpose in NOTIFIED.items():
                self.found.count(min(purposes[purpose], 1), allowed(story, step), story, purpose)
            self.notifications[(purposes["notify:form_arrived"],
                                purposes["notify:action_requested"])] += 1

    def _twice(self, story: Story, what: str, ids: list[str]) -> None:
        for event_id, times in Counter(ids).items():
            if times > 1:
                self.found.duplicated.append((story.window, f"{story.register_no}: {what} "
                                                            f"{event_id} {times} times"))

    async def _statistics(self, reporting: httpx.AsyncClient) -> None:
        """Reporting's monthly counters (kept with $inc: an event applied twice counts twice)
        against the records found."""
        today = datetime.now(UTC)
        first, last = ((today + timedelta(days=d)).strftime("%Y-%m") for d in (-2, 2))
        table = ok(await reporting.get("/statistics/monthly", params={"from": first,
                                                                      "to": last}))
        registered = sum(1 for s in self.stories if "register" in s.acked)
        escalated = sum(1 for s in self.stories if "escalate" in s.acked)
        assigned = sum(1 for s in self.stories if "assign" in s.acked)
        by_unit = {r["key"]: r["feedbacks"] for r in table["counts"]["by_unit"]}
        counted = {"feedbacks": (table["counts"]["feedbacks"], registered),
                   "forms opened": (table["timeliness"]["forms_opened"], escalated),
                   f"feedbacks of unit {UNIT}": (by_unit.get(UNIT, 0), assigned)}
        self.summary["statistics (counted, acknowledged)"] = counted
        unacknowledged = sum(1 for s in self.stories if s.abandoned)
        for what, (n, acked) in counted.items():
            if n > acked + unacknowledged:
                self.found.duplicated.append(("?", f"monthly statistics count {n} {what} for "
                                                   f"{acked} acknowledged"))
            elif n < acked:
                self.found.lost.append(("?", f"monthly statistics count {n} {what} for "
                                             f"{acked} acknowledged"))


def by_window(stories: list[Story]) -> dict[str, list[Story]]:
    windows: dict[str, list[Story]] = defaultdict(list)
    for story in stories:
        windows[story.window].append(story)
    return windows
