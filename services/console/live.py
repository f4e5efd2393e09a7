"""Live updates: the domain events, as small "changed" notes pushed to open pages (SSE).

The console binds its own queue to the events exchange (`#`): exclusive and auto-deleted, a
live feed and not a record (an event missed while the console was down matters to nobody: a
page loaded afterwards reads the services). Each open page holds one Server-Sent Events
stream; a note names only the event type and the complaint, never its content, and the page's
script reloads the parts of itself that listen for it (`data-live`).
"""

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

from aio_pika.abc import AbstractIncomingMessage
from faststream.rabbit import RabbitBroker, RabbitQueue

from shared.messaging import Topology, new_broker

log = logging.getLogger("qms.console.live")
HEARTBEAT_S = 15.0
BACKLOG = 100  # notes a slow page may fall behind before it misses some


class LiveFeed:
    def __init__(self, amqp_url: str, namespace: str):
        self.amqp_url = amqp_url
        self.namespace = namespace
        self.broker: RabbitBroker | None = None
        self.listeners: set[asyncio.Queue[dict[str, Any]]] = set()
        self.queue_name = f"{namespace}.console.live.{uuid.uuid4().hex[:12]}"

    async def start(self) -> None:
        self.broker = new_broker(self.amqp_url)
        await self.broker.connect()
        exchange = await self.broker.declare_exchange(Topology(self.namespace, "console")
                                                      .exchange)
        queue = await self.broker.declare_queue(RabbitQueue(
            self.queue_name, durable=False, exclusive=True, auto_delete=True))
        await queue.bind(exchange, routing_key="#")
        await queue.consume(self._on_message, no_ack=True)
        log.info("live feed bound to %s.events as %s", self.namespace, self.queue_name)

    async def stop(self) -> None:
        if self.broker is not None:
            await self.broker.stop()

    async def ready(self) -> str:
        if self.broker is None:
            return "off"
        return "ok" if await self.broker.ping(timeout=2.0) else "down"

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            envelope = json.loads(message.body)
            note = {"type": str(envelope["type"]),
                    "feedback_id": str(envelope.get("correlation_id") or "")}
        except (ValueError, KeyError, TypeError):
            return
        self.publish(note)

    def publish(self, note: dict[str, Any]) -> None:
        for listener in list(self.listeners):
            if listener.full():
                listener.get_nowait()  # the oldest note goes; the page reloads anyway
            listener.put_nowait(note)

    async def stream(self) -> AsyncIterator[str]:
        """One page's SSE stream: `changed` notes, and a comment now and then to keep it open."""
        listener: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=BACKLOG)
        self.listeners.add(listener)
        try:
            yield "retry: 2000\n\n"
            while True:
                try:
                    note = await asyncio.wait_for(listener.get(), HEARTBEAT_S)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                yield f"event: changed\ndata: {json.dumps(note)}\n\n"
        finally:
            self.listeners.discard(listener)
