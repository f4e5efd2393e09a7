"""The Prometheus configuration and alert rules, checked and unit-tested with promtool (P-F.5).

`deploy/prometheus/tests/alerts_test.yml` feeds made-up series to the rules and
states which alerts fire when: among them, the 3-day rule breached.
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from services.notify.metrics import NotifyMetrics
from services.reporting.app import create
from services.reporting.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: scripts/infra.sh install (Debian's prometheus)")
    return path


def run(*args: str) -> str:
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def test_alert_rules_pass_promtool_check(promtool):
    assert "SUCCESS" in run(promtool, "check", "rules", str(PROMETHEUS / "alerts.yml"))


def test_prometheus_config_is_valid_and_scrapes_everything(promtool):
    assert "SUCCESS" in run(promtool, "check", "config", str(PROMETHEUS / "prometheus.yml"))
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = {t for job in jobs.values() for sc in job["static_configs"] for t in sc["targets"]}
    assert {f"127.0.0.1:{port}" for port in range(8001, 8006)} <= targets
    assert jobs["rabbitmq"]["metrics_path"] == "/metrics/per-object"
    assert "127.0.0.1:15692" in targets
    assert jobs["ferretdb"]["metrics_path"] == "/debug/metrics"
    assert "127.0.0.1:8088" in targets


def test_p_f_5_alert_rules_fire_when_the_three_day_rule_is_breached(promtool):
    """promtool's unit tests: breach, at risk, major open too long, DLQ, consumer, backlog;
    two reporting replicas counting one breach once; notify parked and its mailbox; the
    broker and database scrapes down; a service answering server errors (5xx)."""
    tests = PROMETHEUS / "tests" / "alerts_test.yml"
    out = run(promtool, "test", "rules", str(tests))
    assert "SUCCESS" in out
    cases = yaml.safe_load(tests.read_text())["tests"]
    fired = {t["alertname"] for case in cases for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert {"QmsThreeDayRuleBreached", "QmsThreeDayRuleBreachReported", "QmsThreeDayRuleAtRisk",
            "QmsMajorComplaintOpenTooLong", "QmsDeadLetters", "QmsConsumerGone",
            "QmsQueueBacklogGrowing", "QmsServiceDown", "QmsNotificationsParked",
            "QmsComplaintsMailboxNotListening", "QmsRabbitMQDown", "QmsFerretDBDown",
            "QmsServerErrors", "QmsEventHandlingStuck"} <= fired


def _exported_names() -> set[str]:
    """Every series name reporting and notify export (their registries, without starting)."""
    app = create(Settings())
    notify = CollectorRegistry()
    NotifyMetrics(notify)
    names = set()
    for family in [*app.state.service.registry.collect(), *notify.collect()]:
        names |= {family.name, *(s.name for s in family.samples)}
        names |= {family.name + suffix for suffix in ("_total", "_bucket", "_count", "_sum")}
    return names


def _qms_names(text: str) -> set[str]:
    return set(re.findall(r"\b(qms_[a-z0-9_]+)", text))


def test_alerts_and_dashboard_use_metrics_that_exist():
    exported = _exported_names()
    rules = (PROMETHEUS / "alerts.yml").read_text()
    dashboard_text = (GRAFANA / "dashboards" / "qms-complaints.json").read_text()
    dashboard = json.loads(dashboard_text)
    assert dashboard["uid"] == "qms-complaints" and dashboard["panels"]
    used = _qms_names(rules) | _qms_names(dashboard_text)
    assert used and used <= exported, sorted(used - exported)
    datasources = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uid = datasources["datasources"][0]["uid"]
    assert all(p["datasource"]["uid"] == uid for p in dashboard["panels"] if "datasource" in p)


# Gauges of the domain's state (from the database or kept in memory by the active replica):
# every replica of the service exports the same value, so they aggregate with `max`.
PER_DOMAIN_GAUGES = ("qms_open_forms", "qms_open_cases", "qms_open_case_oldest_age_seconds",
                     "qms_capas_open", "qms_capa_open", "qms_capa_overdue_actions",
                     "qms_quality_open_cases", "qms_notify_parked")


def _expressions() -> list[str]:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    dashboard = json.loads((GRAFANA / "dashboards" / "qms-complaints.json").read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]] + \
        [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_gauges_every_replica_exports_are_taken_once_not_summed_over_replicas():
    checked = 0
    for expr in _expressions():
        for gauge in PER_DOMAIN_GAUGES:
            for found in re.finditer(rf"\b{gauge}\b", expr):
                aggregations = re.findall(r"\b(sum|max|min|avg|count)\b", expr[:found.start()])
                assert aggregations and aggregations[-1] == "max", f"{gauge} in {expr!r}"
                checked += 1
    assert checked >= 8
