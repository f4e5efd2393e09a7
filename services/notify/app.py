"""Composition root of the notify service."""

import logging

from fastapi import FastAPI

import services.notify as package
from services.notify import api, handlers, wordlists
from services.notify.context import Notify
from services.notify.inbound import InboundServer, Inbox, Listening
from services.notify.settings import Settings
from shared.service import Service, create_app

NAME = "notify"


def build(settings: Settings) -> Service:
    service = Service(NAME, settings)
    notify = Notify(service, settings)
    handlers.register(notify)
    service.routers.append(api.router(notify))
    service.word_lists.update(wordlists.word_lists())
    service.on_start.append(notify.start)
    if settings.inbound_enabled:
        logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd: one line per command
        listening = Listening(settings.inbound_host, settings.inbound_port)
        service.readiness_checks["inbound_smtp"] = listening.check

        async def serve_inbound() -> None:
            await notify.ready.wait()
            inbox = Inbox(settings, notify.mail, notify.customers, notify.metrics)
            await InboundServer(settings, inbox, notify.metrics, listening).run()

        service.background(serve_inbound)
    service.on_stop.insert(0, notify.stop)  # first: finish the attempts in flight
    return service


def create(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    return create_app(build(settings), title="Notify", description=package.__doc__ or "",
                      openapi_tags=[
                          {"name": "notifications", "description": "Every notification sent "
                                                                    "and its attempts"},
                          {"name": "webhooks", "description": "Plant systems: signed event "
                                                              "deliveries"},
                          {"name": "directory", "description": "Who is told"},
                          {"name": "customers", "description": "Inbound mail matching"},
                          {"name": "mail", "description": "Complaints received by e-mail "
                                                          "and fax (P-5.1)"}])
