"""Where a complaint's Complaint Handling Report stands, as the case and feedback pages show it
(P-5.3.1): reporting's state read with the person's token, and the revision a reply attaches.

Kept apart from the report's routes (`documents.py`) so that `pages.py` can use it without
importing the routes that import it.
"""

from typing import Any
from urllib.parse import quote

from starlette.datastructures import FormData

from services.console.backend import ApiError, Backend
from services.console.i18n import N_

READERS = ("quality", "sales", "manager", "auditor")  # reporting's readers of the report
BASE = "/documents/complaint-reports"


def headline(state: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The report's status as a sentence (message id, values): reporting's `status` with the
    revision it is about."""
    revisions = state["revisions"]
    issued = [r for r in revisions if r["status"] == "issued"]
    status = state["status"]
    if status == "approved":
        return (N_("Approved by Quality as revision %(n)s; waiting for Sales to review and "
                   "issue it"), {"n": revisions[-1]["number"]})
    if status == "issued":
        return N_("Issued: revision %(n)s"), {"n": issued[-1]["number"]}
    if status == "changed":
        return (N_("Changed since revision %(n)s was issued; Quality approves the new content "
                   "as the next revision"), {"n": issued[-1]["number"]})
    if revisions:
        return N_("Not yet approved: the content changed since Quality's last approval"), {}
    return N_("Not yet approved by Quality"), {}


def view(state: dict[str, Any]) -> dict[str, Any]:
    """reporting's state with what a page needs: the sentence for its status, and the issued
    revision a reply attaches (only one that still says what the complaint says)."""
    issued = [r for r in state["revisions"] if r["status"] == "issued"]
    current = issued[-1] if issued and state["status"] == "issued" else None
    return {"state": state, "headline": headline(state), "attach": current,
            "pdfs": {r["pdf"]["sha256"]: r["number"] for r in issued if r.get("pdf")}}


async def fetch(backend: Backend, token: str, ref: str) -> dict[str, Any]:
    """The report's view, or what kept it from the page (`missing`: reporting's refusal): a
    page about the complaint still opens when reporting is behind or down."""
    try:
        state = await backend.get(token, "reporting", f"{BASE}/{quote(ref, safe='')}")
    except ApiError as exc:
        if exc.status == 401:
            raise
        return {"missing": exc}
    return view(state)


def attachment(form: FormData) -> dict[str, Any]:
    """The reply's `report` when the reply form carried the issued revision it announced."""
    sha = form.get("report_sha256")
    if not isinstance(sha, str) or not sha.strip():
        return {}
    report: dict[str, Any] = {"sha256": sha.strip()}
    filename = form.get("report_filename")
    if isinstance(filename, str) and filename.strip():
        report["filename"] = filename.strip()
    return {"report": report}
