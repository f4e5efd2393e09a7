"""Notify: notifications to people and plant systems, and complaints arriving by e-mail and fax.

- **E-mail** (SMTP, Jinja2 templates in Chinese and English) to Quality, the responsible
  units, the unit heads (major complaints, P-5.3.5), the manager (3-day rule, P-F.5),
  Sales, and the customer (the reply, P-F.4). Recipients come from the directory.
- **Webhooks** for plant systems: signed POSTs of the event envelopes
  (`X-QMS-Signature: sha256=HMAC(secret, "<X-QMS-Timestamp>.<body>")`), retried with
  backoff, parked after the limit, retried by hand.
- **Inbound mail** (P-5.1): an SMTP endpoint for the complaints mailbox, faxes from
  fax-to-mail gateways included; each mail is kept raw and announced as `mail.received`.
"""
