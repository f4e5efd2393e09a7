"""Notify: notifications to people and plant systems, and complaints arriving by e-mail and fax."""
