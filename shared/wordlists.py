"""Word lists: every choice a form offers, with its label in Chinese (简体) and English.

Each enumeration has one table, code -> (zh-Hans label, en label): the only place its
labels are written (`tests/unit/test_wordlists.py` checks that every member has both).
Every service serves `GET /vocabulary` (mounted by `shared.service.create_app`): the
shared lists below (`SHARED_LISTS`) and the lists of what the service owns, which it adds
to `Service.word_lists` (e.g. quality's responsible units and defect catalogue, from its
settings; capa's statuses). A list holds every code in the order a form shows them.
"""

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from shared.auth import ROLES, Principal, require
from shared.vocabulary import (
    Category,
    Channel,
    DispositionType,
    Language,
    NoActionOutcome,
    Severity,
)

LANGUAGES = ("zh-Hans", "en")
Labels = Mapping[str, tuple[str, str]]  # code -> (zh-Hans, en)


class Word(BaseModel):
    code: str = Field(..., description="What the API takes and returns", examples=["phone"])
    labels: dict[str, str] = Field(..., description="The label in each language",
                                   examples=[{"zh-Hans": "电话", "en": "Phone"}])


def words(labels: Labels, codes: Iterable[str] | None = None) -> list[Word]:
    """The words for `codes` (default: every code of the table, in its order); a code the
    table does not know (e.g. one added by configuration) is its own label."""
    return [Word(code=code, labels=dict(zip(LANGUAGES, labels.get(code, (code, code)),
                                            strict=True)))
            for code in (labels if codes is None else codes)]


@dataclass(frozen=True)
class WordList:
    description: str
    words: Callable[[], list[Word]]


def enum_list(enum: type[StrEnum], labels: Labels, description: str) -> WordList:
    """A list of every member of `enum`, in its order; refuses a table that misses one."""
    if missing := [m.value for m in enum if m.value not in labels]:
        raise ValueError(f"{enum.__name__}: no labels for {missing}")
    return WordList(description, lambda: words(labels, [m.value for m in enum]))


CATEGORIES: Labels = {
    Category.PRODUCT_QUALITY: ("产品质量", "Product quality"),
    Category.DELIVERY: ("交付", "Delivery"),
    Category.SERVICE: ("服务与文件", "Service and documents"),
    Category.OTHER: ("其他", "Other"),
    Category.SUGGESTION: ("建议", "Suggestion"),
}
CHANNELS: Labels = {
    Channel.PHONE: ("电话", "Phone"),
    Channel.FAX: ("传真", "Fax"),
    Channel.EMAIL: ("电子邮件", "E-mail"),
    Channel.LETTER: ("信函", "Letter"),
    Channel.VISIT: ("来访", "Visit"),
    Channel.PROACTIVE: ("主动收集", "Raised by Sales"),
    Channel.WEB: ("网站", "Web"),
}
SEVERITIES: Labels = {
    Severity.NORMAL: ("一般", "Normal"),
    Severity.MAJOR: ("重大", "Major"),
}
LANGUAGE_NAMES: Labels = {
    Language.ZH: ("中文", "Chinese"),
    Language.EN: ("英文", "English"),
}
DISPOSITIONS: Labels = {
    DispositionType.RETURN: ("退货", "Return"),
    DispositionType.REWORK: ("返工", "Rework"),
    DispositionType.SORTING: ("挑选", "Sorting"),
    DispositionType.SCRAP: ("报废", "Scrap"),
    DispositionType.CONCESSION: ("让步接收", "Concession"),
}
NO_ACTION_OUTCOMES: Labels = {
    NoActionOutcome.NOT_JUSTIFIED: ("投诉不成立", "Not justified"),
    NoActionOutcome.NO_FAULT_FOUND: ("未发现缺陷", "No fault found"),
    NoActionOutcome.CUSTOMER_MISUSE: ("客户使用不当", "Customer misuse"),
}

SHARED_LISTS: dict[str, WordList] = {
    "categories": enum_list(Category, CATEGORIES, "P-5.2: how a feedback is classified"),
    "channels": enum_list(Channel, CHANNELS, "P-5.1: how the feedback reached us"),
    "severities": enum_list(Severity, SEVERITIES, "P-5.3.5: normal or major"),
    "languages": enum_list(Language, LANGUAGE_NAMES, "The customer's language"),
    "dispositions": enum_list(DispositionType, DISPOSITIONS,
                              "P-5.3.2: what happens to the goods"),
    "no_action_outcomes": enum_list(NoActionOutcome, NO_ACTION_OUTCOMES,
                                    "Why Quality concluded without corrective action"),
}


class Vocabulary(BaseModel):
    service: str = Field(..., examples=["quality"])
    languages: list[str] = Field(..., description="The languages of every label",
                                 examples=[list(LANGUAGES)])
    lists: dict[str, list[Word]] = Field(..., description="Each word list by its name")


def vocabulary_router(service: str, lists: Mapping[str, WordList]) -> APIRouter:
    """`GET /vocabulary`: every word list of this service, for forms in either language."""
    router = APIRouter(tags=["vocabulary"])
    names = "\n".join(f"* `{name}`: {wl.description}" for name, wl in lists.items())

    @router.get("/vocabulary", response_model=Vocabulary,
                summary="Every word list a form offers, labelled in Chinese and English",
                description=f"Each word's `code` is what the API takes; `labels` has it in "
                            f"{' and '.join(LANGUAGES)}. The lists:\n\n{names}")
    async def vocabulary(_: Annotated[Principal, Depends(require(*ROLES))]) -> Vocabulary:
        return Vocabulary(service=service, languages=list(LANGUAGES),
                          lists={name: wl.words() for name, wl in lists.items()})

    return router
