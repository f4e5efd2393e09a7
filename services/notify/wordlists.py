"""The word lists notify owns, served at `/vocabulary` beside the shared ones
(`shared.wordlists`): one table per enumeration, code -> (zh-Hans, en)."""

from services.notify.domain import ChannelName, NotificationStatus
from shared.wordlists import Labels, WordList, enum_list

NOTIFICATION_STATUSES: Labels = {
    NotificationStatus.PENDING: ("待发送", "Pending"),
    NotificationStatus.SENT: ("已发送", "Sent"),
    NotificationStatus.PARKED: ("已搁置（需手动重试）", "Parked"),
    NotificationStatus.NO_RECIPIENT: ("无收件人", "No recipient"),
}
NOTIFICATION_CHANNELS: Labels = {
    ChannelName.EMAIL: ("电子邮件", "E-mail"),
    ChannelName.WEBHOOK: ("Webhook", "Webhook"),
}


def word_lists() -> dict[str, WordList]:
    return {
        "notification_statuses": enum_list(NotificationStatus, NOTIFICATION_STATUSES,
                                           "Where a notification stands"),
        "notification_channels": enum_list(ChannelName, NOTIFICATION_CHANNELS,
                                           "How a notification is delivered"),
    }
