"""Composition root of the intake service."""

import re

from fastapi import FastAPI

import services.intake as package
from services.intake import api, handlers, numbers, wordlists
from services.intake.domain import Feedback
from services.intake.settings import Settings
from shared.service import Service, create_app

NAME = "intake"
ATTACHMENT_PATH = re.compile(r"^/feedback/[^/]+/attachments/?$")
MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers around the file itself


def build(settings: Settings) -> Service:
    service = Service(NAME, settings)
    # Open feedback keeps a small summary beside the register (`feedback_open`): the list of
    # open statuses (Sales' inbox) reads it, not the whole history. Every other list is of a
    # period of receipt: `feedback_days` names each day's records (`shared.periods`).
    # A register number said on the phone is found through `register_numbers` by `_id`
    # (services.intake.numbers); each number is claimed there before its feedback is written.
    service.collection(api.FEEDBACK, Feedback, open_summary=api.open_summary,
                       open_query=api.OPEN_QUERY, history_by="received_at",
                       lookup=(numbers.REGISTER_NUMBERS, numbers.FIELD))
    handlers.register(service)
    service.routers.append(api.router(settings))
    service.word_lists.update(wordlists.word_lists())

    async def indexes() -> None:
        coll = service.repo(api.FEEDBACK).collection
        await coll.create_index("register_no", unique=True)  # said on the phone: one record
        # The register's order: the lists read by period now (`feedback_days`); kept for
        # queries and reports run on MongoDB itself.
        await coll.create_index(api.REGISTER_ORDER)
        for field in ("status", "customer.id", "product.code"):
            await coll.create_index(field)

    service.on_start.append(indexes)
    return service


def create(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    limit = settings.max_attachment_bytes + MULTIPART_OVERHEAD

    def upload_limit(path: str) -> int | None:
        # Evidence files may be far larger than the JSON body limit; only on that path.
        return limit if ATTACHMENT_PATH.match(path) else None

    return create_app(build(settings), title="Intake (Sales)",
                      description=package.__doc__ or "", upload_limit=upload_limit,
                      openapi_tags=[
                          {"name": "feedback", "description": "The Customer Feedback Register"},
                          {"name": "evidence", "description": "Photos, documents, samples"}])
