"""Pure building blocks for aggregates: no broker, no database, no web framework.

An aggregate is a pydantic model with a `version` (optimistic concurrency), an
append-only `history` (records control, P-5.4.2: who, what, when, what changed and
what it was before), the ids of the events it has applied (the idempotent inbox),
and the events a change produced, which the repository writes in the same document
update.
"""

from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from shared.events import Actor, Contract, Envelope, make_event, utcnow


class HistoryEntry(BaseModel):
    at: datetime = Field(default_factory=utcnow)
    actor: Actor
    action: str = Field(..., examples=["registered"])
    changes: dict[str, Any] = Field(default_factory=dict, description="field -> new value")
    before: dict[str, Any] = Field(
        default_factory=dict, description="field -> value before this change (only the "
        "aggregate's own fields this change altered; empty for a new record)")
    note: str | None = None
    event_id: str | None = Field(None, description="The event this change caused or applied")


class Aggregate(BaseModel):
    model_config = ConfigDict(populate_by_name=True, validate_assignment=False)

    producer: ClassVar[str] = "unknown"  # the service that emits this aggregate's events

    id: str = Field(..., alias="_id")
    version: int = 0
    history: list[HistoryEntry] = Field(default_factory=list)
    applied_events: list[str] = Field(default_factory=list)
    _pending: list[Envelope] = PrivateAttr(default_factory=list)
    # Each field's value as last recorded: taken when the aggregate is loaded, and updated
    # for the fields an entry names. `log` compares the fields named in `changes` with it,
    # so every service gets `before` without writing it, and several entries in one save
    # each see their own. None for a record not yet stored until its first entry (a new
    # record has no "before").
    _recorded: dict[str, Any] | None = PrivateAttr(default=None)

    # False for models that never log (read models): no snapshot to pay for on each load.
    keeps_history: ClassVar[bool] = True

    def model_post_init(self, context: Any, /) -> None:
        if (self.keeps_history and self.version > 0
                and not (isinstance(context, dict) and context.get(_VIEW_ONLY))):
            self._recorded = self._fields()

    @classmethod
    def viewed(cls, doc: dict[str, Any]) -> Self:
        """Load a stored record only to show it (list pages): no snapshot for `before`, which
        would cost a full dump per record (about 4x the load). A viewed record that is then
        changed still logs, only without `before`."""
        return cls.model_validate(doc, context={_VIEW_ONLY: True})

    def _fields(self, names: set[str] | None = None) -> dict[str, Any]:
        """The aggregate's own fields (all, or `names`) as stored; bookkeeping left out."""
        return bson_safe(self.model_dump(mode="python", include=names, exclude=_BOOKKEEPING))

    @property
    def correlation_id(self) -> str:
        """The feedback id every event of this story carries; aggregates override."""
        return self.id

    @property
    def pending_events(self) -> list[Envelope]:
        return list(self._pending)

    def has_applied(self, event_id: str) -> bool:
        return event_id in self.applied_events

    def mark_applied(self, event_id: str) -> None:
        self.applied_events.append(event_id)

    def log(self, actor: Actor, action: str, changes: dict[str, Any] | None = None,
            note: str | None = None, event_id: str | None = None,
            at: datetime | None = None) -> None:
        """Append to the history; `at` lets an entry carry the command's own time.

        Call it after changing the fields: `before` gets, for each key of `changes` that is
        a field of the aggregate, its value at the previous entry (or load) if it differs."""
        changes = changes or {}
        before: dict[str, Any] = {}
        if self._recorded is None:
            self._recorded = self._fields()
        else:
            now = self._fields(set(changes) & set(type(self).model_fields))
            before = {k: self._recorded[k] for k, v in now.items()
                      if k in self._recorded and self._recorded[k] != v}
            self._recorded |= now
        self.history.append(HistoryEntry(actor=actor, action=action, changes=changes,
                                         before=before, note=note, event_id=event_id,
                                         at=at or utcnow()))

    def emit(self, payload: Contract, actor: Actor, causation_id: str | None = None,
             event_id: str | None = None) -> Envelope:
        """Record an event to publish with this change; `event_id` for a fact that must
        happen once whoever records it (see `shared.events.once_id`)."""
        event = make_event(payload, producer=self.producer, correlation_id=self.correlation_id,
                           actor=actor, causation_id=causation_id, event_id=event_id)
        self._pending.append(event)
        return event

    def to_document(self) -> dict[str, Any]:
        return bson_safe(self.model_dump(mode="python", by_alias=True))


_BOOKKEEPING = {"id", "version", "history", "applied_events"}
_VIEW_ONLY = "qms_view_only"  # validation context key: see Aggregate.viewed


def bson_safe(value: Any) -> Any:
    """BSON has neither `date` nor `Decimal`, and keeps milliseconds only.

    Store ISO dates and decimal strings (they validate back unchanged; money never
    becomes a float) and datetimes truncated to milliseconds, so what a command
    returns is what a later read shows. Datetimes stay native for range queries."""
    if isinstance(value, dict):
        return {k: bson_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [bson_safe(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.replace(microsecond=value.microsecond // 1000 * 1000)
    if isinstance(value, date) and not isinstance(value, datetime):
        return value.isoformat()
    return value
