"""The console's words: every message id it uses has its Chinese translation, with the same
placeholders, and the language is chosen as people expect (issue 10)."""

import re

import httpx
import pytest

from services.console.backend import Backend
from services.console.i18n import Translator, load_catalogues, negotiate
from services.console.messages import all_ids
from services.console.pages import safe_next
from services.console.vocabulary import Vocabularies
from services.quality import wordlists as quality_words
from services.quality.settings import Settings as QualitySettings
from shared.wordlists import LANGUAGES, SHARED_LISTS, Vocabulary

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
    assert zh.label("quality") == zh.gettext("Quality") != "Quality"  # a role, the console's
    assert zh.error("conflict") == "记录当前状态下无法执行此操作。"
    assert en.duration(-3 * 3600) == "overdue by 3 h 0 min"


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example", "/\\evil", "", None])
def test_after_a_form_the_console_goes_only_to_its_own_pages(target):
    assert safe_next(target) == "/"


async def test_the_words_of_a_form_are_the_services_vocabulary_read_again_after_a_while():
    """A unit configured only in quality's settings, with its labels, is offered by the
    console in the person's language; the lists are kept for `ttl_s`, then read again."""
    quality = QualitySettings(units=["production", "tooling"], major_summon_units=[],
                              unit_labels={"tooling": ("模具部", "Tooling")})
    lists = SHARED_LISTS | quality_words.word_lists(quality)
    calls: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.host)
        assert request.headers["authorization"] == "Bearer t"
        body = Vocabulary(service="quality", languages=list(LANGUAGES),
                          lists={name: wl.words() for name, wl in lists.items()})
        return httpx.Response(200, json=body.model_dump())

    now = [0.0]
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        vocabularies = Vocabularies(Backend(http, {"quality": "http://quality"}), ["quality"],
                                    ttl_s=60, clock=lambda: now[0])
        words = await vocabularies.fresh("t")
        catalogues = load_catalogues()
        zh = Translator("zh", catalogues["zh"], "Asia/Shanghai", words)
        en = Translator("en", catalogues["en"], "Asia/Shanghai", words)
        assert zh.codes("units") == ["production", "tooling"]
        assert zh.label("tooling", "units") == "模具部"
        assert en.label("tooling", "units") == "Tooling"
        assert zh.label("production", "units") == "生产部"
        assert zh.label("major", "severities") == "重大"
        assert zh.defect("D03", "Functional failure") != "Functional failure"
        assert en.label("nowhere", "units") == "nowhere"
        now[0] = 59.0
        await vocabularies.fresh("t")
        assert len(calls) == 1  # kept, not read on every page
        now[0] = 61.0
        await vocabularies.fresh("t")
        assert len(calls) == 2
