"""Issue 12, "fuzzing in `make test` … the console's forms too": every form the console accepts,
posted by every role with hostile field values and path parts, never gets a server error.

The console has no OpenAPI (it serves HTML forms), so the forms are found in its own code: every
POST route of the app, and every field name its pages read from a form (`text(form, "…")`,
`form.get("…")`, `form.getlist("…")`). Each route is posted, for each role, a few forms built from
those fields with values chosen to break naive code (huge numbers, dates at the edges, markup,
control characters, 100 KB of text), through the real console and the five real services.

Derandomized: the same seed gives the same requests each run; the run fails naming each request
that got a 5xx. Also: a post without the CSRF token is refused with 403, whatever else it carries.
"""

import random
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from starlette.routing import BaseRoute, Route

from services.console.app import create as create_console
from services.console.settings import Settings as ConsoleSettings
from tests.e2e.flow import Flow
from tests.e2e.harness import Actors, System

ROOT = Path(__file__).resolve().parents[2]
FORMS_PER_ROLE = 24
ROLES = (("Wang Fang", "sales", ""), ("Li Wei", "quality", ""), ("Liu Gang", "unit", "production"),
         ("Chen Jie", "manager", ""), ("Zhou Yu", "auditor", ""), ("Ops Bot", "ops", ""))
HOSTILE = ["", " ", "0", "-1", "1e309", "9" * 40, "NaN", "-0.0", "2026-13-45", "0001-01-01",
           "9999-12-31T23:59:59+14:00", "0000-00", "２０２６-01", "yes", "no", "true", "on",
           "<script>alert(1)</script>", "'\"; DROP TABLE x; --", "\x00\x01\x7f", "中文描述 ✓",
           "😀" * 50, "../../etc/passwd", "%00", "x" * 100_000, "C-1001", "production",
           "phone", "product_quality", "critical", "D03", "CNY", "zh", "en", "/", "//evil.example"]
BAD_PARTS = ["x", "CF-2026-999999", "00000000-0000-0000-0000-000000000000", "%2e%2e", "中",
             "a" * 300]

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
pytestmark = [pytest.mark.timeout(600)]


def console_form_fields() -> list[str]:
    """Every field name the console's pages read from a posted form."""
    source = "\n".join(p.read_text() for p in (ROOT / "services" / "console").glob("*.py"))
    found = re.findall(r"""(?:text|number|texts|flag)\(form,\s*["']([a-z_]+)["']""", source)
    found += re.findall(r"""form\.(?:get|getlist)\(\s*["']([a-z_]+)["']""", source)
    return sorted(set(found) - {"csrf"})


def console_post_routes() -> list[str]:
    def walk(routes: list[BaseRoute]) -> Iterator[Route]:
        for route in routes:
            if isinstance(route, Route):
                yield route
            elif (included := getattr(route, "original_router", None)) is not None:
                yield from walk(included.routes)  # FastAPI keeps an included router as one
    app = create_console(ConsoleSettings(live=False))
    return sorted(r.path for r in walk(app.routes) if "POST" in (r.methods or set()))


def hostile_form(rng: random.Random, fields: list[str], csrf: str) -> list[tuple[str, str]]:
    form = [("csrf", csrf)]
    for name in fields:
        if rng.random() < 0.6:
            form += [(name, rng.choice(HOSTILE)) for _ in range(rng.choice((1, 1, 2)))]
    return form


def fill(path: str, rng: random.Random, real: dict[str, list[str]]) -> str:
    """The route's path with its parts filled: mostly real ids, sometimes garbage."""
    def part(match: re.Match[str]) -> str:
        name = match.group(1)
        pool = real.get(name, []) if rng.random() < 0.7 else []
        return rng.choice(pool or BAD_PARTS)
    return re.sub(r"\{([a-z_]+)\}", part, path)


async def signed_in(base: str, name: str, role: str, unit: str) -> tuple[httpx.AsyncClient, str]:
    """A browser-like client signed in through the development sign-in, and its CSRF token."""
    client = httpx.AsyncClient(base_url=base, timeout=60, follow_redirects=False,
                               headers={"Accept-Language": "en"})
    page = await client.get("/signin")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf, "the sign-in page carries a CSRF token"
    done = await client.post("/signin", data={"csrf": csrf.group(1), "name": name,
                                              "role": role, "unit": unit})
    assert done.status_code == 303, (done.status_code, done.text[:300])
    return client, csrf.group(1)


async def test_console_forms_never_answer_a_server_error(console_system: System,
                                                         actors: Actors):
    flow = Flow(actors)
    fresh = await flow.register()  # a feedback Sales has not decided on yet
    fb = await flow.register()
    await flow.escalate(fb["id"])
    assigned = await flow.assign(fb["id"], ["production"])
    actions = [entry["action_id"] for entry in assigned["responsible_units"]]
    await flow.propose(actions[0], "production")  # countermeasures waiting for Quality
    real = {"ref": [fresh["id"], fb["id"], fb["register_no"]],
            "step": ["escalate", "direct-reply", "reply", "return-to-quality", "satisfaction"],
            "action_id": actions}
    fields, routes = console_form_fields(), console_post_routes()
    assert len(routes) >= 8 and len(fields) >= 10, (routes, fields)
    rng = random.Random(20261207)
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    base = console_system.url("console")
    for name, role, unit in ROLES:
        client, csrf = await signed_in(base, name, role, unit)
        try:
            for path in routes:
                if path in ("/signout", "/signin"):
                    continue  # they would end this client's session; posted once below
                for attempt in range(FORMS_PER_ROLE):
                    target, form = fill(path, rng, real), hostile_form(rng, fields, csrf)
                    resp = await client.post(target, content=urlencode(form), headers=FORM)
                    statuses[resp.status_code] += 1
                    if resp.status_code >= 500:
                        failures.append(f"{role} POST {target} {dict(form)!r:.300} -> "
                                        f"{resp.status_code}")
                    if attempt == 0 and resp.status_code == 403:
                        break  # not this role's form: its refusal does not depend on the fields
            refused = await client.post(routes[0], data={"name": "x"})
            assert refused.status_code == 403, "a form without its CSRF token is refused"
            out = await client.post("/signout", data={"csrf": csrf})
            assert out.status_code < 500
        finally:
            await client.aclose()
    print(f"console fuzz: {statuses.total()} posts over {len(routes)} routes and {len(fields)} "
          f"fields; answers {dict(sorted(statuses.items()))}")
    assert not failures, "server errors:\n" + "\n".join(failures)
