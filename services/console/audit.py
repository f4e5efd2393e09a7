"""The auditor's pages: find a complaint by its register number, then its whole history as a
timeline (P-5.4.2: who, when, what changed from what), read-only.

The history is reporting's (`GET /register/{feedback_id}/history`: every event of the
feedback, oldest first); the number is looked up at intake, which takes the register number
as well as the id.
"""

import asyncio
import json
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request, Response

from services.console.backend import ApiError
from services.console.i18n import N_, Translator
from services.console.pages import Console

READERS = ("auditor", "manager", "quality")
# What each domain event means to a person (its `type`, as published).
EVENTS: dict[str, str] = {
    "feedback.registered": N_("Feedback registered"),
    "feedback.classified": N_("Feedback classified"),
    "feedback.evidence_added": N_("Evidence added"),
    "feedback.replied_directly": N_("Answered directly"),
    "complaint.escalated": N_("Complaint Handling Form opened"),
    "feedback.customer_replied": N_("Customer replied to"),
    "feedback.satisfaction_recorded": N_("Customer's satisfaction recorded"),
    "feedback.closed": N_("Closed"),
    "complaint.reopened": N_("Reopened"),
    "complaint.returned_to_quality": N_("Quality's record returned to Quality"),
    "feedback.withdrawn": N_("Withdrawn"),
    "complaint.accepted": N_("Form received by Quality"),
    "complaint.major_alert": N_("Major complaint: heads summoned"),
    "complaint.responsibility_assigned": N_("Responsibility assigned"),
    "complaint.countermeasures_verified": N_("Countermeasures verified"),
    "complaint.countermeasures_rejected": N_("Countermeasures rejected"),
    "complaint.resolution_ready": N_("Quality's record ready for Sales"),
    "complaint.sla_at_risk": N_("3-day clock at risk"),
    "complaint.sla_breached": N_("3-day deadline missed"),
    "complaint.recurrence_detected": N_("Recurrence detected"),
    "action.requested": N_("Action requested of a unit"),
    "action.countermeasures_proposed": N_("Countermeasures proposed"),
    "action.completed": N_("Actions completed"),
    "capa.opened": N_("CAPA opened"),
    "capa.effectiveness_verified": N_("CAPA effectiveness verified"),
    "capa.closed": N_("CAPA closed"),
    "capa.withdrawn": N_("CAPA withdrawn"),
    "capa.owner_assigned": N_("CAPA owner assigned"),
}
SAME_EVERYWHERE = {"feedback_id", "register_no"}  # on every event: says nothing new
# Payload fields whose values are codes of a service's word list, shown by their labels.
WORD_LISTS = {"channel": "channels", "category": "categories", "severity": "severities",
              "unit": "units", "defect_code": "defect_codes", "outcome": "no_action_outcomes",
              "status": "feedback_statuses", "language": "languages"}
LONGEST = 300  # characters of a value shown; the whole event is one click away


def shown(value: Any, tr: Translator, key: str) -> str:
    """A payload value as a line of text: times in the plant's zone, structures compact."""
    if value is None:
        return "—"
    if key.endswith("_at") and isinstance(value, str):
        try:
            return tr.datetime(value)
        except ValueError:
            return value
    if isinstance(value, bool):
        return tr.gettext("Yes") if value else tr.gettext("No")
    if key in WORD_LISTS and isinstance(value, str):
        return tr.label(value, WORD_LISTS[key])
    if isinstance(value, (dict, list)):
        value = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    text = str(value)
    return text if len(text) <= LONGEST else text[:LONGEST] + "…"


def timeline(events: Iterable[Mapping[str, Any]], tr: Translator) -> list[dict[str, Any]]:
    """Each event with what it changed: a field the story had told before shows its earlier
    value beside the new one; a field told for the first time shows its value."""
    known: dict[str, Any] = {}
    entries = []
    for event in events:
        changes = []
        for key, value in (event.get("payload") or {}).items():
            if key in SAME_EVERYWHERE or value in (None, [], {}):
                continue
            after = shown(value, tr, key)
            before = known.get(key)
            known[key] = after
            if before == after:
                continue  # told again (perhaps written differently): nothing changed
            changes.append({"field": key, "before": before, "after": after})
        actor = event.get("actor") or {}
        entries.append({"id": event.get("id"), "type": event.get("type", ""),
                        "what": tr.gettext(EVENTS[event["type"]]) if event.get("type") in
                        EVENTS else event.get("type", ""),
                        "at": event.get("occurred_at"), "producer": event.get("producer"),
                        "who": actor.get("name") or actor.get("sub") or "",
                        "sub": actor.get("sub") or "", "roles": actor.get("roles") or [],
                        "unit": actor.get("unit"), "changes": changes,
                        "raw": json.dumps(event.get("payload"), ensure_ascii=False, indent=1)})
    return entries


def router(console: Console) -> APIRouter:
    r = APIRouter(include_in_schema=False)
    backend = console.backend

    @r.get("/audit")
    async def search(request: Request) -> Response:
        """A register number (or feedback id) -> that complaint's timeline."""
        ctx = await console.ctx(request)
        _, token = ctx.need(*READERS)
        number = (request.query_params.get("q") or "").strip()
        if not number:
            return ctx.render("audit_search.html", q="", error=None)
        try:
            fb = await backend.get(token, "intake", f"/feedback/{quote(number, safe='')}")
        except ApiError as exc:
            if exc.status >= 500 or exc.status == 401:
                raise
            return ctx.render("audit_search.html", q=number, error=ctx.error(exc))
        return ctx.redirect(f"/audit/{quote(fb['id'])}")

    @r.get("/audit/{feedback_id}")
    async def history(request: Request, feedback_id: str) -> Response:
        ctx = await console.ctx(request)
        _, token = ctx.need(*READERS)
        path = f"/register/{quote(feedback_id, safe='')}"
        row, events = await asyncio.gather(backend.get(token, "reporting", path),
                                           backend.get(token, "reporting", f"{path}/history"))
        return ctx.render("audit.html", row=row, entries=timeline(events, ctx.tr))

    return r
