"""P-F.6, P-5.4.2: the monthly report end to end, on the real reporting process, broker and
database: Quality drafts the review, issues it signed (PDF in Chinese and English), the month
is frozen, a correction is revision 2 and revision 1 stays byte-identical; a wrong role is
refused. Also the register and the statistics table as PDF forms (`format=pdf`).

Only the reporting service runs (its own namespace): the month's events are published as
intake, quality and capa would publish them, in last month (a month that has ended).
Issued pages are saved as PNG under reports/documents/ for people to look at.
"""

import hashlib
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.vocabulary import Category, Channel
from tests.conftest import test_namespace
from tests.e2e.harness import ROOT, System
from tests.support import eventually, ok, refused
from tests.unit.test_reporting_scenario import Story

pytestmark = pytest.mark.infra
PAGES = ROOT / "reports" / "documents"
REVIEW = {"counts": "两条客诉，一条直接答复。", "timeliness": "The form met the 3-day rule.",
          "losses": "Rework at production.", "recurrences": "", "capas": "",
          "overall": "模具保养为首要措施。Die maintenance comes first."}


def last_month() -> tuple[str, datetime]:
    first = (datetime.now(UTC).replace(day=1) - timedelta(days=1)).replace(
        day=1, hour=0, minute=0, second=0, microsecond=0)
    return first.strftime("%Y-%m"), first


def month_story(tag: str, start: datetime) -> Story:
    """A complaint handled with a rework cost, and a delivery complaint answered directly."""
    s = Story(tag)

    def day(n: int, hour: int = 8) -> datetime:
        return start + timedelta(days=n - 1, hours=hour)

    f1 = s.register("F1", received=day(3), category=Category.PRODUCT_QUALITY,
                    channel=Channel.PHONE, customer="A", product="P1",
                    estimate=("900.00", "CNY"))
    s.form("F1", f1, day(3, 9), day(3, 10), day(6, 10))
    s.assign("F1", 1, "D03", ["production"], day(3, 12))
    s.record("F1", 1, "D03", day(3, 10), day(4, 10), day(6, 10),
             [("production", "1500.00", "CNY")])
    s.register("F2", received=day(5), category=Category.DELIVERY, channel=Channel.EMAIL,
               customer="B")
    s.direct("F2", Category.DELIVERY, day(5, 12))
    return s


@pytest.fixture(scope="module")
async def reporting():
    system = System(test_namespace("mrep"), services=("reporting",))
    await system.start()
    yield system
    await system.stop()


def client(system: System, role: str, sub: str = "li.wei", name: str = "Li Wei"
           ) -> httpx.AsyncClient:
    token = system.token(role, sub, name=name)
    return httpx.AsyncClient(base_url=system.url("reporting"), timeout=60,
                             headers={"Authorization": f"Bearer {token}"})


def pdf_text(data: bytes, tmp_path: Path, name: str = "doc.pdf") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    out = subprocess.run(["pdftotext", "-layout", str(path), "-"], check=True,
                         capture_output=True, text=True).stdout
    return " ".join(out.split())


def save_pages(data: bytes, name: str) -> None:
    """The PDF's pages as PNG (60 dpi) for people to look at."""
    PAGES.mkdir(parents=True, exist_ok=True)
    for old in PAGES.glob(f"{name}-*.png"):
        old.unlink()
    pdf = PAGES / f"{name}.pdf"
    pdf.write_bytes(data)
    subprocess.run(["pdftoppm", "-png", "-r", "60", str(pdf), str(PAGES / name)], check=True)
    pdf.unlink()


@pytest.fixture(scope="module")
async def month(reporting) -> tuple[str, Story]:
    """Last month's events, published, and counted by the reporting service."""
    name, start = last_month()
    story = month_story(f"m{uuid.uuid4().hex[:6]}", start)
    for env in story.events:
        await reporting.publish_envelope(env)
    async with client(reporting, "manager") as http:
        async def counted() -> bool:
            table = ok(await http.get("/statistics/monthly", params={"month": name}))
            return table["counts"]["feedbacks"] == 2 and \
                table["timeliness"]["quality_records"] == 1
        await eventually(counted, timeout=60, what=f"{name}'s two feedbacks counted")
    return name, story


async def state(http: httpx.AsyncClient, month: str) -> dict[str, Any]:
    return ok(await http.get(f"/reports/monthly/{month}"))


async def test_p_f_6_monthly_report_drafted_issued_frozen_and_corrected(reporting, month,
                                                                        tmp_path):
    name, story = month
    base = f"/reports/monthly/{name}"
    async with client(reporting, "quality") as quality, \
            client(reporting, "manager", "chen.jie", "Chen Jie") as manager, \
            client(reporting, "auditor", "zhou.yu", "Zhou Yu") as auditor:
        # Quality drafts (any number of times); who and when are kept
        first = await state(quality, name)
        assert first["status"] == "draft" and first["revisions"] == []
        ok(await quality.put(f"{base}/draft", json=REVIEW | {"overall": "first words"}))
        drafted = ok(await quality.put(f"{base}/draft", json=REVIEW))
        assert drafted["draft"] == REVIEW and drafted["draft_by"] == "Li Wei"
        saves = [h for h in drafted["history"] if h["action"] == "draft_saved"]
        assert [h["actor"]["sub"] for h in saves] == ["li.wei", "li.wei"]
        assert saves[1]["changes"] == {"draft_overall": REVIEW["overall"]}  # what changed
        assert drafted["content"]["figures"]["table"]["counts"]["feedbacks"] == 2

        # the signer signs what they saw: an older content is refused
        stale = refused(await quality.post(f"{base}/issue",
                                           json={"content_sha256": first["content_sha256"]}),
                        409)
        assert "changed since you read it" in stale["message"]

        issued = await quality.post(f"{base}/issue",
                                    json={"content_sha256": drafted["content_sha256"]})
        rev1 = ok(issued, 201)
        assert rev1["number"] == 1 and set(rev1["pdfs"]) == {"zh", "en"}
        assert rev1["approval"]["meaning_label"] == "批准 / approved"
        assert rev1["approval"]["name"] == "Li Wei"
        assert rev1["approval"]["content_sha256"] == drafted["content_sha256"]
        again = await quality.post(f"{base}/issue",
                                   json={"content_sha256": drafted["content_sha256"]})
        assert again.status_code == 200 and again.json()["pdfs"] == rev1["pdfs"]  # a retry

        # every reader downloads exactly the bytes issued, in either language
        zh = await auditor.get(f"{base}/revisions/1.pdf", params={"lang": "zh"})
        assert zh.status_code == 200 and zh.headers["content-type"] == "application/pdf"
        assert hashlib.sha256(zh.content).hexdigest() == zh.headers["x-content-sha256"] \
            == rev1["pdfs"]["zh"]["sha256"]
        text = pdf_text(zh.content, tmp_path)
        assert f"客诉处理月报 {name}" in text and "第 1 版" in text
        assert "客户意见数 2 0" in text and "客诉数 2 0" in text and "直接答复数 1 0" in text
        assert "D03 功能失效 1 1" in text and "生产部 CNY 1500.00 0.00 1500.00" in text
        assert "两条客诉，一条直接答复。" in text and "模具保养为首要措施。" in text
        assert "批准（质量部）" in text and "Li Wei" in text
        en = await manager.get(f"{base}/revisions/1.pdf", params={"lang": "en"})
        assert en.headers["x-content-sha256"] == rev1["pdfs"]["en"]["sha256"]
        en_text = pdf_text(en.content, tmp_path)
        assert "Monthly Complaint Handling Report" in en_text
        assert "D03 Functional failure" in en_text
        save_pages(zh.content, "monthly-report-rev1-zh")

        # issued: frozen; a draft change says a correction is a new revision
        frozen = refused(await quality.put(f"{base}/draft", json=REVIEW | {"losses": "x"}),
                         409)
        assert "a correction is a new revision" in frozen["message"]
        assert (await state(manager, name))["status"] == "issued"

        # revision 2 says what it corrects and starts from the issued text
        refused(await quality.post(f"{base}/revisions", json={}), 422)
        correcting = ok(await quality.post(f"{base}/revisions", json={
            "corrects": "The loss of F1 is the disposition cost, not the estimate."}), 201)
        assert correcting["status"] == "correcting" and correcting["draft"] == REVIEW
        ok(await quality.put(f"{base}/draft", json=REVIEW | {"losses": "Rework: 1500 CNY."}))
        # a late event of the month moves a figure: what the signer saw is no longer current
        seen = (await state(quality, name))["content_sha256"]
        story.register("F3", received=datetime.fromisoformat(f"{name}-20T08:00:00+00:00"),
                   category=Category.SERVICE, channel=Channel.LETTER, customer="B")
        await reporting.publish_envelope(story.events[-1])

        async def settled() -> dict | None:
            """The state once the late event is counted and two reads agree (reporting applies
            an event's row and its month's counters one after the other)."""
            first = await state(quality, name)
            second = await state(quality, name)
            moved = first["content_sha256"] != seen
            return second if moved and second["content_sha256"] == first["content_sha256"] \
                else None
        current = await eventually(settled, timeout=60, what="the late feedback counted")
        refused(await quality.post(f"{base}/issue", json={"content_sha256": seen}), 409)
        rev2 = ok(await quality.post(f"{base}/issue",
                                     json={"content_sha256": current["content_sha256"]}), 201)
        assert rev2["number"] == 2
        assert rev2["corrects"] == "The loss of F1 is the disposition cost, not the estimate."
        text2 = pdf_text((await auditor.get(f"{base}/revisions/2.pdf",
                                            params={"lang": "zh"})).content, tmp_path)
        assert "本版更正第 1 版" in text2 and "not the estimate." in text2
        assert "客户意见数 3" in text2 and "Rework: 1500 CNY." in text2

        # revision 1 is still the very bytes issued
        still = await manager.get(f"{base}/revisions/1.pdf", params={"lang": "zh"})
        assert still.content == zh.content
        listed = await state(auditor, name)
        assert [r["number"] for r in listed["revisions"]] == [1, 2]


async def test_p_5_4_2_issued_monthly_report_verified_by_its_bytes(reporting, month, tmp_path):
    name, _ = month
    async with client(reporting, "quality") as quality:
        current = await state(quality, name)
        if current["status"] == "draft":  # run alone: issue it here
            ok(await quality.put(f"/reports/monthly/{name}/draft", json=REVIEW))
            current = await state(quality, name)
            ok(await quality.post(f"/reports/monthly/{name}/issue",
                                  json={"content_sha256": current["content_sha256"]}))
        data = (await quality.get(f"/reports/monthly/{name}/revisions/1.pdf",
                                  params={"lang": "en"})).content
        verdict = ok(await quality.post("/documents/verify",
                                        files={"file": ("r.pdf", data, "application/pdf")}))
        assert verdict["issued"] is True and verdict["revision"] == 1
        assert name in verdict["message"]["en"] and name in verdict["message"]["zh-Hans"]
        forged = data.replace(b"Monthly", b"Montbly", 1)
        verdict = ok(await quality.post("/documents/verify",
                                        files={"file": ("r.pdf", forged, "application/pdf")}))
        assert verdict["issued"] is False and "Not issued by this system" in \
            verdict["message"]["en"]
        by_hash = ok(await quality.get(f"/documents/verify/{hashlib.sha256(data).hexdigest()}"))
        assert by_hash["issued"] is True and by_hash["revision"] == 1


async def test_p_f_6_only_quality_writes_and_signs_the_monthly_report(reporting, month):
    name, _ = month
    base = f"/reports/monthly/{name}"
    async with client(reporting, "manager", "chen.jie") as manager, \
            client(reporting, "sales", "wang.fang") as sales:
        refused(await manager.put(f"{base}/draft", json=REVIEW), 403)
        refused(await manager.post(f"{base}/issue", json={"content_sha256": "0" * 64}), 403)
        refused(await manager.post(f"{base}/revisions", json={"corrects": "x"}), 403)
        refused(await sales.get(base), 403)
        refused(await sales.get(f"{base}/revisions/1.pdf"), 403)
    async with client(reporting, "quality") as quality:
        future = (datetime.now(UTC) + timedelta(days=40)).strftime("%Y-%m")
        body = refused(await quality.get(f"/reports/monthly/{future}"), 422)
        assert "has not begun" in body["message"]
        refused(await quality.get("/reports/monthly/2026-13"), 422)
        refused(await quality.get(f"{base}/revisions/99.pdf"), 404)


async def test_p_5_4_1_register_and_statistics_table_as_pdf_forms(reporting, month, tmp_path):
    name, story = month
    async with client(reporting, "manager", "chen.jie") as manager:
        register = await manager.get("/register", params={"month": name, "format": "pdf",
                                                          "lang": "zh"})
        assert register.status_code == 200, register.text
        assert register.headers["content-type"] == "application/pdf"
        text = pdf_text(register.content, tmp_path)
        assert "客户意见登记表" in text and "登记编号" in text and "处理方式" in text
        assert "CF-2031-F1" in text and "CF-2031-F2" in text and "直接答复" in text
        save_pages(register.content, "register-zh")
        table = await manager.get("/statistics/monthly", params={"month": name,
                                                                 "format": "pdf", "lang": "en"})
        assert table.status_code == 200 and table.headers["content-type"] == "application/pdf"
        text = pdf_text(table.content, tmp_path)
        assert "Complaint Handling Statistics Table" in text and "Answered directly" in text
        save_pages(table.content, "statistics-table-en")
