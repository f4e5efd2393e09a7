"""The capa domain, pure: the action request and CAPA state machines, the completeness check."""

from datetime import date, timedelta
from decimal import Decimal

import pytest
from pydantic import ValidationError

from services.capa.domain import (
    ActionRequest,
    ActionStatus,
    Capa,
    CapaCreate,
    CapaPlan,
    CapaRootCause,
    CapaStatus,
    EffectivenessInput,
    InvestigationDraft,
    ItemKind,
    ItemStatus,
    most_responsible,
)
from shared.contracts import (
    EvidenceAdded,
    RecurrenceDetected,
    ResponsibilityAssigned,
    UnitRequest,
)
from shared.domain import bson_safe
from shared.errors import Conflict, Forbidden, NotFound
from shared.events import Actor, utcnow
from shared.vocabulary import AttachmentMeta, Head, Product, ReturnedSample

QUALITY = Actor(sub="li.wei", roles=("quality",))
PRODUCTION = Actor(sub="zhao.lei", roles=("unit",), unit="production")
LOGISTICS = Actor(sub="he.ping", roles=("unit",), unit="logistics")
MANAGER = Actor(sub="chen.jie", roles=("manager",))

COMPLETE = {
    "containment": "Shipment stopped; stock sorted.",
    "root_cause": {"five_whys": ["Cracked", "Thin wall", "Worn cavity"], "category": "machine",
                   "statement": "Worn cavity 2 of mould M-17."},
    "corrective": [{"description": "Replace insert", "owner": "Zhao Lei",
                    "due_date": "2026-12-15"}],
    "preventive": [{"description": "Wear check in PM plan", "owner": "Sun Mei",
                    "due_date": "2026-12-31"},
                   {"description": "Train setters", "owner": "Sun Mei",
                    "due_date": "2027-01-15"}],
    "disposition": {"type": "rework", "quantity": 480,
                    "cost": {"amount": "3600.00", "currency": "CNY"}},
}


PHOTO = AttachmentMeta(sha256="a" * 64, filename="crack.jpg", content_type="image/jpeg",
                       size=48_213, uploaded_by="wang.fang", uploaded_at="2026-11-20T08:00:00Z")
SAMPLES = ReturnedSample(quantity=12, received_on="2026-11-20", location="QA lab shelf B3")


def new_action(unit: str = "production") -> ActionRequest:
    assigned = ResponsibilityAssigned(
        feedback_id="fb-1", register_no="CF-2026-000001", round=1,
        preliminary_cause="thin wall", defect_code="D03", customer_id="C-1",
        units=[UnitRequest(unit=unit, request="Find the cause", action_id="act-1")],
        customer_name="Bright Motors", product=Product(code="HSG-220", lot="L2026-11-03"),
        quantity_affected=40, description="Cracks at the boss", attachments=[PHOTO])
    return ActionRequest.open(assigned.units[0], assigned, QUALITY, "evt-assigned")


def proposed_action() -> ActionRequest:
    action = new_action()
    action.draft(InvestigationDraft.model_validate(COMPLETE), PRODUCTION)
    action.submit(PRODUCTION)
    return action


# ------------------------------------------------------------------ action request


def test_opening_records_the_request_and_emits_action_requested_on_the_feedback():
    action = new_action()
    assert action.status is ActionStatus.REQUESTED
    assert action.applied_events == ["evt-assigned"]
    [event] = action.pending_events
    assert event.type == "action.requested"
    assert event.correlation_id == "fb-1" and event.causation_id == "evt-assigned"
    assert event.payload["unit"] == "production"


def test_completeness_check_lists_exactly_what_is_missing():
    action = new_action()
    assert [m["loc"] for m in action.missing()] == [
        "containment", "root_cause.statement", "root_cause.category", "root_cause.five_whys",
        "corrective", "preventive"]
    action.draft(InvestigationDraft(containment="Stop shipment",
                                    root_cause={"statement": "Worn cavity"}), PRODUCTION)
    with pytest.raises(Conflict) as refused:
        action.submit(PRODUCTION)
    assert [d["loc"] for d in refused.value.details] == [
        "root_cause.category", "root_cause.five_whys", "corrective", "preventive"]
    assert "corrective" in refused.value.message
    assert action.status is ActionStatus.REQUESTED


def test_draft_changes_only_the_fields_sent():
    action = new_action()
    action.draft(InvestigationDraft.model_validate(COMPLETE), PRODUCTION)
    action.draft(InvestigationDraft(containment="Quarantine all stock"), PRODUCTION)
    assert action.containment == "Quarantine all stock"
    assert action.root_cause.statement == "Worn cavity 2 of mould M-17."
    assert [i.no for i in action.preventive] == [1, 2]
    assert action.disposition.cost.amount == Decimal("3600.00")


def test_submit_emits_countermeasures_as_description_owner_due_date():
    action = proposed_action()
    assert action.status is ActionStatus.PROPOSED
    event = action.pending_events[-1]
    assert event.type == "action.countermeasures_proposed"
    assert event.payload["corrective"] == ["Replace insert (Zhao Lei, 2026-12-15)"]
    assert event.payload["root_cause_category"] == "machine"
    assert event.payload["disposition"]["quantity"] == 480


def test_another_unit_or_quality_cannot_act_on_a_units_request():
    action = new_action()
    for actor in (LOGISTICS, QUALITY, MANAGER):
        with pytest.raises(Forbidden):
            action.draft(InvestigationDraft(containment="x"), actor)
    assert action.containment is None and len(action.history) == 1


def test_rejected_proposal_returns_with_reason_and_can_be_resubmitted():
    action = proposed_action()
    with pytest.raises(Conflict):  # proposed: the unit waits for Quality
        action.draft(InvestigationDraft(containment="y"), PRODUCTION)
    action.reject("Root cause not proven", QUALITY, "evt-rej")
    assert action.status is ActionStatus.RETURNED
    assert action.rejections[0].reason == "Root cause not proven"
    action.draft(InvestigationDraft(root_cause={**COMPLETE["root_cause"],
                                                "statement": "Proven by CMM"}), PRODUCTION)
    action.submit(PRODUCTION)
    assert action.status is ActionStatus.PROPOSED


def test_items_are_done_only_after_acceptance_and_the_last_one_completes():
    action = proposed_action()
    with pytest.raises(Conflict):
        action.complete_item(ItemKind.CORRECTIVE, 1, None, PRODUCTION)
    action.accept("Good", QUALITY, "evt-ok")
    with pytest.raises(Conflict):
        action.accept("Again", QUALITY, "evt-ok-2")
    with pytest.raises(NotFound):
        action.complete_item(ItemKind.CORRECTIVE, 9, None, PRODUCTION)
    action.complete_item(ItemKind.CORRECTIVE, 1, "done", PRODUCTION)
    with pytest.raises(Conflict):
        action.complete_item(ItemKind.CORRECTIVE, 1, None, PRODUCTION)
    action.complete_item(ItemKind.PREVENTIVE, 1, None, PRODUCTION)
    assert action.status is ActionStatus.ACCEPTED
    action.complete_item(ItemKind.PREVENTIVE, 2, None, PRODUCTION)
    assert action.status is ActionStatus.COMPLETED
    assert action.corrective[0].status is ItemStatus.DONE
    assert action.pending_events[-1].type == "action.completed"


def test_p_5_3_2_the_unit_gets_the_complaint_with_its_evidence_and_later_evidence_too():
    action = new_action()
    complaint = action.complaint
    assert complaint.product.lot == "L2026-11-03" and complaint.defect_code == "D03"
    assert complaint.customer_name == "Bright Motors" and complaint.quantity_affected == 40
    assert complaint.preliminary_cause == "thin wall" and complaint.attachments == [PHOTO]
    later = EvidenceAdded(feedback_id="fb-1", register_no="CF-2026-000001", sample=SAMPLES)
    action.add_evidence(later, QUALITY, "evt-evidence")
    action.add_evidence(later, QUALITY, "evt-evidence-again")
    assert action.complaint.samples == [SAMPLES]
    assert [h.action for h in action.history].count("evidence_added") == 1
    again = ActionRequest.model_validate(action.to_document())
    assert again.complaint.attachments == [PHOTO]


def test_an_event_without_the_complaint_still_opens_a_request_with_the_product_code():
    assigned = ResponsibilityAssigned(
        feedback_id="fb-2", register_no="CF-2026-000002", round=1, preliminary_cause="c",
        defect_code="D03", customer_id="C-1", product_code="HSG-220",
        units=[UnitRequest(unit="production", request="r", action_id="act-2")])
    action = ActionRequest.open(assigned.units[0], assigned, QUALITY, "evt-old")
    assert action.complaint.product.code == "HSG-220" and action.complaint.attachments == []


def test_withdrawn_complaint_ends_open_requests_and_refuses_changes_with_the_reason():
    action = new_action()
    action.withdraw("Registered twice", Actor(sub="wang.fang", roles=("sales",)), "evt-w")
    assert action.status is ActionStatus.WITHDRAWN
    assert action.withdrawal.reason == "Registered twice" and action.withdrawal.by == "wang.fang"
    assert (action.history[-1].action, action.history[-1].actor.sub) == ("withdrawn",
                                                                         "wang.fang")
    with pytest.raises(Conflict, match="withdrawn .* by wang.fang \\(Registered twice\\)"):
        action.draft(InvestigationDraft(containment="x"), PRODUCTION)
    with pytest.raises(Conflict, match="withdrawn"):
        action.accept("late", QUALITY, "evt-late")
    done = proposed_action()
    done.accept("ok", QUALITY, "evt-ok")
    for kind, no in ((ItemKind.CORRECTIVE, 1), (ItemKind.PREVENTIVE, 1),
                     (ItemKind.PREVENTIVE, 2)):
        done.complete_item(kind, no, None, PRODUCTION)
    done.withdraw("Registered twice", QUALITY, "evt-w")
    assert done.status is ActionStatus.COMPLETED and done.withdrawal is None


def test_document_is_bson_safe_and_reads_back():
    action = proposed_action()
    doc = action.to_document()
    assert doc["corrective"][0]["due_date"] == "2026-12-15"
    assert doc["disposition"]["cost"]["amount"] == "3600.00"
    assert bson_safe({"d": date(2026, 1, 2)}) == {"d": "2026-01-02"}
    again = ActionRequest.model_validate(doc)
    assert again.corrective[0].due_date == date(2026, 12, 15)


# ------------------------------------------------------------------ formal CAPA

ROOT = CapaRootCause(statement="No wear check in the PM plan", category="method")
PLAN = CapaPlan(actions=[{"description": "Add wear check", "owner": "Sun Mei",
                          "due_date": "2027-01-31"}])


def check(effective: bool, window_to: str = "2026-08-31") -> EffectivenessInput:
    """A window that has ended (unless `window_to` says otherwise)."""
    return EffectivenessInput(criteria="No recurrence for 3 months", window_from="2026-06-01",
                              window_to=window_to, evaluation="see data", effective=effective)


def manual_capa(owner: str | None = "production") -> Capa:
    return Capa.by_hand("capa-1", "CAPA-2026-0001",
                        CapaCreate(title="Cracked housings", owner_unit=owner), QUALITY)


def test_recurrence_capa_links_the_complaints_and_correlates_with_the_last():
    capa = Capa.from_recurrence("capa-r", "CAPA-2026-0002", RecurrenceDetected(
        kind="customer:C-1|defect:D03", reason="recurred", feedback_ids=["f1", "f2", "f3"],
        defect_code="D03", customer_id="C-1"), QUALITY, "evt-rec")
    [event] = capa.pending_events
    assert event.type == "capa.opened" and event.correlation_id == "f3"
    assert event.payload["source"] == "recurrence" and "D03" in capa.title
    assert capa.applied_events == ["evt-rec"]


def test_capa_is_planned_with_a_root_cause_and_an_action_in_either_order():
    capa = manual_capa()
    capa.set_plan(PLAN, PRODUCTION)
    assert capa.status is CapaStatus.OPEN
    capa.set_root_cause(ROOT, QUALITY)
    assert capa.status is CapaStatus.PLANNED


def test_capa_cannot_be_implemented_before_it_is_planned():
    capa = manual_capa()
    with pytest.raises(Conflict, match="root cause"):
        capa.implemented("done", QUALITY)


def test_only_quality_or_the_owner_unit_edits_and_only_quality_verifies_and_closes():
    capa = manual_capa()
    with pytest.raises(Forbidden):
        capa.set_root_cause(ROOT, LOGISTICS)
    capa.set_root_cause(ROOT, PRODUCTION)
    capa.set_plan(PLAN, PRODUCTION)
    capa.implemented("done", PRODUCTION)
    with pytest.raises(Forbidden):
        capa.verify_effectiveness(check(True), PRODUCTION)
    assert capa.status is CapaStatus.IMPLEMENTED and not capa.verifications


def test_capa_cannot_close_without_effective_result_and_ineffective_reopens_plan():
    capa = manual_capa()
    capa.set_root_cause(ROOT, QUALITY)
    capa.set_plan(PLAN, QUALITY)
    capa.implemented("done", QUALITY)
    with pytest.raises(Conflict, match="cannot close without an effective verification"):
        capa.close(QUALITY)
    capa.verify_effectiveness(check(False), QUALITY)
    assert capa.status is CapaStatus.PLANNED
    assert [v.effective for v in capa.verifications] == [False]
    with pytest.raises(Conflict):
        capa.verify_effectiveness(check(True), QUALITY)  # implement the revised plan first
    capa.set_plan(PLAN, QUALITY)
    capa.implemented("revised plan done", QUALITY)
    capa.verify_effectiveness(check(True), QUALITY)
    capa.close(QUALITY)
    assert capa.status is CapaStatus.CLOSED
    assert [e.type for e in capa.pending_events][-1] == "capa.closed"
    assert len(capa.implementations) == 2 and len(capa.verifications) == 2
    with pytest.raises(Conflict):
        capa.set_plan(PLAN, QUALITY)


def test_effectiveness_window_must_not_end_before_it_starts():
    with pytest.raises(ValidationError) as bad:
        EffectivenessInput(criteria="c", window_from="2027-02-01", window_to="2027-01-01",
                           evaluation="e", effective=True)
    assert bad.value.errors()[0]["loc"] == ("window_to",)


def test_p_5_3_4_overdue_actions_are_those_past_due_and_not_done():
    from services.capa.metrics import overdue_items
    docs = [{"corrective": [{"due_date": "2026-11-01", "status": "open"},
                            {"due_date": "2026-11-01", "status": "done"}],
             "preventive": [{"due_date": "2026-12-31", "status": "open"}]},
            {"corrective": None, "preventive": [{"due_date": "2026-11-27"}]}]
    assert overdue_items(docs, "2026-11-28", ("corrective", "preventive")) == 2


def test_p_5_3_4_effectiveness_is_judged_only_after_its_window_has_ended():
    capa = manual_capa()
    capa.set_root_cause(ROOT, QUALITY)
    capa.set_plan(PLAN, QUALITY)
    capa.implemented("done", QUALITY)
    today = utcnow().date()
    for window_end in (today, today + timedelta(days=60)):
        with pytest.raises(Conflict) as early:
            capa.verify_effectiveness(check(True, window_end.isoformat()), QUALITY)
        assert f"ends on {window_end.isoformat()}" in early.value.message
        assert f"from {(window_end + timedelta(days=1)).isoformat()} on" in early.value.message
    assert capa.status is CapaStatus.IMPLEMENTED and capa.verifications == []
    yesterday = (today - timedelta(days=1)).isoformat()
    capa.verify_effectiveness(check(True, yesterday), QUALITY)
    assert capa.status is CapaStatus.EFFECTIVE


def test_quality_withdraws_a_capa_with_a_reason_and_it_accepts_nothing_more():
    capa = manual_capa()
    with pytest.raises(Forbidden):
        capa.withdraw("not mine", PRODUCTION)
    capa.withdraw("Duplicate of CAPA-2026-0007", QUALITY)
    assert capa.status is CapaStatus.WITHDRAWN and capa.withdrawal.by == "li.wei"
    event = capa.pending_events[-1]
    assert event.type == "capa.withdrawn"
    assert event.payload["reason"] == "Duplicate of CAPA-2026-0007"
    for change in (lambda: capa.set_root_cause(ROOT, QUALITY), lambda: capa.close(QUALITY),
                   lambda: capa.withdraw("again", QUALITY),
                   lambda: capa.assign_owner("logistics", QUALITY)):
        with pytest.raises(Conflict, match="Duplicate of CAPA-2026-0007"):
            change()


def test_a_closed_capa_cannot_be_withdrawn():
    capa = manual_capa()
    capa.set_root_cause(ROOT, QUALITY)
    capa.set_plan(PLAN, QUALITY)
    capa.implemented("done", QUALITY)
    capa.verify_effectiveness(check(True), QUALITY)
    capa.close(QUALITY)
    with pytest.raises(Conflict, match="closed"):
        capa.withdraw("too late", QUALITY)
    assert capa.status is CapaStatus.CLOSED


def test_quality_assigns_the_owner_unit_whose_people_may_then_work_on_the_capa():
    capa = manual_capa(owner=None)
    with pytest.raises(Forbidden):
        capa.set_root_cause(ROOT, PRODUCTION)
    with pytest.raises(Forbidden):
        capa.assign_owner("production", PRODUCTION)
    assert capa.assign_owner("production", QUALITY) is True
    assert capa.assign_owner("production", QUALITY) is False  # no change, nothing recorded
    capa.set_root_cause(ROOT, PRODUCTION)
    capa.assign_owner("logistics", QUALITY)
    with pytest.raises(Forbidden):
        capa.set_plan(PLAN, PRODUCTION)
    owners = [(h.changes["owner_unit"], h.changes["previous_owner_unit"]) for h in capa.history
              if h.action == "owner_assigned"]
    assert owners == [("production", None), ("logistics", "production")]
    assert [e.type for e in capa.pending_events].count("capa.owner_assigned") == 2


# -- the default owner of a CAPA a recurrence opens ---------------------------------------


PRODUCTION_HEAD = Head(unit="production", name="Production head",
                       email="production.head@plant.example")


def test_the_unit_responsible_for_most_of_the_recurring_complaints_owns_by_default():
    assert most_responsible([["production"], ["logistics", "production"], ["logistics"],
                             ["production", "production"]]) == "production"
    assert most_responsible([["logistics"], ["production"]]) == "logistics"  # first named
    assert most_responsible([]) is None


def test_a_recurrence_capa_has_its_default_owner_until_quality_confirms_it():
    capa = Capa.from_recurrence("capa-r", "CAPA-2026-0003", RecurrenceDetected(
        kind="customer:C-1|defect:D03", reason="recurred", feedback_ids=["f1", "f2", "f3"],
        defect_code="D03", customer_id="C-1"), QUALITY, "evt-rec",
        owner_unit="production", owner=PRODUCTION_HEAD)
    assert capa.owner_unit == "production" and capa.owner == PRODUCTION_HEAD
    assert capa.owner_confirmed is False
    [opened] = capa.pending_events
    assert opened.payload["owner_unit"] == "production"
    assert opened.payload["owner_confirmed"] is False
    capa.set_root_cause(ROOT, PRODUCTION)  # the default owner unit works on it meanwhile
    # Quality confirms the default: recorded and announced, once.
    assert capa.assign_owner("production", QUALITY, PRODUCTION_HEAD) is True
    assert capa.owner_confirmed is True and capa.owner == PRODUCTION_HEAD
    assert capa.history[-1].action == "owner_assigned"
    assert capa.history[-1].changes["owner_confirmed"] is True
    assert capa.history[-1].before == {"owner_confirmed": False}
    assert capa.pending_events[-1].type == "capa.owner_assigned"
    assert capa.assign_owner("production", QUALITY, PRODUCTION_HEAD) is False


def test_a_recurrence_capa_whose_units_are_unknown_has_no_owner_yet():
    capa = Capa.from_recurrence("capa-r", "CAPA-2026-0004", RecurrenceDetected(
        kind="customer:C-1|defect:D03", reason="unimproved", feedback_ids=["f9"],
        defect_code="D03", customer_id="C-1"), QUALITY, "evt-unimproved")
    assert capa.owner_unit is None and capa.owner is None and capa.owner_confirmed is False
    assert Capa.model_validate(capa.to_document()).owner_confirmed is False


def test_an_owner_quality_named_is_confirmed_also_on_records_stored_before_defaults():
    assert manual_capa("production").owner_confirmed is True
    assert manual_capa(None).owner_confirmed is False
    stored = manual_capa("production").to_document()
    del stored["owner_confirmed"], stored["owner"]
    assert Capa.model_validate(stored).owner_confirmed is True
    stored["owner_unit"] = None
    assert Capa.model_validate(stored).owner_confirmed is False
