"""The word lists intake owns, served at `/vocabulary` beside the shared ones
(`shared.wordlists`): one table per enumeration, code -> (zh-Hans, en)."""

from services.intake.domain import FeedbackStatus, FormState
from shared.wordlists import Labels, WordList, enum_list

FEEDBACK_STATUSES: Labels = {
    FeedbackStatus.REGISTERED: ("已登记", "Registered"),
    FeedbackStatus.WITH_QUALITY: ("质量部处理中", "With Quality"),
    FeedbackStatus.QUALITY_RECORD_READY: ("质量记录待审", "Quality record ready"),
    FeedbackStatus.REPLIED: ("已答复客户", "Replied"),
    FeedbackStatus.CLOSED: ("已关闭", "Closed"),
    FeedbackStatus.WITHDRAWN: ("已撤销", "Withdrawn"),
}
FORM_STATES: Labels = {
    FormState.SENT_TO_QUALITY: ("已发往质量部（传递中）", "On its way to Quality"),
    FormState.WITH_QUALITY: ("质量部已接收", "With Quality"),
    FormState.RECORD_WITH_SALES: ("质量记录已交销售", "Record back with Sales"),
    FormState.WITHDRAWN: ("已撤销", "Withdrawn"),
}


def word_lists() -> dict[str, WordList]:
    return {
        "feedback_statuses": enum_list(FeedbackStatus, FEEDBACK_STATUSES,
                                       "Where a feedback stands in the register"),
        "form_states": enum_list(FormState, FORM_STATES,
                                 "Where the Complaint Handling Form is (`form.state`)"),
    }
