"""The word lists reporting owns, served at `/vocabulary` beside the shared ones
(`shared.wordlists`): one table per enumeration, code -> (zh-Hans, en)."""

from services.reporting.domain import Status
from shared.wordlists import Labels, WordList, enum_list

REGISTER_STATUSES: Labels = {
    Status.AWAITING_REGISTRATION: ("等待登记", "Awaiting registration"),
    Status.REGISTERED: ("已登记", "Registered"),
    Status.REPLIED_DIRECTLY: ("已直接答复", "Replied directly"),
    Status.WITH_QUALITY: ("质量部处理中", "With Quality"),
    Status.QUALITY_RECORD_READY: ("质量记录待审", "Quality record ready"),
    Status.CUSTOMER_REPLIED: ("已答复客户", "Customer replied"),
    Status.REOPENED: ("已重新打开", "Reopened"),
    Status.CLOSED: ("已关闭", "Closed"),
    Status.WITHDRAWN: ("已撤销", "Withdrawn"),
}


def word_lists() -> dict[str, WordList]:
    return {"register_statuses": enum_list(Status, REGISTER_STATUSES,
                                           "Where a feedback stands in the register's read "
                                           "model (`/register?status=`)")}
