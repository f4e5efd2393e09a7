"""What notify keeps of its open work beside the records: `notifications_open`.

On FerretDB's SQLite handler every read but an `_id` lookup reads a whole collection, so the
dispatcher (every `dispatch_interval_s`), the parked gauge and the list pages of open
statuses read this small collection (see `shared.store.OpenWork`), bounded by the
notifications still to deliver and those parked for ops, never by history. A summary
carries what those readers filter and sort by, under the record's own field names (so a
list's query runs on either).
"""

from typing import Any

from services.notify.domain import Notification, NotificationStatus

# Pending: due, backing off, or leased to an attempt in flight (`next_attempt_at` is then the
# lease's end). Parked: waiting for ops to retry it (the qms_notify_parked alert says so).
OPEN_STATUSES = [NotificationStatus.PENDING.value, NotificationStatus.PARKED.value]
OPEN_QUERY = {"status": {"$in": OPEN_STATUSES}}  # the start's rebuild, from the store
# What the lists of a period order by (newest first), set once when the record is added:
# `notifications_days` and `inbound_mail_days` (see `shared.periods`).
CREATED_AT, RECEIVED_AT = "created_at", "received_at"


def notification_summary(n: Notification) -> dict[str, Any] | None:
    if n.status.value not in OPEN_STATUSES:
        return None
    return {"status": n.status, "channel": n.channel, "next_attempt_at": n.next_attempt_at,
            "created_at": n.created_at, "feedback_id": n.feedback_id, "event_id": n.event_id,
            "recipient": n.recipient, "purpose": n.purpose}
