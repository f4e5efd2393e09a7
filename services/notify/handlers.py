"""Events in: remember case facts, fan out to plant systems, tell the people concerned.

Notify binds `#`: a plant system may subscribe to any event type except notify's own
`notification.sent` / `notification.failed` (see `register`). Every effect
is idempotent: notification ids are deterministic (event id + channel +
recipient) and inserted once, so a redelivered event notifies nobody twice.
"""

import logging
import re
from dataclasses import dataclass

from services.notify.context import Notify, add_once
from services.notify.domain import CaseView, ChannelName, Notification, Subscription
from services.notify.rules import Audience, mail_rule
from shared.contracts import (
    ComplaintEscalated,
    CustomerReplied,
    FeedbackClassified,
    FeedbackRegistered,
    MajorAlert,
    NotificationFailed,
    NotificationSent,
)
from shared.events import Contract, Envelope, utcnow
from shared.vocabulary import AttachmentMeta, Head, Language, Severity

log = logging.getLogger("qms.notify.handlers")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class NotYetKnown(Exception):
    """An earlier event of this story has not arrived yet: fail, so the kit retries."""


@dataclass(frozen=True)
class Recipient:
    address: str
    name: str
    language: Language



def register(notify: Notify) -> None:
    consumer = notify.service.consumer

    async def on_event(event: Envelope, payload: Contract) -> None:
        if isinstance(payload, NotificationSent | NotificationFailed):
            # Notify's own facts about its deliveries come back through `#`: a webhook or a
            # mail about a delivery would be a delivery to announce again, without end.
            # Plant systems that want them bind their own queue to the exchange.
            return
        await notify.ready.wait()  # the directory is seeded and the dispatcher exists
        case = await remember_case(notify, event, payload)
        await fan_out(notify, event)
        await tell_people(notify, event, payload, case)  # each attempted as it is added

    consumer.on_any(on_event)  # binds `#`: plant systems may subscribe to any type


# ---------------------------------------------------------------- the case read model


async def remember_case(notify: Notify, event: Envelope,
                        payload: Contract) -> CaseView | None:
    """What the event says about its case, kept; the case as it now stands (None: the
    event says nothing about it, and it is read when a mail needs it)."""
    facts: dict | None = None
    if isinstance(payload, FeedbackRegistered | ComplaintEscalated):
        facts = {"register_no": payload.register_no, "customer": payload.customer,
                 "category": payload.category, "severity": payload.severity,
                 "product": payload.product, "description": payload.description}
    elif isinstance(payload, FeedbackClassified):  # Sales said who the customer really is
        facts = {"register_no": payload.register_no, "customer": payload.customer,
                 "category": payload.category, "severity": payload.severity,
                 "product": payload.product}
    elif isinstance(payload, MajorAlert):
        facts = {"register_no": payload.register_no, "customer": payload.customer,
                 "product": payload.product, "description": payload.description,
                 "severity": Severity.MAJOR}
    if facts is None:
        return None
    change = CaseView.reclassify if isinstance(payload, FeedbackClassified) else CaseView.remember
    case_id = event.correlation_id
    # The first fact of a case makes it: one insert, not an empty case and then an update.
    return await notify.cases.apply_event(case_id, event, lambda case: change(case, **facts),
                                          create=lambda: CaseView(id=case_id))


# ---------------------------------------------------------------- webhooks


async def fan_out(notify: Notify, event: Envelope) -> None:
    """One delivery per active subscription that wants this event type.

    The subscriptions are configuration (a few plant systems): a read bounded by them, and
    at most one every few seconds (`ConfigCopy`)."""
    docs = await notify.active_subscriptions.all(notify.subscriptions)
    body = event.model_dump_json()
    for doc in docs:
        sub = Subscription.model_validate(doc)
        if not sub.wants(event.type):
            continue
        n = Notification.create(channel=ChannelName.WEBHOOK, recipient=sub.id, event=event,
                                purpose="webhook", body=body, now=utcnow(),
                                recipient_name=sub.name, target=sub.url)
        await _insert_once(notify, n)


# ---------------------------------------------------------------- e-mail to people


async def tell_people(notify: Notify, event: Envelope, payload: Contract,
                      case: CaseView | None = None) -> None:
    rule = mail_rule(payload)
    if rule is None:
        return
    if case is None:
        case = await notify.cases.seen(event.correlation_id)
    recipients = await _resolve(notify, rule.audience, case)
    if not recipients:
        await _record_nobody(notify, rule.purpose, rule.audience, event, payload, case)
        return
    for r in recipients:
        subject, body = _render(notify, rule.purpose, r, event, payload, case)
        n = Notification.create(channel=ChannelName.EMAIL, recipient=r.address, event=event,
                                purpose=rule.purpose, subject=subject, body=body, now=utcnow(),
                                recipient_name=r.name, language=r.language,
                                register_no=case.register_no if case else None,
                                attachments=_attachments(payload))
        await _insert_once(notify, n)


def _attachments(payload: Contract) -> list[AttachmentMeta]:
    """P-5.3.1: the reply carries the issued Complaint Handling Report."""
    if isinstance(payload, CustomerReplied) and payload.report is not None:
        return [payload.report]
    return []


def _render(notify: Notify, purpose: str, r: Recipient, event: Envelope, payload: Contract,
            case: CaseView | None) -> tuple[str, str]:
    return notify.renderer.render(purpose, r.language, {
        "p": payload, "event": event, "case": case, "recipient": r,
        "company": notify.settings.company_name})


async def _record_nobody(notify: Notify, purpose: str, audience: Audience, event: Envelope,
                         payload: Contract, case: CaseView | None) -> None:
    """Nobody to tell is an answer too: recorded (once per event) so that "was the customer
    told?" has one in GET /notifications, with the text they would have read."""
    if audience.customer and case is not None and case.customer is not None:
        c = case.customer
        meant = f"customer:{c.id}"
        reason = f"customer {c.id} ({c.name}) has no e-mail address"
        reader = Recipient("", c.contact_person or c.name, c.language)
    else:
        groups = [f"head:{h.unit}" for h in audience.heads] + \
            [g for tier in audience.tiers for g in tier]
        meant = ", ".join(dict.fromkeys(groups))
        reason = f"no active directory entry in {meant}"
        reader = Recipient("", meant, notify.settings.default_language)
    subject, body = _render(notify, purpose, reader, event, payload, case)
    n = Notification.nobody(channel=ChannelName.EMAIL, audience=meant, reason=reason,
                            event=event, purpose=purpose, subject=subject, body=body,
                            now=utcnow(), language=reader.language,
                            register_no=case.register_no if case else None)
    if await add_once(notify.notifications, n) is not None:
        notify.metrics.unresolved.labels(purpose).inc()
    log.warning("%s for event %s (%s): nobody to tell (%s); recorded as no_recipient",
                purpose, event.id, event.type, reason)


async def _resolve(notify: Notify, audience: Audience, case: CaseView | None) -> \
        list[Recipient]:
    if audience.customer:
        return _customer(case)
    found: list[Recipient] = []
    if audience.heads:
        found = await _heads(notify, audience.heads)
    if not found:
        for tier in audience.tiers:
            found = await _groups(notify, tier)
            if found:
                break
    unique = {r.address: r for r in found}  # one mail per address, whatever the overlaps
    return list(unique.values())


def _customer(case: CaseView | None) -> list[Recipient]:
    if case is None or case.customer is None:
        raise NotYetKnown("the customer of this feedback is not known yet "
                          "(feedback.registered has not arrived); retrying")
    c = case.customer
    if not c.email:
        return []  # recorded as no_recipient by the caller
    return [Recipient(c.email.lower(), c.contact_person or c.name, c.language)]


async def _groups(notify: Notify, groups: tuple[str, ...]) -> list[Recipient]:
    # The directory is configuration (mailboxes and people): a copy bounded by it.
    wanted = set(groups)
    return [Recipient(d["email"], d["name"], Language(d["language"]))
            for d in await notify.directory_copy.all(notify.directory)
            if d.get("active", True) and wanted.intersection(d.get("groups", []))]


async def _heads(notify: Notify, heads: tuple[Head, ...]) -> list[Recipient]:
    """The heads the event names; their language from the directory when it knows them.

    A head the directory marks inactive (on leave, moved on) is not summoned: the unit's
    active `head:<unit>` entries (a deputy) are, as for a head named without an address."""
    out: list[Recipient] = []
    entries = {d["_id"]: d for d in await notify.directory_copy.all(notify.directory)}
    for head in heads:
        entry = entries.get(head.email.lower()) if head.email else None
        if head.email and EMAIL.match(head.email) and (entry is None or entry["active"]):
            language = Language(entry["language"]) if entry \
                else notify.settings.default_language
            out.append(Recipient(head.email.lower(), head.name, language))
        else:
            out += await _groups(notify, (f"head:{head.unit}",))
    return out


async def _insert_once(notify: Notify, n: Notification) -> None:
    # Added already taken for its first attempt, which this process makes at once: no
    # write to claim it. Should the process stop first, the lease runs out and the
    # dispatcher's sweep attempts it, as after any attempt cut off.
    taken = notify.dispatcher.take_first(n)
    added = await add_once(notify.notifications, n)
    if added is None:
        return
    notify.metrics.created.labels(n.channel.value, n.purpose).inc()
    if taken:
        notify.dispatcher.deliver(added)
    else:
        notify.dispatcher.wake()  # due now: the sweep takes it

