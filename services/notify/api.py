"""Notify's HTTP API: notifications and their records, webhook subscriptions for plant
systems, the recipient directory, the customer directory, and the mail received.

Routes only translate: parse, call the domain through the repository, answer.
"""

import secrets
from datetime import datetime
from typing import Annotated, Any
from uuid import uuid4

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import AliasChoices, AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator

from services.notify.context import Notify
from services.notify.domain import (
    Attempt,
    ChannelName,
    CustomerEntry,
    DirectoryEntry,
    EmailAddress,
    Group,
    InboundMail,
    MailDomain,
    Notification,
    NotificationStatus,
    RejectedAttachment,
    Subscription,
    TopicPattern,
)
from services.notify.open_work import CREATED_AT, OPEN_STATUSES, RECEIVED_AT
from shared.api import Page, PageParams, PeriodFrom, PeriodTo, list_page, page_params
from shared.auth import Principal, require
from shared.domain import HistoryEntry
from shared.errors import Conflict, NotFound
from shared.events import utcnow
from shared.lists import Order
from shared.store import AlreadyExists, Repository
from shared.vocabulary import AttachmentMeta, Code, Customer, Language, Name, ShortText

OPS = ("ops",)
READ_OPS = ("ops", "manager", "auditor")
SALES_OPS = ("sales", "ops")
READ_SALES_OPS = ("sales", "ops", "manager", "auditor")
NoNul = r"^[^\x00]*$"
Filter = Annotated[str | None, Query(max_length=300, pattern=NoNul)]
Id = Annotated[str, Path(max_length=400, pattern=NoNul)]


def _page(items: list[Any], total: int, paging: PageParams) -> dict[str, Any]:
    return {"items": items, "total": total, "page": paging.page, "page_size": paging.page_size}


async def _find(repo: Repository, query: dict[str, Any], paging: PageParams, sort: str,
                projection: dict[str, int] | None = None) -> dict[str, Any]:
    """A page of configuration (the webhook subscriptions), newest first: a small collection,
    read whole on FerretDB's SQLite handler, by an index on MongoDB."""
    coll = repo.collection
    docs = await coll.find(query, projection=projection).sort([(sort, -1), ("_id", 1)]) \
        .skip(paging.skip).limit(paging.page_size).to_list(None)
    return _page(docs, await coll.count_documents(query), paging)


def _newest_first(field: str) -> Order:
    return [(field, -1), ("_id", 1)]


def _as_stored(doc: dict[str, Any]) -> dict[str, Any]:
    return doc  # the route's response model shapes it


async def _notifications(notify: Notify, request: Request, query: dict[str, Any],
                         paging: PageParams, start: datetime | None, end: datetime | None,
                         projection: dict[str, int]) -> Page:
    """Notifications, newest first. Asked for an open status (pending, parked) and no period,
    the page comes from `notifications_open`, bounded by open work: its summaries carry the
    fields this list filters and sorts by, under the same names. Otherwise, those created in
    the period asked for (`from`/`to`, by default the last QMS_HISTORY_DAYS days)."""
    return await list_page(request, notify.notifications, query, _newest_first(CREATED_AT),
                           paging, _as_stored, open_work=query.get("status") in OPEN_STATUSES,
                           start=start, end=end, projection=projection)


# ---------------------------------------------------------------- models: notifications


class NotificationSummary(BaseModel):
    """One message to one recipient over one channel, because of one event."""

    id: str = Field(..., validation_alias=AliasChoices("_id", "id"),
                    examples=["6f1c…:email:quality@plant.example"],
                    description="`<event id>:<channel>:<recipient>`: one per event and recipient")
    channel: ChannelName
    recipient: str = Field(..., description="E-mail address, or the webhook subscription id")
    recipient_name: str | None = None
    purpose: str = Field(..., examples=["sla_breached"])
    event_id: str
    event_type: str = Field(..., examples=["complaint.sla_breached"])
    feedback_id: str
    register_no: str | None = Field(None, examples=["CF-2026-000123"])
    language: Language | None = None
    subject: str | None = None
    status: NotificationStatus = Field(..., description="`no_recipient`: nobody could be "
                                       "told; `recipient` says who was meant, `reason` why")
    reason: str | None = Field(None, examples=["customer C-1001 (Bright Motors) has no e-mail "
                                               "address"])
    attempts: int
    next_attempt_at: datetime | None = None
    last_error: str | None = None
    created_at: datetime
    sent_at: datetime | None = None


class NotificationRead(NotificationSummary):
    body: str = Field(..., description="What was (or will be) sent")
    attachments: list[AttachmentMeta] = Field(default_factory=list, description="Files sent "
                                              "with the mail (the Complaint Handling Report)")
    target: str | None = None
    attempt_log: list[Attempt]
    history: list[HistoryEntry]
    version: int


class Delivery(NotificationSummary):
    """A webhook delivery with every attempt (the subscription's delivery log)."""

    attempt_log: list[Attempt]


# ---------------------------------------------------------------- models: webhooks


class SubscriptionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "name": "ERP quality module", "url": "https://erp.plant.example/qms/events",
        "event_types": ["complaint.*", "capa.opened"]}]})

    name: Name = Field(..., description="Who receives it")
    url: AnyHttpUrl = Field(..., description="http(s) endpoint the events are POSTed to")
    event_types: list[TopicPattern] = Field(..., min_length=1, max_length=50)
    secret: str | None = Field(None, min_length=16, max_length=200, pattern=NoNul,
                               description="HMAC key; generated (and shown once) if omitted")

    @field_validator("url")
    @classmethod
    def _bounded(cls, url: AnyHttpUrl) -> AnyHttpUrl:
        if len(str(url)) > 2000:
            raise ValueError("URL longer than 2000 characters")
        return url


class SubscriptionUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"active": False}, {"event_types": ["complaint.sla_breached"]}]})

    name: Name | None = None
    url: AnyHttpUrl | None = None
    event_types: list[TopicPattern] | None = Field(None, min_length=1, max_length=50)
    secret: str | None = Field(None, min_length=16, max_length=200, pattern=NoNul,
                               description="Rotate the HMAC key")
    active: bool | None = None


class SubscriptionRead(BaseModel):
    id: str = Field(..., validation_alias=AliasChoices("_id", "id"))
    name: str
    url: str
    event_types: list[str]
    active: bool
    created_at: datetime
    version: int
    history: list[HistoryEntry]


class SubscriptionCreated(SubscriptionRead):
    secret: str = Field(..., description="Shown once: keep it to verify `X-QMS-Signature`")


# ---------------------------------------------------------------- models: directory


class DirectoryCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "email": "li.wei@plant.example", "name": "Li Wei", "language": "zh",
        "groups": ["role:quality"]}]})

    email: EmailAddress
    name: Name
    language: Language = Language.ZH
    groups: list[Group] = Field(..., min_length=1, max_length=50)


class DirectoryUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"groups": ["head:production", "role:manager"]}, {"active": False}]})

    name: Name | None = None
    language: Language | None = None
    groups: list[Group] | None = Field(None, min_length=1, max_length=50)
    active: bool | None = None


class DirectoryRead(BaseModel):
    email: str
    name: str
    language: Language
    groups: list[str]
    active: bool
    version: int
    history: list[HistoryEntry]


# ---------------------------------------------------------------- models: customers


class CustomerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "id": "C-1001", "name": "Shenzhen Bright Motors Co.", "contact_person": "Zhang Min",
        "language": "zh", "emails": ["zhang.min@brightmotors.example"],
        "domains": ["brightmotors.example"]}]})

    id: Code = Field(..., description="The customer id Sales uses")
    name: Name
    contact_person: ShortText | None = None
    language: Language = Language.ZH
    emails: list[EmailAddress] = Field(default_factory=list, max_length=100)
    domains: list[MailDomain] = Field(default_factory=list, max_length=50,
                                      description="Any address at these domains is this "
                                                  "customer")


class CustomerUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"domains": ["brightmotors.example", "bright-motors.example"]}]})

    name: Name | None = None
    contact_person: ShortText | None = None
    language: Language | None = None
    emails: list[EmailAddress] | None = Field(None, max_length=100)
    domains: list[MailDomain] | None = Field(None, max_length=50)
    active: bool | None = None


class CustomerRead(BaseModel):
    id: str = Field(..., validation_alias=AliasChoices("_id", "id"))
    name: str
    contact_person: str | None
    language: Language
    emails: list[str]
    domains: list[str]
    active: bool
    version: int
    history: list[HistoryEntry]


# ---------------------------------------------------------------- models: mail


class MailSummary(BaseModel):
    """A mail (or fax) the complaints mailbox received."""

    id: str = Field(..., validation_alias=AliasChoices("_id", "id"))
    received_at: datetime
    from_address: str
    from_name: str | None
    subject: str
    is_fax: bool
    customer: Customer | None = Field(None, description="None: unidentified, Sales assigns it")
    register_no: str | None
    malformed: bool
    auto_reply: bool = Field(False, description="An automatic answer (out-of-office…)")
    held: bool = Field(False, description="Not registered as feedback: an auto-reply naming no "
                                          "register number, for Sales to look at")
    size: int


class MailRead(MailSummary):
    body: str
    message_id: str | None
    envelope_from: str | None
    envelope_to: list[str]
    attachments: list[AttachmentMeta]
    rejected_attachments: list[RejectedAttachment]
    problems: list[str]
    history: list[HistoryEntry]


MAIL_SUMMARY = {f: 1 for f in MailSummary.model_fields if f != "id"}


# ---------------------------------------------------------------- routes


def router(notify: Notify) -> APIRouter:
    api = APIRouter()
    _notification_routes(api, notify)
    _webhook_routes(api, notify)
    _directory_routes(api, notify)
    _customer_routes(api, notify)
    _mail_routes(api, notify)
    return api


def _notification_routes(api: APIRouter, notify: Notify) -> None:
    @api.get("/notifications", response_model=Page[NotificationSummary], tags=["notifications"],
             summary="Notifications: what, to whom, for which event, attempts, result; the "
                     "open ones (pending, parked), or those created in a period")
    async def list_notifications(
            request: Request, _: Annotated[Principal, Depends(require(*READ_OPS))],
            paging: Annotated[PageParams, Depends(page_params)],
            feedback_id: Filter = None, event_id: Filter = None,
            channel: ChannelName | None = None, status: NotificationStatus | None = None,
            recipient: Filter = None, purpose: Filter = None,
            start: PeriodFrom = None, end: PeriodTo = None) -> Page:
        query = {k: v for k, v in {"feedback_id": feedback_id, "event_id": event_id,
                                   "channel": channel.value if channel else None,
                                   "status": status.value if status else None,
                                   "recipient": recipient.lower() if recipient else None,
                                   "purpose": purpose}.items() if v is not None}
        return await _notifications(notify, request, query, paging, start, end,
                                    projection={"body": 0, "attempt_log": 0, "history": 0,
                                                "applied_events": 0, "outbox": 0})

    @api.get("/notifications/{notification_id}", response_model=NotificationRead,
             tags=["notifications"], summary="One notification with its attempts and history")
    async def get_notification(notification_id: Id,
                               _: Annotated[Principal, Depends(require(*READ_OPS))]
                               ) -> Notification:
        return await notify.notifications.get_or_raise(notification_id,
                                                                 "Notification")

    @api.post("/notifications/{notification_id}/retry", response_model=NotificationRead,
              tags=["notifications"],
              summary="Retry a parked notification (a fresh round of attempts); 409 otherwise")
    async def retry_notification(notification_id: Id,
                                 who: Annotated[Principal, Depends(require(*OPS))]
                                 ) -> Notification:
        return await _retry(notify, notification_id, who)


async def _retry(notify: Notify, notification_id: str, who: Principal,
                 subscription_id: str | None = None) -> Notification:
    if subscription_id is not None:
        found = await notify.notifications.get(notification_id)
        if found is None or found.recipient != subscription_id:
            raise NotFound(f"Subscription {subscription_id!r} has no delivery "
                           f"{notification_id!r}.")
    saved = await notify.notifications.change(
        notification_id, lambda n: n.retry(who.as_actor(), utcnow()), what="Notification")
    notify.dispatcher.wake()
    return saved


def _webhook_routes(api: APIRouter, notify: Notify) -> None:
    @api.post("/webhooks", response_model=SubscriptionCreated, status_code=201,
              tags=["webhooks"], summary="Subscribe a plant system to events (signed POSTs)")
    async def subscribe(body: SubscriptionCreate,
                        who: Annotated[Principal, Depends(require(*OPS))]) -> dict[str, Any]:
        secret = body.secret or secrets.token_urlsafe(32)
        sub = Subscription.create(id=str(uuid4()), name=body.name, url=str(body.url),
                                  secret=secret, event_types=list(body.event_types),
                                  actor=who.as_actor(), now=utcnow())
        saved = await notify.subscriptions.add(sub)
        notify.active_subscriptions.forget()  # the next event is sent to it
        return saved.model_dump(by_alias=True) | {"secret": secret}

    @api.get("/webhooks", response_model=Page[SubscriptionRead], tags=["webhooks"],
             summary="The subscriptions (secrets are never shown)")
    async def list_subscriptions(_: Annotated[Principal, Depends(require(*READ_OPS))],
                                 paging: Annotated[PageParams, Depends(page_params)],
                                 active: bool | None = None) -> dict[str, Any]:
        query = {} if active is None else {"active": active}
        return await _find(notify.subscriptions, query, paging, "created_at",
                           projection={"secret": 0})

    @api.get("/webhooks/{subscription_id}", response_model=SubscriptionRead, tags=["webhooks"],
             summary="One subscription with its history")
    async def get_subscription(subscription_id: Id,
                               _: Annotated[Principal, Depends(require(*READ_OPS))]
                               ) -> Subscription:
        return await notify.subscriptions.get_or_raise(subscription_id,
                                                                 "Subscription")

    @api.patch("/webhooks/{subscription_id}", response_model=SubscriptionRead,
               tags=["webhooks"], summary="Change URL, event types, secret, or (de)activate")
    async def update_subscription(subscription_id: Id,
                                  body: SubscriptionUpdate,
                                  who: Annotated[Principal, Depends(require(*OPS))]
                                  ) -> Subscription:
        values = body.model_dump(exclude_unset=True)
        if "url" in values and values["url"] is not None:
            values["url"] = str(values["url"])
        changed = await notify.subscriptions.change(
            subscription_id, lambda s: s.update(who.as_actor(), **values) or False,
            what="Subscription")
        notify.active_subscriptions.forget()
        return changed

    @api.get("/webhooks/{subscription_id}/deliveries", response_model=Page[Delivery],
             tags=["webhooks"], summary="The delivery log: each delivery and its attempts; the "
                                        "open ones (pending, parked), or those of a period")
    async def deliveries(request: Request, subscription_id: Id,
                         _: Annotated[Principal, Depends(require(*READ_OPS))],
                         paging: Annotated[PageParams, Depends(page_params)],
                         status: NotificationStatus | None = None,
                         start: PeriodFrom = None, end: PeriodTo = None) -> Page:
        await notify.subscriptions.get_or_raise(subscription_id, "Subscription")
        query: dict[str, Any] = {"channel": ChannelName.WEBHOOK.value,
                                 "recipient": subscription_id}
        if status is not None:
            query["status"] = status.value
        return await _notifications(notify, request, query, paging, start, end,
                                    projection={"body": 0, "history": 0, "applied_events": 0})

    @api.post("/webhooks/{subscription_id}/deliveries/{delivery_id}/retry",
              response_model=NotificationRead, tags=["webhooks"],
              summary="Retry a parked delivery (a fresh round of attempts)")
    async def retry_delivery(subscription_id: Id, delivery_id: Id,
                             who: Annotated[Principal, Depends(require(*OPS))]) -> Notification:
        return await _retry(notify, delivery_id, who, subscription_id)


def _directory_routes(api: APIRouter, notify: Notify) -> None:
    @api.get("/directory", response_model=Page[DirectoryRead], tags=["directory"],
             summary="Who is told: role mailboxes, unit mailboxes, unit heads, managers")
    async def list_directory(_: Annotated[Principal, Depends(require(*READ_OPS))],
                             paging: Annotated[PageParams, Depends(page_params)],
                             group: Annotated[str | None, Query(max_length=80,
                                                                pattern=NoNul)] = None,
                             active: bool | None = None) -> dict[str, Any]:
        query: dict[str, Any] = {}
        if group:
            query["groups"] = group
        if active is not None:
            query["active"] = active
        repo = notify.directory
        docs = await repo.collection.find(query).sort("_id", 1).skip(paging.skip) \
            .limit(paging.page_size).to_list(None)
        return _page(docs, await repo.collection.count_documents(query), paging)

    @api.post("/directory", response_model=DirectoryRead, status_code=201, tags=["directory"],
              summary="Add a mailbox or a person")
    async def add_entry(body: DirectoryCreate,
                        who: Annotated[Principal, Depends(require(*OPS))]) -> DirectoryEntry:
        entry = DirectoryEntry.create(email=body.email, name=body.name, language=body.language,
                                      groups=list(body.groups), actor=who.as_actor())
        try:
            added = await notify.directory.add(entry)
        except AlreadyExists as exc:
            raise Conflict(f"{body.email} is already in the directory; change it with "
                           f"PATCH /directory/{body.email}.") from exc
        notify.directory_copy.forget()  # the next event's mail reaches it
        return added

    @api.get("/directory/{email}", response_model=DirectoryRead, tags=["directory"],
             summary="One entry with its history")
    async def get_entry(email: Id,
                        _: Annotated[Principal, Depends(require(*READ_OPS))]) -> DirectoryEntry:
        return await notify.directory.get_or_raise(email.lower(), "Directory entry")

    @api.patch("/directory/{email}", response_model=DirectoryRead, tags=["directory"],
               summary="Change name, language, groups, or deactivate (nothing is deleted)")
    async def update_entry(email: Id, body: DirectoryUpdate,
                           who: Annotated[Principal, Depends(require(*OPS))]) -> DirectoryEntry:
        values = body.model_dump(exclude_unset=True)
        changed = await notify.directory.change(
            email.lower(), lambda e: e.update(who.as_actor(), **values) or False,
            what="Directory entry")
        notify.directory_copy.forget()
        return changed


def _customer_routes(api: APIRouter, notify: Notify) -> None:
    @api.get("/customers", response_model=Page[CustomerRead], tags=["customers"],
             summary="Customers and the addresses / domains their mail comes from")
    async def list_customers(_: Annotated[Principal, Depends(require(*READ_SALES_OPS))],
                             paging: Annotated[PageParams, Depends(page_params)],
                             email: Filter = None, domain: Filter = None) -> dict[str, Any]:
        query: dict[str, Any] = {}
        if email:
            query["emails"] = email.lower()
        if domain:
            query["domains"] = domain.lower()
        repo = notify.customers
        docs = await repo.collection.find(query).sort("_id", 1).skip(paging.skip) \
            .limit(paging.page_size).to_list(None)
        return _page(docs, await repo.collection.count_documents(query), paging)

    @api.post("/customers", response_model=CustomerRead, status_code=201, tags=["customers"],
              summary="Add a customer for inbound mail matching")
    async def add_customer(body: CustomerCreate,
                           who: Annotated[Principal, Depends(require(*SALES_OPS))]
                           ) -> CustomerEntry:
        repo = notify.customers
        await _no_overlap(repo, body.id, body.emails, body.domains)
        entry = CustomerEntry.create(id=body.id, name=body.name,
                                     contact_person=body.contact_person, language=body.language,
                                     emails=list(body.emails), domains=list(body.domains),
                                     actor=who.as_actor())
        try:
            return await repo.add(entry)
        except AlreadyExists as exc:
            raise Conflict(f"Customer {body.id} already exists; change it with "
                           f"PATCH /customers/{body.id}.") from exc

    @api.get("/customers/{customer_id}", response_model=CustomerRead, tags=["customers"],
             summary="One customer with its history")
    async def get_customer(customer_id: Id,
                           _: Annotated[Principal, Depends(require(*READ_SALES_OPS))]
                           ) -> CustomerEntry:
        return await notify.customers.get_or_raise(customer_id, "Customer")

    @api.patch("/customers/{customer_id}", response_model=CustomerRead, tags=["customers"],
               summary="Change a customer's addresses, domains, language, or deactivate")
    async def update_customer(customer_id: Id, body: CustomerUpdate,
                              who: Annotated[Principal, Depends(require(*SALES_OPS))]
                              ) -> CustomerEntry:
        repo = notify.customers
        values = body.model_dump(exclude_unset=True)
        await _no_overlap(repo, customer_id, values.get("emails") or [],
                          values.get("domains") or [])
        return await repo.change(customer_id,
                                 lambda c: c.update(who.as_actor(), **values) or False,
                                 what="Customer")


async def _no_overlap(repo: Repository[CustomerEntry], customer_id: str, emails: list[str],
                      domains: list[str]) -> None:
    """An address or domain names one customer, or matching would be a guess."""
    clauses: list[dict[str, Any]] = []
    if emails:
        clauses.append({"emails": {"$in": [e.lower() for e in emails]}})
    if domains:
        clauses.append({"domains": {"$in": [d.lower() for d in domains]}})
    if not clauses:
        return
    other = await repo.collection.find_one(
        {"_id": {"$ne": customer_id}, "active": True, "$or": clauses}, projection={"_id": 1})
    if other is not None:
        raise Conflict(f"Customer {other['_id']} already has one of these addresses or "
                       f"domains; an inbound mail must match one customer only.")


def _mail_routes(api: APIRouter, notify: Notify) -> None:
    @api.get("/mail", response_model=Page[MailSummary], tags=["mail"],
             summary="Mail and faxes received by the complaints mailbox in a period, newest "
                     "first")
    async def list_mail(request: Request,
                        _: Annotated[Principal, Depends(require(*READ_SALES_OPS))],
                        paging: Annotated[PageParams, Depends(page_params)],
                        malformed: bool | None = None, is_fax: bool | None = None,
                        auto_reply: bool | None = None,
                        held: Annotated[bool | None, Query(
                            description="true: kept but not registered as feedback")] = None,
                        unidentified: Annotated[bool | None, Query(
                            description="true: no customer matched")] = None,
                        customer_id: Filter = None, register_no: Filter = None,
                        from_address: Filter = None,
                        start: PeriodFrom = None, end: PeriodTo = None) -> Page:
        query: dict[str, Any] = {}
        for key, value in (("malformed", malformed), ("is_fax", is_fax),
                           ("auto_reply", auto_reply), ("held", held),
                           ("customer.id", customer_id), ("register_no", register_no),
                           ("from_address", from_address.lower() if from_address else None)):
            if value is False and key in ("auto_reply", "held"):
                query[key] = {"$ne": True}  # mail stored before these flags existed has none
            elif value is not None:
                query[key] = value
        if unidentified is not None:
            query["customer"] = None if unidentified else {"$ne": None}
        return await list_page(request, notify.mail, query, _newest_first(RECEIVED_AT), paging,
                               _as_stored, start=start, end=end, projection=MAIL_SUMMARY)

    @api.get("/mail/{mail_id}", response_model=MailRead, tags=["mail"],
             summary="One mail: what was parsed, attachments, problems, history")
    async def get_mail(mail_id: Id,
                       _: Annotated[Principal, Depends(require(*READ_SALES_OPS))]) -> InboundMail:
        return await notify.mail.get_or_raise(mail_id, "Mail")

    @api.get("/mail/{mail_id}/raw", response_class=Response, tags=["mail"],
             summary="The message exactly as received (message/rfc822)",
             responses={200: {"content": {"message/rfc822": {}}}})
    async def get_raw(mail_id: Id,
                      _: Annotated[Principal, Depends(require(*READ_SALES_OPS))]) -> Response:
        doc = await notify.mail.collection.find_one({"_id": mail_id},
                                                              projection={"raw": 1})
        if doc is None:
            raise NotFound(f"Mail {mail_id!r} does not exist.")
        return Response(bytes(doc["raw"]), media_type="message/rfc822",
                        headers={"Content-Disposition": f'attachment; filename="{mail_id}.eml"'})
