"""P-5.3.1, P-5.4.2 on the real services: a complaint carried to an issued Complaint Handling
Report. Quality approves (批准) the content it read, Sales reviews (审核) and issues it; the
PDF is kept by its hash, read back byte for byte, verified, and a reopen makes revision 2
while revision 1 stays as issued. Pages are rendered to PNG under reports/documents/ for
people to look at."""

import hashlib
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.flow import Flow, new_customer
from tests.e2e.harness import ROOT
from tests.support import eventually, ok, refused

BASE = "/documents/complaint-reports"
PAGES = ROOT / "reports" / "documents"
pytestmark = pytest.mark.skipif(shutil.which("pdftotext") is None,
                                reason="pdftotext (poppler-utils) is installed by make up")


def signer(system, role: str, sub: str, name: str) -> httpx.AsyncClient:
    token = system.token(role, sub, name=name)
    return httpx.AsyncClient(base_url=system.url("reporting"), timeout=30,
                             headers={"Authorization": f"Bearer {token}"})


def text_of(data: bytes, tmp_path: Path) -> str:
    path = tmp_path / f"{hashlib.sha256(data).hexdigest()}.pdf"
    path.write_bytes(data)
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True,
                          text=True, check=True).stdout


def save_pages(data: bytes, name: str, tmp_path: Path) -> None:
    """Every page as a PNG (60 dpi) under reports/documents/, for people to look at."""
    PAGES.mkdir(parents=True, exist_ok=True)
    for old in PAGES.glob(f"{name}-*.png"):
        old.unlink()
    pdf = tmp_path / f"{name}.pdf"
    pdf.write_bytes(data)
    subprocess.run(["pdftoppm", "-png", "-r", "60", str(pdf), str(PAGES / name)], check=True)


async def report_when(client: httpx.AsyncClient, ref: str, what: str, **expect: Any) -> dict:
    """The report's state once reporting has applied the events (`sections` ⊇ expected)."""
    sections = set(expect.pop("sections", ()))

    async def ready() -> dict | None:
        resp = await client.get(f"{BASE}/{ref}")
        if resp.status_code != 200:
            return None
        body = resp.json()
        matches = all(body.get(k) == v for k, v in expect.items())
        return body if matches and sections <= set(body["sections"]) else None
    return await eventually(ready, timeout=30, what=what)


async def sign(client: httpx.AsyncClient, ref: str, step: str, sha: str) -> dict:
    return ok(await client.post(f"{BASE}/{ref}/{step}", json={"content_sha256": sha}), 201)


async def verify(client: httpx.AsyncClient, data: bytes) -> dict:
    return ok(await client.post("/documents/verify",
                                files={"file": ("report.pdf", data, "application/pdf")}))


@pytest.fixture
async def people(system):
    clients = {"quality": signer(system, "quality", "li.wei", "李伟"),
               "sales": signer(system, "sales", "wang.fang", "王芳"),
               "auditor": signer(system, "auditor", "zhou.yu", "Zhou Yu")}
    yield clients
    for client in clients.values():
        await client.aclose()


async def test_p_5_3_1_p_5_4_2_chinese_report_approved_issued_verified_and_revised(
        actors, people, tmp_path):
    flow = Flow(actors)
    fb = await flow.handle_quality_complaint(customer=new_customer("zh"))
    no = fb["register_no"]
    quality, sales, auditor = people["quality"], people["sales"], people["auditor"]
    state = await report_when(auditor, no, "the verified countermeasures in the report",
                              sections=["D1", "D2", "D3", "D4", "D5", "D6", "D7", "D8"])
    assert state["status"] == "draft" and state["language"] == "zh" and state["revisions"] == []
    sha = state["content_sha256"]

    # P-3: each signature by its own role only; a signer signs what they read, nothing else.
    assert refused(await sales.post(f"{BASE}/{no}/approve", json={"content_sha256": sha}),
                   403)
    assert refused(await quality.post(f"{BASE}/{no}/issue", json={"content_sha256": sha}),
                   403)
    stale = refused(await quality.post(f"{BASE}/{no}/approve",
                                       json={"content_sha256": "0" * 64}), 409)
    assert "changed since you read it" in stale["message"]
    assert "Nothing approved" in refused(await sales.post(
        f"{BASE}/{no}/issue", json={"content_sha256": sha}), 409)["message"]

    approved = await sign(quality, no, "approve", sha)
    assert approved["number"] == 1 and approved["status"] == "approved"
    (approval,) = approved["signatures"]
    assert (approval["name"], approval["role"], approval["meaning_label"],
            approval["content_sha256"]) == ("李伟", "quality", "批准 / approved", sha)
    draft = text_of(ok_pdf(await quality.get(f"{BASE}/{no}/draft.pdf")), tmp_path)
    assert "草稿" in draft and "李伟" in draft

    issued = await sign(sales, no, "issue", sha)
    assert issued["status"] == "issued" and issued["number"] == 1
    assert [s["meaning"] for s in issued["signatures"]] == ["approved", "reviewed"]
    pdf = issued["pdf"]
    assert pdf["filename"] == f"{no}-rev1.pdf"
    rev1 = ok_pdf(await auditor.get(issued["download"]))
    assert hashlib.sha256(rev1).hexdigest() == pdf["sha256"] and len(rev1) == pdf["size"]
    save_pages(rev1, "complaint-report-zh-rev1", tmp_path)

    text = text_of(rev1, tmp_path)
    for expected in (no, "客诉处理报告", "第 1 版", fb["customer"]["name"], "L2026-11-03",
                     "D1 处理小组", "D2 问题描述", "D3 临时围堵措施", "D4 根本原因",
                     "D5 纠正措施", "D6 纠正措施验证", "D7 预防措施", "D8 结案",
                     "Sort all stock at the customer and in the warehouse",
                     "Die worn beyond limit", "Replace die", "Die life counter with stop",
                     "生产部", "已验证有效", "批准（质量部）", "审核（业务部）", "李伟", "王芳",
                     sha[:40]):
        assert expected in text, expected
    assert "草稿" not in text

    # P-5.4.2: the system recognises its own PDF, and nothing else.
    genuine = await verify(auditor, rev1)
    assert genuine["issued"] and genuine["register_no"] == no and genuine["revision"] == 1
    assert [s["name"] for s in genuine["signatures"]] == ["李伟", "王芳"]
    by_hash = ok(await auditor.get(f"/documents/verify/{pdf['sha256']}"))
    assert by_hash["issued"] and by_hash["filename"] == pdf["filename"]
    altered = rev1.replace(b"/Producer", b"/Producex", 1)
    forged = await verify(auditor, altered)
    assert not forged["issued"] and "Not issued by this system" in forged["message"]["en"]
    assert "本系统未签发" in forged["message"]["zh-Hans"]

    # P-F.4: Sales replies with the report; the customer is not satisfied: a new round.
    ok(await actors.sales.post(f"/feedback/{fb['id']}/reply", json={
        "reply": "根本原因已找到，模具已更换。",
        "report": {"sha256": pdf["sha256"], "filename": pdf["filename"]}}))
    ok(await actors.sales.post(f"/feedback/{fb['id']}/satisfaction", json={
        "satisfied": False, "comment": "批次 L2026-11-09 仍有裂纹"}))
    changed = await report_when(auditor, no, "the reopen in the report", status="changed")
    assert changed["content_sha256"] != sha
    assert "changed since you read it" in refused(await quality.post(
        f"{BASE}/{no}/approve", json={"content_sha256": sha}), 409)["message"]

    second = await sign(quality, no, "approve", changed["content_sha256"])
    assert second["number"] == 2
    rev2_issued = await sign(sales, no, "issue", changed["content_sha256"])
    assert rev2_issued["pdf"]["filename"] == f"{no}-rev2.pdf"
    rev2 = ok_pdf(await auditor.get(rev2_issued["download"]))
    assert "第 2 版" in text_of(rev2, tmp_path) and "仍有裂纹" in text_of(rev2, tmp_path)
    save_pages(rev2, "complaint-report-zh-rev2", tmp_path)
    assert ok_pdf(await auditor.get(issued["download"])) == rev1  # never altered
    final = ok(await auditor.get(f"{BASE}/{no}"))
    assert [r["number"] for r in final["revisions"]] == [1, 2]
    assert final["status"] == "issued"
    assert (await verify(auditor, rev1))["revision"] == 1


async def test_p_5_3_1_english_customer_gets_the_report_in_english(actors, people, tmp_path):
    flow = Flow(actors)
    fb = await flow.handle_quality_complaint(customer=new_customer("en"))
    quality, sales = people["quality"], people["sales"]
    state = await report_when(quality, fb["id"], "the verified countermeasures in the report",
                              sections=["D6", "D8"])
    assert state["language"] == "en" and state["register_no"] == fb["register_no"]
    await sign(quality, fb["id"], "approve", state["content_sha256"])
    issued = await sign(sales, fb["register_no"], "issue", state["content_sha256"])
    data = ok_pdf(await sales.get(issued["download"]))
    save_pages(data, "complaint-report-en-rev1", tmp_path)
    text = text_of(data, tmp_path)
    for expected in ("Complaint Handling Report", "Revision 1", fb["register_no"],
                     "D3 Containment", "D4 Root cause", "D5 Corrective actions",
                     "D6 Verification of the corrective actions", "D7 Preventive actions",
                     "D8 Closure", "Replace die", "Production", "Verified",
                     "Approved (Quality)", "Reviewed (Sales)", "李伟", "王芳"):
        assert expected in text, expected
    assert "客诉处理报告" not in text


async def test_p_5_4_2_a_complaint_without_a_form_has_no_report(actors, people):
    fb = await Flow(actors).register(customer=new_customer("en"), category="delivery")
    auditor = people["auditor"]

    async def registered() -> bool:
        return (await auditor.get(f"/register/{fb['id']}")).status_code == 200
    await eventually(registered, what="the registration in reporting's register")
    err = refused(await auditor.get(f"{BASE}/{fb['register_no']}"), 404)
    assert "has no Complaint Handling Form" in err["message"]
    assert "CF-2000-999999" in refused(await auditor.get(f"{BASE}/CF-2000-999999"),
                                       404)["message"]


def ok_pdf(resp: httpx.Response) -> bytes:
    assert resp.status_code == 200, f"{resp.request.url}: {resp.status_code} {resp.text}"
    assert resp.headers["content-type"] == "application/pdf"
    return resp.content
