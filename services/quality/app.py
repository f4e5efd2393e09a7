"""Composition root of the quality service."""

from fastapi import FastAPI

from services.quality import api, handlers, sla, wordlists
from services.quality.domain import OPEN_WORK, Case
from services.quality.lookups import CASE_NUMBER_FIELD, CASE_NUMBERS
from services.quality.recurrence import Kind
from services.quality.settings import Settings
from services.quality.sla import HISTORY_BY
from shared.service import Service, create_app

NAME = "quality"

DESCRIPTION = """\
Quality's side of the customer complaint procedure: the Complaint Handling Form
(a *case*) from the moment Sales escalates a feedback until the quality record is
back with Sales.

* **3-day clock (P-F.5)** on every case while it is open: due time, time left,
  at-risk and breached flags; `complaint.sla_at_risk` / `complaint.sla_breached`
  are published when they happen.
* **Major complaints (P-5.3.5)**: the heads of R&D, engineering and production are
  summoned at once (`complaint.major_alert`); their review is recorded.
* **Analysis and responsibility (P-F.3, P-3.2)**: site visits, preliminary cause,
  defect code from the catalogue, the responsible units and what they must do.
* **Verification**: accept or reject each unit's countermeasures; when all are
  accepted the quality record goes to Sales (`complaint.resolution_ready`).
* **Recurrence (P-5.3.4)**: the third complaint of the same kind (customer or
  product + defect) that came after the earlier ones were handled (one arriving
  while another is still being handled joins it), or a case unimproved for too
  long, asks for a formal CAPA.

`{ref}` is the feedback id or its register number. Writes need role `quality`;
`sales`, `manager` and `auditor` read.
"""


def build(settings: Settings) -> Service:
    service = Service(NAME, settings)
    # `cases_open`: what the clock watcher, the gauge and the open-status lists read;
    # `cases_days`: which cases each day brought, what the lists of a period read;
    # `case_numbers`: register number -> case, what a request by number reads by `_id`.
    service.collection("cases", Case, open_summary=Case.open_summary,
                       open_query={"status": {"$in": [s.value for s in OPEN_WORK]}},
                       history_by=HISTORY_BY, lookup=(CASE_NUMBERS, CASE_NUMBER_FIELD))
    service.collection("kinds", Kind)
    handlers.register(service, settings)
    sla.register(service, settings)
    service.routers.append(api.router)
    service.word_lists.update(wordlists.word_lists(settings))
    return service


def create(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    return create_app(build(settings), title="Quality", description=DESCRIPTION, openapi_tags=[
        {"name": "cases", "description": "Complaint Handling Forms and their 3-day clock"},
        {"name": "recurrence", "description": "P-5.3.4: kinds of complaint and their counts"},
        {"name": "reference", "description": "The defect catalogue"},
    ])
