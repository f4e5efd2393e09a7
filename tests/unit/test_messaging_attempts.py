"""The attempt count the kit reads back from a message it retried (or one it did not write)."""

from datetime import UTC, datetime

import pytest

from shared.messaging import _attempts_so_far


@pytest.mark.parametrize("header, attempts", [
    (None, 0), (3, 3), ("2", 2), (b"4", 4),
    # Another publisher's header is not ours to trust: counted as none, never a crash that
    # would leave the message unacked on the channel.
    ("three", 0), ([1, 2], 0), ({"n": 1}, 0), (datetime.now(UTC), 0), (True, 0), (-5, 0),
    (float("inf"), 0),
])
def test_attempts_read_back_from_the_header(header, attempts):
    assert _attempts_so_far(header) == attempts
