"""What capa keeps of its open work beside the records: `actions_open` and `capas_open`
(and, for the lists of a period, `actions_days` and `capas_days`: see `shared.periods`).

On FerretDB's SQLite handler every read but an `_id` lookup reads a whole collection, so
the gauges, the event handlers and the list pages of open statuses read these small
collections (see `shared.store.OpenWork`), whose size is bounded by the action requests
and CAPAs still open, never by history. A summary carries what those readers filter and
sort by, under the record's own field names (so a list's query runs on either), and the
due dates of the items for the overdue gauge.
"""

from typing import Any

from services.capa.domain import (
    ENDED_CAPA_STATUSES,
    OPEN_ACTION_STATUSES,
    ActionRequest,
    Capa,
    CapaStatus,
)

OPEN_ACTIONS = [s.value for s in OPEN_ACTION_STATUSES]  # withdrawn ones ask nothing more
OPEN_CAPAS = [s.value for s in CapaStatus if s not in ENDED_CAPA_STATUSES]

# The time each one's history is listed by (newest first): set once, when it is added.
ACTIONS_BY, CAPAS_BY = "requested_at", "opened_at"
ACTIONS_ORDER = [(ACTIONS_BY, -1), ("_id", 1)]
CAPAS_ORDER = [(CAPAS_BY, -1), ("_id", 1)]

# The same selections as store queries: the open-work collections are rebuilt from them at
# start (with the status indexes on MongoDB).
ACTIONS_OPEN_QUERY = {"status": {"$in": OPEN_ACTIONS}}
CAPAS_OPEN_QUERY = {"status": {"$in": OPEN_CAPAS}}


def action_summary(action: ActionRequest) -> dict[str, Any] | None:
    """An action request still asking something of its unit; None once it does not."""
    if action.status not in OPEN_ACTION_STATUSES:
        return None
    return {"status": action.status, "unit": action.unit, "feedback_id": action.feedback_id,
            "requested_at": action.requested_at,
            # a unit's inbox row (api.ActionRow)
            "register_no": action.register_no, "request": action.request,
            "round": action.round,
            "corrective": [{"due_date": i.due_date, "status": i.status}
                           for i in action.corrective],
            "preventive": [{"due_date": i.due_date, "status": i.status}
                           for i in action.preventive]}


def capa_summary(capa: Capa) -> dict[str, Any] | None:
    """A CAPA not closed or withdrawn; None once it is."""
    if capa.status in ENDED_CAPA_STATUSES:
        return None
    return {"status": capa.status, "kind": capa.kind, "source": capa.source,
            "owner_unit": capa.owner_unit, "owner_confirmed": capa.owner_confirmed,
            "feedback_ids": capa.feedback_ids,
            "opened_at": capa.opened_at,
            "actions": [{"due_date": a.due_date} for a in capa.actions]}
