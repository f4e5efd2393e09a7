"""Chinese and English: Babel message catalogues, the person's language, dates and money.

The catalogue is `locale/<lang>/LC_MESSAGES/messages.po` (message ids are the English text);
it is compiled in memory when the console starts (babel.messages), so no build step and no
network is needed. English needs no catalogue: its text is the message id.
"""

import io
from collections.abc import Callable, Mapping
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from babel.core import Locale
from babel.dates import format_date, format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_currency
from babel.support import NullTranslations, Translations

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
LANGUAGES = ("zh", "en")
BABEL_LOCALES = {"zh": "zh_Hans_CN", "en": "en_GB"}

# The roles, as people read them (the English label is the message id). Every other code a
# page shows (statuses, categories, channels, severities, units, defect codes, root-cause
# categories, dispositions) is labelled by the service that owns it: its `GET /vocabulary`
# (`services/console/vocabulary.py`).
LABELS: dict[str, str] = {
    "sales": "Sales", "quality": "Quality", "unit": "Responsible unit", "manager": "Manager",
    "ops": "Operations", "auditor": "Auditor", "system": "Service (automatic)",
}
# A language of the console -> the language tag of the services' labels.
WORD_LANGUAGES = {"zh": "zh-Hans", "en": "en"}

# What the services' error codes mean to a person (`{"error": {"code": ...}}`).
ERRORS: dict[str, str] = {
    "invalid": "Some fields are not valid; check them and send again.",
    "conflict": "This step is not possible in the record's present state.",
    "not_found": "It was not found (or it has not arrived yet).",
    "forbidden": "Your role may not take this step.",
    "unauthorized": "Your sign-in has expired; sign in again.",
    "too_large": "The request is too large.",
    "unavailable": "The service is busy or unreachable; try again in a moment.",
    "internal": "The service failed; the error was logged. Try again later.",
    "error": "The service refused this step.",
}


def N_(message: str) -> str:
    """Marks a message id translated later (when the page is rendered)."""
    return message


def load_catalogues() -> dict[str, NullTranslations]:
    """Each language's translations, compiled from its messages.po."""
    catalogues: dict[str, NullTranslations] = {"en": NullTranslations()}
    for lang in LANGUAGES:
        po = LOCALE_DIR / lang / "LC_MESSAGES" / "messages.po"
        if not po.is_file():
            continue
        with po.open("rb") as src:
            catalog = read_po(src, locale=BABEL_LOCALES[lang])
        buffer = io.BytesIO()
        write_mo(buffer, catalog)
        buffer.seek(0)
        catalogues[lang] = Translations(buffer)
    return catalogues


def negotiate(chosen: str | None, accept_language: str | None, default: str) -> str:
    """The person's choice (cookie) first, then their browser's Accept-Language."""
    if chosen in LANGUAGES:
        return chosen
    weighted: list[tuple[float, str]] = []
    for part in (accept_language or "").split(","):
        tag, _, q = part.strip().partition(";q=")
        try:
            weight = float(q) if q else 1.0
        except ValueError:
            continue
        primary = tag.split("-")[0].lower()
        if primary in LANGUAGES:
            weighted.append((weight, primary))
    return max(weighted, key=lambda w: w[0])[1] if weighted else default


class Translator:
    """One request's words: `_`, labels, error messages, dates and money."""

    def __init__(self, lang: str, translations: NullTranslations, timezone: str,
                 words: Mapping[str, Mapping[str, Mapping[str, str]]] | None = None):
        self.lang = lang
        self.words = words or {}
        self.locale = Locale.parse(BABEL_LOCALES[lang])
        self._translations = translations
        self.tz = ZoneInfo(timezone)

    def gettext(self, message: str, **values: Any) -> str:
        text = self._translations.gettext(message)
        return text % values if values else text

    def label(self, value: Any, word_list: str | None = None) -> str:
        """A code as people read it: from the service's word list `word_list` (e.g.
        `units`), else a role; a code nobody labels is shown as it is."""
        if value is None:
            return ""
        key = str(getattr(value, "value", value))
        word = self.words.get(word_list or "", {}).get(key)
        if word:
            return word.get(WORD_LANGUAGES[self.lang]) or word.get("en") or key
        return self.gettext(LABELS[key]) if key in LABELS else key

    def codes(self, word_list: str) -> list[str]:
        """Every code of a word list, in the order its service gives."""
        return list(self.words.get(word_list, {}))

    def defect(self, code: str | None, name: str | None = None) -> str:
        """A defect code's name from quality's catalogue, else the name the record keeps."""
        if code and code in self.words.get("defect_codes", {}):
            return self.label(code, "defect_codes")
        return name or ""

    def error(self, code: str) -> str:
        return self.gettext(ERRORS.get(code, ERRORS["error"]))

    def datetime(self, value: str | datetime | None) -> str:
        if not value:
            return ""
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        return format_datetime(moment, "medium", tzinfo=self.tz, locale=self.locale)

    def date(self, value: str | date | None) -> str:
        if not value:
            return ""
        day = date.fromisoformat(value) if isinstance(value, str) else value
        return format_date(day, "medium", locale=self.locale)

    def money(self, value: dict[str, Any] | None) -> str:
        if not value:
            return ""
        try:
            amount = Decimal(str(value["amount"]))
        except (InvalidOperation, KeyError):
            return ""
        return format_currency(amount, value.get("currency", "CNY"), locale=self.locale)

    def duration(self, seconds: float) -> str:
        """Time left on a clock, e.g. "2 d 5 h" / "2天5小时"; negative: overdue by."""
        total = int(abs(seconds)) // 60
        days, rest = divmod(total, 24 * 60)
        hours, minutes = divmod(rest, 60)
        text = (self.gettext("%(d)s d %(h)s h", d=days, h=hours) if days
                else self.gettext("%(h)s h %(m)s min", h=hours, m=minutes))
        return self.gettext("overdue by %(time)s", time=text) if seconds < 0 else text

    def functions(self) -> dict[str, Callable[..., Any]]:
        """What the templates call."""
        return {"_": self.gettext, "label": self.label, "word_codes": self.codes,
                "defect": self.defect, "dt": self.datetime, "d": self.date, "money": self.money,
                "duration": self.duration, "error_text": self.error}
