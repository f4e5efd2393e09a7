"""Inspect and replay a service's dead-letter queue.

    python -m shared.dlq list   --service quality
    python -m shared.dlq replay --service quality [--limit N]

Replay moves each message back to the service's queue with its attempt count
reset, so the consumer tries it afresh (after the cause has been fixed).
"""

import argparse
import asyncio
import json
from typing import Any

from faststream.rabbit import RabbitBroker

from shared.messaging import ATTEMPT_HEADER, ERROR_HEADER, Topology, new_broker
from shared.settings import InfraSettings


async def _dlq(broker: RabbitBroker, topology: Topology):
    return await broker.declare_queue(topology.dlq)


async def peek(broker: RabbitBroker, topology: Topology, limit: int = 100) -> list[dict[str, Any]]:
    """What is dead-lettered, without removing it (messages are returned to the DLQ)."""
    queue = await _dlq(broker, topology)
    seen, held = [], []
    for _ in range(limit):
        msg = await queue.get(no_ack=False, fail=False)
        if msg is None:
            break
        held.append(msg)
        headers = dict(msg.headers or {})
        seen.append({"message_id": msg.message_id, "type": msg.type,
                     "correlation_id": msg.correlation_id,
                     "attempts": headers.get(ATTEMPT_HEADER),
                     "error": headers.get(ERROR_HEADER),
                     "failed_at": headers.get("x-qms-failed-at")})
    for msg in held:
        await msg.nack(requeue=True)
    return seen


async def replay(broker: RabbitBroker, topology: Topology, limit: int | None = None) -> int:
    """Move dead-lettered messages back to the service's queue; returns how many."""
    queue = await _dlq(broker, topology)
    moved = 0
    while limit is None or moved < limit:
        msg = await queue.get(no_ack=False, fail=False)
        if msg is None:
            break
        headers = {k: v for k, v in dict(msg.headers or {}).items()
                   if k not in (ATTEMPT_HEADER, "x-death", "x-delivery-count")}
        headers["x-qms-replayed-error"] = str(dict(msg.headers or {}).get(ERROR_HEADER, ""))[:1000]
        headers.pop(ERROR_HEADER, None)
        await broker.publish(msg.body, queue=topology.queue_name, persist=True, mandatory=True,
                             message_id=msg.message_id, correlation_id=msg.correlation_id,
                             content_type=msg.content_type, message_type=msg.type,
                             headers=headers)
        await msg.ack()  # only after the broker confirmed the copy
        moved += 1
    return moved


async def _main(args: argparse.Namespace) -> None:
    infra = InfraSettings()
    topology = Topology(infra.namespace, args.service, infra.retry_delay_ms)
    broker = new_broker(infra.amqp_url.get_secret_value())
    await broker.connect()
    try:
        if args.command == "list":
            for row in await peek(broker, topology, args.limit or 100):
                print(json.dumps(row, ensure_ascii=False))
        else:
            print(f"replayed {await replay(broker, topology, args.limit)} message(s) "
                  f"to {topology.queue_name}")
    finally:
        await broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["list", "replay"])
    parser.add_argument("--service", required=True,
                        help="intake, quality, capa, reporting or notify")
    parser.add_argument("--limit", type=int)
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
