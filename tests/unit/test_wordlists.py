"""The word lists forms offer (`GET /vocabulary`): every choice labelled in Chinese and English.

Each enumeration's labels are one table (code -> (zh-Hans, en)); these tests keep every
table whole as the enumerations grow, and the configured lists (units, defect codes)
labelled however they are configured.
"""

import re
from enum import StrEnum

import httpx
import pytest

from services.capa import wordlists as capa_words
from services.intake import wordlists as intake_words
from services.notify import wordlists as notify_words
from services.quality import wordlists as quality_words
from services.quality.settings import DEFAULT_CATALOGUE
from services.quality.settings import Settings as QualitySettings
from services.reporting import wordlists as reporting_words
from shared import wordlists as shared_words
from shared.auth import ROLES, make_token
from shared.service import Service, create_app
from shared.settings import InfraSettings, ServiceSettings
from shared.units import DEFAULT_UNITS, UNIT_LABELS
from shared.wordlists import LANGUAGES, SHARED_LISTS, Labels, WordList, enum_list, words

CJK = re.compile(r"[\u4e00-\u9fff]")

# Every table, with the enumeration it labels.
TABLES: list[tuple[type[StrEnum], Labels]] = [
    (enum, table) for module in (capa_words, intake_words, notify_words, quality_words,
                                 reporting_words, shared_words)
    for table in vars(module).values() if isinstance(table, dict) and table
    and all(isinstance(code, StrEnum) for code in table)
    for enum in {type(code) for code in table}
]


def all_lists() -> dict[str, dict[str, WordList]]:
    return {"shared": SHARED_LISTS, "intake": intake_words.word_lists(),
            "quality": quality_words.word_lists(QualitySettings()),
            "capa": capa_words.word_lists(), "notify": notify_words.word_lists(),
            "reporting": reporting_words.word_lists()}


def test_every_table_labels_every_member_of_its_enumeration_in_both_languages():
    assert len(TABLES) >= 17  # shared 6, intake 2, quality 2, capa 6, notify 2, reporting 1
    for enum, table in TABLES:
        assert set(table) == set(enum), f"{enum.__name__}: {set(enum) ^ set(table)}"
        for code, (zh, en) in table.items():
            assert zh.strip() and en.strip(), f"{enum.__name__}.{code}"
            assert en.isascii(), f"{enum.__name__}.{code}: English label {en!r}"
            if enum.__name__ != "ChannelName":  # "Webhook" has no Chinese word of its own
                assert CJK.search(zh), f"{enum.__name__}.{code}: Chinese label {zh!r}"


def test_every_list_of_every_service_has_every_word_in_both_languages():
    for service, lists in all_lists().items():
        assert lists, service
        for name, word_list in lists.items():
            assert word_list.description, (service, name)
            found = word_list.words()
            assert found, (service, name)
            assert len({w.code for w in found}) == len(found), (service, name)
            for word in found:
                assert list(word.labels) == list(LANGUAGES), (service, name, word.code)
                assert all(word.labels.values()), (service, name, word.code)


def test_lists_follow_the_enumerations_order_and_names_are_not_shared_twice():
    lists = all_lists()
    assert [w.code for w in SHARED_LISTS["channels"].words()][:3] == ["phone", "fax", "email"]
    for service, own in lists.items():
        if service != "shared":
            assert not set(own) & set(SHARED_LISTS), service


def test_an_enumeration_missing_a_label_is_refused_at_once():
    class Colour(StrEnum):
        RED = "red"
        BLUE = "blue"

    with pytest.raises(ValueError, match="blue"):
        enum_list(Colour, {"red": ("红", "Red")}, "colours")


def test_a_code_without_labels_is_its_own_label():
    assert words({"a": ("甲", "A")}, ["a", "b"])[1].labels == {"zh-Hans": "b", "en": "b"}


def test_quality_lists_the_configured_units_with_the_defaults_labels():
    default = quality_words.word_lists(QualitySettings())
    units = {w.code: w.labels for w in default["units"].words()}
    assert list(units) == DEFAULT_UNITS
    assert all(CJK.search(units[u]["zh-Hans"]) for u in DEFAULT_UNITS)
    assert units["production"] == {"zh-Hans": "生产部", "en": "Production"}
    configured = QualitySettings(units=["production", "tooling", "paint"],
                                 unit_labels={"tooling": ("模具部", "Tooling")},
                                 major_summon_units=["production"])
    units = {w.code: w.labels for w in quality_words.word_lists(configured)["units"].words()}
    assert units == {"production": {"zh-Hans": "生产部", "en": "Production"},
                     "tooling": {"zh-Hans": "模具部", "en": "Tooling"},
                     "paint": {"zh-Hans": "paint", "en": "paint"}}
    assert set(UNIT_LABELS) == set(DEFAULT_UNITS)


def test_quality_lists_the_defect_catalogue_in_both_languages_however_configured():
    default = {w.code: w.labels for w in
               quality_words.word_lists(QualitySettings())["defect_codes"].words()}
    assert list(default) == list(DEFAULT_CATALOGUE)
    assert all(CJK.search(labels["zh-Hans"]) for labels in default.values())
    assert default["D03"] == {"zh-Hans": "功能失效", "en": "Functional failure"}
    # A plant's own catalogue: a default code keeps its Chinese name only while it means the
    # same; a new or redefined code shows its English name until it is given a Chinese one.
    own = QualitySettings(defect_catalogue={"D03": "Functional failure", "D01": "Burr",
                                            "X7": "Weld porosity"},
                          defect_catalogue_zh={"X7": "焊接气孔"})
    labels = {w.code: w.labels["zh-Hans"] for w in
              quality_words.word_lists(own)["defect_codes"].words()}
    assert labels == {"D03": "功能失效", "D01": "Burr", "X7": "焊接气孔"}


async def test_every_service_serves_its_lists_to_every_role_and_documents_them():
    service = Service("kit", ServiceSettings())
    service.word_lists["colours"] = WordList("Test colours",
                                             lambda: words({"red": ("红", "Red")}))
    app = create_app(service, title="t", description="t")
    secret = InfraSettings().jwt_secret.get_secret_value()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as client:
        assert (await client.get("/vocabulary")).status_code == 401
        for role in ROLES:
            token = make_token(secret, "someone", [role], unit="production")
            body = (await client.get("/vocabulary",
                                     headers={"Authorization": f"Bearer {token}"})).json()
            assert body["service"] == "kit" and body["languages"] == ["zh-Hans", "en"]
            assert list(body["lists"]) == [*SHARED_LISTS, "colours"]
            assert body["lists"]["colours"] == [
                {"code": "red", "labels": {"zh-Hans": "红", "en": "Red"}}]
        operation = (await client.get("/openapi.json")).json()["paths"]["/vocabulary"]["get"]
    assert operation["x-roles"] == list(ROLES)
    assert "`colours`: Test colours" in operation["description"]
    assert "`categories`" in operation["description"]
