"""The event catalogue as an AsyncAPI document, for the plant systems that subscribe.

Built with FastStream's own AsyncAPI generator from the contract registry: one
operation per event type on the topic exchange, its message the envelope with
that type's payload. Served by every service at `/asyncapi.json`; also
`python -m shared.asyncapi > asyncapi.json`.
"""

import json
from functools import cache
from typing import Any

from faststream.rabbit import RabbitBroker
from faststream.specification import AsyncAPI
from pydantic import create_model

import shared.contracts  # noqa: F401 - registers every contract
from shared.events import Envelope, registered_contracts
from shared.messaging import Topology


@cache
def event_catalogue(namespace: str = "qms") -> dict[str, Any]:
    broker = RabbitBroker(description="RabbitMQ: one durable topic exchange; the routing key "
                                      "is the event type. Bind your own queue to it.")
    exchange = Topology(namespace, "catalogue").exchange
    for (event_type, version), contract in sorted(registered_contracts().items()):
        if event_type.startswith(("kit.", "unit.")):  # test contracts
            continue
        message = create_model(f"{contract.__name__}V{version}", __base__=Envelope,
                               payload=(contract, ...))
        broker.publisher(exchange=exchange, routing_key=event_type, schema=message,
                         title=f"{event_type} v{version}",
                         description=(contract.__doc__ or "").strip())
    spec = AsyncAPI(title="QMS complaint events", version="1.0.0",
                    description="Every event of the customer complaint handling procedure. "
                                "`correlation_id` is the feedback id: the whole story of one "
                                "complaint.")
    spec.add_broker(broker)
    return json.loads(spec.to_specification().to_json())


if __name__ == "__main__":
    print(json.dumps(event_catalogue(), indent=2, ensure_ascii=False))
