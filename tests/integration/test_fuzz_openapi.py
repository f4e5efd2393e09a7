"""Issue 12, "the project's own proof": schemathesis over each service's OpenAPI, in `make test`.

Each of intake, quality, capa, reporting and notify runs in-process (ASGI) on the real broker and
database, in a namespace of its own. Every operation is sent a few generated requests with a
valid token holding the roles the operation admits (its `x-roles`), and one request each with
no token and with a broken one. The run fails, naming each request, when any answer is a 5xx,
when a 2xx breaks the schema the operation documents, or when a 4xx is not the kit's error shape
`{"error": {"code", "message", "details"}}`, or when a request without a valid token is let in.

Every status an operation answers must be listed in its document (`shared.openapi_errors`
lists each refusal with the error shape); 2xx bodies are checked against their schema by
schemathesis' `response_schema_conformance`, 4xx bodies against the kit's shape here (the
conformance check cannot read back the streamed body of an upload). Not checked: the console
(HTML forms).

Bounded: few examples per operation, derandomized (the same requests every run), no example
database, no shrinking, and nothing leaves 127.0.0.1 (the apps are called through
httpx.ASGITransport; notify's SMTP and inbound mail are off or local).
"""

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from services.capa.app import create as create_capa
from services.capa.settings import Settings as CapaSettings
from services.intake.app import create as create_intake
from services.intake.settings import Settings as IntakeSettings
from services.notify.app import create as create_notify
from services.notify.settings import Settings as NotifySettings
from services.quality.app import create as create_quality
from services.quality.settings import Settings as QualitySettings
from services.reporting.app import create as create_reporting
from services.reporting.settings import Settings as ReportingSettings
from shared.auth import make_token
from shared.service import Service
from tests.conftest import infra_settings, test_namespace
from tests.support import is_kit_error

pytestmark = [pytest.mark.infra, pytest.mark.timeout(180),
              # schemathesis' own strategies, not ours; the run is still derandomized
              pytest.mark.filterwarnings("ignore:Do not use the `random` module")]

EXAMPLES = 4         # generated requests per operation with a valid token: schema-valid ones
INVALID = 3          # and ones that break the schema (a wrong type, a missing field, ...)
UNAUTHENTICATED = 1  # per operation, with no token and with a broken one
BASE = "http://svc"
STATUSES: dict[int, int] = {}  # answers seen, printed per service (pytest -s shows them)

# Operations not fuzzed, and why (each a known bug with its issue, or a side effect).
SKIP: dict[tuple[str, str, str], str] = {}


def _apps(tmp_path) -> dict[str, Callable[[str], Any]]:
    return {
        "intake": lambda ns: create_intake(IntakeSettings(
            infra=infra_settings(ns), attachment_dir=tmp_path / "attachments")),
        "quality": lambda ns: create_quality(QualitySettings(
            infra=infra_settings(ns), sla_check_interval_s=3600)),
        "capa": lambda ns: create_capa(CapaSettings(infra=infra_settings(ns))),
        "reporting": lambda ns: create_reporting(ReportingSettings(
            infra=infra_settings(ns), gauges_refresh_interval_s=3600)),
        "notify": lambda ns: create_notify(NotifySettings(
            infra=infra_settings(ns), smtp_host="127.0.0.1", smtp_timeout_s=2,
            inbound_enabled=False, attachment_dir=tmp_path / "notify")),
    }


def _httpx_kwargs(kw: dict[str, Any]) -> dict[str, Any]:
    """The requests-style arguments schemathesis serializes a case into, for httpx."""
    out = {k: kw[k] for k in ("method", "url", "headers", "params", "json", "files")
           if kw.get(k) is not None}
    if kw.get("cookies"):  # none documented; httpx takes them only per client
        out["headers"] = {**out.get("headers", {}),
                          "Cookie": "; ".join(f"{k}={v}" for k, v in kw["cookies"].items())}
    data = kw.get("data")
    if isinstance(data, (bytes, str)):
        out["content"] = data
    elif data is not None:
        out["data"] = data
    return out


def _describe(kw: dict[str, Any], response: httpx.Response | None) -> str:
    sent = {k: v for k, v in kw.items() if k in ("params", "json", "content", "data")}
    body = "" if response is None else f" -> {response.status_code} {response.text[:300]}"
    return f"{kw['method']} {kw['url']} {json.dumps(sent, default=repr)[:500]}{body}"


def _check(case: Any, mode: str, authorization: str | None,
           send: Callable[[dict[str, Any]], httpx.Response]) -> str | None:
    """Send one generated request; what is wrong with the answer, naming the request."""
    headers = {"Authorization": authorization} if authorization else None
    kw = _httpx_kwargs(case.as_transport_kwargs(base_url=BASE, headers=headers))
    if authorization is None:
        kw.get("headers", {}).pop("Authorization", None)
    response = send(kw)
    STATUSES[response.status_code] = STATUSES.get(response.status_code, 0) + 1
    what = f"[{mode}] {_describe(kw, response)}"
    if response.status_code >= 500:
        return f"server error: {what}"
    if mode in ("none", "broken") and response.status_code != 401:
        return f"not refused with 401: {what}"
    if response.status_code >= 400 and not is_kit_error(response):
        return f"4xx not in the kit's error shape: {what}"
    documented = case.operation.definition.raw.get("responses", {})
    if str(response.status_code) not in documented and "default" not in documented:
        return f"answered a status its document does not list: {what}"
    if response.status_code < 300:  # 4xx: the kit's shape, checked above
        try:
            case.validate_response(response, checks=[not_a_server_error,
                                                     response_schema_conformance])
        except AssertionError as exc:  # schemathesis' failure group
            return (f"breaks the documented schema: {what}\n    "
                    + str(exc).strip().replace("\n", "\n    ")[:800])
    return None


def _once(mode: str, authorization: str | None,
          send: Callable[[dict[str, Any]], httpx.Response], found: list[str],
          sent: list[int]) -> Callable[[Any], None]:
    def once(case: Any) -> None:
        sent.append(1)
        if (problem := _check(case, mode, authorization, send)) is not None:
            found.append(problem)
    return once


def _fuzz(name: str, schema: Any, secret: str,
          send: Callable[[dict[str, Any]], httpx.Response], failures: list[str]) -> int:
    """Every operation, each auth mode; returns how many requests were sent."""
    sent: list[int] = []  # one entry per request
    for result in schema.get_all_operations():
        operation = result.ok()
        if (name, operation.method.upper(), operation.path) in SKIP:
            continue
        roles = operation.definition.raw.get("x-roles")
        good, bad = GenerationMode.POSITIVE, GenerationMode.NEGATIVE
        modes: list[tuple[str, str | None, int, GenerationMode]] = [
            ("open", None, EXAMPLES, good), ("open-invalid", None, INVALID, bad)]
        if roles:
            bearer = f"Bearer {make_token(secret, 'fuzz.er', list(roles), unit='rd')}"
            modes = [("valid", bearer, EXAMPLES, good), ("invalid", bearer, INVALID, bad),
                     ("none", None, UNAUTHENTICATED, good),
                     ("broken", "Bearer not.a.token", UNAUTHENTICATED, good)]
        for mode, authorization, examples, generation in modes:
            found: list[str] = []
            once = _once(mode, authorization, send, found, sent)
            try:
                settings(max_examples=examples, derandomize=True, database=None, deadline=None,
                         phases=[Phase.explicit, Phase.generate],
                         suppress_health_check=list(HealthCheck))(
                    given(case=operation.as_strategy(generation_mode=generation))(once))()
            except Unsatisfiable:
                assert generation is bad  # an operation without parameters has none to break
            failures += found[:3]  # a few per operation and mode are enough to name it
    return len(sent)


SERVICES = ("intake", "quality", "capa", "reporting", "notify")


@pytest.mark.parametrize("name", SERVICES)
async def test_no_request_gets_a_server_error_or_breaks_the_documented_schema(name, tmp_path):
    app = _apps(tmp_path)[name](test_namespace(f"fz{name[:3]}{uuid.uuid4().hex[:4]}"))
    service: Service = app.state.service
    loop = asyncio.get_running_loop()
    await service.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE,
                                     timeout=30) as http:
            def send(kw: dict[str, Any]) -> httpx.Response:
                # Hypothesis drives from a worker thread; the app answers on this loop, where
                # its database and broker connections live.
                request = http.build_request(**kw)
                request.read()  # a multipart body streams: read, so a check can show it
                return asyncio.run_coroutine_threadsafe(http.send(request), loop).result(60)

            schema = schemathesis.openapi.from_dict(app.openapi())
            failures: list[str] = []
            secret = service.settings.infra.jwt_secret.get_secret_value()
            sent = await asyncio.to_thread(_fuzz, name, schema, secret, send, failures)
    finally:
        await service.stop()
    print(f"\n{name}: {sent} requests, answers {dict(sorted(STATUSES.items()))}")
    STATUSES.clear()
    assert sent > 0
    assert not failures, f"{len(failures)} failing request(s) to {name}:\n" + "\n".join(failures)
