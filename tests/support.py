"""Helpers for tests: polling with a deadline (never bare sleeps), and checking HTTP answers."""

import asyncio
import importlib.util
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import httpx

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[1]


def load_script(relative: str, name: str) -> ModuleType:
    """A script of the repository (not a package module) loaded as a module, e.g.
    `deploy/rabbitmq/users.py`, under its own module name."""
    spec = importlib.util.spec_from_file_location(name, ROOT / relative)
    assert spec is not None and spec.loader is not None, f"no script at {relative}"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def eventually(check: Callable[[], Awaitable[T]], timeout: float = 20.0,
                     what: str = "condition", interval: float = 0.1) -> T:
    """Poll `check` until it returns something truthy; return that, or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def ok(resp: httpx.Response, status: int | tuple[int, ...] = (200, 201)) -> Any:
    """The JSON body of an accepted answer; fails naming the request and what came back."""
    expected = status if isinstance(status, tuple) else (status,)
    assert resp.status_code in expected, \
        f"{resp.request.method} {resp.request.url}: {resp.status_code} {resp.text}"
    return resp.json()


def refused(resp: httpx.Response, status: int) -> dict[str, Any]:
    """The `error` object of a refused answer, after checking its status."""
    assert resp.status_code == status, f"{resp.request.method} {resp.request.url}: " \
                                       f"expected {status}, got {resp.status_code} {resp.text}"
    return resp.json()["error"]


def is_kit_error(response: Any) -> bool:
    """The body is the kit's error shape, `{"error": {"code", "message", "details"}}` (an
    httpx or a schemathesis response)."""
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(error, dict) and isinstance(error.get("code"), str) \
        and isinstance(error.get("message"), str) and isinstance(error.get("details"), list)
