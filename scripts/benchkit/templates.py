"""A few complaints played through the real services (a throw-away namespace), one per way a
complaint ends up in the history; their documents, as the services wrote them, are what the
history is stamped from (`stamp`).

Each template's customer id and product code are its own (`C01-TEMPLATE`, `P01-TEMPLATE`),
the same length as a clone's (`C00000000123`), so they can be replaced inside the BSON bytes.
Clones share customers and products from a pool, except in Quality's store: there each
complaint keeps its own, so that its recurrence counters (`kinds`, customer or product +
defect) stay one per complaint, and no formal CAPA would be due that the history lacks.
"""

import asyncio
from dataclasses import dataclass
from typing import Any

import httpx

from tests.e2e.flow import Flow, new_customer
from tests.e2e.harness import Actors
from tests.support import eventually, ok


@dataclass(frozen=True)
class Kind:
    name: str
    is_open: bool
    share: float  # of the closed history (closed kinds) or of the open work (open kinds)


KINDS = (
    Kind("closed_form", False, 0.60),          # escalated, one unit, verified, closed
    Kind("closed_form_two_units", False, 0.15),  # the same with two responsible units
    Kind("closed_direct", False, 0.25),        # a delivery complaint answered directly
    Kind("open_registered", True, 1 / 3),      # Sales has not decided yet
    Kind("open_with_units", True, 1 / 3),      # responsibility assigned, unit investigating
    Kind("open_record_ready", True, 1 / 3),    # Quality's record is back, reply pending
)


def customer_id(t: int) -> str:
    return f"C{t:02d}-TEMPLATE"


def product_code(t: int) -> str:
    return f"P{t:02d}-TEMPLATE"


# A plant's complaints come from a few hundred customers about a few hundred products (as in
# scripts/bench_reporting.py); what is counted per customer (the monthly table) sees that.
CUSTOMERS, PRODUCTS = 800, 300


def clone_customer(g: int, pooled: bool) -> str:
    return f"C{g % CUSTOMERS if pooled else g:011d}"


def clone_product(g: int, pooled: bool) -> str:
    return f"P{g % PRODUCTS if pooled else g:011d}"


async def play(kind: Kind, t: int, actors: Actors) -> dict[str, Any]:
    """Play one template to its end state; returns its feedback as intake shows it."""
    flow = Flow(actors)
    customer = new_customer() | {"id": customer_id(t)}
    facts = {"customer": customer, "product_code": product_code(t)}
    if kind.name == "closed_direct":
        fb = await flow.register(category="delivery", **facts)
        ok(await actors.sales.post(f"/feedback/{fb['id']}/direct-reply",
                                   json={"reply": "Replacement shipped by express today."}))
        ok(await actors.sales.post(f"/feedback/{fb['id']}/satisfaction",
                                   json={"satisfied": True}))
        return await flow.feedback(fb["id"], status="closed")
    if kind.name == "open_registered":
        return await flow.register(**facts)
    if kind.name == "open_with_units":
        fb = await flow.register(**facts)
        await flow.escalate(fb["id"])
        await flow.assign(fb["id"], ["production"])
        return fb
    units = ("production", "engineering") if kind.name == "closed_form_two_units" \
        else ("production",)
    fb = await flow.handle_quality_complaint(units=units, **facts)
    if kind.name == "open_record_ready":
        return fb
    await complete_actions(flow, actors, fb["id"])
    ok(await actors.sales.post(f"/feedback/{fb['id']}/reply",
                               json={"reply": "Root cause found; die replaced; stock sorted."}))
    ok(await actors.sales.post(f"/feedback/{fb['id']}/satisfaction", json={"satisfied": True}))
    return await flow.feedback(fb["id"], status="closed")


async def complete_actions(flow: Flow, actors: Actors, feedback_id: str) -> None:
    """The units mark their actions done once capa has Quality's acceptance: a closed
    complaint of the history asks nothing more of anyone."""
    case = ok(await actors.quality.get(f"/cases/{feedback_id}"))
    for entry in case["responsible_units"]:
        await flow.action(entry["action_id"], entry["unit"], status="accepted")
        async with actors.unit(entry["unit"]) as unit:
            for item in ("corrective/1", "preventive/1"):
                ok(await unit.post(f"/actions/{entry['action_id']}/items/{item}/done",
                                   json={"note": "done"}))


async def play_all(actors: Actors) -> list[tuple[Kind, dict[str, Any]]]:
    played = []
    for t, kind in enumerate(KINDS, start=1):
        played.append((kind, await play(kind, t, actors)))
    return played


async def quiet(namespace: str, queues_of, timeout: float = 60) -> None:  # noqa: ANN001
    """Until every queue of the namespace has been empty for 3 looks in a row."""
    calm = 0

    async def empty() -> bool:
        nonlocal calm
        try:
            drained = not any((await asyncio.to_thread(queues_of, namespace)).values())
        except httpx.HTTPError:  # the broker's API restarting: look again
            drained = False
        calm = calm + 1 if drained else 0
        return calm >= 3
    await eventually(empty, timeout=timeout, what=f"{namespace}'s queues to drain",
                     interval=1.0)
