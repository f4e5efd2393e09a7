"""How long the Monthly Complaint Handling Statistics Table takes at 100,000 feedbacks.

    .venv/bin/python scripts/bench_reporting.py [--feedbacks 100000] [--keep]

Seeds a fresh namespace's reporting read models with the events of N feedbacks
spread over the 12 months of 2033 (about 8 events each: registration, form,
acceptance, responsibility, quality record, reply, satisfaction, closure; some
direct replies, reopens, breaches, open cases), folded by the projection code
itself (`domain.fold`) and written as the rebuild writes them. Then it times
what a user asks for: the table of one month and of the whole year (what the
HTTP route computes, without HTTP), its XLSX, optionally one register page,
and a few feedbacks' events applied one by one through the live path (row and
counter documents, as the service does): the time of each kind of event (median over
the feedbacks), how many commands each sent to the register collection (on FerretDB
v1.24's SQLite handler each one but an insert reads the whole table, even with a lone
`_id` filter), and one refresh of the open-case gauges. Prints figures; no thresholds.
Needs FerretDB/MongoDB (`make up` or `scripts/infra.sh start`).
"""

import argparse
import asyncio
import random
import statistics as stats
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from prometheus_client import CollectorRegistry
from pymongo import monitoring

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.reporting import api, domain, exports  # noqa: E402
from services.reporting.readmodels import ReadModels  # noqa: E402
from services.reporting.settings import Settings  # noqa: E402
from services.reporting.views import Views  # noqa: E402
from shared import contracts as c  # noqa: E402
from shared.events import Actor, Contract, Envelope  # noqa: E402
from shared.settings import InfraSettings  # noqa: E402
from shared.store import WriteLocks, database, mongo_client  # noqa: E402
from shared.vocabulary import Category, Channel, Customer, Money, Product, Severity  # noqa: E402

ACTOR = Actor(sub="bench")
CATEGORIES = [Category.PRODUCT_QUALITY] * 6 + [Category.DELIVERY] * 2 + [
    Category.SERVICE, Category.OTHER, Category.SUGGESTION]
CHANNELS = list(Channel)
UNITS = ["production", "engineering", "rnd", "purchasing", "logistics", "supplier-acme"]
DAY = timedelta(days=1)


def envelope(payload: Contract, feedback_id: str, at: datetime) -> tuple[Envelope, Contract]:
    env = Envelope.model_construct(id=str(uuid.uuid4()), type=payload.event_type, version=1,
                                   occurred_at=at, producer="bench", correlation_id=feedback_id,
                                   causation_id=None, actor=ACTOR, payload={})
    return env, payload


def feedback_events(i: int, rng: random.Random) -> Iterator[tuple[Envelope, Contract]]:
    fid, no = f"bench-{i:06d}", f"CF-2033-{i:06d}"
    received = datetime(2033, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(365 * 86400))
    category = rng.choice(CATEGORIES)
    complaint = category is not Category.SUGGESTION
    severity = Severity.MAJOR if rng.random() < 0.05 else Severity.NORMAL
    facts = dict(feedback_id=fid, register_no=no,
                 customer=Customer(id=f"C-{rng.randrange(800):04d}", name="Customer"),
                 channel=rng.choice(CHANNELS), received_at=received, category=category,
                 severity=severity, product=Product(code=f"P-{rng.randrange(300):03d}"),
                 description="bench",
                 estimated_loss=Money(amount=Decimal(rng.randrange(0, 500000)) / 100))
    yield envelope(c.FeedbackRegistered(**facts, is_complaint=complaint), fid, received)
    if not complaint or category is not Category.PRODUCT_QUALITY:
        reply = received + timedelta(hours=rng.uniform(1, 72))
        yield envelope(c.RepliedDirectly(feedback_id=fid, register_no=no, category=category,
                                         reply="ok"), fid, reply)
        yield envelope(c.FeedbackClosed(feedback_id=fid, register_no=no, closed_at=reply + DAY,
                                        had_form=False), fid, reply + DAY)
        return
    opened = received + timedelta(hours=rng.uniform(0.5, 8))
    due = opened + 3 * DAY
    yield envelope(c.ComplaintEscalated(**facts), fid, opened)
    yield envelope(c.ComplaintAccepted(feedback_id=fid, register_no=no, round=1,
                                       received_at=opened, due_at=due, at_risk_at=due - DAY / 2,
                                       severity=severity), fid, opened)
    unit, defect = rng.choice(UNITS), f"D{rng.randrange(40):02d}"
    yield envelope(c.ResponsibilityAssigned(
        feedback_id=fid, register_no=no, round=1, preliminary_cause="c", defect_code=defect,
        customer_id=facts["customer"].id, units=[c.UnitRequest(unit=unit, request="r",
                                                               action_id=f"{fid}-a")]),
        fid, opened + timedelta(hours=2))
    if rng.random() < 0.03:  # still open at the end
        return
    resolved = opened + timedelta(hours=rng.gammavariate(3, 18))
    if resolved > due:
        yield envelope(c.SlaBreached(feedback_id=fid, register_no=no, round=1, due_at=due,
                                     severity=severity), fid, due)
    cost = Money(amount=Decimal(rng.randrange(1000, 900000)) / 100)
    yield envelope(c.ResolutionReady(
        feedback_id=fid, register_no=no, round=1, cause="c", defect_code=defect,
        outcomes=[c.UnitOutcome(unit=unit, action_id=f"{fid}-a", root_cause="rc",
                                countermeasures=["cm"],
                                disposition=c.Disposition(type="rework", quantity=1, cost=cost))],
        summary="s", received_at=opened, resolved_at=resolved, due_at=due,
        met_deadline=resolved <= due), fid, resolved)
    reply = resolved + timedelta(hours=rng.uniform(1, 24))
    yield envelope(c.CustomerReplied(feedback_id=fid, register_no=no, reply="r",
                                     replied_at=reply), fid, reply)
    satisfied = rng.random() < 0.9
    yield envelope(c.SatisfactionRecorded(feedback_id=fid, register_no=no, satisfied=satisfied),
                   fid, reply + DAY)
    if satisfied:
        yield envelope(c.FeedbackClosed(feedback_id=fid, register_no=no,
                                        closed_at=reply + 2 * DAY, had_form=True),
                       fid, reply + 2 * DAY)
    else:
        yield envelope(c.ComplaintReopened(feedback_id=fid, register_no=no, reopen_count=1,
                                           had_form=True), fid, reply + 2 * DAY)


class RegisterCommands(monitoring.CommandListener):
    """Counts the commands sent to the register collection (find, update, insert, ...)."""

    def __init__(self) -> None:
        self.count = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command.get(event.command_name) == "register":
            self.count += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


COMMANDS = RegisterCommands()
monitoring.register(COMMANDS)


def timed(label: str, seconds: float, extra: str = "") -> None:
    print(f"{label:<52} {seconds * 1000:10.1f} ms {extra}")


async def best_of(n: int, fn) -> tuple[float, float, object]:  # noqa: ANN001
    times, result = [], None
    for _ in range(n):
        started = time.perf_counter()
        result = await fn()
        times.append(time.perf_counter() - started)
    return min(times), stats.median(times), result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feedbacks", type=int, default=100_000)
    parser.add_argument("--keep", action="store_true", help="keep the namespace's database")
    parser.add_argument("--live", type=int, default=5,
                        help="feedbacks whose events then go through the live path one by one")
    parser.add_argument("--prefix", default="bench",
                        help="namespace prefix (a random suffix follows)")
    parser.add_argument("--register", action="store_true",
                        help="also time one register page (slow on FerretDB: a full scan)")
    args = parser.parse_args()
    namespace = f"{args.prefix}{uuid.uuid4().hex[:8]}"
    settings = Settings(infra=InfraSettings(namespace=namespace))
    tz = ZoneInfo(settings.timezone)
    rng = random.Random(20330101)
    print(f"namespace {namespace}: {args.feedbacks} feedbacks over 2033")

    started = time.perf_counter()
    events = [e for i in range(args.feedbacks) for e in feedback_events(i, rng)]
    timed("generate events", time.perf_counter() - started, f"({len(events)} events)")
    started = time.perf_counter()
    rows = domain.fold(events, tz)
    totals = domain.monthly_totals(rows.values())
    timed("fold them with the projection code", time.perf_counter() - started,
          f"({len(rows)} rows, {len(totals)} counter documents)")

    client = mongo_client(settings.database_url)
    db = database(client, namespace, "reporting")
    try:
        models = ReadModels(db, WriteLocks(), tz)
        started = time.perf_counter()
        await models.replace(rows.values(), totals, domain.customer_names(events).values())
        timed("write the read models", time.perf_counter() - started)
        views = Views(settings, CollectorRegistry())
        views.use(models)
        await views.gate.open()  # as the service does once started

        low, mid, table = await best_of(5, lambda: api.monthly_table(views, "2033-06", "2033-06"))
        timed("monthly table, one month (2033-06)", mid, f"(best {low * 1000:.1f} ms; "
              f"{table.counts.feedbacks} feedbacks, p90 form->record "
              f"{table.timeliness.form_to_quality_record.p90_hours} h)")
        low, mid, year = await best_of(3, lambda: api.monthly_table(views, "2033-01", "2033-12"))
        timed("monthly table, 12 months (2033-01..12)", mid,
              f"(best {low * 1000:.1f} ms; {year.counts.feedbacks} feedbacks)")
        started = time.perf_counter()
        xlsx = exports.table_xlsx(table)
        timed("its XLSX", time.perf_counter() - started, f"({len(xlsx)} bytes)")
        if args.register:
            started = time.perf_counter()
            coll = models.register.collection
            page = await coll.find({"received_at": {"$gte": datetime(2033, 6, 1, tzinfo=UTC),
                                                    "$lt": datetime(2033, 7, 1, tzinfo=UTC)}}) \
                .sort([("received_at", -1), ("_id", 1)]).limit(50).to_list(None)
            timed("one register page (50 rows of 2033-06)", time.perf_counter() - started,
                  f"({len(page)} rows; FerretDB v1 scans the whole collection)")

        live = [e for i in range(args.feedbacks, args.feedbacks + args.live)
                for e in feedback_events(i, rng)]
        per_kind: dict[str, list[float]] = defaultdict(list)
        sent: dict[str, list[int]] = defaultdict(list)
        started = time.perf_counter()
        for env, payload in live:
            before, at = COMMANDS.count, time.perf_counter()
            await models.project(env, payload)
            per_kind[env.type].append(time.perf_counter() - at)
            sent[env.type].append(COMMANDS.count - before)
        spent = time.perf_counter() - started
        timed("live path: events applied one by one", spent / len(live),
              f"per event ({len(live)} events, {len(live) / spent:.1f}/s)")
        for kind, seconds in sorted(per_kind.items()):
            timed(f"  {kind}", stats.median(seconds),
                  f"(median of {len(seconds)}; {stats.median(sent[kind]):.0f} register commands)")
        low, mid, _ = await best_of(3, views.refresh_gauges)
        timed("refresh the open-case gauges", mid, f"(best {low * 1000:.1f} ms; "
              f"{len(views.metrics.live.cases)} open cases)")
    finally:
        if not args.keep:
            await client.drop_database(f"{namespace}_reporting")
        await client.close()


if __name__ == "__main__":
    asyncio.run(main())
