"""The Customer Feedback Register's rules, on the pure `Feedback` aggregate."""

from datetime import UTC, date, datetime, timedelta

import pytest

from services.intake.domain import Feedback, FeedbackStatus, NewFeedback
from shared.contracts import ComplaintAccepted, MailReceived, MajorAlert, ResolutionReady
from shared.errors import Conflict, Invalid
from shared.events import Actor, make_event
from shared.vocabulary import AttachmentMeta, Head, NoActionOutcome, ReturnedSample, Severity

SALES = Actor(sub="wang.fang", roles=("sales",))
QUALITY = Actor(sub="li.wei", roles=("quality",))
NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def new(**kw) -> NewFeedback:
    data = {"customer": {"id": "C-1001", "name": "Bright Motors"}, "channel": "phone",
            "category": "product_quality", "description": "Housings crack at the boss.",
            "estimated_loss": {"amount": "1250.00", "currency": "CNY"}} | kw
    return NewFeedback.model_validate(data)


def register(**kw) -> Feedback:
    return Feedback.register(id="f-1", register_no="CF-2026-000001", new=new(**kw), actor=SALES,
                             now=NOW)


def types(fb: Feedback) -> list[str]:
    return [e.type for e in fb.pending_events]


def resolution(round_: int = 1) -> ResolutionReady:
    return ResolutionReady(feedback_id="f-1", register_no="CF-2026-000001", round=round_,
                           cause="Worn die", defect_code="D03", outcomes=[], summary="Die replaced",
                           received_at=NOW, resolved_at=NOW + timedelta(days=1),
                           due_at=NOW + timedelta(days=3), met_deadline=True)


def quality_ready(fb: Feedback, round_: int = 1) -> None:
    payload = resolution(round_)
    event = make_event(payload, producer="quality", correlation_id=fb.id, actor=QUALITY)
    fb.quality_record_ready(payload, event)


def test_p_f_1_registration_emits_registered_and_logs_who():
    fb = register()
    assert fb.status is FeedbackStatus.REGISTERED and fb.received_at == NOW
    assert types(fb) == ["feedback.registered"]
    assert fb.pending_events[0].correlation_id == "f-1"
    assert fb.history[0].actor.sub == "wang.fang" and fb.history[0].action == "registered"
    assert fb.registered_by == "wang.fang"


def test_p_5_2_suggestion_is_not_a_complaint_and_cannot_be_major():
    assert register(category="suggestion").is_complaint is False
    assert register(category="delivery").is_complaint is True
    with pytest.raises(Invalid, match="suggestion"):
        register(category="suggestion", severity="major")


def test_received_at_in_the_future_is_invalid():
    with pytest.raises(Invalid) as err:
        register(received_at=(NOW + timedelta(hours=1)).isoformat())
    assert err.value.details[0]["loc"] == "body.received_at"


def test_received_at_before_2000_is_invalid_even_when_its_offset_says_2000():
    # 2000-01-01T00:00+05:00 is still 1999 in UTC, the year its register number would carry.
    with pytest.raises(Invalid) as err:
        register(received_at="2000-01-01T00:00:00+05:00")
    assert err.value.details[0]["loc"] == "body.received_at"
    assert "2000-01-01" in err.value.message
    assert register(received_at="2000-01-01T00:00:00+00:00").received_at.year == 2000


def test_p_5_3_5_major_is_escalated_in_the_same_change():
    fb = register(severity="major")
    assert fb.status is FeedbackStatus.WITH_QUALITY and fb.has_form
    assert types(fb) == ["feedback.registered", "complaint.escalated"]
    assert fb.pending_events[1].causation_id == fb.pending_events[0].id


def test_p_5_3_3_direct_reply_for_delivery_but_not_for_product_quality():
    fb = register(category="delivery")
    fb.reply_directly("Ships Friday", SALES)
    assert fb.status is FeedbackStatus.REPLIED and fb.direct_reply.text == "Ships Friday"
    with pytest.raises(Conflict, match="Complaint Handling Form"):
        register().reply_directly("Sorry", SALES)


def test_p_f_2_escalate_only_from_registered_and_never_a_suggestion():
    fb = register(category="delivery")
    fb.escalate(SALES, "please look")
    assert fb.status is FeedbackStatus.WITH_QUALITY and fb.form_opened_at is not None
    with pytest.raises(Conflict, match="registered"):
        fb.escalate(SALES)
    with pytest.raises(Conflict, match="suggestion"):
        register(category="suggestion").escalate(SALES)


def test_p_5_3_1_escalation_carries_the_evidence():
    fb = register()
    meta = AttachmentMeta(sha256="a" * 64, filename="crack.jpg", content_type="image/jpeg",
                          size=10, uploaded_by="wang.fang", uploaded_at=NOW)
    assert fb.add_attachment(meta, SALES) is True
    assert fb.add_attachment(meta, SALES) is False  # same file: one entry, no event
    fb.add_sample(ReturnedSample(quantity=3, received_on=date(2026, 11, 21), location="QA B3"),
                  SALES)
    fb.escalate(SALES)
    escalated = fb.pending_events[-1]
    assert escalated.type == "complaint.escalated"
    assert len(escalated.payload["attachments"]) == 1 and len(escalated.payload["samples"]) == 1
    assert types(fb).count("feedback.evidence_added") == 2


def test_p_f_4_reply_needs_quality_record_and_stale_rounds_change_nothing():
    fb = register()
    with pytest.raises(Conflict, match="Quality's record is not ready"):
        fb.reply_to_customer("Here is our analysis", SALES)
    quality_ready(fb)  # not with Quality yet: ignored
    assert fb.status is FeedbackStatus.REGISTERED and fb.quality_record is None
    fb.escalate(SALES)
    quality_ready(fb)
    assert fb.status is FeedbackStatus.QUALITY_RECORD_READY and fb.quality_record.round == 1
    fb.reply_to_customer("Here is our analysis", SALES)
    assert fb.status is FeedbackStatus.REPLIED


def test_p_f_4_satisfied_closes():
    fb = register(category="delivery")
    fb.reply_directly("Ships Friday", SALES)
    fb.record_satisfaction(True, None, SALES)
    assert fb.status is FeedbackStatus.CLOSED
    assert types(fb)[-2:] == ["feedback.satisfaction_recorded", "feedback.closed"]
    assert fb.pending_events[-1].payload["had_form"] is False
    with pytest.raises(Conflict):
        fb.record_satisfaction(False, "changed my mind", SALES)


def test_p_f_4_not_satisfied_reopens_to_whoever_handled_it():
    direct = register(category="delivery")
    direct.reply_directly("Ships Friday", SALES)
    direct.record_satisfaction(False, "Still late", SALES)
    assert direct.status is FeedbackStatus.REGISTERED and direct.reopen_count == 1

    fb = register()
    fb.escalate(SALES)
    quality_ready(fb, 1)
    fb.reply_to_customer("Die replaced", SALES)
    fb.record_satisfaction(False, "Cracks again", SALES)
    assert fb.status is FeedbackStatus.WITH_QUALITY and fb.reopen_count == 1
    reopened = fb.pending_events[-1]
    assert reopened.type == "complaint.reopened"
    assert reopened.payload["had_form"] is True and reopened.payload["reopen_count"] == 1
    quality_ready(fb, 1)  # the old round again: changes nothing
    assert fb.status is FeedbackStatus.WITH_QUALITY
    quality_ready(fb, 2)
    assert fb.status is FeedbackStatus.QUALITY_RECORD_READY and fb.quality_record.round == 2


def test_p_f_5_acceptance_shows_due_time_and_ignores_older_rounds():
    fb = register()
    fb.escalate(SALES)
    for round_, due in ((2, NOW + timedelta(days=5)), (1, NOW + timedelta(days=3))):
        payload = ComplaintAccepted(feedback_id="f-1", register_no="CF-2026-000001",
                                    round=round_, received_at=NOW, due_at=due,
                                    at_risk_at=due - timedelta(days=1), severity="normal")
        fb.quality_accepted(payload, make_event(payload, producer="quality",
                                                correlation_id="f-1", actor=QUALITY))
    assert fb.quality_round == 2 and fb.quality_due_at == NOW + timedelta(days=5)


def test_p_5_4_2_withdraw_keeps_the_record_but_not_once_closed():
    fb = register()
    fb.withdraw("Registered twice", SALES)
    assert fb.status is FeedbackStatus.WITHDRAWN and fb.withdrawn_reason == "Registered twice"
    assert [h.action for h in fb.history] == ["registered", "withdrawn"]
    with pytest.raises(Conflict, match="already withdrawn"):
        fb.withdraw("again", SALES)
    with pytest.raises(Conflict, match="withdrawn"):
        fb.add_sample(ReturnedSample(quantity=1, received_on=date(2026, 11, 21), location="B3"),
                      SALES)
    closed = register(category="delivery")
    closed.reply_directly("Ships Friday", SALES)
    closed.record_satisfaction(True, None, SALES)
    with pytest.raises(Conflict, match="closed"):
        closed.withdraw("oops", SALES)


def test_document_is_storable_and_round_trips():
    fb = register()
    fb.add_sample(ReturnedSample(quantity=2, received_on=date(2026, 11, 21), location="B3"), SALES)
    doc = fb.to_document()
    assert doc["estimated_loss"]["amount"] == "1250.00"  # no Decimal in BSON
    assert doc["samples"][0]["received_on"] == "2026-11-21"  # no date in BSON
    again = Feedback.model_validate(doc)
    assert again.estimated_loss == fb.estimated_loss and again.samples == fb.samples


def test_p_f_4_sales_returns_an_inadequate_record_to_quality_without_a_reopen():
    fb = register()
    fb.escalate(SALES)
    with pytest.raises(Conflict, match="quality_record_ready"):
        fb.return_to_quality("Not yet", SALES)
    quality_ready(fb, 1)
    fb.return_to_quality("No containment for stock in transit", SALES)
    assert fb.status is FeedbackStatus.WITH_QUALITY
    assert fb.reopen_count == 0 and fb.returned_to_quality == 1 and fb.satisfaction is None
    returned = fb.pending_events[-1]
    assert returned.type == "complaint.returned_to_quality"
    assert returned.payload["round"] == 1 and returned.payload["reason"].startswith("No cont")
    assert fb.history[-1].action == "returned_to_quality"
    with pytest.raises(Conflict):
        fb.return_to_quality("again", SALES)
    quality_ready(fb, 2)  # Quality's next round comes back to Sales
    assert fb.status is FeedbackStatus.QUALITY_RECORD_READY and fb.quality_record.round == 2


def test_p_5_3_5_a_case_quality_flags_major_is_major_in_the_register():
    fb = register()
    fb.escalate(SALES)
    alert = MajorAlert(feedback_id="f-1", register_no="CF-2026-000001",
                       customer=fb.customer, description=fb.description,
                       heads=[Head(unit="rd", name="R&D head")])
    fb.major_flagged(alert, make_event(alert, producer="quality", correlation_id="f-1",
                                       actor=QUALITY))
    assert fb.severity is Severity.MAJOR
    entry = fb.history[-1]
    assert entry.action == "major_alert" and entry.changes["was"] == "normal"
    assert entry.actor.sub == "li.wei"


def test_p_f_3_a_record_without_corrective_action_carries_its_outcome():
    fb = register()
    fb.escalate(SALES)
    payload = resolution().model_copy(update={"outcome": NoActionOutcome.NO_FAULT_FOUND})
    fb.quality_record_ready(payload, make_event(payload, producer="quality",
                                                correlation_id=fb.id, actor=QUALITY))
    assert fb.quality_record.outcome is NoActionOutcome.NO_FAULT_FOUND
    assert fb.history[-1].changes["outcome"] == "no_fault_found"


def followup(sender: str) -> MailReceived:
    photo = AttachmentMeta(sha256="a" * 64, filename="more.png", content_type="image/png",
                           size=10, uploaded_by="notify", uploaded_at=NOW)
    return MailReceived(mail_id=f"m-{sender}", from_address=sender,
                        subject="Re: CF-2026-000001 more photos", body="Two more lots.",
                        received_at=NOW, register_no="CF-2026-000001", attachments=[photo])


def test_p_5_4_2_a_mail_quoting_the_register_number_joins_the_history_and_its_evidence():
    fb = register(customer={"id": "C-1001", "name": "Bright Motors",
                            "email": "zhang@bright.example"})
    fb.mail_followup(followup("li@bright.example"), SALES)  # a colleague at the customer
    assert [h.action for h in fb.history[-2:]] == ["mail_received", "attachment_added"]
    assert fb.history[-2].changes["sender_recognised"] is True
    assert [a.filename for a in fb.attachments] == ["more.png"] and not fb.needs_triage


def test_p_5_4_2_a_stranger_quoting_the_register_number_is_kept_but_flagged_for_sales():
    fb = register(customer={"id": "C-1001", "name": "Bright Motors",
                            "email": "zhang@bright.example"})
    fb.mail_followup(followup("someone@elsewhere.example"), SALES)
    assert [h.action for h in fb.history[-2:]] == ["mail_received", "flagged"]
    assert fb.history[-2].changes["sender_recognised"] is False
    assert fb.attachments == [] and fb.needs_triage  # evidence only from the customer's side


# -- where the Complaint Handling Form is ("on its way" instead of "not found") -----------


def accepted(fb: Feedback, round_: int, at: datetime) -> None:
    payload = ComplaintAccepted(feedback_id="f-1", register_no="CF-2026-000001", round=round_,
                                received_at=at, due_at=at + timedelta(days=3),
                                at_risk_at=at + timedelta(days=2), severity="normal")
    fb.quality_accepted(payload, make_event(payload, producer="quality", correlation_id="f-1",
                                            actor=QUALITY))


def where(fb: Feedback) -> tuple[str, datetime, int]:
    assert fb.form is not None
    return fb.form.state.value, fb.form.since, fb.form.round


def test_the_form_is_on_its_way_until_quality_confirms_it_then_with_quality_since_then():
    fb = register()
    assert fb.form is None  # no form: Sales has not escalated it
    fb.escalate(SALES, now=NOW + timedelta(minutes=1))
    assert where(fb) == ("sent_to_quality", NOW + timedelta(minutes=1), 1)
    accepted(fb, 1, NOW + timedelta(minutes=2))
    assert where(fb) == ("with_quality", NOW + timedelta(minutes=2), 1)
    quality_ready(fb, 1)
    assert where(fb) == ("record_with_sales", NOW + timedelta(days=1), 1)


def test_a_major_complaint_is_on_its_way_from_its_registration():
    fb = register(severity="major")
    assert where(fb) == ("sent_to_quality", NOW, 1)


def test_a_reopened_or_returned_form_is_on_its_way_again_for_the_next_round():
    fb = register()
    fb.escalate(SALES, now=NOW)
    accepted(fb, 1, NOW)
    quality_ready(fb, 1)
    fb.return_to_quality("No containment", SALES, now=NOW + timedelta(days=2))
    assert where(fb) == ("sent_to_quality", NOW + timedelta(days=2), 2)
    accepted(fb, 1, NOW)  # the earlier round's receipt, redelivered late: changes nothing
    assert where(fb) == ("sent_to_quality", NOW + timedelta(days=2), 2)
    accepted(fb, 2, NOW + timedelta(days=2, minutes=1))
    assert where(fb) == ("with_quality", NOW + timedelta(days=2, minutes=1), 2)
    quality_ready(fb, 2)
    fb.reply_to_customer("Fixed", SALES)
    fb.record_satisfaction(False, "Still cracks", SALES, now=NOW + timedelta(days=5))
    assert where(fb) == ("sent_to_quality", NOW + timedelta(days=5), 3)


def test_a_withdrawn_feedback_s_form_says_so_and_one_without_a_form_has_none():
    fb = register()
    fb.escalate(SALES, now=NOW)
    fb.withdraw("Registered twice", SALES, now=NOW + timedelta(hours=1))
    assert where(fb) == ("withdrawn", NOW + timedelta(hours=1), 1)
    plain = register(category="delivery")
    plain.withdraw("Registered twice", SALES)
    assert plain.form is None


def test_a_record_stored_before_the_form_was_kept_says_where_its_form_is():
    fb = register()
    fb.escalate(SALES, now=NOW)
    doc = fb.to_document()
    del doc["form"]
    assert where(Feedback.model_validate(doc))[0] == "sent_to_quality"
    accepted(fb, 1, NOW)
    doc = fb.to_document()
    del doc["form"]
    assert where(Feedback.model_validate(doc))[0] == "with_quality"
    quality_ready(fb, 1)
    doc = fb.to_document()
    del doc["form"]
    assert where(Feedback.model_validate(doc)) == ("record_with_sales", NOW + timedelta(days=1),
                                                   1)
    never = register().to_document()
    del never["form"]
    assert Feedback.model_validate(never).form is None
