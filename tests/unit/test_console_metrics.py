"""The console's /metrics, /healthz and /readyz, as Prometheus and Kubernetes read them: the
same HTTP metrics as the five services (`shared.service.http_metrics`), labelled
service="console", so the dashboard's HTTP panel and the 5xx alert cover the console too."""

from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.console.app import create
from services.console.settings import Settings
from shared.auth import make_token
from shared.settings import DEV_JWT_SECRET

NOBODY_LISTENS = "http://127.0.0.1:9"  # the discard port: every service "down"


@pytest.fixture
async def console() -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(live=False, **{f"{s}_url": NOBODY_LISTENS for s in
                                       ("intake", "quality", "capa", "reporting", "notify")})
    app = create(settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://127.0.0.1:8000") as client:
        yield client


def requests_counted(text: str) -> dict[tuple[str, str, str], float]:
    """qms_http_requests_total of the console: (method, route, status) -> count."""
    counted = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "qms_http_requests_total":
                labels = sample.labels
                assert labels["service"] == "console"
                counted[labels["method"], labels["route"], labels["status"]] = sample.value
    return counted


async def test_console_metrics_count_requests_by_route_template_and_status(console):
    quality = make_token(DEV_JWT_SECRET, "li.wei", ["quality"], name="Li Wei")
    # What oauth2-proxy forwards: the person's access token, on every request.
    signed_in = {"X-Forwarded-Access-Token": quality}
    assert (await console.get("/signin")).status_code == 200
    # Quality's board with the quality service down: the person sees a 503 page...
    down = await console.get("/quality", headers=signed_in)
    assert down.status_code == 503
    # ...twice, and a case page by its route template, not its id.
    assert (await console.get("/quality", headers=signed_in)).status_code == 503
    assert (await console.get("/cases/FB-1", headers=signed_in)).status_code == 503

    scraped = await console.get("/metrics")
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    counted = requests_counted(scraped.text)
    assert counted[("GET", "/signin", "200")] == 1
    assert counted[("GET", "/quality", "503")] == 2  # the 5xx is counted, as Prometheus sees it
    assert counted[("GET", "/cases/{ref}", "503")] == 1
    assert not [key for key in counted if "FB-1" in key[1]], "routes are templates, not ids"
    assert "qms_http_request_seconds_bucket" in scraped.text


async def test_console_health_and_readiness_answer_like_the_services(console):
    health = await console.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "service": "console"}
    ready = await console.get("/readyz")
    assert ready.status_code == 200  # live updates off: nothing to wait for
    assert ready.json()["checks"] == {"broker": "off"}


async def test_signing_out_behind_the_auth_proxy_ends_the_proxys_session_too(console):
    """Signed in by oauth2-proxy, clearing the console's cookie alone would leave the person
    signed in: sign-out sends them to the proxy's own sign-out."""
    quality = make_token(DEV_JWT_SECRET, "li.wei", ["quality"], name="Li Wei")
    page = await console.get("/signin")
    csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    out = await console.post("/signout", data={"csrf": csrf},
                             headers={"X-Forwarded-Access-Token": quality})
    assert out.status_code == 303 and out.headers["location"].startswith("/oauth2/sign_out")
    dev = await console.post("/signout", data={"csrf": csrf})
    assert dev.status_code == 303 and dev.headers["location"] == "/signin"
