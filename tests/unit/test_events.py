"""Event contracts: an event is valid against its registered contract, or refused with a reason."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import Field

from shared.events import (
    Actor,
    Contract,
    Envelope,
    MalformedEvent,
    UnknownEvent,
    contract,
    make_event,
    parse_event,
)


@contract("unit.sample_happened", version=2)
class SampleHappened(Contract):
    what: str = Field(..., min_length=1)


ACTOR = Actor(sub="li.wei", roles=("quality",))


def test_event_round_trips_through_json_with_its_contract():
    env = make_event(SampleHappened(what="x"), producer="unit", correlation_id="f1", actor=ACTOR)
    parsed, payload = parse_event(env.model_dump_json())
    assert parsed == env
    assert payload == SampleHappened(what="x")
    assert parsed.type == "unit.sample_happened" and parsed.version == 2


def test_unknown_version_is_refused_naming_the_known_ones():
    env = Envelope(type="unit.sample_happened", version=1, producer="u", correlation_id="f",
                   actor=ACTOR, payload={"what": "x"})
    with pytest.raises(UnknownEvent, match=r"version 1 \(known versions: \[2\]\)"):
        parse_event(env.model_dump_json())


def test_payload_breaking_its_contract_is_malformed_with_the_field():
    env = Envelope(type="unit.sample_happened", version=2, producer="u", correlation_id="f",
                   actor=ACTOR, payload={"what": ""})
    with pytest.raises(MalformedEvent, match="payload: what"):
        parse_event(env.model_dump_json())
    with pytest.raises(MalformedEvent, match="not a valid event envelope"):
        parse_event(b"{}")


def test_occurred_at_needs_its_zone_and_is_kept_in_utc():
    env = make_event(SampleHappened(what="x"), producer="unit", correlation_id="f1", actor=ACTOR)
    raw = json.loads(env.model_dump_json())
    raw["occurred_at"] = "2026-11-28T16:00:00+08:00"  # a plant system on Beijing time
    parsed, _ = parse_event(json.dumps(raw))
    assert parsed.occurred_at == datetime(2026, 11, 28, 8, 0, tzinfo=UTC)
    assert parsed.occurred_at.utcoffset() == timedelta(0)
    raw["occurred_at"] = "2026-11-28T16:00:00"  # whose clock? refused, not guessed
    with pytest.raises(MalformedEvent, match="occurred_at"):
        parse_event(json.dumps(raw))
