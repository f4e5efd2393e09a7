"""The 3-day deadline checker must act once even when several quality instances run it.

Each breach is published with a deterministic event id (`shared.events.once_id`):
if two checkers flag the same round, consumers see one event id and apply it once.
"""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from faststream.rabbit import QueueType, RabbitQueue

from services.quality.app import build
from services.quality.settings import Settings
from shared.contracts import ComplaintEscalated
from shared.events import Actor, make_event
from shared.vocabulary import Category, Channel, Customer, Severity
from tests.conftest import infra_settings, test_namespace
from tests.support import eventually


@pytest.fixture
async def two_checkers():
    infra = infra_settings(test_namespace(uuid.uuid4().hex[:6]), relay_interval_s=0.2)
    settings = Settings(infra=infra, deadline=timedelta(seconds=3),
                        at_risk_after=timedelta(seconds=1), sla_check_interval_s=0.05)
    services = [build(settings), build(settings)]
    for svc in services:
        await svc.start()
    yield services
    for svc in services:
        await svc.stop()


async def test_p_f_5_two_deadline_checkers_publish_each_breach_once(two_checkers):
    first, _ = two_checkers
    tap = await first.broker.declare_queue(RabbitQueue(
        f"{first.topology.namespace}.tap", queue_type=QueueType.QUORUM, durable=True))
    exchange = await first.broker.declare_exchange(first.topology.exchange)
    await tap.bind(exchange, routing_key="#")  # stands in for reporting: every event routable
    fid = str(uuid.uuid4())
    form = ComplaintEscalated(
        feedback_id=fid, register_no="CF-2099-000001",
        customer=Customer(id="C-1", name="Bright Motors"), channel=Channel.PHONE,
        received_at=datetime.now(UTC), category=Category.PRODUCT_QUALITY,
        severity=Severity.NORMAL, description="cracks")
    await first.publisher.publish(make_event(form, producer="intake", correlation_id=fid,
                                             actor=Actor(sub="wang.fang", roles=("sales",))))
    seen: list[tuple[str, str]] = []

    async def breached() -> bool:
        while (msg := await tap.get(no_ack=True, fail=False)) is not None:
            seen.append((msg.type, msg.message_id))
        return any(t == "complaint.sla_breached" for t, _ in seen)
    await eventually(breached, timeout=30, what="the breach event")
    await asyncio.sleep(1)  # let the second checker have its go
    await breached()
    ids = {t: {i for tt, i in seen if tt == t} for t, _ in seen}
    assert len(ids["complaint.sla_breached"]) == 1, seen
    assert len(ids["complaint.sla_at_risk"]) == 1, seen
    await tap.delete(if_unused=False, if_empty=False)
