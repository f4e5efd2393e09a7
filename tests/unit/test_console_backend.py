"""The console's calls to the services: a read survives a connection the service had just
closed and a brief 503, as a person reloading would; a write is never sent twice by it."""

import httpx
import pytest

from services.console.backend import ApiError, Backend


def backend(answers: list) -> tuple[Backend, list[str]]:
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer
    http = httpx.AsyncClient(transport=httpx.MockTransport(handle))
    return Backend(http, {"quality": "http://quality"}), seen


async def test_a_read_is_asked_again_after_a_closed_keep_alive_connection():
    api, seen = backend([httpx.RemoteProtocolError("Server disconnected"),
                         httpx.Response(200, json={"items": []})])
    assert await api.get("t", "quality", "/cases") == {"items": []}
    assert seen == ["GET", "GET"]


async def test_a_read_waits_out_a_brief_503_and_a_second_one_is_shown():
    busy = httpx.Response(503, headers={"Retry-After": "0"},
                          json={"error": {"code": "unavailable", "message": "busy"}})
    api, seen = backend([busy, httpx.Response(200, json={"ok": True})])
    assert await api.get("t", "quality", "/cases") == {"ok": True}
    api, seen = backend([busy, busy])
    with pytest.raises(ApiError) as refused:
        await api.get("t", "quality", "/cases")
    assert refused.value.status == 503 and seen == ["GET", "GET"]


async def test_a_write_is_never_sent_twice_by_the_console():
    api, seen = backend([httpx.RemoteProtocolError("Server disconnected")])
    with pytest.raises(ApiError) as refused:
        await api.send("t", "quality", "POST", "/cases/x/verification", {"accepted": True})
    assert refused.value.status == 503 and seen == ["POST"]
