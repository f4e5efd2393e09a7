"""Issue 12, stateful: schemathesis' state machine over each service, on the whole system.

`test_fuzz_openapi` sends single requests, so a path id is random and almost every request to
`/feedback/{ref}/...`, `/cases/{ref}/...` or `/capas/{ref}/...` ends in a 404 before it reaches
the code that matters. Here schemathesis (`schema.as_state_machine()`) runs sequences of calls
in which a later call takes what an earlier one answered: the feedback `POST /feedback` created
is classified, escalated, replied to, given samples and a satisfaction rating; a CAPA
`POST /capas` opened gets its root cause, plan, owner and effectiveness; a case and an action
request that exist get their responsibility, verification and items.

The chains follow OpenAPI links. The services' documents have none, so the test adds them to
its copy of each document (`LINKS`): every answer that carries a resource (the resource itself,
or a page of them) links to every operation under that resource's path, with the id in the
path, so chains go on (create, then classify, then escalate, ...). A few links carry a second
value (an attachment's sha256, a revision's number, a delivery's id) with the first taken from
the request (`$request.path.ref`). schemathesis' own link inference is off: the links are the
ones listed here, nothing else.

The five services run as processes (tests/e2e/harness.py `System`), so events flow: before the
machines run, a few complaints are taken through the procedure (registered, escalated,
assigned to a unit, proposed, verified), so Quality has cases, CAPA has action requests and
Reporting has register rows to start from. Those services' chains start from their lists
(`GET /cases`, `GET /actions`, `GET /register`, ...), which the test's copy of the document
lists without filters: a filtered list is mostly empty and gives nothing to follow (the
filters are fuzzed by `test_fuzz_openapi`).

Every answer is checked: never a 5xx; every status listed in the operation's document; a 4xx
in the kit's error shape `{"error": {"code", "message", "details"}}`; every body (2xx and 4xx)
as its schema says, content type included; a resource just created is found by the operation
a link sends to (`ensure_resource_availability`). Every request carries a valid token with the
roles the operation admits (its `x-roles`; unit `production`, the unit the seeded work is
assigned to): refusals without or with a broken token are `test_fuzz_openapi`'s business.
Failures are collected, not raised, so one run names them all, each with the calls before it.

Sequences start only at the `ENTRIES` (a POST that makes a resource, or an unfiltered list);
every other operation is reached through a link (now and then with a value of its own instead,
as schemathesis does, so a stale or foreign id is tried too; 10% of the requests break the
schema on purpose). The test's copy of each document drops its security requirements: the test
signs every request itself, and schemathesis would otherwise send some without the token.

Bounded: SCENARIOS sequences per service of at most STEPS calls (one to two minutes for all five,
seeding included), with fixed seeds (the same choices every run; the ids the services hand out
differ), no example database, no shrinking. A run Hypothesis stops as flaky (a replayed
sequence met other answers from the live system) is followed by one with the next seed, and
the test fails if fewer than half the sequences ran.
Nothing leaves 127.0.0.1: webhook deliveries notify attempts for fuzzed subscriptions go
through a proxy on 127.0.0.1:9, where nothing listens (`NO_PROXY` keeps local calls direct).
"""

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from unittest import mock

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis.errors import Flaky
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import FailureGroup
from schemathesis.core.transport import Response
from schemathesis.generation.case import Case
from schemathesis.generation.stateful import run_state_machine_as_test
from schemathesis.generation.stateful.state_machine import (
    StepInput,
    StepOutput,
    normalize_name,
)
from schemathesis.specs.openapi import stateful as openapi_stateful
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ensure_resource_availability,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.stateful import RootTransitions

from shared.auth import make_token
from tests.conftest import test_namespace
from tests.e2e.flow import Flow
from tests.e2e.harness import Actors, System
from tests.support import eventually, is_kit_error, ok

pytestmark = [pytest.mark.infra, pytest.mark.timeout(300),
              # schemathesis' own strategies, not ours; the run is still derandomized
              pytest.mark.filterwarnings("ignore:Do not use the `random` module")]

SCENARIOS = 80  # sequences per service
STEPS = 10      # calls per sequence at most (schemathesis makes at least 2)
SEED = 12       # the first run's seed; a run stopped as flaky is followed by one with the next
RUNS = 10       # runs at most, to make up SCENARIOS
UNIT = "production"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, ensure_resource_availability]
NOWHERE = "http://127.0.0.1:9"  # the discard port: a proxy that refuses every connection


@dataclass(frozen=True)
class Resource:
    """Answers with this schema (or a page of them) link to every operation under `under`,
    `field` of the answer going into path parameter `param`."""
    schema: str
    field: str
    param: str
    under: str
    only_from: tuple[str, ...] = ()  # producers (operation labels), when not every one


@dataclass(frozen=True)
class Pair:
    """A link carrying two values: one from the request, one from the answer."""
    source: str  # operation label
    status: str
    target: str
    parameters: tuple[tuple[str, str], ...]


LINKS: dict[str, tuple[Resource | Pair, ...]] = {
    "intake": (
        Resource("FeedbackRead", "id", "ref", "/feedback/{ref}"),
        Resource("FeedbackRead", "register_no", "ref", "/feedback/{ref}",
                 only_from=("POST /feedback",)),
        Pair("POST /feedback/{ref}/attachments", "201", "GET /feedback/{ref}/attachments/{sha256}",
             (("ref", "$request.path.ref"), ("sha256", "$response.body#/sha256"))),
    ),
    "quality": (
        Resource("CaseRead", "id", "ref", "/cases/{ref}"),
        Resource("CaseRead", "register_no", "ref", "/cases/{ref}", only_from=("GET /cases",)),
    ),
    "capa": (
        Resource("CapaView", "id", "ref", "/capas/{ref}"),
        Resource("CapaView", "number", "ref", "/capas/{ref}", only_from=("POST /capas",)),
        Resource("ActionRequestView", "id", "action_id", "/actions/{action_id}"),
    ),
    "reporting": (
        Resource("RegisterRow", "feedback_id", "feedback_id", "/register/{feedback_id}"),
        Resource("RegisterRow", "feedback_id", "ref", "/documents/complaint-reports/{ref}"),
        Resource("RegisterRow", "register_no", "ref", "/documents/complaint-reports/{ref}"),
        *(Pair(f"POST /documents/complaint-reports/{{ref}}/{step}", "201",
               "GET /documents/complaint-reports/{ref}/revisions/{number}.pdf",
               (("ref", "$request.path.ref"), ("number", "$response.body#/number")))
          for step in ("approve", "issue")),
    ),
    "notify": (
        Resource("SubscriptionCreated", "id", "subscription_id", "/webhooks/{subscription_id}"),
        Resource("SubscriptionRead", "id", "subscription_id", "/webhooks/{subscription_id}"),
        Resource("DirectoryRead", "email", "email", "/directory/{email}"),
        Resource("CustomerRead", "id", "customer_id", "/customers/{customer_id}"),
        Resource("NotificationSummary", "id", "notification_id",
                 "/notifications/{notification_id}"),
        Resource("NotificationRead", "id", "notification_id", "/notifications/{notification_id}"),
        Resource("MailSummary", "id", "mail_id", "/mail/{mail_id}"),
        Pair("GET /webhooks/{subscription_id}/deliveries", "200",
             "POST /webhooks/{subscription_id}/deliveries/{delivery_id}/retry",
             (("subscription_id", "$request.path.subscription_id"),
              ("delivery_id", "$response.body#/items/*/id"))),
    ),
}

# Where a sequence starts: the operations that make a resource, and lists of what exists (in
# the test's copy of the document without their filters). Only these are called with random
# input first; every other operation is reached through a link.
ENTRIES = {
    "intake": ("POST /feedback", "GET /feedback"),
    "quality": ("GET /cases",),
    "capa": ("POST /capas", "GET /capas", "GET /actions"),
    "reporting": ("GET /register",),
    "notify": ("POST /webhooks", "POST /directory", "POST /customers", "GET /webhooks",
               "GET /directory", "GET /customers", "GET /notifications", "GET /mail"),
}

METHODS = ("get", "put", "post", "patch", "delete")


def _operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield f"{method.upper()} {path}", path, operation


def _answers(operation: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(status, component name, response) of each 2xx answer with a JSON schema."""
    for status, response in operation["responses"].items():
        ref = response.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")
        if status.startswith("2") and ref:
            yield status, ref.rsplit("/", 1)[-1], response


def with_links(name: str, doc: dict[str, Any]) -> int:
    """Add the service's links (and unfiltered entry lists) to `doc`; how many links."""
    ops = {label: (path, operation) for label, path, operation in _operations(doc)}
    count = 0

    def link(source: dict[str, Any], target: str, parameters: dict[str, str]) -> None:
        nonlocal count
        links = source.setdefault("links", {})
        key = f"{target} <- {' '.join(parameters.values())}"
        if key not in links:
            links[key] = {"operationId": ops[target][1]["operationId"],
                          "parameters": parameters}
            if any("/*/" in expression for expression in parameters.values()):
                # `items/*/id`: any item of the page. schemathesis reads the wildcard (not
                # in the OpenAPI standard) in the links it infers, marked so.
                links[key]["x-schemathesis"] = {"is_inferred": True}
            count += 1

    for entry in LINKS[name]:
        if isinstance(entry, Pair):
            response = ops[entry.source][1]["responses"][entry.status]
            link(response, entry.target, dict(entry.parameters))
            continue
        targets = [label for label, (path, _) in ops.items()
                   if path == entry.under or path.startswith(entry.under + "/")]
        assert targets, f"{name}: nothing under {entry.under}"
        for label, (_, operation) in ops.items():
            if entry.only_from and label not in entry.only_from:
                continue
            for _, component, response in _answers(operation):
                if component == entry.schema:
                    expression = f"$response.body#/{entry.field}"
                elif component == f"Page_{entry.schema}_":
                    expression = f"$response.body#/items/*/{entry.field}"
                else:
                    continue
                for target in targets:
                    link(response, target, {entry.param: expression})
    for label in ENTRIES[name]:
        if label.startswith("GET "):
            ops[label][1].pop("parameters", None)
    # The test signs every request itself: without the security requirements schemathesis
    # does not drop the token from a negative case (refusals are test_fuzz_openapi's).
    for _, operation in ops.values():
        operation.pop("security", None)
    doc.pop("security", None)
    doc.get("components", {}).pop("securitySchemes", None)
    return count


@dataclass
class Run:
    """What one service's machine did and found."""
    failures: dict[tuple[str, str], str]
    statuses: Counter[int]
    linked: Counter[str]  # operation label -> linked steps answered 2xx
    steps: int = 0
    linked_steps: int = 0
    scenarios: int = 0
    runs: int = 0


def _describe(response: Response) -> str:
    request = response.request
    body = request.body
    if isinstance(body, bytes):
        body = body[:300].decode("utf-8", "replace")
    sent = f" {str(body)[:300]}" if body else ""
    return f"{request.method} {request.url}{sent} -> {response.status_code} {response.text[:300]}"


def _machine_starting_at(schema: Any, entries: tuple[str, ...]) -> type:
    """schemathesis' state machine, its sequences starting at `entries` and nowhere else.

    schemathesis guesses where a sequence may start (any POST, any GET without a path
    parameter, unless a body field looks like an id it cannot make); here the entries are
    named: a POST to `/feedback/{ref}/...` with a random ref only finds nothing, and
    `POST /capas` (whose `feedback_ids` looked like such an id) is where a CAPA is made."""
    def roots(operations: list[Any], *_: Any) -> RootTransitions:
        found = RootTransitions()
        found.reliable = {op.label for op in operations if op.label in entries}
        assert found.reliable == set(entries), f"no operation {set(entries) - found.reliable}"
        return found

    with mock.patch.object(openapi_stateful, "classify_root_transitions", roots):
        machine = schema.as_state_machine()
    assert machine.root_rules == {normalize_name(f"RANDOM -> {label}") for label in entries}
    return machine


def machine_for(name: str, system: System, run: Run) -> type:
    doc = requests.get(f"{system.url(name)}/openapi.json", timeout=10).json()
    assert with_links(name, doc) > 0
    schema = schemathesis.openapi.from_dict(doc, config=SchemathesisConfig.from_dict(
        {"phases": {"stateful": {"inference": {"algorithms": []}}}}))
    session = requests.Session()
    session.trust_env = False  # straight to the service, whatever proxy the shell names
    tokens: dict[str, str] = {}

    def bearer(case: Case) -> str:
        roles = list(case.operation.definition.raw.get("x-roles") or [])
        key = ",".join(roles)
        if key not in tokens:
            tokens[key] = make_token(system.secret, "fuzz.er", roles, unit=UNIT)
        return f"Bearer {tokens[key]}"

    base = _machine_starting_at(schema, ENTRIES[name])

    class Machine(base):  # type: ignore[misc,valid-type]
        def setup(self) -> None:
            self.chain: list[str] = []

        def teardown(self) -> None:
            run.scenarios += 1
            super().teardown()

        def step(self, input: StepInput) -> StepOutput:
            run.steps += 1
            output = super().step(input)
            status = output.response.status_code
            run.statuses[status] += 1
            if input.transition is not None and input.is_applied:
                run.linked_steps += 1
                if status < 300:
                    run.linked[input.case.operation.label] += 1
            return output

        def get_call_kwargs(self, case: Case) -> dict[str, Any]:
            return {"base_url": system.url(name), "session": session,
                    "headers": {"Authorization": bearer(case)}}

        def validate_response(self, response: Response, case: Case,
                              additional_checks: Any = None, **kwargs: Any) -> None:
            label = case.operation.label
            self.chain.append(f"{label} -> {response.status_code}")
            problems: list[tuple[str, str]] = []
            if 400 <= response.status_code < 500 and not is_kit_error(response):
                problems.append(("4xx not in the kit's error shape", ""))
            try:
                case.validate_response(response, checks=CHECKS, recorder=self.recorder,
                                       transport_kwargs=kwargs or None)
            except (AssertionError, FailureGroup) as exc:
                found = exc.exceptions if isinstance(exc, FailureGroup) else (exc,)
                for failure in found:
                    title = getattr(failure, "title", type(failure).__name__)
                    problems.append((title, str(getattr(failure, "message", failure))))
            for title, detail in problems:
                if (label, title) not in run.failures:  # once per operation and kind
                    before = " | ".join(self.chain[-5:-1]) or "(first call)"
                    run.failures[(label, title)] = (
                        f"{title}: {_describe(response)}\n    after: {before}"
                        + (f"\n    {detail.strip()[:800]}".replace("\n", "\n    ")
                           if detail else ""))

    return Machine


def drive(name: str, system: System) -> Run:
    """Run the service's machine until SCENARIOS sequences have run.

    Hypothesis replays the choices that led somewhere; against a live system a replayed prefix
    can meet other answers (a list that grew, a record that moved on), and Hypothesis stops the
    run as flaky. Like schemathesis' own runner, start another run, with the next seed, for
    the sequences still to go; the seeds are fixed, so a run makes the same choices each time.
    """
    run = Run(failures={}, statuses=Counter(), linked=Counter())
    machine = machine_for(name, system, run)
    for attempt in range(RUNS):
        if run.scenarios >= SCENARIOS:
            break
        run.runs += 1
        seeded = hypothesis.seed(SEED + attempt)(type(f"{name}{attempt}", (machine,), {}))
        try:
            run_state_machine_as_test(seeded, settings=settings(
                max_examples=SCENARIOS - run.scenarios, stateful_step_count=STEPS,
                database=None, deadline=None, phases=[Phase.generate],
                suppress_health_check=list(HealthCheck)))
        except Flaky:
            continue
        except AssertionError as exc:  # Hypothesis asserts when a replay runs past its record
            if not _inconsistent_replay(exc):
                raise
        else:
            break  # Hypothesis ran out of new sequences before the budget: the run is complete
    return run


def _inconsistent_replay(exc: AssertionError) -> bool:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_globals["__name__"].startswith("hypothesis.")


# ------------------------------------------------------------------ the system and its work

async def _seed(system: System) -> dict[str, str]:
    """Work in every state the machines start from: a case just escalated, one assigned to
    `UNIT`, one taken to Quality's record (proposed, verified)."""
    actors = Actors(system)
    try:
        flow = Flow(actors)
        new = await flow.register()
        await flow.escalate(new["id"])
        assigned = await flow.register()
        await flow.escalate(assigned["id"])
        await flow.assign(assigned["id"], [UNIT])
        done = await flow.handle_quality_complaint(units=(UNIT,))
        await flow.case(new["id"])
        async with system.client("reporting", "manager") as reporting:
            async def registered() -> bool:
                return (await reporting.get(f"/register/{done['id']}")).status_code == 200
            await eventually(registered, what="the register row of the finished complaint")
        async with system.client("capa", "manager") as capa:
            ok(await capa.get("/actions", params={"feedback_id": assigned["id"]}))
        return {"new": new["id"], "assigned": assigned["id"], "done": done["id"]}
    finally:
        await actors.aclose()


@pytest.fixture(scope="module")
async def seeded_system():
    proxy = {"HTTP_PROXY": NOWHERE, "HTTPS_PROXY": NOWHERE, "ALL_PROXY": NOWHERE,
             "NO_PROXY": "127.0.0.1,localhost"}
    system = System(test_namespace("fzst"), env=proxy | {k.lower(): v for k, v in proxy.items()})
    await system.start()
    try:
        await _seed(system)
        yield system
    finally:
        await system.stop()


SERVICES = ("intake", "quality", "capa", "reporting", "notify")


@pytest.mark.parametrize("name", SERVICES)
async def test_call_sequences_get_no_server_error_and_keep_to_the_schema(name, seeded_system):
    run = await asyncio.to_thread(drive, name, seeded_system)
    print(f"\n{name}: {run.steps} calls in {run.scenarios} sequences ({run.runs} runs), "
          f"{run.linked_steps} on a link; "
          f"answers {dict(sorted(run.statuses.items()))}; linked and accepted "
          f"{json.dumps(dict(sorted(run.linked.items())))}")
    assert run.scenarios >= SCENARIOS // 2, f"{name}: only {run.scenarios} sequences ran"
    assert run.linked, f"{name}: no call that followed a link was accepted: the chains do not work"
    assert not run.failures, (f"{len(run.failures)} failing call(s) to {name}:\n"
                              + "\n".join(run.failures.values()))
