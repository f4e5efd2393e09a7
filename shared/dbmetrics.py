"""Every database command a service sends, counted and timed by collection and command.

Where a service's time goes is mostly the database: on FerretDB's SQLite handler each
command costs about a millisecond of its CPU, and a step of the procedure is a handful of
commands in sequence. `qms_db_commands_total` and `qms_db_command_seconds_total` (labels:
service, collection, command) show which collection and which command it is, live on
`/metrics` and in `make bench`'s profile. Counters, not histograms: a few collections times
a few commands stay a small number of series.
"""

from prometheus_client import CollectorRegistry, Counter
from pymongo import monitoring

# The driver's own conversation (handshakes, heartbeats, sessions): not the service's work.
DRIVER = frozenset({"hello", "ismaster", "isMaster", "ping", "endSessions", "buildInfo",
                    "saslStart", "saslContinue"})


class DatabaseMetrics(monitoring.CommandListener):
    """A PyMongo command listener (`AsyncMongoClient(event_listeners=[...])`)."""

    def __init__(self, service: str, registry: CollectorRegistry):
        self.service = service
        self.commands = Counter("qms_db_commands_total", "Database commands sent",
                                ["service", "collection", "command"], registry=registry)
        self.seconds = Counter("qms_db_command_seconds_total",
                               "Time spent waiting for database commands",
                               ["service", "collection", "command"], registry=registry)
        self._collection: dict[int, str] = {}  # request id -> collection, until it answers

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name in DRIVER:
            return
        # A getMore names its cursor first and the collection after.
        key = "collection" if event.command_name == "getMore" else event.command_name
        target = event.command.get(key)
        self._collection[event.request_id] = target if isinstance(target, str) else ""

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self._count(event)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._count(event)

    def _count(self, event: monitoring.CommandSucceededEvent | monitoring.CommandFailedEvent
               ) -> None:
        collection = self._collection.pop(event.request_id, None)
        if collection is None:  # a driver command, or one started before we listened
            return
        labels = (self.service, collection, event.command_name)
        self.commands.labels(*labels).inc()
        self.seconds.labels(*labels).inc(event.duration_micros / 1e6)
