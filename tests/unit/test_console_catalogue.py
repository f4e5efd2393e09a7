"""The console's words: every message id it uses has its Chinese translation, with the same
placeholders, and the language is chosen as people expect (issue 10)."""

import re

import pytest

from services.console.i18n import Translator, load_catalogues, negotiate
from services.console.messages import all_ids
from services.console.pages import safe_next

PLACEHOLDER = re.compile(r"%\([a-z]+\)s")


def test_every_word_of_the_console_has_a_chinese_translation():
    zh = load_catalogues()["zh"]
    untranslated = sorted(m for m in all_ids() if zh.gettext(m) == m)
    assert not untranslated, f"add to services/console/locale/zh/LC_MESSAGES/messages.po: " \
                             f"{untranslated}"


def test_a_translation_keeps_the_placeholders_of_its_message():
    zh = load_catalogues()["zh"]
    for message in all_ids():
        assert sorted(PLACEHOLDER.findall(zh.gettext(message))) == \
            sorted(PLACEHOLDER.findall(message)), message


@pytest.mark.parametrize(("chosen", "accept", "expected"), [
    ("en", "zh-CN,zh;q=0.9", "en"),            # the switch wins, remembered in its cookie
    (None, "zh-CN,zh;q=0.9,en;q=0.8", "zh"),
    (None, "de-DE,en;q=0.5,zh;q=0.4", "en"),
    (None, "fr", "zh"),                          # neither: the plant's default
    (None, None, "zh"),
    ("xx", "en-US", "en"),
])
def test_the_language_is_the_persons_choice_then_their_browsers(chosen, accept, expected):
    assert negotiate(chosen, accept, "zh") == expected


def test_times_are_shown_in_the_plant_time_zone_and_money_with_its_currency():
    catalogues = load_catalogues()
    zh = Translator("zh", catalogues["zh"], "Asia/Shanghai")
    en = Translator("en", catalogues["en"], "Asia/Shanghai")
    assert "09:30" in zh.datetime("2026-11-20T01:30:00Z")
    assert "09:30" in en.datetime("2026-11-20T01:30:00+00:00")
    assert "1,250.00" in en.money({"amount": "1250.00", "currency": "CNY"})
    assert zh.label("with_quality") == "质量部处理中"
    assert zh.error("conflict") == "记录当前状态下无法执行此操作。"
    assert en.duration(-3 * 3600) == "overdue by 3 h 0 min"


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example", "/\\evil", "", None])
def test_after_a_form_the_console_goes_only_to_its_own_pages(target):
    assert safe_next(target) == "/"
