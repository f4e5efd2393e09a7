"""Which reads a process sends to the database, and whether each one's cost is bounded.

On FerretDB's SQLite handler (patched, deploy/ferretdb) a read is cheap only when it is an
`_id` lookup; any other filter reads the whole collection. So a read on a request, event
or timer path must be an `_id` lookup or read a collection bounded by open work
(`<name>_open`, see `shared.store.OpenWork`) or by configuration (e.g. the directory).
`ReadLog` records every command PyMongo sends while installed, for tests to check that.
"""

from dataclasses import dataclass, field
from typing import Any

from bson import ObjectId
from pymongo import monitoring

OUTBOX_MARKS = "outbox_due"  # shared.store.OutboxMarks: bounded by unpublished events
LIFECYCLE = "lifecycle"  # shared.lifecycle: one document per running instance, and a note
READS = {"find": "filter", "count": "query", "findAndModify": "query", "distinct": "query",
         "update": "updates", "delete": "deletes", "aggregate": "pipeline"}


@dataclass(frozen=True)
class Read:
    database: str
    collection: str
    command: str
    filter: Any

    def is_id_lookup(self) -> bool:
        """By `_id`, or by a list of them (`$in`, pushed down by the project's patch)."""
        filters = self.filter if isinstance(self.filter, list) else [self.filter]
        return all(isinstance(f, dict) and _by_id(f.get("_id")) for f in filters)


def _by_id(value: Any) -> bool:
    if isinstance(value, dict) and list(value) == ["$in"]:
        return all(isinstance(v, str | ObjectId) for v in value["$in"])
    return isinstance(value, str | ObjectId)


def reads_of(command_name: str, command: dict[str, Any], database: str) -> list[Read]:
    key = READS.get(command_name)
    if key is None:
        return []
    collection = str(command[command_name])
    if command_name in ("update", "delete"):  # one filter per statement
        return [Read(database, collection, command_name, s.get("q", {}))
                for s in command.get(key, [])]
    if command_name == "aggregate":
        return [Read(database, collection, command_name, command.get(key))]
    return [Read(database, collection, command_name, command.get(key) or {})]


@dataclass
class ReadLog(monitoring.CommandListener):
    """Install before the clients are made (PyMongo gives global listeners to new clients)."""

    database_prefix: str
    reads: list[Read] = field(default_factory=list)
    recording: bool = False

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.recording and event.database_name.startswith(self.database_prefix):
            self.reads.extend(reads_of(event.command_name, event.command, event.database_name))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def unbounded(self, bounded_collections: set[str] = frozenset()) -> list[Read]:
        """Reads that are neither `_id` lookups nor of open-work, the outbox's marks of
        unpublished events, the running instances (`Lifecycle.alone`), or named small
        collections."""
        return [r for r in self.reads if not r.is_id_lookup()
                and not r.collection.endswith("_open")
                and r.collection not in (OUTBOX_MARKS, LIFECYCLE)
                and r.collection not in bounded_collections]


def install(database_prefix: str) -> ReadLog:
    log = ReadLog(database_prefix)
    monitoring.register(log)
    return log
