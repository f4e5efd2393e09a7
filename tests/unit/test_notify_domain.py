"""Notify's pure domain: retries and parking, subscriptions, the directories, inbound mail."""

from datetime import UTC, datetime, timedelta

import pytest

from services.notify.domain import (
    CaseView,
    ChannelName,
    CustomerEntry,
    DirectoryEntry,
    InboundMail,
    Notification,
    NotificationStatus,
    RetryPolicy,
    Subscription,
    notification_id,
    topic_matches,
    verify_signature,
    webhook_signature,
)
from shared.contracts import SlaBreached
from shared.errors import Conflict, Invalid
from shared.events import Actor, make_event
from shared.vocabulary import Customer, Language

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
OPS = Actor(sub="ops.tester", roles=("ops",))
POLICY = RetryPolicy(max_attempts=3, base_s=10, max_s=25)


def event():
    return make_event(SlaBreached(feedback_id="f-1", register_no="CF-2026-000001", round=1,
                                  due_at=T0, severity="normal"),
                      producer="quality", correlation_id="f-1", actor=Actor.system("quality"))


def mail(ev=None) -> Notification:
    return Notification.create(channel=ChannelName.EMAIL, recipient="Quality@Plant.example",
                               event=ev or event(), purpose="sla_breached", subject="s",
                               body="b", now=T0, language=Language.ZH)


# ---------------------------------------------------------------- notifications


def test_the_same_event_and_recipient_give_the_same_notification_id():
    ev = event()
    assert mail(ev).id == mail(ev).id == notification_id(ev.id, "email", "quality@plant.example")
    assert mail(ev).id != mail().id  # another event
    n = mail(ev)
    assert n.recipient == "quality@plant.example" and n.feedback_id == "f-1"
    assert n.register_no == "CF-2026-000001" and n.is_due(T0)


def test_a_claimed_notification_is_not_due_until_its_lease_runs_out():
    n = mail()
    assert n.claim(T0, timedelta(seconds=60))
    assert not n.claim(T0 + timedelta(seconds=1), timedelta(seconds=60))  # taken
    assert n.is_due(T0 + timedelta(seconds=60))  # a crash mid-attempt: due again later


def test_failures_back_off_exponentially_then_park():
    n = mail()
    assert n.failed(T0, "refused", POLICY) is False
    assert n.next_attempt_at == T0 + timedelta(seconds=10)
    assert n.failed(T0, "refused", POLICY) is False
    assert n.next_attempt_at == T0 + timedelta(seconds=20)
    assert n.failed(T0, "refused", POLICY) is True
    assert n.status == NotificationStatus.PARKED and n.next_attempt_at is None
    assert n.attempts == 3 and n.last_error == "refused"
    assert [h.action for h in n.history] == ["created", "parked"]
    assert RetryPolicy(10, 10, 25).delay(5) == timedelta(seconds=25)  # capped


def test_a_permanent_refusal_parks_at_once():
    n = mail()
    assert n.failed(T0, "550 no such user", POLICY, permanent=True, status_code=550)
    assert n.attempt_log[0].status_code == 550 and n.attempts == 1


def test_manual_retry_gives_a_parked_notification_a_fresh_round():
    n = mail()
    for _ in range(3):
        n.failed(T0, "HTTP 500", POLICY, status_code=500)
    n.retry(OPS, T0 + timedelta(minutes=5))
    assert n.status == NotificationStatus.PENDING and n.round_attempts == 0
    assert n.is_due(T0 + timedelta(minutes=5))
    n.delivered(T0 + timedelta(minutes=6), "HTTP 200", 200)
    assert n.status == NotificationStatus.SENT and n.attempts == 4 and n.last_error is None
    assert [h.action for h in n.history] == ["created", "parked", "retry_requested", "sent"]
    assert n.history[2].actor.sub == "ops.tester"


@pytest.mark.parametrize("status", ["pending", "sent"])
def test_only_a_parked_notification_can_be_retried(status):
    n = mail()
    if status == "sent":
        n.delivered(T0)
    with pytest.raises(Conflict, match="Only a parked notification"):
        n.retry(OPS, T0)


def test_nobody_to_tell_is_recorded_once_per_event_with_the_reason():
    ev = event()
    n = Notification.nobody(channel=ChannelName.EMAIL, audience="customer:C-1001",
                            reason="customer C-1001 (Bright Motors) has no e-mail address",
                            event=ev, purpose="customer_reply", subject="Re", body="text",
                            now=T0)
    again = Notification.nobody(channel=ChannelName.EMAIL, audience="customer:C-1001",
                                reason="r", event=ev, purpose="customer_reply", body="t", now=T0)
    assert n.id == again.id == notification_id(ev.id, "email", "no_recipient")
    assert n.status == NotificationStatus.NO_RECIPIENT and not n.is_due(T0)
    assert n.recipient == "customer:C-1001" and "no e-mail address" in n.reason
    assert n.history[0].action == "no_recipient"
    with pytest.raises(Conflict, match="nobody to send it to"):
        n.retry(OPS, T0)


# ---------------------------------------------------------------- webhooks


@pytest.mark.parametrize(("pattern", "event_type", "expected"), [
    ("complaint.*", "complaint.sla_breached", True),
    ("complaint.*", "feedback.registered", False),
    ("complaint.*", "complaint", False),
    ("#", "capa.opened", True),
    ("complaint.#", "complaint", True),
    ("*.closed", "capa.closed", True),
    ("*.closed", "feedback.closed", True),
    ("capa.opened", "capa.opened", True),
    ("capa.opened", "capa.closed", False),
])
def test_event_type_patterns_follow_amqp_topic_rules(pattern, event_type, expected):
    assert topic_matches(pattern, event_type) is expected


def test_signature_is_hmac_sha256_of_timestamp_dot_body():
    import hashlib
    import hmac
    body = b'{"id":"1"}'
    sig = webhook_signature("s3cret-s3cret-s3cret", "1700000000", body)
    expected = hmac.new(b"s3cret-s3cret-s3cret", b"1700000000." + body, hashlib.sha256)
    assert sig == f"sha256={expected.hexdigest()}"
    assert verify_signature("s3cret-s3cret-s3cret", "1700000000", body, sig)
    assert not verify_signature("s3cret-s3cret-s3cret", "1700000001", body, sig)  # replayed ts
    assert not verify_signature("s3cret-s3cret-s3cret", "1700000000", body + b" ", sig)


def test_subscription_wants_matching_types_while_active_and_keeps_secrets_out_of_history():
    sub = Subscription.create(id="s1", name="ERP", url="https://erp.example/hook",
                              secret="a" * 32, event_types=["complaint.*", "complaint.*"],
                              actor=OPS, now=T0)
    assert sub.event_types == ["complaint.*"]
    assert sub.wants("complaint.major_alert") and not sub.wants("capa.opened")
    assert sub.update(OPS, secret="b" * 32, active=False)
    assert not sub.wants("complaint.major_alert")
    assert sub.history[-1].changes == {"secret": "(rotated)", "active": False}
    assert not sub.update(OPS, active=False)  # nothing changed: nothing logged
    with pytest.raises(Invalid):
        sub.update(OPS, event_types=[])


def test_a_subscription_to_notifys_own_events_is_refused_saying_where_they_are():
    """Notify never webhooks notification.*: ops learn that at once, not from silence."""
    with pytest.raises(Invalid) as refused:
        Subscription.create(id="s2", name="Ops", url="https://ops.example/hook", secret="a" * 32,
                            event_types=["complaint.*", "notification.*"], actor=OPS, now=T0)
    assert "bind a queue" in str(refused.value)
    assert refused.value.details == [{"loc": "body.event_types.1", "msg": "notify's own events"}]
    # `#` still takes everything else.
    assert Subscription.create(id="s3", name="All", url="https://all.example/hook",
                               secret="a" * 32, event_types=["#"], actor=OPS, now=T0)


# ---------------------------------------------------------------- directories


def test_directory_entry_changes_are_logged():
    entry = DirectoryEntry.create(email="Li.Wei@Plant.example", name="Li Wei",
                                  language=Language.EN, groups=["role:quality"], actor=OPS)
    assert entry.id == entry.email == "li.wei@plant.example"
    assert entry.update(OPS, groups=["role:quality", "head:quality"], language=Language.ZH)
    assert entry.history[-1].changes == {"language": "zh",
                                         "groups": ["role:quality", "head:quality"]}


def test_a_matched_customer_carries_the_address_the_mail_came_from():
    c = CustomerEntry.create(id="C-1001", name="Bright Motors", contact_person="Zhang Min",
                             language=Language.EN, emails=["Zhang@Bright.example"],
                             domains=["Bright.example"], actor=OPS)
    assert c.emails == ["zhang@bright.example"] and c.domains == ["bright.example"]
    customer = c.as_customer("buyer@bright.example")
    assert customer.id == "C-1001" and customer.email == "buyer@bright.example"
    assert customer.language == Language.EN
    assert c.as_customer("not an address").email is None


# ---------------------------------------------------------------- inbound mail


def test_a_received_mail_is_kept_and_announced_in_the_same_write():
    m = InboundMail.receive(id="m-1", raw=b"From: a@b.example\r\n\r\nhi", received_at=T0,
                            customer=None, attachments=[], rejected=[], fields={
                                "from_address": "a@b.example", "subject": "CF-2026-000001",
                                "body": "hi", "register_no": "CF-2026-000001",
                                "malformed": False})
    [ev] = m.pending_events
    assert ev.type == "mail.received" and ev.correlation_id == "m-1"
    assert ev.payload["register_no"] == "CF-2026-000001" and ev.payload["customer"] is None
    assert m.size == len(m.raw) and m.history[0].action == "received"


def test_an_auto_reply_naming_no_register_number_is_kept_but_not_announced():
    fields = {"from_address": "a@b.example", "subject": "Out of office", "body": "Back Monday",
              "auto_reply": True, "malformed": False}
    held = InboundMail.receive(id="m-2", raw=b"x", received_at=T0, customer=None,
                               attachments=[], rejected=[], fields=fields)
    assert held.held and held.pending_events == []
    assert "not registered as feedback" in held.history[0].note
    # Naming a register number it joins that record's history as any answer would.
    named = InboundMail.receive(id="m-3", raw=b"x", received_at=T0, customer=None,
                                attachments=[], rejected=[],
                                fields=fields | {"register_no": "CF-2026-000001"})
    assert not named.held and [e.type for e in named.pending_events] == ["mail.received"]


def test_a_mail_delivered_again_is_noted_not_announced_again():
    m = InboundMail.receive(id="m-4", raw=b"x", received_at=T0, customer=None, attachments=[],
                            rejected=[], fields={"from_address": "a@b.example", "subject": "s",
                                                 "body": "b"})
    m = InboundMail.model_validate(m.to_document())  # as stored, its event on its way
    m.received_again(envelope_to=["complaints@plant.example"], peer="127.0.0.1:4000")
    assert m.history[-1].action == "received_again" and m.pending_events == []


def test_sales_classification_holds_whatever_order_the_registration_arrives_in():
    unidentified = Customer(id="UNIDENTIFIED", name="buyer@x.example", email="buyer@x.example")
    known = Customer(id="C-1001", name="Bright Motors", email="zhang@bright.example",
                     language=Language.EN)
    case = CaseView(id="f-1")
    case.reclassify(customer=known, category="delivery")
    case.remember(customer=unidentified, register_no="CF-2026-000001")  # a late registration
    assert case.customer == known and case.register_no == "CF-2026-000001"
