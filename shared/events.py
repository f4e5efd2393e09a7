"""The event envelope and the registry of versioned event contracts.

Every message on the exchange is an `Envelope` whose `payload` matches the
contract registered for its `(type, version)`. Contracts live in
`shared.contracts`; plant systems read them through the AsyncAPI document.
"""

from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, TypeVar
from uuid import UUID, uuid4, uuid5

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, ValidationError


def utcnow() -> datetime:
    return datetime.now(UTC)


class Actor(BaseModel):
    """Who did it: a person (from the JWT) or a service acting on its own."""

    model_config = ConfigDict(frozen=True)

    sub: str = Field(..., description="User id, or `system:<service>`", examples=["li.wei"])
    name: str | None = Field(None, examples=["Li Wei"])
    roles: tuple[str, ...] = Field((), examples=[["quality"]])
    unit: str | None = Field(None, description="Responsible unit, for role `unit`")

    @classmethod
    def system(cls, service: str) -> "Actor":
        return cls(sub=f"system:{service}", name=service, roles=("system",))


class Contract(BaseModel):
    """Base of every event payload: frozen, and registered under its type and version."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: ClassVar[str]
    event_version: ClassVar[int] = 1


class Envelope(BaseModel):
    """The versioned JSON envelope around every event."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(default_factory=lambda: str(uuid4()), description="Unique event id (UUID)")
    type: str = Field(..., examples=["feedback.registered"], description="Also the routing key")
    version: int = Field(1, ge=1, description="Contract version of the payload")
    # A time without a zone is ambiguous (a plant system's local clock?): refused, not guessed.
    occurred_at: Annotated[AwareDatetime, AfterValidator(lambda at: at.astimezone(UTC))] = Field(
        default_factory=utcnow, description="When it happened, with its zone; kept in UTC")
    producer: str = Field(..., examples=["intake"])
    correlation_id: str = Field(..., description="The feedback id: the story of one complaint")
    causation_id: str | None = Field(None, description="The event that caused this one")
    actor: Actor
    payload: dict[str, Any] = Field(default_factory=dict)


C = TypeVar("C", bound=Contract)
_REGISTRY: dict[tuple[str, int], type[Contract]] = {}


def contract(event_type: str, version: int = 1):
    """Class decorator: register a payload model as the contract of `event_type` v`version`."""

    def register(cls: type[C]) -> type[C]:
        cls.event_type, cls.event_version = event_type, version
        key = (event_type, version)
        if key in _REGISTRY and _REGISTRY[key] is not cls:
            raise RuntimeError(f"contract {event_type} v{version} registered twice")
        _REGISTRY[key] = cls
        return cls

    return register


def registered_contracts() -> dict[tuple[str, int], type[Contract]]:
    return dict(_REGISTRY)


class UnknownEvent(Exception):
    """The consumer has no contract for this type and version: dead-letter, don't guess."""


class MalformedEvent(Exception):
    """The message is not a valid envelope, or its payload breaks its contract."""


def make_event(
    payload: Contract,
    *,
    producer: str,
    correlation_id: str,
    actor: Actor,
    causation_id: str | None = None,
    event_id: str | None = None,
) -> Envelope:
    return Envelope(
        **({"id": event_id} if event_id else {}),
        type=payload.event_type,
        version=payload.event_version,
        producer=producer,
        correlation_id=correlation_id,
        causation_id=causation_id,
        actor=actor,
        payload=payload.model_dump(mode="json"),
    )


_ONCE = UUID("9a1c7e0e-3b59-4d8f-a7a4-1f0b6f2c8e11")


def once_id(*parts: object) -> str:
    """A deterministic event id for a fact that must happen once (e.g. "round 2 of case X
    breached"): if two instances both record it, consumers see one event id twice and
    apply it once. Idempotent by design, with no lease needed."""
    return str(uuid5(_ONCE, "|".join(str(p) for p in parts)))


def parse_event(raw: bytes | str | dict) -> tuple[Envelope, Contract]:
    """Validate an envelope and its payload against the registered contract."""
    try:
        env = (Envelope.model_validate(raw) if isinstance(raw, dict)
               else Envelope.model_validate_json(raw))
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])  # the DLQ says which field
        raise MalformedEvent(f"not a valid event envelope: {loc}: {err['msg']}") from exc
    model = _REGISTRY.get((env.type, env.version))
    if model is None:
        known = sorted(v for (t, v) in _REGISTRY if t == env.type)
        raise UnknownEvent(
            f"no contract for event {env.type!r} version {env.version}"
            + (f" (known versions: {known})" if known else " (unknown type)")
        )
    try:
        return env, model.model_validate(env.payload)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise MalformedEvent(f"{env.type} v{env.version} payload: {loc}: {err['msg']}") from exc
