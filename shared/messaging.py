"""RabbitMQ topology, publishing and the consuming side of the kit (FastStream over aio-pika).

Topology (declared idempotently at start):
- one durable topic exchange `<ns>.events`; routing key = event type;
- per service a quorum queue `<ns>.<service>` bound to the types it consumes;
- `<ns>.<service>.retry`: a failed event waits there `retry_delay_ms` (its own message
  TTL, so changing the setting needs no new queue), then dead-letters back to the
  service's queue; the kit counts attempts in the `x-qms-attempt` header (not by
  requeue counting, which RabbitMQ 4.3 changed);
- `<ns>.<service>.dlq`: after `max_attempts`, or at once for an event with no
  contract, with the error in `x-qms-error`. `python -m shared.dlq` inspects and replays.
The service queue also has a delivery limit that dead-letters a message which
keeps crashing the consumer process itself (never acked nor failed cleanly).
"""

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

from aio_pika.abc import AbstractIncomingMessage, FieldValue
from faststream import AckPolicy
from faststream.rabbit import ExchangeType, QueueType, RabbitBroker, RabbitExchange, RabbitQueue
from faststream.rabbit.annotations import RabbitMessage
from faststream.rabbit.schemas import Channel
from faststream.rabbit.schemas.queue import QuorumQueueArgs
from prometheus_client import CollectorRegistry, Counter, Histogram

from shared.events import Contract, Envelope, MalformedEvent, UnknownEvent, parse_event
from shared.logs import correlation
from shared.stallwatch import InFlight

log = logging.getLogger("qms.messaging")

ATTEMPT_HEADER = "x-qms-attempt"
ERROR_HEADER = "x-qms-error"
CRASH_DELIVERY_LIMIT = 20
# RabbitMQ 4.x gives every quorum queue a delivery limit of 20, and `dlq list` returns what it
# reads to the queue: without a limit of its own the DLQ would drop its events after 20 looks.
DLQ_DELIVERY_LIMIT = 1_000_000_000

C = TypeVar("C", bound=Contract)
Handler = Callable[[Envelope, Contract], Awaitable[None]]
ContractHandler = Callable[[Envelope, C], Awaitable[None]]  # takes its event's own contract


def new_broker(amqp_url: str, prefetch: int = 8, **kwargs: Any) -> RabbitBroker:
    # Unroutable mandatory messages raise instead of vanishing; `prefetch` events are handled
    # at once (each handler is idempotent and takes its records' write locks).
    return RabbitBroker(
        amqp_url,
        default_channel=Channel(on_return_raises=True, publisher_confirms=True,
                                prefetch_count=prefetch),
        logger=logging.getLogger("qms.faststream"),
        log_level=logging.DEBUG,
        **kwargs,
    )


@dataclass(frozen=True)
class Topology:
    namespace: str
    service: str
    retry_delay_ms: int = 2000
    # One consumer at a time, the others standing by (a service that must write alone).
    single_active_consumer: bool = False

    @property
    def exchange(self) -> RabbitExchange:
        return RabbitExchange(f"{self.namespace}.events", type=ExchangeType.TOPIC, durable=True)

    @property
    def queue_name(self) -> str:
        return f"{self.namespace}.{self.service}"

    def _quorum(self, name: str, arguments: QuorumQueueArgs) -> RabbitQueue:
        dead_lettering: QuorumQueueArgs = {"x-dead-letter-strategy": "at-least-once",
                                           "x-overflow": "reject-publish"}
        return RabbitQueue(name, queue_type=QueueType.QUORUM, durable=True,
                           arguments=dead_lettering | arguments)

    @property
    def queue(self) -> RabbitQueue:
        arguments: QuorumQueueArgs = {
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.dlq.name,
            "x-delivery-limit": CRASH_DELIVERY_LIMIT,
        }
        if self.single_active_consumer:
            arguments["x-single-active-consumer"] = True
        return self._quorum(self.queue_name, arguments)

    @property
    def retry(self) -> RabbitQueue:
        # No queue-wide TTL: a queue argument cannot change once declared, so the delay
        # travels on each message (`EventConsumer._forward`) and stays a setting.
        return self._quorum(f"{self.queue_name}.retry", {
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.queue_name,
        })

    @property
    def dlq(self) -> RabbitQueue:
        return RabbitQueue(f"{self.queue_name}.dlq", queue_type=QueueType.QUORUM, durable=True,
                           arguments={"x-delivery-limit": DLQ_DELIVERY_LIMIT})

    async def declare(self, broker: RabbitBroker, routing_keys: list[str]) -> None:
        exchange = await broker.declare_exchange(self.exchange)
        await broker.declare_queue(self.dlq)
        await broker.declare_queue(self.retry)
        queue = await broker.declare_queue(self.queue)
        for key in routing_keys:
            await queue.bind(exchange, routing_key=key)


class EventPublisher:
    """Persistent, confirmed, mandatory: an event is published or the caller knows it was not."""

    def __init__(self, broker: RabbitBroker, exchange: RabbitExchange):
        self.broker = broker
        self.exchange = exchange

    async def publish(self, event: Envelope | dict[str, Any]) -> None:
        env = event if isinstance(event, Envelope) else Envelope.model_validate(event)
        await self.broker.publish(
            env.model_dump_json().encode(),
            exchange=self.exchange,
            routing_key=env.type,
            persist=True,
            mandatory=True,
            message_id=env.id,
            correlation_id=env.correlation_id,
            content_type="application/json",
            message_type=env.type,
            timestamp=env.occurred_at,
            headers={"x-qms-version": env.version, "x-qms-producer": env.producer},
        )


@dataclass
class ConsumerMetrics:
    registry: CollectorRegistry
    outcomes: Counter = field(init=False)
    latency: Histogram = field(init=False)

    def __post_init__(self) -> None:
        self.outcomes = Counter(
            "qms_events_consumed_total", "Events handled, by outcome",
            ["service", "type", "outcome"], registry=self.registry)
        self.latency = Histogram(
            "qms_event_handling_seconds", "Time to handle one event",
            ["service", "type"], registry=self.registry)


class EventConsumer:
    """Dispatches the service's queue to its handlers, with retries and dead-lettering."""

    def __init__(self, service: str, topology: Topology, broker: RabbitBroker,
                 max_attempts: int, metrics: ConsumerMetrics):
        self.service = service
        self.topology = topology
        self.broker = broker
        self.max_attempts = max_attempts
        self.metrics = metrics
        self.handlers: dict[str, Handler] = {}
        self.any_handler: Handler | None = None
        self.in_flight = InFlight()  # what the stall watch looks at (`shared.stallwatch`)

    def on_any(self, fn: Handler) -> Handler:
        """Handle every event on the exchange (reporting's history); binds `#`."""
        self.any_handler = fn
        return fn

    def on(self, event_type: str) -> Callable[[ContractHandler[C]], ContractHandler[C]]:
        """Register the handler of `event_type`; it may take that type's own contract."""
        def register(fn: ContractHandler[C]) -> ContractHandler[C]:
            # Sound: `parse_event` validates the payload as the contract registered for its
            # type, so the handler of `event_type` only ever gets that contract.
            self.handlers[event_type] = cast(Handler, fn)
            return fn
        return register

    @property
    def routing_keys(self) -> list[str]:
        return ["#"] if self.any_handler else sorted(self.handlers)

    def subscribe(self) -> None:
        @self.broker.subscriber(self.topology.queue, ack_policy=AckPolicy.MANUAL,
                                title=f"{self.service}:events")
        async def on_message() -> None:
            # The message from FastStream's context, not as a parameter: a `message:
            # RabbitMessage` parameter is resolved by a synchronous context lookup that
            # fast_depends runs in a worker thread, a thread hop per event (5-13 % of each
            # service's CPU in the soak's profile).
            message: RabbitMessage = self.broker.context.get_local("message")
            await self.handle(message.raw_message)

    async def handle(self, raw: AbstractIncomingMessage) -> None:
        with self.in_flight.handling(raw.message_id or "?", raw.type or "unknown"):
            await self._handle(raw)

    async def _handle(self, raw: AbstractIncomingMessage) -> None:
        headers = dict(raw.headers or {})
        attempt = _attempts_so_far(headers.get(ATTEMPT_HEADER)) + 1
        started = time.perf_counter()
        event_type = raw.type or "unknown"
        try:
            env, payload = parse_event(raw.body)
        except (UnknownEvent, MalformedEvent) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            await self._forward(raw, self.topology.dlq.name, attempt, reason)
            self.metrics.outcomes.labels(self.service, event_type, "dead_lettered").inc()
            log.error("event dead-lettered without retry: %s", exc)
            await raw.ack()
            return
        handler = self.handlers.get(env.type, self.any_handler)
        with correlation(env.correlation_id):
            if handler is None:  # bound by a wider key than we handle: not ours
                self.metrics.outcomes.labels(self.service, env.type, "ignored").inc()
                await raw.ack()
                return
            try:
                await handler(env, payload)
            except Exception as exc:  # noqa: BLE001 - a handler's failure must not lose the event
                reason = f"{type(exc).__name__}: {exc}"
                if attempt >= self.max_attempts:
                    await self._forward(raw, self.topology.dlq.name, attempt, reason)
                    self.metrics.outcomes.labels(self.service, env.type, "dead_lettered").inc()
                    log.error("event %s (%s) dead-lettered after %d attempts: %s",
                              env.id, env.type, attempt, reason, exc_info=exc)
                else:
                    await self._forward(raw, self.topology.retry.name, attempt, reason,
                                        delay=timedelta(milliseconds=self.topology.retry_delay_ms))
                    self.metrics.outcomes.labels(self.service, env.type, "retried").inc()
                    log.warning("event %s (%s) failed (attempt %d of %d), will retry: %s",
                                env.id, env.type, attempt, self.max_attempts, reason)
                await raw.ack()
                return
            self.metrics.outcomes.labels(self.service, env.type, "applied").inc()
            self.metrics.latency.labels(self.service, env.type).observe(
                time.perf_counter() - started)
            await raw.ack()

    async def _forward(self, raw: AbstractIncomingMessage, queue: str, attempt: int,
                       reason: str, delay: timedelta | None = None) -> None:
        """Copy the message to the retry queue (expiring after `delay`) or the DLQ (confirmed)
        before acking it."""
        headers = dict(raw.headers or {})
        headers[ATTEMPT_HEADER] = attempt
        headers[ERROR_HEADER] = reason[:1000]
        headers["x-qms-failed-at"] = datetime.now(UTC).isoformat()
        headers["x-qms-queue"] = self.topology.queue_name
        await self.broker.publish(
            raw.body, queue=queue, persist=True, mandatory=True,
            message_id=raw.message_id, correlation_id=raw.correlation_id,
            content_type=raw.content_type, message_type=raw.type, headers=headers,
            expiration=delay,
        )


def _attempts_so_far(header: FieldValue) -> int:
    """The attempts the kit counted in `ATTEMPT_HEADER` (it writes an int); none if absent.

    A header the kit did not write (another publisher's, not a number) counts as none: the
    message is then handled and retried like any other instead of stalling unacked."""
    if isinstance(header, bool) or not isinstance(header, int | float | str | bytes):
        return 0
    try:
        return max(0, int(header))
    except (ValueError, OverflowError):
        return 0
