"""Events Quality reacts to. Every handler is idempotent: the effect and the event id
are written in one document update (`repo.apply_event`) or the id is deterministic.

Recurrence counting (P-5.3.4) consumes Quality's own `complaint.responsibility_assigned`
(a complaint joins its kinds) and `complaint.resolution_ready` (it was handled), so a
case change writes one document and the kinds follow from the event, one idempotent
update each: a crash in between only means a redelivery.
"""

import logging
from collections.abc import Callable
from datetime import datetime

from services.quality.clock import now_ms
from services.quality.domain import Case, CaseStatus, kinds_of
from services.quality.lookups import CapaKinds
from services.quality.recurrence import Cover, Kind, KindEntry, parse_kind
from services.quality.settings import Settings
from services.quality.sla import policy_of
from shared.contracts import (
    ActionCompleted,
    CapaClosed,
    CapaOpened,
    CapaWithdrawn,
    ComplaintEscalated,
    ComplaintReopened,
    ComplaintReturned,
    CountermeasuresProposed,
    EvidenceAdded,
    FeedbackClosed,
    FeedbackWithdrawn,
    ResolutionReady,
    ResponsibilityAssigned,
)
from shared.events import Envelope
from shared.service import Service
from shared.store import AlreadyExists, Repository

log = logging.getLogger("qms.quality")


class CaseNotYetKnown(Exception):
    """An event about a case that is not here (yet): retried, then dead-lettered."""


def clock_start(occurred_at: datetime) -> datetime:
    """When a round's 3-day clock starts (P-F.5): when the event happened, not when we got to
    it, so a backlog or a late delivery hides no time; never in the future (sender skew)."""
    at = min(occurred_at, now_ms())
    return at.replace(microsecond=at.microsecond // 1000 * 1000)  # BSON keeps milliseconds


def register(service: Service, settings: Settings) -> None:
    policy = policy_of(settings)
    heads = settings.heads_to_summon()

    def cases() -> Repository[Case]:
        return service.repo("cases")

    def kinds() -> Repository[Kind]:
        return service.repo("kinds")

    async def on_case(feedback_id: str, event: Envelope, apply: Callable[[Case], None],
                      *, required: bool) -> Case | None:
        case = await cases().apply_event(feedback_id, event, apply)
        if case is None and required:
            raise CaseNotYetKnown(f"no case for feedback {feedback_id} ({event.type})")
        return case

    # -- from Sales ----------------------------------------------------------------
    @service.consumer.on("complaint.escalated")
    async def form_arrived(event: Envelope, form: ComplaintEscalated) -> None:
        # The clock starts when Sales opened the form (P-F.5), not when we got the message:
        # a late delivery or a paper form entered later must not hide a breach.
        case = Case.receive(form, event_id=event.id, actor=event.actor,
                            now=clock_start(form.form_opened_at or event.occurred_at),
                            policy=policy, heads=heads)
        # The number claimed before the case is written, so that `case_numbers` names every
        # case one can read (a miss there is an unknown number, never a case to look for in
        # the store: services.quality.lookups). A crash between the two is repaired by the
        # redelivery, which finds the number claimed for this case already. Another feedback
        # with the same number (the register restored from a backup reused it): the form is
        # still handled, found by its id.
        try:
            await cases().add(case, claim=True, number_shared=True)
        except AlreadyExists:
            log.info("form %s already received; event %s ignored", form.register_no, event.id)

    @service.consumer.on("feedback.evidence_added")
    async def evidence_added(event: Envelope, p: EvidenceAdded) -> None:
        # Evidence on a feedback without a form is Sales' business only.
        await on_case(p.feedback_id, event,
                      lambda c: c.add_evidence(p, actor=event.actor, event_id=event.id),
                      required=False)

    @service.consumer.on("complaint.reopened")
    async def reopened(event: Envelope, p: ComplaintReopened) -> None:
        if not p.had_form:
            return  # back to Sales, not to Quality
        await on_case(p.feedback_id, event,
                      lambda c: c.reopen(p, actor=event.actor, now=clock_start(event.occurred_at),
                                         policy=policy, event_id=event.id), required=True)

    @service.consumer.on("complaint.returned_to_quality")
    async def returned(event: Envelope, p: ComplaintReturned) -> None:
        await on_case(p.feedback_id, event,
                      lambda c: c.return_from_sales(p, actor=event.actor,
                                                    now=clock_start(event.occurred_at),
                                                    policy=policy, event_id=event.id),
                      required=True)

    @service.consumer.on("feedback.closed")
    async def closed(event: Envelope, p: FeedbackClosed) -> None:
        if not p.had_form:
            return
        await on_case(p.feedback_id, event,
                      lambda c: c.close(p, actor=event.actor, event_id=event.id), required=True)

    @service.consumer.on("feedback.withdrawn")
    async def withdrawn(event: Envelope, p: FeedbackWithdrawn) -> None:
        now = now_ms()
        case = await on_case(p.feedback_id, event,
                             lambda c: c.withdraw(p, actor=event.actor, now=now,
                                                  event_id=event.id), required=False)
        if case is None:
            return  # no form: it was never counted
        # P-5.3.4: a complaint registered in error must not help open a formal CAPA.
        await through_kinds(sorted(case.kinds), event, lambda k, cover: k.withdraw_complaint(
            p.feedback_id, actor=event.actor, at=now, threshold=settings.recurrence_count,
            causation_id=event.id, covered=cover), create=False)

    # -- from the responsible units (capa) ------------------------------------------------
    @service.consumer.on("action.countermeasures_proposed")
    async def proposed(event: Envelope, p: CountermeasuresProposed) -> None:
        await on_case(p.feedback_id, event,
                      lambda c: c.record_proposal(p, actor=event.actor, now=now_ms(),
                                                  event_id=event.id), required=True)

    @service.consumer.on("action.completed")
    async def completed(event: Envelope, p: ActionCompleted) -> None:
        await on_case(p.feedback_id, event,
                      lambda c: c.record_completion(p, actor=event.actor, event_id=event.id),
                      required=True)

    # -- recurrence (P-5.3.4) ------------------------------------------------------------
    async def on_kind(key: str, event: Envelope, apply: Callable[[Kind], None],
                      *, create: bool) -> Kind | None:
        kind = await kinds().apply_event(key, event, apply)
        if kind is not None or not create:
            return kind
        new = Kind.new(key)
        apply(new)
        new.mark_applied(event.id)
        try:
            return await kinds().add(new)
        except AlreadyExists:  # created by a concurrent event meanwhile
            return await kinds().apply_event(key, event, apply)

    async def through_kinds(keys: list[str], event: Envelope,
                            change: Callable[[Kind, Cover | None], None], *, create: bool) -> None:
        """Apply a change to each kind in turn; once one has asked for a CAPA, the next
        ones know it covers them (one CAPA for one problem, not one per kind)."""
        covered: Cover | None = None
        for key in keys:
            def apply(kind: Kind, cover: Cover | None = covered) -> None:
                change(kind, cover)
            kind = await on_kind(key, event, apply, create=create)
            if kind is not None and kind.detected_ids and covered is None:
                covered = (key, kind.detected_ids)

    @service.consumer.on("complaint.responsibility_assigned")
    async def count_kinds(event: Envelope, p: ResponsibilityAssigned) -> None:
        case = await cases().seen(p.feedback_id)
        if case is not None and case.status == CaseStatus.WITHDRAWN:
            log.info("%s was withdrawn before it was counted: not counted", p.register_no)
            return
        now = now_ms()
        # "Came back" (P-5.3.4) is judged when the form reached Quality (Sales opened it; the
        # 3-day clock starts there), on Quality's own timeline like the handover it is
        # compared with; the customer's report time is typed in by Sales, often after the fact.
        arrived = case.rounds[0].received_at if case else event.occurred_at
        # already handed over when this event reaches us late
        handed = next((r.resolved_at for r in case.rounds if r.resolved_at), None) if case \
            else None
        entry = KindEntry(feedback_id=p.feedback_id, register_no=p.register_no, round=p.round,
                          customer_id=p.customer_id, product_code=p.product_code, counted_at=now,
                          arrived_at=arrived, handled_at=handed)
        await through_kinds(kinds_of(p.customer_id, p.product_code, p.defect_code), event,
                            lambda k, cover: k.count_complaint(
                                entry, threshold=settings.recurrence_count, now=now,
                                causation_id=event.id, covered=cover), create=True)

    @service.consumer.on("complaint.resolution_ready")
    async def handed_over(event: Envelope, p: ResolutionReady) -> None:
        case = await cases().seen(p.feedback_id)
        if case is None or not case.kinds:
            return  # concluded without responsibility assigned: never counted
        now = now_ms()
        await through_kinds(sorted(case.kinds), event, lambda k, cover: k.complaint_handled(
            p.feedback_id, at=p.resolved_at, threshold=settings.recurrence_count, now=now,
            causation_id=event.id, covered=cover), create=False)

    @service.consumer.on("capa.opened")
    async def capa_opened(event: Envelope, p: CapaOpened) -> None:
        now = now_ms()
        keys: set[str] = {p.kind} if p.kind and _is_kind(p.kind) else set()
        for feedback_id in p.feedback_ids:
            case = await on_case(feedback_id, event,
                                 lambda c: c.link_capa(p, actor=event.actor, now=now,
                                                       event_id=event.id), required=False)
            if case is not None:
                keys.update(case.kinds)  # the CAPA covers every kind its complaints count in
        for key in sorted(keys):
            await on_kind(key, event, lambda k: k.capa_opened(p.capa_id, p.number,
                                                              actor=event.actor, now=now),
                          create=True)
        # Once the kinds carry the CAPA, so that its closing finds them by the CAPA's id.
        await CapaKinds(service.database).remember(p.capa_id, sorted(keys))

    @service.consumer.on("capa.closed")
    async def capa_closed(event: Envelope, p: CapaClosed) -> None:
        for key in await CapaKinds(service.database).kinds_of(kinds(), p.capa_id):
            await on_kind(key, event, lambda k: k.capa_closed(p.capa_id, actor=event.actor,
                                                              closed_at=p.closed_at),
                          create=False)
        for feedback_id in p.feedback_ids:
            await on_case(feedback_id, event,
                          lambda c: c.capa_closed(p, actor=event.actor, event_id=event.id),
                          required=False)

    @service.consumer.on("capa.withdrawn")
    async def capa_withdrawn(event: Envelope, p: CapaWithdrawn) -> None:
        # No longer open, like a closed CAPA: the kind may ask for a CAPA again.
        await capa_closed(event, CapaClosed(capa_id=p.capa_id, kind=p.kind,
                                            feedback_ids=p.feedback_ids,
                                            closed_at=p.withdrawn_at))


def _is_kind(key: str) -> bool:
    try:
        parse_kind(key)
    except ValueError:
        log.warning("capa names kind %r, which is not a complaint kind; not tracked", key)
        return False
    return True
