"""Reporting end to end: the real reporting process, fed real events on the real broker.

Only the reporting service runs (its own namespace): events are published to
the exchange as intake, quality and capa would publish them. March 2031 is the
known month of tests/unit/test_reporting_scenario.py, stated there by hand.
"""

import asyncio
import csv
import io
import os
import re
import signal
import subprocess
import sys
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from openpyxl import load_workbook

from services.reporting.statistics import MonthlyTable
from shared import contracts as c
from shared.events import utcnow
from shared.vocabulary import Category, Channel, Severity
from tests.conftest import test_namespace
from tests.e2e.harness import ROOT, System
from tests.support import eventually
from tests.unit.test_reporting_scenario import (
    JULY,
    JUNE,
    MONTH,
    Story,
    assert_renamed,
    assert_table,
    at,
    expected,
    expected_renamed,
    known_month,
    renamed_customer_and_withdrawn_capas,
)

pytestmark = pytest.mark.infra


@pytest.fixture(scope="module")
async def reporting():
    system = System(test_namespace("rep"), services=("reporting",))
    await system.start()
    yield system
    await system.stop()


async def get(system: System, path: str, role: str = "manager", **params: Any):
    async with system.client("reporting", role) as http:
        return await http.get(path, params=params)


async def table(system: System, **params: Any) -> dict:
    resp = await get(system, "/statistics/monthly", **params)
    assert resp.status_code == 200, resp.text
    return resp.json()


def matches(data: dict, exp: dict) -> bool:
    try:
        assert_table(MonthlyTable.model_validate(data), exp)
        return True
    except AssertionError:
        return False


async def publish_all(system: System, events) -> None:
    for env in events:
        await system.publish_envelope(env)


@pytest.fixture(scope="module")
async def march(reporting):
    """The known month, published once: some cases out of order, some events twice."""
    story = known_month(f"e{uuid.uuid4().hex[:6]}")
    f5 = [e for e in story.events if e.correlation_id == story.fid("F5")]
    rest = [e for e in story.events if e.correlation_id != story.fid("F5")]
    await publish_all(reporting, list(reversed(f5)))  # the form before the registration
    await publish_all(reporting, rest)
    await publish_all(reporting, rest[:5])            # redelivered
    exp = expected(story)

    async def ready():
        data = await table(reporting, month=MONTH)
        return data if matches(data, exp) else None

    data = await eventually(ready, timeout=60, what="March 2031 as stated by hand")
    published = len(story.events) + 5
    await eventually(lambda: _handled(reporting, published), what="every delivery handled")
    return story, exp, data


# ------------------------------------------------------------------ P-F.6 the monthly table


async def test_p_f_6_known_month_statistics_table_json(march):
    story, exp, data = march
    assert_table(MonthlyTable.model_validate(data), exp)


async def test_p_f_6_known_month_statistics_table_xlsx_and_csv(reporting, march):
    story, exp, _ = march
    resp = await get(reporting, "/statistics/monthly", month=MONTH, format="xlsx")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/vnd.openxmlformats")
    wb = load_workbook(io.BytesIO(resp.content))
    summary = {r[0]: r[1] for r in wb["Summary"].iter_rows(min_row=2, values_only=True)}
    assert summary["Period from"] == MONTH
    assert (summary["Feedbacks"], summary["Complaints"], summary["Suggestions"]) == (6, 5, 1)
    assert (summary["Quality records"], summary["Forms due (3-day deadline in period)"],
            summary["Met 3-day rule"]) == (3, 4, 2)
    assert summary["Share met 3-day rule"] == pytest.approx(0.5)
    assert summary["Form to quality record: mean hours"] == 48.0
    assert summary["Form to quality record: p90 hours"] == 96.0
    assert summary["Registration to reply: mean hours"] == 51.5
    assert summary["Registration to reply: p90 hours"] == 120.0
    assert (summary["3-day breaches"], summary["Open cases"], summary["Reopens"]) == (2, 2, 1)
    assert (summary["Recurrences"], summary["CAPAs opened"], summary["CAPAs closed"]) == (1, 1, 1)
    assert float(summary["Loss total (CNY)"]) == 2100.00
    assert float(summary["Loss total (USD)"]) == 250.50
    counts = {(d, k): (f, cp) for d, k, _, f, cp in wb["Counts"].iter_rows(min_row=2,
                                                                          values_only=True)}
    for dim in ("category", "channel", "customer", "product", "severity", "defect_code", "unit"):
        assert {k: v for (d, k), v in counts.items() if d == dim} == exp[f"by_{dim}"], dim
    losses = {(d, k, cur): float(a) for d, k, _, cur, a, *_ in wb["Losses"].iter_rows(
        min_row=2, values_only=True)}
    for (unit, cur), amount in exp["loss_by_unit"].items():
        assert losses[("unit", unit, cur)] == float(amount)
    ages = dict(wb["Open cases"].iter_rows(min_row=2, values_only=True))
    assert ages == exp["open_by_age"]
    change = {r[0]: r[1:] for r in wb["Change"].iter_rows(min_row=2, values_only=True)}
    assert change["feedbacks"] == (6, 1, 5)

    resp = await get(reporting, "/statistics/monthly", month=MONTH, format="csv")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(resp.content.decode("utf-8-sig"))))
    assert rows[0] == ["section", "dimension", "key", "name", "measure", "value"]
    assert ["summary", "", "", "", "Complaints", "5"] in rows
    assert ["losses", "unit", "production", "", "CNY", "1800.00"] in rows
    assert ["counts", "customer", story.customer("A"), "Customer A", "feedbacks", "2"] in rows


async def test_p_f_6_redelivered_events_do_not_double_count(reporting, march):
    story, exp, before = march
    again = story.events[:12] + story.events[-4:]
    handled_before = await consumed(reporting)
    await publish_all(reporting, again)
    await eventually(lambda: _handled(reporting, handled_before + len(again)),
                     what="the redeliveries handled")
    after = await table(reporting, month=MONTH)
    assert after == before
    assert_table(MonthlyTable.model_validate(after), exp)


async def consumed(system: System) -> float:
    """Events the reporting consumer handled so far (applied or not), from its metrics."""
    async with system.client("reporting", None) as http:
        text = (await http.get("/metrics")).text
    return sum(float(v) for v in re.findall(
        r'^qms_events_consumed_total\{[^}]*outcome="applied"[^}]*\} (\S+)$', text, re.M))


async def _handled(system: System, target: float) -> bool:
    return await consumed(system) >= target


async def test_p_f_6_rebuild_from_history_gives_the_same_table(reporting, march):
    story, exp, before = march
    register_before = (await get(reporting, "/register", month=MONTH, sort="register_no")).json()
    async with reporting.client("reporting", "manager") as http:
        resp = await http.post("/admin/rebuild")
    assert resp.status_code == 403  # managers read; ops run the rebuild
    async with reporting.client("reporting", "ops") as http:
        resp = await http.post("/admin/rebuild")
    assert resp.status_code == 200, resp.text
    report = resp.json()
    assert report["events"] >= len(story.events) and report["rows"]["feedback"] >= 8
    assert await table(reporting, month=MONTH) == before
    assert (await get(reporting, "/register", month=MONTH, sort="register_no")).json() == \
        register_before

    # the documented command, with the service stopped
    proc = reporting.procs["reporting"]
    proc.send_signal(signal.SIGTERM)
    await asyncio.to_thread(proc.wait, 30)
    env = os.environ | reporting.env | {
        "QMS_REPORTING_HTTP_PORT": str(reporting.ports["reporting"])}
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "services.reporting.rebuild"], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert '"events"' in done.stdout
    await reporting.restart("reporting")
    assert await table(reporting, month=MONTH) == before


def whole(data: dict[str, Any]) -> bool:
    """A monthly table read after, not between, the writes of an event: reporting writes a
    month's main counters and its shards (by customer, by product) side by side, so a read
    between the two sees one's figures before the other's."""
    by_customer, losses = data["counts"]["by_customer"], data["losses"]
    return sum(c["feedbacks"] for c in by_customer) == data["counts"]["feedbacks"] and all(
        sum(Decimal(c["amount"]) for c in losses["by_customer"]
            if c["currency"] == t["currency"]) == Decimal(t["amount"])
        for t in losses["total"])


async def test_p_f_6_customer_names_and_capas_withdrawn_through_the_api(reporting):
    """A customer renamed (the table shows the latest name next to the id, in JSON, CSV and
    XLSX, whatever the order the events arrive in) and CAPAs withdrawn (counted in their
    month and in the change, still counted as opened); a rebuild gives the same table."""
    story = renamed_customer_and_withdrawn_capas(f"w{uuid.uuid4().hex[:6]}")
    exp = expected_renamed(story)
    await publish_all(reporting, list(reversed(story.events)))  # newest name first
    await publish_all(reporting, story.events[:3])              # redelivered, old name first

    async def ready():
        # June first: July's table embeds June as "previous", so June must be complete
        # before July is read; and July read twice the same, so nothing is still arriving.
        june, july = await table(reporting, month=JUNE), await table(reporting, month=JULY)
        if not (whole(june) and whole(july)):
            return None  # read between a month's main counters and its shards
        try:
            assert_renamed(MonthlyTable.model_validate(july),
                           MonthlyTable.model_validate(june), exp)
        except AssertionError:
            return None
        again = await table(reporting, month=JULY), await table(reporting, month=JUNE)
        return (july, june) if again == (july, june) else None

    july, june = await eventually(ready, timeout=60, what="July 2031 as stated by hand")
    customer = story.customer("R")
    row = {r["key"]: r for r in july["counts"]["by_customer"]}[customer]
    assert row == {"key": customer, "name": "New Name Co. Ltd", "feedbacks": 2, "complaints": 2}
    assert july["follow_up"]["capas_withdrawn"] == 2
    assert {r["measure"]: r["change"] for r in july["change"]}["capas_withdrawn"] == 1

    resp = await get(reporting, "/statistics/monthly", month=JULY, format="csv")
    assert resp.status_code == 200, resp.text
    rows = list(csv.reader(io.StringIO(resp.content.decode("utf-8-sig"))))
    assert ["counts", "customer", customer, "New Name Co. Ltd", "complaints", "2"] in rows
    assert ["losses", "customer", customer, "New Name Co. Ltd", "USD", "40.00"] in rows
    assert ["summary", "", "", "", "CAPAs withdrawn", "2"] in rows
    assert ["change", "", "capas_withdrawn", "", "previous", "1"] in rows

    resp = await get(reporting, "/statistics/monthly", month=JULY, format="xlsx")
    assert resp.status_code == 200, resp.text
    wb = load_workbook(io.BytesIO(resp.content))
    summary = dict(wb["Summary"].iter_rows(min_row=2, values_only=True))
    assert (summary["CAPAs opened"], summary["CAPAs closed"], summary["CAPAs withdrawn"]) == \
        (2, 1, 2)
    assert ("customer", customer, "New Name Co. Ltd", 2, 2) in \
        list(wb["Counts"].iter_rows(min_row=2, values_only=True))
    losses = {r[:4]: float(r[4]) for r in wb["Losses"].iter_rows(min_row=2, values_only=True)}
    assert losses[("customer", customer, "New Name Co. Ltd", "CNY")] == 300.00
    change = {r[0]: r[1:] for r in wb["Change"].iter_rows(min_row=2, values_only=True)}
    assert change["capas_withdrawn"] == (2, 1, 1)

    async with reporting.client("reporting", "ops") as http:
        resp = await http.post("/admin/rebuild")
    assert resp.status_code == 200, resp.text
    assert await table(reporting, month=JULY) == july
    assert await table(reporting, month=JUNE) == june


async def test_p_f_6_charts_are_png(reporting, march):
    for chart in ("pareto-count", "pareto-loss", "trend", "timeliness"):
        resp = await get(reporting, f"/charts/{chart}.png", month=MONTH)
        assert resp.status_code == 200, (chart, resp.text)
        assert resp.headers["content-type"] == "image/png"
        assert resp.content.startswith(b"\x89PNG\r\n\x1a\n")
    resp = await get(reporting, "/charts/pie.png", month=MONTH)
    assert resp.status_code == 422
    resp = await get(reporting, "/statistics/monthly", **{"from": "2031-04", "to": "2031-03"})
    assert resp.status_code == 422 and "after" in resp.json()["error"]["message"]


async def test_p_f_6_range_of_months(reporting, march):
    data = await table(reporting, **{"from": "2031-02", "to": MONTH})
    assert data["months"] == ["2031-02", MONTH]
    assert data["counts"]["feedbacks"] == 7
    assert data["follow_up"]["capas_opened"] == 2


# ------------------------------------------------------------------ P-5.4.1 the register


async def test_p_5_4_1_register_row_has_every_column(reporting, march):
    story, _, _ = march
    resp = await get(reporting, f"/register/{story.fid('F2')}", role="sales")
    assert resp.status_code == 200, resp.text
    row = resp.json()
    assert row["register_no"] == "CF-2031-F2" and row["status"] == "closed"
    assert (row["category"], row["channel"], row["severity"]) == \
        ("product_quality", "email", "major")
    assert row["customer_id"] == story.customer("A")
    assert row["product_code"] == story.product("P2")
    assert row["received_at"].startswith("2031-03-03T06:00")
    assert row["form_opened_at"].startswith("2031-03-03T07:00")
    assert row["quality_record_at"].startswith("2031-03-10T10:00")  # the latest record
    assert row["customer_reply_at"].startswith("2031-03-08T06:00")  # the first reply
    assert row["closed_at"].startswith("2031-03-12T10:00")
    assert row["responsible_units"] == ["production", "purchasing"]
    assert row["loss"] == [{"amount": "600.00", "currency": "CNY"}]
    assert (row["reopen_count"], row["rounds"], row["breaches"]) == (1, 2, 1)
    assert row["major_alert"] is True

    history = (await get(reporting, f"/register/{story.fid('F2')}/history")).json()
    assert history[0]["type"] == "feedback.registered"
    assert [h["type"] for h in history].count("complaint.resolution_ready") == 2


async def test_p_5_4_1_register_filters_sorts_and_pages(reporting, march):
    story, _, _ = march

    async def numbers(**params: Any) -> list[str]:
        resp = await get(reporting, "/register", month=MONTH, sort="register_no", **params)
        assert resp.status_code == 200, resp.text
        return [r["register_no"] for r in resp.json()["items"]]

    assert await numbers() == [f"CF-2031-F{i}" for i in range(1, 8)]
    assert await numbers(status="closed") == ["CF-2031-F1", "CF-2031-F2", "CF-2031-F3",
                                              "CF-2031-F4"]
    assert await numbers(status=["with_quality", "registered"]) == ["CF-2031-F5", "CF-2031-F6"]
    assert await numbers(status="withdrawn") == ["CF-2031-F7"]
    assert await numbers(category="delivery") == ["CF-2031-F3"]
    assert await numbers(channel="phone") == ["CF-2031-F1", "CF-2031-F5", "CF-2031-F7"]
    assert await numbers(customer=story.customer("B")) == ["CF-2031-F3", "CF-2031-F4"]
    # F5 was registered normal; Quality flagged it major later (its alert arrived first here)
    assert await numbers(severity="major") == ["CF-2031-F2", "CF-2031-F5"]
    assert await numbers(unit="purchasing") == ["CF-2031-F2"]
    assert await numbers(complaint="false") == ["CF-2031-F4"]
    assert await numbers(received_from="2031-03-10", received_to="2031-03-20") == \
        ["CF-2031-F3", "CF-2031-F4", "CF-2031-F5"]
    resp = await get(reporting, "/register", month=MONTH, sort="-received_at", page=2,
                     page_size=3)
    page = resp.json()
    assert page["total"] == 7 and (page["page"], page["page_size"]) == (2, 3)
    assert [r["register_no"] for r in page["items"]] == ["CF-2031-F4", "CF-2031-F3",
                                                         "CF-2031-F2"]
    feb = await get(reporting, "/register", month="2031-02")
    assert [r["register_no"] for r in feb.json()["items"]] == ["CF-2031-F8"]


async def test_p_5_4_1_register_exports_csv_and_xlsx(reporting, march):
    resp = await get(reporting, "/register", role="sales", month=MONTH, sort="register_no",
                     format="csv")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(resp.content.decode("utf-8-sig"))))
    assert [r["Register no."] for r in rows] == [f"CF-2031-F{i}" for i in range(1, 8)]
    assert rows[1]["Loss"] == "600.00 CNY" and rows[1]["Received (UTC)"] == "2031-03-03 06:00:00"
    assert rows[2]["Estimated loss"] == "250.50 USD"
    resp = await get(reporting, "/register", month=MONTH, sort="register_no", format="xlsx")
    assert resp.status_code == 200
    sheet = load_workbook(io.BytesIO(resp.content))["Register"]
    values = list(sheet.iter_rows(values_only=True))
    header = values[0]
    assert header[0] == "Register no." and len(values) == 8
    f2 = dict(zip(header, values[2], strict=True))
    assert f2["Status"] == "closed" and f2["Responsible units"] == "production, purchasing"
    assert f2["Closed (UTC)"].isoformat().startswith("2031-03-12T10:00")


async def test_p_5_4_1_events_before_the_registration_end_up_right(reporting):
    story = Story(f"o{uuid.uuid4().hex[:6]}")
    facts = story.facts("G1", received=at(2, 8, month=5), category=Category.PRODUCT_QUALITY,
                        channel=Channel.PHONE, customer="Z")
    story.form("G1", facts, at(2, 9, month=5), at(2, 10, month=5), at(5, 10, month=5))
    await publish_all(reporting, story.events)  # escalated + accepted, no registration yet
    fid = story.fid("G1")

    async def row(status: str):
        resp = await get(reporting, f"/register/{fid}")
        return resp.json() if resp.status_code == 200 and resp.json()["status"] == status \
            else None

    early = await eventually(lambda: row("awaiting_registration"), what="a placeholder row")
    assert early["form_opened_at"].startswith("2031-05-02T09:00")
    before = await table(reporting, month="2031-05")
    assert before["counts"]["feedbacks"] == 0  # counted once the registration is known
    story.events.clear()
    story.register("G1", received=at(2, 8, month=5), category=Category.PRODUCT_QUALITY,
                   channel=Channel.PHONE, customer="Z")
    await publish_all(reporting, story.events)
    done = await eventually(lambda: row("with_quality"), what="the registered row")
    assert done["register_no"] == "CF-2031-G1" and done["customer_id"] == story.customer("Z")

    async def counted():  # the month's counters follow the row a moment later
        data = await table(reporting, month="2031-05")
        return (data["counts"]["feedbacks"], data["timeliness"]["forms_opened"]) == (1, 1)
    await eventually(counted, what="the registered feedback and its form in the table")


# ------------------------------------------------------------------ P-3 who may read


async def test_p_3_reporting_roles(reporting):
    assert (await get(reporting, "/register", role="sales")).status_code == 200
    for role in ("manager", "auditor", "quality", "ops"):
        assert (await get(reporting, "/statistics/monthly", role=role, month=MONTH)
                ).status_code == 200, role
    resp = await get(reporting, "/statistics/monthly", role="sales", month=MONTH)
    assert resp.status_code == 403 and "manager" in resp.json()["error"]["message"]
    async with reporting.client("reporting", "unit", unit="production") as http:
        assert (await http.get("/register")).status_code == 403
    async with reporting.client("reporting", None) as http:
        assert (await http.get("/register")).status_code == 401
    async with reporting.client("reporting", "auditor") as http:
        assert (await http.post("/admin/rebuild")).status_code == 403


# ------------------------------------------------------------------ P-F.5 what ops watch


def gauge(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{labels} not exported")


async def metrics_text(system: System) -> str:
    async with system.client("reporting", None) as http:
        return (await http.get("/metrics")).text


async def test_p_f_5_breach_visible_in_metrics_and_right_after_a_restart(reporting):
    """A major complaint whose 3-day deadline passed two days ago, still open."""
    story = Story(f"m{uuid.uuid4().hex[:6]}")
    now = utcnow().replace(microsecond=0)
    received = now - timedelta(days=5)
    facts = story.register("M1", received=received, category=Category.PRODUCT_QUALITY,
                           channel=Channel.PHONE, customer="M", severity=Severity.MAJOR)
    story.form("M1", facts, received, received, received + timedelta(days=3),
               severity=Severity.MAJOR)
    story.add(c.SlaBreached(feedback_id=story.fid("M1"), register_no="CF-2031-M1", round=1,
                            due_at=received + timedelta(days=3), severity=Severity.MAJOR),
              "M1", received + timedelta(days=3))
    for env in story.events:  # as if published now
        await reporting.publish_envelope(env.model_copy(update={"occurred_at": now}))

    async def breached():
        text = await metrics_text(reporting)
        seen = (gauge(text, "qms_open_forms", severity="major", sla="breached") == 1
                and gauge(text, "qms_sla_breached_total", severity="major") >= 1
                and gauge(text, "qms_feedbacks_registered_total", channel="phone",
                          category="product_quality", severity="major") >= 1)
        return text if seen else None

    text = await eventually(breached, what="the breached form in the gauge")
    assert gauge(text, "qms_open_cases", severity="major", age="3d_7d") == 1
    assert gauge(text, "qms_open_case_oldest_age_seconds", severity="major") >= 5 * 86400 - 60

    await reporting.restart("reporting", kill=True)
    text = await metrics_text(reporting)
    assert gauge(text, "qms_open_forms", severity="major", sla="breached") == 1
    assert gauge(text, "qms_open_cases", severity="major", age="3d_7d") == 1


async def test_p_5_3_5_a_complaint_flagged_major_later_is_watched_as_major(reporting):
    """Registered normal two days ago; Quality flags it major now (POST /cases/{ref}/major):
    the open-case and open-form gauges, and so QmsMajorComplaintOpenTooLong, see a major one."""
    story = Story(f"j{uuid.uuid4().hex[:6]}")
    now = utcnow().replace(microsecond=0)
    received = now - timedelta(days=2)
    facts = story.register("J1", received=received, category=Category.PRODUCT_QUALITY,
                           channel=Channel.PHONE, customer="J")
    story.form("J1", facts, received, received, received + timedelta(days=3))
    for env in story.events:
        await reporting.publish_envelope(env.model_copy(update={"occurred_at": now}))

    async def open_normal() -> float | None:
        text = await metrics_text(reporting)
        n = gauge(text, "qms_open_cases", severity="normal", age="1d_3d")
        return n if n >= 1 else None
    normal_before = await eventually(open_normal, what="the normal complaint in the gauge")
    major_before = gauge(await metrics_text(reporting), "qms_open_cases", severity="major",
                         age="1d_3d")

    await reporting.publish(c.MajorAlert(feedback_id=story.fid("J1"), register_no="CF-2031-J1",
                                         customer=facts["customer"], description="line stopped",
                                         heads=[]), correlation_id=story.fid("J1"))

    async def moved() -> str | None:
        text = await metrics_text(reporting)
        return text if (gauge(text, "qms_open_cases", severity="major", age="1d_3d")
                        == major_before + 1) else None
    text = await eventually(moved, what="the complaint counted as major")
    assert gauge(text, "qms_open_cases", severity="normal", age="1d_3d") == normal_before - 1
    assert gauge(text, "qms_open_case_oldest_age_seconds", severity="major") >= 2 * 86400 - 60
    assert gauge(text, "qms_open_forms", severity="major", sla="on_time") >= 1
    async with reporting.client("reporting", "manager") as http:
        row = (await http.get(f"/register/{story.fid('J1')}")).json()
    assert row["severity"] == "major"


async def test_p_f_6_p_5_3_3_answered_directly_and_loss_by_responsible_unit(reporting):
    """September 2031, through the real service: the feedbacks Sales answered directly, and
    each estimated loss with the unit(s) Quality named, moved by a reassignment, replaced by
    the actual disposition cost; estimated and actual apart in JSON, CSV (zh) and XLSX; a
    rebuild gives the same table."""
    s, month = Story(f"h{uuid.uuid4().hex[:6]}"), "2031-09"
    pq, cny = Category.PRODUCT_QUALITY, "CNY"

    def on(day: int, hour: int = 8):
        return at(day, hour, month=9)

    s.register("H1", received=on(1), category=Category.DELIVERY, channel=Channel.PHONE,
               customer="A")
    s.direct("H1", Category.DELIVERY, on(1, 10))
    s.register("H2", complaint=False, received=on(2), category=Category.SUGGESTION,
               channel=Channel.EMAIL, customer="A")
    s.direct("H2", Category.SUGGESTION, on(2, 10))
    h3 = s.register("H3", received=on(3), category=pq, channel=Channel.PHONE, customer="B",
                    estimate=("90.00", cny))
    s.form("H3", h3, on(3, 9), on(3, 10), on(6, 10))
    s.assign("H3", 1, "D01", ["production", "purchasing"], on(4))
    first = len(s.events)
    s.record("H3", 1, "D01", on(3, 10), on(5), on(6, 10), [])
    s.add(c.ComplaintReopened(feedback_id=s.fid("H3"), register_no="CF-2031-H3",
                              reopen_count=1, had_form=True), "H3", on(7))
    s.form("H3", h3, on(7, 9), on(7, 9), on(10, 9), rnd=2)
    s.assign("H3", 2, "D05", ["engineering"], on(8))
    h4 = s.register("H4", received=on(11), category=pq, channel=Channel.PHONE, customer="B",
                    estimate=("100.01", cny))
    s.form("H4", h4, on(11, 9), on(11, 10), on(14, 10))
    s.assign("H4", 1, "D01", ["production"], on(12))
    s.record("H4", 1, "D01", on(11, 10), on(13), on(14, 10), [("production", "80.00", cny)])
    s.register("H5", received=on(15), category=pq, channel=Channel.FAX, customer="C",
               estimate=("12.00", "USD"))

    def units(data: dict) -> dict:
        return {(r["key"], r["currency"]): (r["amount"], r["estimated"], r["actual"])
                for r in data["losses"]["by_unit"]}

    async def shows(wanted: dict):
        """The table once it shows `wanted` and is whole: reporting writes a month's main
        counters and its shards (by customer, by product) side by side, so a read between
        the two writes sees the units' figures before the customers'."""
        data = await table(reporting, month=month)
        if units(data) != wanted or await table(reporting, month=month) != data:
            return None
        return data if whole(data) else None

    # Responsibility assigned to two units: the estimate is theirs at once, half each.
    await publish_all(reporting, s.events[:first])
    await eventually(lambda: shows({("production", cny): ("45.00", "45.00", "0.00"),
                                    ("purchasing", cny): ("45.00", "45.00", "0.00")}),
                     timeout=60, what="the estimate split across the units named")
    await publish_all(reporting, s.events[first:])
    final = {("engineering", cny): ("90.00", "90.00", "0.00"),      # moved by round 2
             ("production", cny): ("80.00", "0.00", "80.00"),       # H4: the actual cost
             ("(unassigned)", "USD"): ("12.00", "12.00", "0.00")}   # H5: none named yet
    data = await eventually(lambda: shows(final), timeout=60, what="the final September")
    assert data["feedbacks_not_split"] == 0
    assert (data["counts"]["answered_directly"],
            data["counts"]["complaints_answered_directly"]) == (2, 1)
    assert {r["currency"]: (r["amount"], r["estimated"], r["actual"])
            for r in data["losses"]["total"]} == {cny: ("170.00", "90.00", "80.00"),
                                                  "USD": ("12.00", "12.00", "0.00")}

    resp = await get(reporting, "/statistics/monthly", month=month, format="csv", lang="zh")
    assert resp.status_code == 200, resp.text
    rows = list(csv.reader(io.StringIO(resp.content.decode("utf-8-sig"))))
    assert rows[0] == ["部分", "维度", "键", "名称", "项目", "数值"]
    assert ["summary", "", "", "", "直接答复数", "2"] in rows
    assert ["losses_estimated", "unit", "engineering", "", cny, "90.00"] in rows
    assert ["losses_actual", "unit", "production", "", cny, "80.00"] in rows
    resp = await get(reporting, "/statistics/monthly", month=month, format="xlsx")
    assert resp.status_code == 200, resp.text
    wb = load_workbook(io.BytesIO(resp.content))
    summary = dict(wb["Summary"].iter_rows(min_row=2, values_only=True))
    assert summary["Answered directly"] == 2
    assert (float(summary["Loss total estimated (CNY)"]),
            float(summary["Loss total actual (CNY)"])) == (90.00, 80.00)
    losses = {r[:4]: r[4:] for r in wb["Losses"].iter_rows(min_row=2, values_only=True)}
    assert losses[("unit", "engineering", None, cny)] == (90, 90, 0)
    resp = await get(reporting, "/statistics/monthly", month=month, format="csv", lang="fr")
    assert resp.status_code == 422 and "lang" in resp.text

    async with reporting.client("reporting", "ops") as http:
        resp = await http.post("/admin/rebuild")
    assert resp.status_code == 200, resp.text
    assert await table(reporting, month=month) == data
