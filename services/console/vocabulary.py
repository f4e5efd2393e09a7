"""The services' word lists (`GET /vocabulary` of each), kept for a short while.

Every choice a form offers (units, defect codes, categories, channels, severities,
dispositions, root-cause categories) and every status a page shows is a code; its label in
Chinese and English is the owning service's (`shared.wordlists`, quality's settings). The
console reads each service's `/vocabulary` at most once per `ttl_s` (configuration changes
rarely), with whichever token the page has; a service that does not answer leaves its last
lists in place and is asked again a little later.
"""

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from services.console.backend import ApiError, Backend

log = logging.getLogger("qms.console.vocabulary")
RETRY_S = 5.0  # a service that did not answer is asked again after this long

# list name -> code -> language tag ("zh-Hans", "en") -> label
Lists = dict[str, dict[str, dict[str, str]]]


class Vocabularies:
    def __init__(self, backend: Backend, services: list[str], ttl_s: float,
                 clock: Any = time.monotonic):
        self.backend = backend
        self.services = services
        self.ttl_s = ttl_s
        self.clock = clock
        self.by_service: dict[str, Lists] = {}
        self.expires: dict[str, float] = {}
        self.lock = asyncio.Lock()

    def lists(self) -> Lists:
        """Every list the services gave (a list several serve, e.g. `categories`, is the same
        on each: the first service's wins)."""
        merged: Lists = {}
        for service in self.services:
            for name, words in self.by_service.get(service, {}).items():
                merged.setdefault(name, words)
        return merged

    async def fresh(self, token: str | None) -> Lists:
        """The lists, asking the services whose lists are older than `ttl_s`."""
        now = self.clock()
        stale = [s for s in self.services if self.expires.get(s, 0.0) <= now]
        if stale and token:
            async with self.lock:
                now = self.clock()
                stale = [s for s in self.services if self.expires.get(s, 0.0) <= now]
                answers = await asyncio.gather(*(self._ask(token, s) for s in stale))
                for service, lists in zip(stale, answers, strict=True):
                    if lists is None:
                        self.expires[service] = now + min(RETRY_S, self.ttl_s)
                    else:
                        self.by_service[service] = lists
                        self.expires[service] = now + self.ttl_s
        return self.lists()

    async def _ask(self, token: str, service: str) -> Lists | None:
        try:
            answer = await self.backend.get(token, service, "/vocabulary")
            return parse(answer)
        except (ApiError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("no word lists from %s: %s", service, exc)
            return None


def parse(answer: Mapping[str, Any]) -> Lists:
    """`{"lists": {name: [{"code", "labels": {lang: label}}]}}` -> name -> code -> labels,
    in the order the service gives."""
    return {str(name): {str(w["code"]): {str(k): str(v) for k, v in w["labels"].items()}
                        for w in words}
            for name, words in answer["lists"].items()}
