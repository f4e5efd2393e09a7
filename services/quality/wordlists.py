"""The word lists quality owns, served at `/vocabulary` beside the shared ones
(`shared.wordlists`): the responsible units and the defect catalogue as configured, and one
table per enumeration, code -> (zh-Hans, en)."""

from services.quality.domain import CaseStatus, UnitStatus
from services.quality.settings import Settings
from shared.wordlists import Labels, WordList, enum_list, words

CASE_STATUSES: Labels = {
    CaseStatus.OPEN: ("分析中", "Open"),
    CaseStatus.AWAITING_UNITS: ("等待责任部门", "Awaiting units"),
    CaseStatus.RESOLVED: ("已交销售", "Resolved"),
    CaseStatus.CLOSED: ("已关闭", "Closed"),
    CaseStatus.WITHDRAWN: ("已撤销", "Withdrawn"),
}
UNIT_STATUSES: Labels = {
    UnitStatus.REQUESTED: ("已要求", "Requested"),
    UnitStatus.PROPOSED: ("对策待验证", "Proposed"),
    UnitStatus.REJECTED: ("对策被退回", "Rejected"),
    UnitStatus.ACCEPTED: ("对策已验证", "Accepted"),
    UnitStatus.IMPLEMENTED: ("已实施", "Implemented"),
}


def word_lists(settings: Settings) -> dict[str, WordList]:
    return {
        "units": WordList("P-3.2: the responsible units Quality may name (configured)",
                          lambda: words(settings.unit_word_labels())),
        "defect_codes": WordList("The defect catalogue (configured; also `/defect-codes`)",
                                 lambda: words(settings.defect_labels())),
        "case_statuses": enum_list(CaseStatus, CASE_STATUSES,
                                   "Where a Complaint Handling Form stands at Quality"),
        "unit_statuses": enum_list(UnitStatus, UNIT_STATUSES,
                                   "Where a responsible unit's part of a round stands"),
    }
