"""The kit's history (records control, P-5.4.2): every entry shows what a field was before.

`Aggregate.log` fills `before` by itself, so these tests use a small aggregate of their own
and, to show it needs nothing from the services, the real intake and capa aggregates.
"""

from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from services.capa.domain import Capa, CapaCreate
from services.intake.domain import Feedback, FeedbackStatus, NewFeedback
from services.reporting.domain import FeedbackRow
from shared.domain import Aggregate, HistoryEntry
from shared.events import Actor
from tests.unit.test_intake_domain import register

SALES = Actor(sub="wang.fang", roles=("sales",))
QUALITY = Actor(sub="li.wei", roles=("quality",))
NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


class Level(StrEnum):
    NORMAL = "normal"
    MAJOR = "major"


class Thing(Aggregate):
    status: str = "registered"
    severity: Level = Level.NORMAL
    owner_unit: str | None = None
    loss: Decimal = Decimal("0")
    due: date | None = None
    tags: list[str] = []


def stored(agg: Aggregate) -> Any:
    """What the repository does: write the document, read it back (a stored version >= 1)."""
    return type(agg).model_validate(agg.to_document() | {"version": agg.version + 1})


def registered() -> Thing:
    thing = Thing(id="t-1")
    thing.log(SALES, "registered", {"status": thing.status, "severity": thing.severity})
    return stored(thing)


def test_p_5_4_2_history_shows_the_value_before_and_after_a_change():
    thing = registered()
    thing.status, thing.severity = "form_opened", Level.MAJOR
    thing.log(QUALITY, "escalated", {"status": thing.status, "severity": thing.severity})
    entry = stored(thing).history[-1]
    assert entry.changes == {"status": "form_opened", "severity": "major"}
    assert entry.before == {"status": "registered", "severity": "normal"}


def test_p_5_4_2_a_new_record_has_no_before():
    thing = Thing(id="t-1", status="registered")
    thing.log(SALES, "registered", {"status": "registered", "owner_unit": None})
    assert thing.history[0].before == {}


def test_p_5_4_2_before_only_for_the_aggregates_own_fields_that_changed():
    thing = registered()
    thing.owner_unit = "production"
    thing.log(QUALITY, "owner_assigned", {"owner_unit": "production", "status": thing.status,
                                          "previous_owner_unit": None, "note": "x"})
    # status named but unchanged, the other keys are not fields: no before for them.
    assert thing.history[-1].before == {"owner_unit": None}


def test_p_5_4_2_several_entries_in_one_save_each_show_their_own_before():
    thing = registered()
    thing.status = "with_quality"
    thing.log(SALES, "escalated", {"status": thing.status})
    thing.status = "accepted"
    thing.log(QUALITY, "accepted", {"status": thing.status})
    assert [h.before for h in stored(thing).history[1:]] == [
        {"status": "registered"}, {"status": "with_quality"}]


def test_p_5_4_2_before_is_the_value_last_recorded_even_if_changed_earlier_in_the_command():
    thing = registered()
    thing.status = "form_opened"                      # changed first ...
    thing.log(SALES, "sample_added", {"tags": []})  # ... an entry about something else ...
    thing.log(SALES, "escalated", {"status": thing.status})  # ... then recorded
    assert thing.history[-1].before == {"status": "registered"}


def test_p_5_4_2_a_new_record_shows_before_from_its_first_entry_on():
    thing = Thing(id="t-1")
    thing.log(SALES, "registered", {"status": thing.status})
    thing.status = "with_quality"
    thing.log(SALES, "escalated", {"status": thing.status})
    assert thing.history[-1].before == {"status": "registered"}


def test_p_5_4_2_before_values_are_stored_as_bson_safe_copies():
    thing = registered()
    thing.loss, thing.due, thing.tags = Decimal("12.50"), date(2026, 12, 1), ["a"]
    thing.log(QUALITY, "updated", {"loss": "12.50", "due": "2026-12-01", "tags": ["a"]})
    thing.tags.append("b")  # a later in-place change does not reach the recorded before
    assert thing.history[-1].before == {"loss": "0", "due": None, "tags": []}
    thing.log(QUALITY, "tagged", {"tags": thing.tags})
    assert thing.history[-1].before == {"tags": ["a"]}
    assert stored(thing).history[-2].before == {"loss": "0", "due": None, "tags": []}


def test_p_5_4_2_old_entries_without_before_still_load():
    doc = {"_id": "t-1", "version": 3, "status": "closed", "history": [
        {"at": NOW, "actor": SALES.model_dump(), "action": "registered",
         "changes": {"status": "registered"}, "note": None, "event_id": "e-1"}]}
    thing = Thing.model_validate(doc)
    assert thing.history[0].before == {}
    thing.status = "reopened"
    thing.log(SALES, "reopened", {"status": thing.status})
    assert thing.history[-1].before == {"status": "closed"}


def test_p_5_4_2_the_schema_documents_before():
    field = HistoryEntry.model_json_schema()["properties"]["before"]
    assert field["description"].startswith("field -> value before this change")


def test_p_5_4_2_intake_status_change_shows_before_with_no_service_code():
    new = NewFeedback.model_validate({
        "customer": {"id": "C-1001", "name": "Bright Motors"}, "channel": "phone",
        "category": "product_quality", "description": "Housings crack at the boss."})
    fb = stored(Feedback.register(id="f-1", register_no="CF-2026-000001", new=new, actor=SALES,
                                  now=NOW))
    fb.escalate(SALES, now=NOW)
    entry = stored(fb).history[-1]
    assert (entry.action, fb.status) == ("escalated", FeedbackStatus.WITH_QUALITY)
    assert entry.before["status"] == "registered" and entry.changes["status"] == "with_quality"
    assert entry.before["has_form"] is False


def test_p_5_4_2_capa_owner_change_shows_the_previous_owner():
    capa = stored(Capa.by_hand("capa-1", "CAPA-2026-0001",
                               CapaCreate(title="Cracked housings", owner_unit="production"),
                               QUALITY))
    capa.assign_owner("logistics", QUALITY)
    assert capa.history[-1].before == {"owner_unit": "production"}


def test_p_5_4_2_a_record_loaded_for_a_list_page_takes_no_snapshot_yet_still_logs():
    """List pages load many records only to show them: no `before` snapshot is taken."""
    doc = register().to_document() | {"version": 2}
    assert Feedback.model_validate(doc)._recorded is not None
    viewed = Feedback.viewed(doc)
    assert viewed._recorded is None
    viewed.log(SALES, "noted", {"status": "registered"})  # degrades to "no before", no error
    assert viewed.history[-1].before == {}


def test_p_5_4_2_read_models_that_keep_no_history_take_no_snapshot():
    assert FeedbackRow.model_validate({"_id": "r1", "version": 3})._recorded is None
