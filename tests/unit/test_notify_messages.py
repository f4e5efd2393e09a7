"""Who is told of what (the rules), in which words (the templates), in which mail (headers)."""

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from services.notify.channels import EmailChannel
from services.notify.domain import ChannelName, Notification
from services.notify.handlers import Recipient
from services.notify.rules import MANAGER, QUALITY, SALES, mail_rule
from services.notify.settings import Settings
from services.notify.templates import PURPOSES, Renderer
from shared.contracts import (
    ActionRequested,
    ComplaintAccepted,
    ComplaintEscalated,
    CustomerReplied,
    FeedbackClosed,
    MajorAlert,
    RepliedDirectly,
    ResolutionReady,
    SlaAtRisk,
    SlaBreached,
    UnitOutcome,
)
from shared.events import Actor, make_event
from shared.vocabulary import Customer, Head, Language, Money, Product

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
CUSTOMER = Customer(id="C-1001", name="Bright Motors", email="zhang@bright.example")
BASE = {"feedback_id": "f-1", "register_no": "CF-2026-000123"}

PAYLOADS = {
    "form_arrived": ComplaintEscalated(
        **BASE, customer=CUSTOMER, channel="fax", received_at=T0, category="product_quality",
        severity="major", product=Product(code="HSG-220", lot="L1"), quantity_affected=12,
        description="Cracked\nhousings", estimated_loss=Money(amount="1250.00"), note="Visit?"),
    "form_reopened": ComplaintAccepted(**BASE, round=2, received_at=T0, due_at=T0, at_risk_at=T0,
                                       severity="normal"),
    "action_requested": ActionRequested(**BASE, action_id="A-1", unit="production",
                                        request="Check the mould", round=1),
    "major_alert": MajorAlert(**BASE, customer=CUSTOMER, description="Line stop",
                              heads=[Head(unit="rd", name="R&D head", email="rd@x.example")]),
    "sla_at_risk": SlaAtRisk(**BASE, round=1, due_at=T0, severity="normal"),
    "sla_breached": SlaBreached(**BASE, round=1, due_at=T0, severity="major"),
    "resolution_ready": ResolutionReady(
        **BASE, round=1, cause="Worn mould", defect_code="D03",
        outcomes=[UnitOutcome(unit="production", action_id="A-1", root_cause="Wear",
                              countermeasures=["Replace"])], summary="Done", received_at=T0,
        resolved_at=T0, due_at=T0, met_deadline=True),
    "customer_reply": CustomerReplied(**BASE, reply="We replaced the mould.", replied_at=T0),
    "direct_reply": RepliedDirectly(**BASE, category="delivery",
                                    reply="The missing 40 pieces ship on Monday."),
}


def test_every_event_that_concerns_people_has_a_rule():
    rules = {purpose: mail_rule(p) for purpose, p in PAYLOADS.items()}
    assert {purpose: r.purpose for purpose, r in rules.items() if r} == \
        {p: p for p in PAYLOADS}
    assert rules["form_arrived"].audience.tiers == ((QUALITY,),)
    assert rules["action_requested"].audience.tiers == (("unit:production",),
                                                        ("head:production",), (QUALITY,))
    assert rules["sla_breached"].audience.tiers == ((QUALITY, MANAGER),)  # P-F.5
    assert rules["resolution_ready"].audience.tiers == ((SALES,),)
    assert rules["major_alert"].audience.heads[0].unit == "rd"  # P-5.3.5
    assert rules["customer_reply"].audience.customer
    assert rules["direct_reply"].audience.customer  # P-F.2 yes: no form, still an answer
    first_round = ComplaintAccepted(**BASE, round=1, received_at=T0, due_at=T0, at_risk_at=T0,
                                    severity="normal")
    assert mail_rule(first_round) is None  # the escalation already told Quality
    assert mail_rule(FeedbackClosed(**BASE, closed_at=T0, had_form=True)) is None


@pytest.mark.parametrize("purpose", PURPOSES)
@pytest.mark.parametrize("language", list(Language))
def test_every_template_renders_in_both_languages(purpose, language):
    payload = PAYLOADS[purpose]
    event = make_event(payload, producer="test", correlation_id="f-1", actor=Actor(sub="t"))
    subject, body = Renderer("Asia/Shanghai").render(purpose, language, {
        "p": payload, "event": event, "case": None, "company": "Plant",
        "recipient": Recipient("x@plant.example", "Li Wei", language)})
    assert "\n" not in subject and "CF-2026-000123" in subject
    assert "Li Wei" in body and body.endswith("\n")
    if purpose == "form_arrived":
        assert "2026-11-20 16:00 (Asia/Shanghai)" in body and "1250.00 CNY" in body
    if purpose == "customer_reply":
        assert "We replaced the mould." in body
    if purpose == "direct_reply":
        assert "The missing 40 pieces ship on Monday." in body
        assert ("delivery" if language == Language.EN else "交付") in body


def test_the_mail_says_which_event_and_record_it_is_for():
    s = Settings(mail_from="QMS <qms@plant.example>", complaints_mailbox="box@plant.example")
    payload = PAYLOADS["customer_reply"]
    event = make_event(payload, producer="intake", correlation_id="f-1", actor=Actor(sub="t"))
    n = Notification.create(channel=ChannelName.EMAIL, recipient="zhang@bright.example",
                            event=event, purpose="customer_reply", subject="Re: CF-2026-000123",
                            body="Hello\n", now=T0, recipient_name="Zhang Min",
                            language=Language.EN)
    msg = EmailChannel(s).message(n)
    assert msg["To"] == "Zhang Min <zhang@bright.example>"
    assert msg["From"] == "QMS <qms@plant.example>"
    assert msg["X-QMS-Event-Id"] == event.id and msg["X-QMS-Register-No"] == "CF-2026-000123"
    assert msg["Reply-To"] == "box@plant.example" and msg["Content-Language"] == "en"
    assert msg["Message-ID"] == EmailChannel(s).message(n)["Message-ID"]  # stable on resend
    direct = n.model_copy(update={"purpose": "direct_reply"})
    assert EmailChannel(s).message(direct)["Reply-To"] == "box@plant.example"
    assert EmailChannel(s).message(direct)["Auto-Submitted"] is None  # the customer may answer


@pytest.mark.parametrize("language, returned, customer", [
    (Language.EN, "Sales reviewed Quality's record and returned it", "not satisfied"),
    (Language.ZH, "业务审核品保记录后", "客户对答复不满意")])
def test_a_record_sales_returned_is_not_announced_as_an_unhappy_customer(language, returned,
                                                                          customer):
    def body(trigger: str) -> str:
        payload = PAYLOADS["form_reopened"].model_copy(update={"trigger": trigger})
        event = make_event(payload, producer="quality", correlation_id="f-1",
                           actor=Actor(sub="t"))
        return Renderer("Asia/Shanghai").render("form_reopened", language, {
            "p": payload, "event": event, "case": None, "company": "Plant",
            "recipient": Recipient("x@plant.example", "Li Wei", language)})[1]
    assert returned in body("returned") and customer not in body("returned")
    assert customer in body("reopened") and returned not in body("reopened")


def test_a_password_is_not_sent_over_plain_smtp_to_another_host():
    """Ops who set a relay password but forget STARTTLS are stopped at start, saying why."""
    with pytest.raises(ValidationError, match="unencrypted; use starttls"):
        Settings(smtp_host="smtp.plant.example", smtp_password="s3cret")
    # A local relay on loopback, and any encrypted session, are fine.
    Settings(smtp_host="127.0.0.1", smtp_password="s3cret")
    Settings(smtp_host="smtp.plant.example", smtp_password="s3cret", smtp_security="starttls",
             smtp_port=587)
