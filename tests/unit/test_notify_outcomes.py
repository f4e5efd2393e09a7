"""What notify tells the plant of its own deliveries: `notification.sent` once a message is
delivered, `notification.failed` once it is given up (never for an attempt still retried)."""

import asyncio
from datetime import timedelta
from types import SimpleNamespace

from services.notify import handlers
from services.notify.domain import (
    ChannelName,
    Notification,
    NotificationStatus,
    RetryPolicy,
    public_url,
)
from shared.contracts import NotificationFailed, NotificationSent
from shared.events import parse_event
from tests.unit.test_notify_domain import OPS, POLICY, T0
from tests.unit.test_notify_domain import event as breach

SECRET = "mes-shared-secret-0123456789"


def mail(ev=None) -> Notification:
    return Notification.create(channel=ChannelName.EMAIL, recipient="Quality@Plant.example",
                               event=ev or breach(), purpose="sla_breached", subject="s",
                               body="the mail text", now=T0, recipient_name="Quality")


def webhook(ev=None, url="https://erp:pw@erp.plant.example:8443/qms/events?token=abc#x"):
    return Notification.create(channel=ChannelName.WEBHOOK, recipient="sub-1",
                               event=ev or breach(), purpose="webhook",
                               body='{"id": "1"}', now=T0, recipient_name="MES", target=url)


def announced(n: Notification):
    """The events the notification's next save publishes, as a subscriber parses them."""
    return [parse_event(e.model_dump_json()) for e in n.pending_events]


def test_a_delivered_mail_is_announced_once_with_what_whom_and_why():
    ev = breach()
    n = mail(ev)
    n.delivered(T0 + timedelta(seconds=1), "250 OK", 250)
    [(env, sent)] = announced(n)
    assert isinstance(sent, NotificationSent) and env.type == "notification.sent"
    assert env.producer == "notify" and env.actor.sub == "system:notify"
    assert env.correlation_id == "f-1" and env.causation_id == ev.id  # the complaint's story
    assert sent.notification_id == n.id and sent.cause_event_id == ev.id
    assert sent.cause_event_type == "complaint.sla_breached" and sent.channel == "email"
    assert sent.recipient == "quality@plant.example" and sent.recipient_name == "Quality"
    assert sent.purpose == "sla_breached" and sent.register_no == "CF-2026-000001"
    assert sent.attempts == 1 and sent.status_code == 250 and sent.target is None
    assert sent.sent_at == T0 + timedelta(seconds=1)
    assert "the mail text" not in env.model_dump_json()  # the body stays in notify's log


def test_attempts_still_retried_are_not_announced_only_giving_up_is():
    n = mail()
    assert not n.failed(T0, "SMTP server unreachable", POLICY)
    assert not n.failed(T0, "SMTP server unreachable", POLICY)
    assert n.pending_events == []  # transient: the attempt log and the metrics have it
    assert n.failed(T0 + timedelta(seconds=30), "SMTP 451: try later", POLICY, status_code=451)
    [(env, failed)] = announced(n)
    assert isinstance(failed, NotificationFailed) and env.type == "notification.failed"
    assert env.correlation_id == "f-1" and env.causation_id == n.event_id
    assert failed.parked and not failed.permanent and failed.attempts == 3
    assert failed.last_error == "SMTP 451: try later" and failed.status_code == 451
    assert failed.failed_at == T0 + timedelta(seconds=30)


def test_a_permanent_refusal_is_announced_as_given_up_at_once():
    n = mail()
    assert n.failed(T0, "recipient refused: quality@plant.example", POLICY, permanent=True,
                    status_code=550)
    [(_, failed)] = announced(n)
    assert failed.permanent and failed.parked and failed.attempts == 1


def test_a_manual_retry_that_delivers_is_announced_as_sent_after_the_failure():
    n = mail()
    for _ in range(3):
        n.failed(T0, "HTTP 500", POLICY, status_code=500)
    [(gave_up, _)] = announced(n)
    n = Notification.model_validate(n.to_document())  # saved: the relay has published it
    n.retry(OPS, T0 + timedelta(minutes=5))
    assert n.pending_events == []  # asking again is no outcome yet
    n.delivered(T0 + timedelta(minutes=6), "HTTP 200", 200)
    [(env, sent)] = announced(n)
    assert isinstance(sent, NotificationSent) and sent.attempts == 4
    assert env.id != gave_up.id and env.causation_id == gave_up.causation_id


def test_a_retry_given_up_again_is_announced_again_under_a_new_id():
    n = mail()
    for _ in range(3):
        n.failed(T0, "HTTP 500", POLICY)
    [(first, _)] = announced(n)
    n = Notification.model_validate(n.to_document())
    n.retry(OPS, T0)
    for _ in range(3):
        n.failed(T0, "HTTP 503", POLICY)
    [(second, failed)] = announced(n)
    assert second.id != first.id and failed.attempts == 6 and failed.last_error == "HTTP 503"


def test_the_same_outcome_recorded_twice_has_one_event_id():
    """Deterministic ids: whichever write records a delivery, subscribers see one fact."""
    ev = breach()
    one, other = mail(ev), mail(ev)
    one.delivered(T0)
    other.delivered(T0 + timedelta(seconds=2))
    assert one.pending_events[0].id == other.pending_events[0].id


def test_a_late_attempt_after_the_outcome_announces_nothing_more():
    """Two attempts of one notification (the first one's lease ran out): one outcome."""
    n = mail()
    n.delivered(T0)
    n = Notification.model_validate(n.to_document())
    n.delivered(T0 + timedelta(seconds=5))  # the slow attempt delivered too
    assert not n.failed(T0 + timedelta(seconds=6), "timeout", POLICY)
    assert n.pending_events == [] and n.status == NotificationStatus.SENT
    parked = mail()
    parked.failed(T0, "550", POLICY, permanent=True)
    parked = Notification.model_validate(parked.to_document())
    assert not parked.failed(T0, "timeout", POLICY, permanent=True)
    assert parked.pending_events == [] and parked.status == NotificationStatus.PARKED


def test_a_webhook_outcome_names_the_subscription_and_url_never_secrets():
    n = webhook()
    n.failed(T0, "HTTP 500", RetryPolicy(1, 1, 1), status_code=500)
    [(env, failed)] = announced(n)
    assert failed.channel == "webhook" and failed.recipient == "sub-1"
    assert failed.recipient_name == "MES" and failed.purpose == "webhook"
    assert failed.target == "https://erp.plant.example:8443/qms/events"
    raw = env.model_dump_json()
    assert "pw" not in raw and "token" not in raw and SECRET not in raw
    assert public_url("http://[::1]:9000/hook?k=v") == "http://[::1]:9000/hook"


def test_notify_does_not_echo_its_own_delivery_facts():
    """A webhook or mail about a delivery would be a delivery to announce, without end."""
    registered = {}
    notify = SimpleNamespace(
        service=SimpleNamespace(consumer=SimpleNamespace(
            on_any=lambda fn: registered.setdefault("handler", fn))),
        ready=asyncio.Event())  # never ready: an event that is handled would wait here
    handlers.register(notify)  # type: ignore[arg-type]
    n = mail()
    n.delivered(T0)
    [(env, sent)] = announced(n)
    asyncio.run(asyncio.wait_for(registered["handler"](env, sent), timeout=1))
