"""Mail texts from Jinja2 templates, one file per purpose and language.

`templates/<lang>/<purpose>.j2` defines two blocks, `subject` and `body`. Plain
text (no HTML escaping); the subject is folded to one line so it can never
inject a header.
"""

import re
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateNotFound

from shared.vocabulary import Language, Money

TEMPLATE_DIR = Path(__file__).parent / "templates"
PURPOSES = ("form_arrived", "form_reopened", "action_requested", "major_alert", "sla_at_risk",
            "sla_breached", "resolution_ready", "customer_reply", "direct_reply")


class Renderer:
    def __init__(self, timezone: str = "Asia/Shanghai", directory: Path = TEMPLATE_DIR):
        self.tz = ZoneInfo(timezone)
        self.env = Environment(loader=FileSystemLoader(directory), autoescape=False,
                               undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                               keep_trailing_newline=True)
        self.env.filters["dt"] = self._dt
        self.env.filters["money"] = _money

    def render(self, purpose: str, language: Language, context: dict[str, Any]) -> \
            tuple[str, str]:
        """(subject, body) in `language`; English if a translation is missing."""
        try:
            template = self.env.get_template(f"{language.value}/{purpose}.j2")
        except TemplateNotFound:
            template = self.env.get_template(f"en/{purpose}.j2")
        ctx = template.new_context(context)
        subject = "".join(template.blocks["subject"](ctx))
        ctx = template.new_context(context)
        body = "".join(template.blocks["body"](ctx))
        return one_line(subject)[:250], body.strip() + "\n"

    def _dt(self, value: datetime | None) -> str:
        if value is None:
            return "-"
        return value.astimezone(self.tz).strftime("%Y-%m-%d %H:%M") + f" ({self.tz.key})"


def _money(value: Money | None) -> str:
    return "-" if value is None else f"{value.amount} {value.currency}"


def one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()
