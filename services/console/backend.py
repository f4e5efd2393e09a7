"""The five services' public HTTP APIs, called with the signed-in person's own token."""

import asyncio
from typing import Any

import httpx

IDEMPOTENT = frozenset({"GET", "HEAD"})
RETRY_MAX_S = 2.0  # the longest a page waits for a service's Retry-After before asking again


def _seconds(retry_after: str | None) -> float:
    try:
        return max(0.0, float(retry_after or 1))
    except ValueError:
        return 1.0


class ApiError(Exception):
    """A service refused (4xx) or failed (5xx): its error code, message and field details."""

    def __init__(self, status: int, code: str, message: str,
                 details: list[dict[str, Any]] | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.details = details or []

    @property
    def fields(self) -> list[str]:
        """The fields a 422 names (`body.customer.name` -> `customer.name`)."""
        return [str(d.get("loc", "")).removeprefix("body.") for d in self.details]


class Backend:
    def __init__(self, http: httpx.AsyncClient, urls: dict[str, str]):
        self.http = http
        self.urls = urls

    async def raw(self, token: str, service: str, method: str, path: str,
                  **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} | kw.pop("headers", {})
        # A read is asked once more when the connection failed before an answer (a pooled
        # keep-alive connection the service had just closed) or the service was briefly
        # unavailable (503: its database busy or restarting); a write is the person's to
        # send again, never ours.
        tries = 2 if method in IDEMPOTENT else 1
        for attempt in range(1, tries + 1):
            try:
                resp = await self.http.request(method, self.urls[service] + path,
                                               headers=headers, **kw)
            except httpx.TransportError as exc:
                if attempt < tries and not isinstance(exc, httpx.TimeoutException):
                    continue
                raise ApiError(503, "unavailable", f"{service} is unreachable: {exc}") from exc
            if resp.status_code == 503 and attempt < tries:
                await asyncio.sleep(min(_seconds(resp.headers.get("Retry-After")), RETRY_MAX_S))
                continue
            break
        if resp.status_code >= 400:
            try:
                error = resp.json()["error"]
                raise ApiError(resp.status_code, str(error.get("code", "error")),
                               str(error.get("message", "")), error.get("details"))
            except (ValueError, KeyError, TypeError, AttributeError):
                raise ApiError(resp.status_code, "internal" if resp.status_code >= 500
                               else "error", resp.text[:500]) from None
        return resp

    async def get(self, token: str, service: str, path: str, **params: Any) -> Any:
        return (await self.raw(token, service, "GET", path, params=params)).json()

    async def send(self, token: str, service: str, method: str, path: str,
                   body: Any = None, **kw: Any) -> Any:
        resp = await self.raw(token, service, method, path, json=body, **kw)
        return resp.json() if resp.content else None
