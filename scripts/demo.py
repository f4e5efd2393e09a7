"""`make demo`: play a realistic month through the public APIs of a running system (`make up`).

A few dozen feedbacks across channels and categories: direct replies, quality
complaints through analysis and countermeasures, a major complaint, an
unsatisfied customer, a recurrence that opens a CAPA, and a Complaint Handling
Form whose 3-day deadline is breached. Prints the resulting state.
"""

import asyncio
import os
import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.auth import make_token  # noqa: E402
from shared.settings import InfraSettings  # noqa: E402
from tests.e2e.flow import Flow, new_customer, ok  # noqa: E402
from tests.e2e.harness import Actors  # noqa: E402

PORTS = {"intake": 8001, "quality": 8002, "capa": 8003, "reporting": 8004, "notify": 8005}


class LiveSystem:
    """The running `make up` system, as the demo's people see it."""

    def __init__(self) -> None:
        self.secret = InfraSettings().jwt_secret.get_secret_value()

    def client(self, service: str, role: str, sub: str = "demo", unit: str | None = None,
               **kw: Any) -> httpx.AsyncClient:
        port = int(os.environ.get(f"QMS_{service.upper()}_HTTP_PORT", PORTS[service]))
        token = make_token(self.secret, sub, [role], unit=unit)
        return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30,
                                 headers={"Authorization": f"Bearer {token}"}, **kw)


CUSTOMERS = [new_customer("zh"), new_customer("en"), new_customer("zh"), new_customer("en")]
# Customers 0 and 2 are kept for the unsatisfied complaint and the recurrence: the routine
# complaints of customers 1 and 3 never repeat a defect three times, so the one CAPA the demo
# announces is the only one it opens.
ROUTINE = [(CUSTOMERS[1 + 2 * (i % 2)], ["D01", "D03", "D04", "D07"][i // 2 % 4])
           for i in range(10)]
DIRECT = [("delivery", "phone", "Two pallets missing from delivery DN-55190."),
          ("delivery", "email", "Shipment arrived four days late."),
          ("service_documents", "fax", "Material certificate missing for lot L2026-11-03."),
          ("service_documents", "email", "Invoice shows the wrong unit price."),
          ("suggestion", "visit", "Please label cartons with QR codes."),
          ("other", "letter", "Request for a plant visit in December."),
          ("delivery", "proactive", "Salesperson noticed damaged cartons at unloading.")]


async def main() -> None:
    random.seed(7)
    flow = Flow(Actors(LiveSystem()))
    sales = flow.a.sales
    print("Registering and answering direct feedback received over the month (P-5.3.3)...")
    for i in range(14):
        category, channel, text = DIRECT[i % len(DIRECT)]
        fb = await flow.register(customer=random.choice(CUSTOMERS), category=category,
                                 channel=channel, description=text,
                                 received_at=days_ago(28 - 2 * i).isoformat())
        ok(await sales.post(f"/feedback/{fb['id']}/direct-reply",
                            json={"reply": "Handled; thank you for telling us."}))
        if i % 3 != 2:
            ok(await sales.post(f"/feedback/{fb['id']}/satisfaction", json={"satisfied": True}))

    print("Quality complaints through analysis and countermeasures (P-5.3.1, P-5.3.2)...")
    for i, (customer, defect_code) in enumerate(ROUTINE):
        fb = await flow.handle_quality_complaint(
            customer=customer, channel=random.choice(["phone", "email", "fax"]),
            units=("production",) if i % 2 else ("production", "purchasing"),
            defect_code=defect_code, received_at=days_ago(random.uniform(0.1, 2)).isoformat())
        ok(await sales.post(f"/feedback/{fb['id']}/reply", json={"reply": "Countermeasures in "
                                                                 "place; replacement sent."}))
        ok(await sales.post(f"/feedback/{fb['id']}/satisfaction", json={"satisfied": True}))

    print("One unsatisfied customer (P-F.4)...")
    fb = await flow.handle_quality_complaint(customer=CUSTOMERS[0])
    ok(await sales.post(f"/feedback/{fb['id']}/reply", json={"reply": "Fixed."}))
    ok(await sales.post(f"/feedback/{fb['id']}/satisfaction",
                        json={"satisfied": False, "comment": "The next lot cracks too."}))

    print("One major complaint (P-5.3.5)...")
    major = await flow.register(customer=CUSTOMERS[1], severity="major",
                                description="Brake housings leak: customer line stopped.")
    await flow.case(major["id"])
    ok(await flow.a.quality.post(f"/cases/{major['id']}/major-review", json={
        "held_at": datetime.now(UTC).isoformat(),
        "participants": ["R&D head", "Engineering head", "Production head", "Quality manager"],
        "decisions": "Stop line 3; 100% leak test of stock and of goods in transit.",
        "drafted_solution": "Replace the affected lot within 48 h; 8D report within a week."}),
       201)

    print("One recurrence: the third complaint of the same kind opens a CAPA (P-5.3.4)...")
    product = f"HSG-{random.randint(100, 999)}"
    for _ in range(3):
        fb = await flow.handle_quality_complaint(customer=CUSTOMERS[2], product_code=product,
                                                 defect_code="D02")
        ok(await sales.post(f"/feedback/{fb['id']}/reply", json={"reply": "Polished again."}))
        ok(await sales.post(f"/feedback/{fb['id']}/satisfaction", json={"satisfied": True}))

    print("One form whose 3-day deadline is breached (P-F.5): opened 4 days ago on paper...")
    late = await flow.register(customer=CUSTOMERS[3], received_at=days_ago(5).isoformat())
    opened = days_ago(4).isoformat()
    ok(await sales.post(f"/feedback/{late['id']}/escalate",
                        json={"note": "Paper form from the site visit", "form_opened_at": opened}))

    await asyncio.sleep(3)
    await report(flow)


def days_ago(days: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)


async def report(flow: Flow) -> None:
    print("\nThe register (intake):")
    for status in ("registered", "with_quality", "quality_record_ready", "replied", "closed"):
        page = ok(await flow.a.sales.get("/feedback", params={"status": status, "page_size": 1}))
        print(f"  {status:<22} {page['total']}")
    cases = ok(await flow.a.quality.get("/cases", params={"page_size": 500}))
    breached = [c for c in cases["items"] if c["clock"]["breached"]]
    print(f"\nQuality: {cases['total']} Complaint Handling Forms, "
          f"{len(breached)} past the 3-day deadline: "
          + ", ".join(c["register_no"] for c in breached))
    capas = ok(await flow.a.capa_quality.get("/capas"))
    for capa in capas["items"]:
        print(f"CAPA {capa['number']} ({capa['source']}): {capa['title']} [{capa['status']}]")
    await monthly_table(flow)
    print("\nOpen http://127.0.0.1:8001/docs (and 8002-8005) to look further.")


async def monthly_table(flow: Flow) -> None:
    """P-F.6, as the manager reads it (reporting builds it from the events, a moment later)."""
    month = datetime.now(UTC).strftime("%Y-%m")
    async with flow.a.as_role("reporting", "manager") as manager:
        table = ok(await manager.get("/statistics/monthly", params={"month": month}))
    counts, timely, follow = table["counts"], table["timeliness"], table["follow_up"]
    share = timely.get("share_met_3_day_rule")
    print(f"\nMonthly statistics {month} (reporting): {counts['feedbacks']} feedbacks, "
          f"{counts['complaints']} complaints; 3-day rule met: "
          + (f"{share:.0%}" if share is not None else "n/a")
          + f"; satisfied: {follow['satisfied']} of {follow['satisfaction_answers']}; "
          f"CAPAs opened: {follow['capas_opened']}")
    print(f"  charts: http://127.0.0.1:8004/charts/pareto-count.png?month={month} "
          "(with a manager's token)")


if __name__ == "__main__":
    asyncio.run(main())
