"""Exports (CSV, XLSX), charts and gauges of reporting, without servers."""

import csv
import io
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from openpyxl import load_workbook
from prometheus_client import CollectorRegistry, generate_latest

from services.reporting import charts, exports
from services.reporting.domain import FeedbackRow, Round
from services.reporting.metrics import DomainMetrics
from shared.vocabulary import Language
from tests.unit.test_reporting_scenario import (
    JULY,
    expected,
    expected_renamed,
    fold_table,
    known_month,
    renamed_customer_and_withdrawn_capas,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")


def register_row(**kw) -> dict:
    row = {"register_no": "CF-2031-000001", "feedback_id": "f1", "status": "closed",
           "is_complaint": True, "category": "product_quality", "channel": "phone",
           "severity": "normal", "customer_id": "C-1", "customer_name": "Acme",
           "received_at": datetime(2031, 3, 31, 20, 0, tzinfo=UTC),
           "responsible_units": ["production", "purchasing"],
           "loss": [{"amount": "10.00", "currency": "CNY"}], "estimated_loss": None,
           "reopen_count": 0, "breaches": 1, "description": "ok"}
    return row | kw


def test_p_5_4_1_register_csv_is_local_time_and_formula_safe():
    evil = register_row(customer_name="=HYPERLINK(\"http://x\")", description="+1 call me")
    text = "".join(exports.register_csv([register_row(), evil], SHANGHAI))
    rows = list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))
    assert rows[0]["Received (Asia/Shanghai)"] == "2031-04-01 04:00:00"
    assert rows[0]["Loss"] == "10.00 CNY" and rows[0]["Complaint"] == "yes"
    assert rows[0]["Responsible units"] == "production, purchasing"
    assert rows[1]["Customer"].startswith("'=") and rows[1]["Description"] == "'+1 call me"


def test_p_5_4_1_register_xlsx_never_holds_a_formula():
    evil = register_row(customer_name="=1+1", description="bell\x07 and text")
    sheet = load_workbook(io.BytesIO(exports.register_xlsx([evil], SHANGHAI)))["Register"]
    header, values = [list(r) for r in sheet.iter_rows(values_only=True)]
    row = dict(zip(header, values, strict=True))
    assert row["Customer"] == "=1+1"  # kept as text
    assert sheet.cell(row=2, column=header.index("Customer") + 1).data_type == "s"
    assert row["Description"] == "bell and text"
    assert row["Received (Asia/Shanghai)"] == datetime(2031, 4, 1, 4, 0)


def test_p_f_6_table_xlsx_reads_back_as_stated():
    story = known_month("x1")
    exp = expected(story)
    wb = load_workbook(io.BytesIO(exports.table_xlsx(fold_table(story.events))))
    assert wb.sheetnames == ["Summary", "Counts", "Open cases", "Breaches", "Losses",
                             "Recurrences", "Change"]
    summary = dict(wb["Summary"].iter_rows(min_row=2, values_only=True))
    assert summary["Form to quality record: p90 hours"] == exp["record_p90_h"]
    assert summary["Registration to reply: mean hours"] == exp["reply_mean_h"]
    assert float(summary["Loss total (USD)"]) == 250.50
    breaches = dict(wb["Breaches"].iter_rows(min_row=2, values_only=True))
    assert breaches == exp["breaches_by_severity"]


def test_p_f_6_table_csv_has_every_section():
    story = known_month("x2")
    text = exports.table_csv(fold_table(story.events))
    sections = {r[0] for r in csv.reader(io.StringIO(text.lstrip("\ufeff")))}
    assert sections == {"section", "summary", "counts", "open_cases", "breaches", "losses",
                        "losses_estimated", "losses_actual", "recurrences", "change"}


def test_p_f_6_table_csv_and_xlsx_name_customers_and_count_capas_withdrawn():
    story = renamed_customer_and_withdrawn_capas("x3")
    exp = expected_renamed(story)
    customer = story.customer("R")
    table = fold_table(story.events, JULY, JULY)

    rows = list(csv.reader(io.StringIO(exports.table_csv(table).lstrip("\ufeff"))))
    assert rows[0] == ["section", "dimension", "key", "name", "measure", "value"]
    assert ["counts", "customer", customer, exp["name"], "feedbacks", "2"] in rows
    assert ["losses", "customer", customer, exp["name"], "CNY", "300.00"] in rows
    assert ["counts", "category", "product_quality", "", "feedbacks", "2"] in rows
    assert ["summary", "", "", "", "CAPAs withdrawn", "2"] in rows
    assert ["change", "", "capas_withdrawn", "", "change", "1"] in rows

    wb = load_workbook(io.BytesIO(exports.table_xlsx(table)))
    summary = dict(wb["Summary"].iter_rows(min_row=2, values_only=True))
    assert (summary["CAPAs opened"], summary["CAPAs closed"], summary["CAPAs withdrawn"]) == \
        exp["july_capas"]
    counts = list(wb["Counts"].iter_rows(values_only=True))
    assert counts[0] == ("Dimension", "Key", "Name", "Feedbacks", "Complaints")
    assert ("customer", customer, exp["name"], 2, 2) in counts
    assert ("category", "product_quality", None, 2, 2) in counts
    losses = list(wb["Losses"].iter_rows(values_only=True))
    assert losses[0] == ("Dimension", "Key", "Name", "Currency", "Amount", "Estimated", "Actual")
    assert ("customer", customer, exp["name"], "USD", 40, 40, 0) in losses
    change = {r[0]: r[1:] for r in wb["Change"].iter_rows(min_row=2, values_only=True)}
    assert change["capas_withdrawn"] == exp["change"]["capas_withdrawn"]


def test_p_f_6_table_exports_tell_estimated_from_actual_and_answered_directly():
    story = known_month("x5")
    table = fold_table(story.events)
    rows = list(csv.reader(io.StringIO(exports.table_csv(table).lstrip("\ufeff"))))
    assert ["summary", "", "", "", "Answered directly", "2"] in rows
    assert ["summary", "", "", "", "Loss total estimated (USD)", "250.50"] in rows
    assert ["losses", "unit", "(unassigned)", "", "USD", "250.50"] in rows
    assert ["losses_estimated", "unit", "(unassigned)", "", "USD", "250.50"] in rows
    assert ["losses_actual", "unit", "production", "", "CNY", "1800.00"] in rows
    assert ["losses_estimated", "unit", "production", "", "CNY", "0.00"] in rows
    wb = load_workbook(io.BytesIO(exports.table_xlsx(table)))
    summary = dict(wb["Summary"].iter_rows(min_row=2, values_only=True))
    assert (summary["Answered directly"], summary["Complaints answered directly"]) == (2, 1)
    assert float(summary["Loss total actual (CNY)"]) == 2100.00
    losses = {r[:4]: r[4:] for r in wb["Losses"].iter_rows(min_row=2, values_only=True)}
    assert losses[("unit", "production", None, "CNY")] == (1800, 0, 1800)


def test_p_f_6_table_exports_in_chinese():
    table = fold_table(known_month("x6").events)
    wb = load_workbook(io.BytesIO(exports.table_xlsx(table, Language.ZH)))
    assert wb.sheetnames[:2] == ["汇总", "计数"]
    summary = dict(wb["汇总"].iter_rows(min_row=2, values_only=True))
    assert (summary["直接答复数"], summary["直接答复的客诉数"]) == (2, 1)
    assert float(summary["估计损失合计（USD）"]) == 250.50
    assert next(wb["损失"].iter_rows(values_only=True)) == \
        ("维度", "键", "名称", "币种", "金额", "其中估计", "其中实际")
    rows = list(csv.reader(io.StringIO(exports.table_csv(table, Language.ZH).lstrip("\ufeff"))))
    assert rows[0] == ["部分", "维度", "键", "名称", "项目", "数值"]
    labels = [label for label, _ in exports.summary_rows(table, Language.ZH)]
    english = [label for label, _ in exports.summary_rows(table)]
    assert all(zh != en for zh, en in zip(labels, english, strict=True))  # none left out


def test_p_f_6_customer_names_never_become_formulas():
    story = renamed_customer_and_withdrawn_capas("x4")
    table = fold_table(story.events, JULY, JULY)
    exports_table = table.model_copy(deep=True)
    for row in exports_table.counts.by_customer:
        row.name = "=HYPERLINK(\"http://x\")"
    rows = list(csv.reader(io.StringIO(exports.table_csv(exports_table).lstrip("\ufeff"))))
    assert any(r[1] == "customer" and r[3].startswith("'=") for r in rows)
    sheet = load_workbook(io.BytesIO(exports.table_xlsx(exports_table)))["Counts"]
    cells = [r[2] for r in sheet.iter_rows(min_row=2) if r[0].value == "customer"]
    assert cells and all(c.value.startswith("=") and c.data_type == "s" for c in cells)


def test_p_f_6_charts_are_png_even_when_empty():
    for png in (charts.pareto([("D01", 5), ("D02", 2)], "t", "complaints"),
                charts.pareto([], "t", "complaints"),
                charts.trend(["2031-02", "2031-03"], {"feedbacks": [1, 6]}, "t"),
                charts.timeliness(["2031-03"], [0.6667], {24.0: 2, 96.0: 1}, 0.95, "t"),
                charts.timeliness(["2031-03"], [None], {}, 0.95, "t")):
        assert png.startswith(b"\x89PNG\r\n\x1a\n")


def test_p_f_5_gauges_follow_the_clock_of_open_forms():
    registry = CollectorRegistry()
    metrics = DomainMetrics(registry)
    now = datetime.now(UTC)
    row = FeedbackRow(_id="f1", registered=True, is_complaint=True, severity="major",
                      received_at=now - timedelta(days=5), open=True, form_open=True,
                      rounds=[Round(round=1, received_at=now - timedelta(days=5),
                                    at_risk_at=now - timedelta(days=3),
                                    due_at=now - timedelta(days=2))])
    metrics.load([row])
    text = generate_latest(registry).decode()
    assert 'qms_open_forms{severity="major",sla="breached"} 1.0' in text
    assert 'qms_open_cases{age="3d_7d",severity="major"} 1.0' in text
    row.open = row.form_open = False  # closed
    metrics.live.track(row)
    text = generate_latest(registry).decode()
    assert 'qms_open_forms{severity="major",sla="breached"} 0.0' in text
