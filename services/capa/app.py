"""Composition root of the capa service."""

from fastapi import FastAPI

from services.capa import handlers, metrics, wordlists
from services.capa.api import actions_router, capas_router
from services.capa.domain import ActionRequest, Capa
from services.capa.handlers import ACTIONS, CAPAS, NUMBERS
from services.capa.open_work import (
    ACTIONS_BY,
    ACTIONS_OPEN_QUERY,
    CAPAS_BY,
    CAPAS_OPEN_QUERY,
    action_summary,
    capa_summary,
)
from services.capa.settings import Settings
from shared.service import Service, create_app

NAME = "capa"

DESCRIPTION = """\
Action requests to responsible units and formal CAPAs.

* **Action requests** (P-3.3, P-5.3.2): one per responsible unit when Quality assigns
  responsibility. The unit (role `unit`, its own unit's requests only) records containment,
  a 5-why root cause with its 4M/6M category, corrective and preventive actions (owner, due
  date) and the disposition (return, rework, sorting, scrap, concession; quantity, cost),
  submits them to Quality, and marks each action done once Quality has verified them. The
  request shows the complaint (product, lot, defect, description, evidence: P-5.3.2); a
  withdrawn complaint withdraws its open requests.
* **Formal CAPA** (P-5.3.4): opened automatically on a recurrence or by Quality by hand;
  root cause, action plan, implementation, effectiveness check (once its window has ended).
  It cannot close without an effective verification; an ineffective one reopens the plan.
  Quality names the owner unit (`PUT /capas/{ref}/owner`) and may withdraw a CAPA with a
  reason until it closes.

Every record keeps an append-only history (`…/history`, P-5.4.2).
"""


def build(settings: Settings) -> Service:
    service = Service(NAME, settings)
    service.collection(ACTIONS, ActionRequest, open_summary=action_summary,
                       open_query=ACTIONS_OPEN_QUERY, history_by=ACTIONS_BY,
                       history_facets=("unit", "feedback_id"), many_valued=("feedback_id",))
    # A CAPA number is found through `capa_numbers` by `_id`; `add_numbered` claims it there
    # before the CAPA is written.
    service.collection(CAPAS, Capa, open_summary=capa_summary, open_query=CAPAS_OPEN_QUERY,
                       history_by=CAPAS_BY, lookup=(NUMBERS, "number"))
    handlers.register(service, settings)
    service.routers += [actions_router(), capas_router()]
    service.word_lists.update(wordlists.word_lists())

    async def indexes() -> None:
        # The start's rebuild of the open-work collections reads the store by status: used
        # on MongoDB (FerretDB's SQLite handler reads the whole collection whatever its
        # indexes). The unique `number` refuses a number given twice whatever the sequence
        # says; a CAPA is found by number through `capa_numbers`. The lists read `*_open`,
        # or `*_days` and then the records by `_id`.
        await service.repo(ACTIONS).collection.create_index("status")
        capas = service.repo(CAPAS).collection
        await capas.create_index("number", unique=True)
        await capas.create_index("status")

    service.on_start.append(indexes)
    metrics.register(service, settings.metrics_interval_s)
    return service


def create(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    return create_app(build(settings), title="CAPA (responsible units and Quality)",
                      description=DESCRIPTION, openapi_tags=[
                          {"name": "action requests",
                           "description": "What Quality asks of a responsible unit (P-3.3)"},
                          {"name": "formal CAPA",
                           "description": "Corrective and Preventive Action Control (P-5.3.4)"},
                      ])
