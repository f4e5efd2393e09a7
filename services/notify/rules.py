"""Which events concern people, and whom: pure rules, no I/O.

A rule names the template (`purpose`) and the audience. The handlers resolve the
audience into addresses from the directory (or from the case, for the customer).
"""

from dataclasses import dataclass, field

from shared.contracts import (
    ActionRequested,
    ComplaintAccepted,
    ComplaintEscalated,
    CustomerReplied,
    MajorAlert,
    RepliedDirectly,
    ResolutionReady,
    SlaAtRisk,
    SlaBreached,
)
from shared.events import Contract
from shared.vocabulary import Head

QUALITY = "role:quality"
MANAGER = "role:manager"
SALES = "role:sales"
# Mails to the customer: they may answer them (Reply-To the complaints mailbox).
TO_CUSTOMER = frozenset({"customer_reply", "direct_reply"})


@dataclass(frozen=True)
class Audience:
    """Who is told. `tiers` are directory groups: the first tier with anybody in it wins
    (e.g. the unit's mailbox, else its head, else Quality)."""

    tiers: tuple[tuple[str, ...], ...] = ()
    heads: tuple[Head, ...] = ()
    customer: bool = False


@dataclass(frozen=True)
class MailRule:
    purpose: str  # also the template's name
    audience: Audience = field(default_factory=Audience)


def mail_rule(payload: Contract) -> MailRule | None:
    """The e-mail an event causes, if any."""
    match payload:
        case ComplaintEscalated():  # P-5.3.1: a Complaint Handling Form for Quality
            return MailRule("form_arrived", Audience(tiers=((QUALITY,),)))
        case ComplaintAccepted(round=r) if r > 1:  # P-F.4 no: the form is back with Quality
            return MailRule("form_reopened", Audience(tiers=((QUALITY,),)))
        case ActionRequested(unit=unit):  # P-3.3: the responsible unit must act
            return MailRule("action_requested", Audience(
                tiers=((f"unit:{unit}",), (f"head:{unit}",), (QUALITY,))))
        case MajorAlert(heads=heads):  # P-5.3.5: summon the heads at once
            return MailRule("major_alert", Audience(heads=tuple(heads),
                                                    tiers=((QUALITY, MANAGER),)))
        case SlaAtRisk():  # P-F.5
            return MailRule("sla_at_risk", Audience(tiers=((QUALITY, MANAGER),)))
        case SlaBreached():  # P-F.5
            return MailRule("sla_breached", Audience(tiers=((QUALITY, MANAGER),)))
        case ResolutionReady():  # P-5.3.1: Quality's record is with Sales
            return MailRule("resolution_ready", Audience(tiers=((SALES,),)))
        case CustomerReplied():  # P-F.4, P-3.1: Sales' reply goes to the customer
            return MailRule("customer_reply", Audience(customer=True))
        case RepliedDirectly():  # P-F.2 yes, P-5.3.3: Sales answered without a form
            return MailRule("direct_reply", Audience(customer=True))
    return None
