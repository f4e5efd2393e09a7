"""The word lists capa owns, served at `/vocabulary` beside the shared ones
(`shared.wordlists`): one table per enumeration, code -> (zh-Hans, en)."""

from services.capa.domain import (
    ActionStatus,
    CapaSource,
    CapaStatus,
    ItemKind,
    ItemStatus,
    RootCauseCategory,
)
from shared.wordlists import Labels, WordList, enum_list

ACTION_STATUSES: Labels = {
    ActionStatus.REQUESTED: ("待调查", "Requested"),
    ActionStatus.PROPOSED: ("对策待验证", "Proposed"),
    ActionStatus.ACCEPTED: ("对策已验证，实施中", "Accepted"),
    ActionStatus.COMPLETED: ("已完成", "Completed"),
    ActionStatus.RETURNED: ("被退回", "Returned"),
    ActionStatus.WITHDRAWN: ("已撤销", "Withdrawn"),
}
CAPA_STATUSES: Labels = {
    CapaStatus.OPEN: ("已开启", "Open"),
    CapaStatus.PLANNED: ("已计划", "Planned"),
    CapaStatus.IMPLEMENTED: ("已实施", "Implemented"),
    CapaStatus.EFFECTIVE: ("验证有效", "Effective"),
    CapaStatus.CLOSED: ("已关闭", "Closed"),
    CapaStatus.WITHDRAWN: ("已撤销", "Withdrawn"),
}
CAPA_SOURCES: Labels = {
    CapaSource.RECURRENCE: ("重复发生", "Recurrence"),
    CapaSource.MANUAL: ("质量部手动开启", "Opened by Quality"),
}
ROOT_CAUSE_CATEGORIES: Labels = {
    RootCauseCategory.MAN: ("人", "Man"),
    RootCauseCategory.MACHINE: ("机", "Machine"),
    RootCauseCategory.MATERIAL: ("料", "Material"),
    RootCauseCategory.METHOD: ("法", "Method"),
    RootCauseCategory.MEASUREMENT: ("测", "Measurement"),
    RootCauseCategory.ENVIRONMENT: ("环", "Environment"),
}
ITEM_KINDS: Labels = {
    ItemKind.CORRECTIVE: ("纠正措施", "Corrective"),
    ItemKind.PREVENTIVE: ("预防措施", "Preventive"),
}
ITEM_STATUSES: Labels = {
    ItemStatus.OPEN: ("未完成", "Open"),
    ItemStatus.DONE: ("已完成", "Done"),
}


def word_lists() -> dict[str, WordList]:
    return {
        "action_statuses": enum_list(ActionStatus, ACTION_STATUSES,
                                     "Where an action request to a unit stands"),
        "capa_statuses": enum_list(CapaStatus, CAPA_STATUSES, "Where a formal CAPA stands"),
        "capa_sources": enum_list(CapaSource, CAPA_SOURCES, "How a CAPA was opened"),
        "root_cause_categories": enum_list(RootCauseCategory, ROOT_CAUSE_CATEGORIES,
                                           "The 4M/6M (Ishikawa) category of a root cause"),
        "item_kinds": enum_list(ItemKind, ITEM_KINDS, "Corrective or preventive action"),
        "item_statuses": enum_list(ItemStatus, ITEM_STATUSES, "An action done or not"),
    }
