"""The procedure's steps as one person at a time would take them, through the public APIs.

Shared by the end-to-end clause tests and kept close to the README's curl walk-through.
"""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.e2e.harness import Actors
from tests.support import eventually, ok


def new_customer(language: str = "en") -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    return {"id": f"C-{tag}", "name": f"Bright Motors {tag}", "contact_person": "Zhang Min",
            "email": f"quality@{tag}.example", "phone": "+86 755 1234 5678",
            "language": language}


def received_a_little_ago() -> datetime:
    """Five minutes ago, but never in last month (or last year): tests read the month and
    year of what they register, and reporting counts resolutions in their own month."""
    now = datetime.now(UTC)
    return max(now - timedelta(minutes=5), now.replace(day=1, hour=0, minute=0, second=0,
                                                      microsecond=0))


def feedback_body(customer: dict | None = None, *, category: str = "product_quality",
                  severity: str = "normal", channel: str = "phone",
                  product_code: str | None = None, **extra: Any) -> dict[str, Any]:
    body = {
        "customer": customer or new_customer(),
        "channel": channel,
        "received_at": received_a_little_ago().isoformat(),
        "category": category,
        "severity": severity,
        "product": {"code": product_code or f"HSG-{uuid.uuid4().hex[:6]}",
                    "name": "Motor housing", "lot": "L2026-11-03", "order_no": "SO-88123"},
        "quantity_affected": 40,
        "description": "Housings crack at the mounting boss after torque test.",
        "estimated_loss": {"amount": "1250.00", "currency": "CNY"},
    }
    return body | extra


class Flow:
    def __init__(self, actors: Actors):
        self.a = actors

    async def register(self, **kw: Any) -> dict[str, Any]:
        return ok(await self.a.sales.post("/feedback", json=feedback_body(**kw)), 201)

    async def escalate(self, ref: str, note: str = "Please analyse") -> dict[str, Any]:
        return ok(await self.a.sales.post(f"/feedback/{ref}/escalate", json={"note": note}))

    async def case(self, feedback_id: str, what: str = "the Complaint Handling Form",
                   **expect: Any) -> dict[str, Any]:
        async def arrived():
            resp = await self.a.quality.get(f"/cases/{feedback_id}")
            if resp.status_code != 200:
                return None
            body = resp.json()
            return body if all(body.get(k) == v for k, v in expect.items()) else None
        return await eventually(arrived, what=what)

    async def assign(self, feedback_id: str, units: list[str], defect_code: str = "D03",
                     cause: str = "Porosity at the boss from a worn die") -> dict[str, Any]:
        await self.case(feedback_id)
        return ok(await self.a.quality.post(f"/cases/{feedback_id}/responsibility", json={
            "preliminary_cause": cause, "defect_code": defect_code,
            "units": [{"unit": u, "request": f"{u}: find the root cause and contain"}
                      for u in units]}))

    async def action(self, action_id: str, unit: str, **expect: Any) -> dict[str, Any]:
        async with self.a.unit(unit) as client:
            async def arrived():
                resp = await client.get(f"/actions/{action_id}")
                if resp.status_code != 200:
                    return None
                body = resp.json()
                return body if all(body.get(k) == v for k, v in expect.items()) else None
            return await eventually(arrived, what=f"action {action_id} {expect}")

    async def propose(self, action_id: str, unit: str, *, disposition: dict | None = None) -> dict:
        await self.action(action_id, unit)
        async with self.a.unit(unit) as client:
            ok(await client.put(f"/actions/{action_id}/investigation", json={
                "containment": "Sort all stock at the customer and in the warehouse",
                "root_cause": {"five_whys": ["Crack at boss", "Porosity", "Die worn"],
                               "category": "machine", "statement": "Die worn beyond limit"},
                "corrective": [{"description": "Replace die", "owner": "liu.gang",
                                "due_date": "2026-12-05"}],
                "preventive": [{"description": "Die life counter with stop",
                                "owner": "liu.gang", "due_date": "2026-12-20"}],
                **({"disposition": disposition} if disposition else {}),
            }))
            return ok(await client.post(f"/actions/{action_id}/submit"))

    async def verify(self, feedback_id: str, unit: str, accepted: bool = True,
                     reason: str | None = None) -> dict[str, Any]:
        async def proposed():
            case = ok(await self.a.quality.get(f"/cases/{feedback_id}"))
            units = {u["unit"]: u for u in case["responsible_units"]}
            return units[unit]["status"] == "proposed"
        await eventually(proposed, what=f"{unit}'s proposal to reach Quality")
        body: dict[str, Any] = {"unit": unit, "accepted": accepted}
        if reason:
            body["reason"] = reason
        return ok(await self.a.quality.post(f"/cases/{feedback_id}/verification", json=body))

    async def feedback(self, ref: str, **expect: Any) -> dict[str, Any]:
        async def reached():
            body = ok(await self.a.sales.get(f"/feedback/{ref}"))
            return body if all(body.get(k) == v for k, v in expect.items()) else None
        return await eventually(reached, what=f"feedback {ref} to show {expect}")

    async def handle_quality_complaint(self, *, units: tuple[str, ...] = ("production",),
                                       defect_code: str = "D03", **kw: Any) -> dict[str, Any]:
        """Register, escalate, analyse, propose, verify: until Sales has Quality's record."""
        fb = await self.register(**kw)
        if fb["status"] == "registered":
            await self.escalate(fb["id"])
        assigned = await self.assign(fb["id"], list(units), defect_code)
        for entry in assigned["responsible_units"]:
            await self.propose(entry["action_id"], entry["unit"])
        for unit in units:
            await self.verify(fb["id"], unit)
        return await self.feedback(fb["id"], status="quality_record_ready")
