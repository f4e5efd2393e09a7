"""`RecentWrites` keeps the most recently written documents only, each recalled as a copy."""

from datetime import UTC, datetime

from bson.codec_options import CodecOptions

from shared.store import RecentWrites


def test_only_the_most_recently_written_are_kept_and_each_recall_is_a_copy():
    kept = RecentWrites(CodecOptions(tz_aware=True), size=2)
    at = datetime(2026, 12, 7, 8, 30, 15, 123456, tzinfo=UTC)
    kept.keep({"_id": "a", "items": [1], "at": at})
    kept.keep({"_id": "b", "items": [2], "at": at})
    kept.keep({"_id": "a", "items": [1, 1], "at": at})  # written again: the newest now
    kept.keep({"_id": "c", "items": [3], "at": at})
    assert kept.recall("b") is None, "the least recently written went first"
    a = kept.recall("a")
    assert a == {"_id": "a", "items": [1, 1], "at": at.replace(microsecond=123000)}, \
        "as a read would give it (BSON keeps milliseconds)"
    a["items"].append(9)
    assert kept.recall("a")["items"] == [1, 1]
    kept.drop("a")
    assert kept.recall("a") is None and kept.recall("c") is not None
