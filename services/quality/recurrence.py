"""Recurrence tracking (P-5.3.4): the kinds of complaint and how often each came back. Pure.

A kind is `customer:<id>|defect:<code>` or `product:<code>|defect:<code>`. A
`Kind` keeps the complaints of that kind since its last CAPA closed (its *window*)
and counts its *occurrences*: the procedure asks for a CAPA when the kind "was
handled, came back, was handled again and came back again". A complaint is a new
occurrence only if every earlier complaint in the window had been handled (its
quality record handed to Sales) when it arrived; one that arrives while an earlier
one is still being handled joins that occurrence: it stays linked, but adds nothing
to the count. When the occurrences reach the configured count and no CAPA is open
for the kind, it asks for a formal CAPA (`complaint.recurrence_detected`), once per
window.
"""

from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field

from services.quality.domain import SERVICE, SYSTEM
from shared.contracts import RecurrenceDetected
from shared.domain import Aggregate
from shared.events import Actor


class KindEntry(BaseModel):
    feedback_id: str
    register_no: str
    round: int
    customer_id: str
    product_code: str | None = None
    counted_at: datetime
    arrived_at: datetime | None = Field(None, description="When its form reached Quality; "
                                        "absent on entries stored before occurrences counted")
    handled_at: datetime | None = Field(None, description="When Quality first handed its "
                                        "quality record to Sales (a later round does not move it)")
    withdrawn_at: datetime | None = Field(None, description="Registered in error: no longer "
                                          "counts towards the kind")


class Detection(BaseModel):
    at: datetime
    feedback_ids: list[str]
    emitted: bool = Field(..., description="False when another kind's detection covers it")
    covered_by: str | None = None


class KindCapa(BaseModel):
    capa_id: str
    number: str | None = None
    opened_at: datetime
    closed_at: datetime | None = None


Cover = tuple[str, set[str]]  # (another kind, the complaints its detection asked a CAPA for)


def came_back(entry: KindEntry, earlier: list[KindEntry]) -> bool:
    """P-5.3.4: every earlier complaint had been handled when this one arrived.

    An entry stored before arrivals were recorded stands alone, as it was counted then."""
    if entry.arrived_at is None:
        return True
    arrived = entry.arrived_at
    return all(e.handled_at is not None and e.handled_at <= arrived
               for e in earlier if e.arrived_at is not None)


def parse_kind(key: str) -> tuple[Literal["customer", "product"], str, str]:
    """`customer:C-1|defect:D03` -> ("customer", "C-1", "D03")."""
    subject, defect = key.split("|defect:", 1)
    dimension, value = subject.split(":", 1)
    if dimension not in ("customer", "product"):
        raise ValueError(f"not a complaint kind: {key!r}")
    return dimension, value, defect  # type: ignore[return-value]


class Kind(Aggregate):
    """One kind of complaint; `_id` = the kind key."""

    producer: ClassVar[str] = SERVICE

    dimension: Literal["customer", "product"]
    subject: str = Field(..., description="The customer id or product code")
    defect_code: str
    window: list[KindEntry] = Field(default_factory=list, description="Complaints since the "
                                    "last CAPA closed, each counted or joined to an occurrence")
    complaints: list[KindEntry] = Field(default_factory=list, description="Every one, ever")
    detected: bool = Field(False, description="A CAPA was asked for in this window")
    detections: list[Detection] = Field(default_factory=list)
    capas: list[KindCapa] = Field(default_factory=list)
    last_feedback_id: str | None = None

    @classmethod
    def new(cls, key: str) -> "Kind":
        dimension, subject, defect = parse_kind(key)
        return cls(id=key, dimension=dimension, subject=subject, defect_code=defect)

    @property
    def correlation_id(self) -> str:
        return self.last_feedback_id or self.id

    @property
    def count(self) -> int:
        """Occurrences in the window: the complaints that came back after all earlier ones
        were handled (decided from the entries, so the order events arrive in is irrelevant)."""
        ordered = sorted(self.window, key=lambda e: e.arrived_at or e.counted_at)
        return sum(came_back(e, ordered[:i]) for i, e in enumerate(ordered))

    @property
    def window_ids(self) -> list[str]:
        return [e.feedback_id for e in self.window]

    @property
    def open_capas(self) -> list[KindCapa]:
        return [c for c in self.capas if c.closed_at is None]

    def _common(self, attr: str) -> str | None:
        values = {getattr(e, attr) for e in self.window}
        return values.pop() if len(values) == 1 else None

    def count_complaint(self, entry: KindEntry, *, threshold: int, now: datetime,
                        causation_id: str | None = None, covered: Cover | None = None) -> None:
        """Add a complaint (once) and ask for a CAPA when the kind has come back enough."""
        if entry.feedback_id not in [e.feedback_id for e in self.complaints]:
            self.complaints.append(entry)
        self.last_feedback_id = entry.feedback_id
        if entry.feedback_id in self.window_ids:
            return
        self.window.append(entry)
        self.log(SYSTEM, "counted", {"feedback_id": entry.feedback_id, "count": self.count},
                 event_id=causation_id)
        self._detect(threshold=threshold, now=now, causation_id=causation_id, covered=covered)

    def complaint_handled(self, feedback_id: str, *, at: datetime, threshold: int,
                          now: datetime, causation_id: str | None = None,
                          covered: Cover | None = None) -> None:
        """Its quality record went to Sales: complaints arriving from now on came back.

        Checks again for a CAPA: a complaint counted before this news reached us may have
        arrived after the handover."""
        for entry in self.complaints + self.window:
            if entry.feedback_id == feedback_id and entry.handled_at is None:
                entry.handled_at = at
        self.log(SYSTEM, "handled", {"feedback_id": feedback_id, "count": self.count},
                 event_id=causation_id)
        self._detect(threshold=threshold, now=now, causation_id=causation_id, covered=covered)

    def _detect(self, *, threshold: int, now: datetime, causation_id: str | None,
                covered: Cover | None) -> None:
        """Ask for a CAPA once the occurrences reach the threshold, once per window.

        `covered`: when this window holds only complaints another kind has already asked a
        CAPA for, asking again would open a second CAPA for the same problem."""
        if self.count < threshold or self.detected or self.open_capas:
            return
        self.detected = True
        ids = self.window_ids
        if covered is not None and set(ids) <= covered[1]:
            self.detections.append(Detection(at=now, feedback_ids=ids, emitted=False,
                                             covered_by=covered[0]))
            self.log(SYSTEM, "recurrence_covered", {"count": self.count, "by": covered[0]})
            return
        self.detections.append(Detection(at=now, feedback_ids=ids, emitted=True))
        self.emit(RecurrenceDetected(
            kind=self.id, reason="recurred", feedback_ids=ids, defect_code=self.defect_code,
            customer_id=self.subject if self.dimension == "customer" else self._common(
                "customer_id"),
            product_code=self.subject if self.dimension == "product" else self._common(
                "product_code")), SYSTEM, causation_id)
        self.log(SYSTEM, "recurrence_detected", {"count": self.count, "feedback_ids": ids})

    def withdraw_complaint(self, feedback_id: str, *, actor: Actor, at: datetime,
                           threshold: int, causation_id: str | None = None,
                           covered: Cover | None = None) -> None:
        """A complaint registered in error stops counting (kept in `complaints`, marked).

        A CAPA it already helped ask for stays asked for: capa owns it from then on. Checks
        again for a CAPA: complaints that had joined it may now count as having come back."""
        for entry in self.complaints:
            if entry.feedback_id == feedback_id and entry.withdrawn_at is None:
                entry.withdrawn_at = at
        self.window = [e for e in self.window if e.feedback_id != feedback_id]
        self.log(actor, "withdrawn", {"feedback_id": feedback_id, "count": self.count},
                 note="registered in error: no longer counts")
        self._detect(threshold=threshold, now=at, causation_id=causation_id, covered=covered)

    @property
    def detected_ids(self) -> set[str]:
        """The complaints of this window a CAPA was asked for (empty when none was)."""
        return set(self.detections[-1].feedback_ids) if self.detected and self.detections \
            else set()

    def capa_opened(self, capa_id: str, number: str | None, *, actor: Actor,
                    now: datetime) -> None:
        if any(c.capa_id == capa_id for c in self.capas):
            return
        self.capas.append(KindCapa(capa_id=capa_id, number=number, opened_at=now))
        self.log(actor, "capa_opened", {"capa": number or capa_id})

    def capa_closed(self, capa_id: str, *, actor: Actor, closed_at: datetime) -> None:
        """A CAPA closed: once none is open, the kind starts counting afresh."""
        for capa in self.capas:
            if capa.capa_id == capa_id and capa.closed_at is None:
                capa.closed_at = closed_at
        if self.open_capas:
            return self.log(actor, "capa_closed", {"capa_id": capa_id, "count": self.count})
        self.window, self.detected = [], False
        self.log(actor, "capa_closed", {"capa_id": capa_id, "count": 0},
                 note="counting starts afresh")

    def to_document(self) -> dict[str, Any]:
        return super().to_document() | {
            "count": self.count, "capa_ids": [c.capa_id for c in self.capas],
            "customer_id": self.subject if self.dimension == "customer" else None,
            "product_code": self.subject if self.dimension == "product" else None,
        }
