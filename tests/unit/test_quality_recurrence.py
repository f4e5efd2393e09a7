"""P-5.3.4 recurrence counts occurrences, not complaints: a kind "was handled, came back,
was handled again and came back again". Pure: no broker, no database."""

from datetime import UTC, datetime, timedelta

from services.quality.recurrence import Kind, KindEntry
from shared.events import Actor

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
SALES = Actor(sub="wang.fang", roles=("sales",))
KEY = "customer:C-1|defect:D03"


def arrived(feedback_id: str, hours: float) -> KindEntry:
    at = T0 + timedelta(hours=hours)
    return KindEntry(feedback_id=feedback_id, register_no=f"CF-{feedback_id}", round=1,
                     customer_id="C-1", product_code="HSG-1", counted_at=at, arrived_at=at)


def count(kind: Kind, entry: KindEntry) -> None:
    kind.count_complaint(entry, threshold=3, now=entry.counted_at)


def handled(kind: Kind, feedback_id: str, hours: float) -> None:
    kind.complaint_handled(feedback_id, at=T0 + timedelta(hours=hours), threshold=3,
                           now=T0 + timedelta(hours=hours))


def test_p_5_3_4_three_concurrent_complaints_are_one_occurrence_and_ask_for_no_capa():
    kind = Kind.new(KEY)
    for i, fid in enumerate(("f1", "f2", "f3")):  # one bad lot reported three times in a day
        count(kind, arrived(fid, i))
    assert kind.count == 1 and kind.window_ids == ["f1", "f2", "f3"]
    for i, fid in enumerate(("f1", "f2", "f3")):
        handled(kind, fid, 10 + i)
    assert kind.count == 1 and kind.pending_events == [] and not kind.detected


def test_p_5_3_4_handled_came_back_handled_came_back_again_asks_for_a_capa_once():
    kind = Kind.new(KEY)
    count(kind, arrived("f1", 0))
    handled(kind, "f1", 1)
    count(kind, arrived("f2", 2))  # came back
    assert kind.count == 2 and kind.pending_events == []
    handled(kind, "f2", 3)
    count(kind, arrived("f3", 4))  # came back again: the third complaint of the kind
    [event] = kind.pending_events
    assert event.type == "complaint.recurrence_detected"
    assert event.payload["feedback_ids"] == ["f1", "f2", "f3"] and kind.count == 3
    handled(kind, "f3", 5)
    count(kind, arrived("f4", 6))
    assert len(kind.pending_events) == 1  # once per window


def test_p_5_3_4_a_complaint_arriving_while_an_earlier_one_is_open_joins_it():
    kind = Kind.new(KEY)
    count(kind, arrived("f1", 0))
    handled(kind, "f1", 1)
    count(kind, arrived("f2", 2))
    count(kind, arrived("f2b", 3))  # f2 is still being handled: linked, not counted
    assert kind.count == 2 and kind.window_ids == ["f1", "f2", "f2b"]
    handled(kind, "f2", 4)
    count(kind, arrived("f3", 5))  # f2b is still being handled: joins too
    assert kind.count == 2 and kind.pending_events == []
    handled(kind, "f2b", 6)
    handled(kind, "f3", 7)
    count(kind, arrived("f4", 8))  # every earlier one handled: the third occurrence
    [event] = kind.pending_events
    assert event.payload["feedback_ids"] == ["f1", "f2", "f2b", "f3", "f4"]


def test_p_5_3_4_a_later_round_of_the_same_complaint_is_no_new_occurrence():
    kind = Kind.new(KEY)
    count(kind, arrived("f1", 0))
    handled(kind, "f1", 1)
    count(kind, arrived("f1", 2))  # reopened, responsibility assigned again
    handled(kind, "f1", 3)  # its second handover does not move when it was handled
    assert kind.count == 1 and kind.window[0].handled_at == T0 + timedelta(hours=1)
    assert len(kind.complaints) == 1


def test_p_5_3_4_the_count_does_not_depend_on_the_order_the_news_arrives_in():
    """The handover of f2 reaches the kind after f3 was counted; f3 still came back."""
    kind = Kind.new(KEY)
    count(kind, arrived("f1", 0))
    handled(kind, "f1", 1)
    count(kind, arrived("f2", 2))
    count(kind, arrived("f3", 4))  # arrived at 4, after f2's handover at 3, not yet known
    assert kind.count == 2 and kind.pending_events == []
    handled(kind, "f2", 3)
    assert kind.count == 3 and len(kind.pending_events) == 1
    redelivered = Kind.model_validate(kind.to_document())
    handled(redelivered, "f2", 3)
    assert redelivered.count == 3 and redelivered.pending_events == []  # asked once


def test_p_5_3_4_withdrawing_the_open_complaint_others_joined_lets_them_count():
    kind = Kind.new(KEY)
    count(kind, arrived("f1", 0))
    handled(kind, "f1", 1)
    count(kind, arrived("x", 2))  # registered in error, never handled
    count(kind, arrived("f2", 3))  # joins x
    handled(kind, "f2", 4)
    count(kind, arrived("f3", 5))  # x is still open: joins it too
    assert kind.count == 2 and kind.pending_events == []
    kind.withdraw_complaint("x", actor=SALES, at=T0 + timedelta(hours=6), threshold=3)
    [event] = kind.pending_events  # f2 and f3 each came after the earlier ones were handled
    assert kind.count == 3 and event.payload["feedback_ids"] == ["f1", "f2", "f3"]


def test_p_5_3_4_stored_entries_without_arrival_keep_counting_as_they_were():
    """Backward compatible: entries stored before occurrences each stand alone."""
    doc = Kind.new(KEY).to_document()
    doc["window"] = [{"feedback_id": f"f{i}", "register_no": f"CF-{i}", "round": 1,
                      "customer_id": "C-1", "counted_at": T0} for i in (1, 2)]
    kind = Kind.model_validate(doc)
    assert kind.count == 2 and kind.window[0].handled_at is None
    count(kind, arrived("f3", 1))  # not held back by the old, never-handled entries
    assert kind.count == 3 and len(kind.pending_events) == 1
