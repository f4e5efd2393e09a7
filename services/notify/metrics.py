"""Notify's Prometheus metrics, on the service's registry (served at /metrics)."""

from prometheus_client import CollectorRegistry, Counter, Gauge


class NotifyMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.attempts = Counter(
            "qms_notify_notifications", "Delivery attempts by channel and outcome "
            "(sent, failed = will retry, parked = gave up)", ["channel", "outcome"],
            registry=registry)
        self.created = Counter(
            "qms_notify_recorded", "Notifications recorded, by channel and purpose",
            ["channel", "purpose"], registry=registry)
        self.unresolved = Counter(
            "qms_notify_unresolved", "Events that concern people but found nobody to tell "
            "(no directory entry, no customer address)", ["purpose"], registry=registry)
        self.webhooks = Counter(
            "qms_notify_webhook_deliveries", "Webhook delivery attempts by outcome "
            "(delivered, failed, parked)", ["outcome"], registry=registry)
        self.parked = Gauge(
            "qms_notify_parked", "Notifications parked, waiting for a manual retry",
            ["channel"], registry=registry)
        self.inbound = Counter(
            "qms_notify_inbound_mails", "Mails accepted by the complaints mailbox",
            ["kind", "malformed"], registry=registry)
        self.inbound_refused = Counter(
            "qms_notify_inbound_refused", "Inbound SMTP refusals (recipient, failure)",
            ["reason"], registry=registry)
        self.inbound_duplicates = Counter(
            "qms_notify_inbound_duplicates", "Mails delivered again (same Message-ID, sender "
            "and content) and kept once", registry=registry)
        self.inbound_listening = Gauge(
            "qms_notify_inbound_listening", "1 while the inbound SMTP endpoint is listening",
            registry=registry)
