"""The chart's alert rules and Grafana dashboard, with promtool (deploy/helm/install_promtool.py,
installed into the venv's bin/ on first use; HERALD_PROMTOOL=/path/to/promtool uses another one):

- the rule file passes `promtool check rules`, and `promtool test rules` fires every alert on the series
  an incident produces (alerts.test.yaml) and keeps it quiet on healthy ones;
- the PrometheusRule and the dashboard ConfigMap the chart renders carry exactly those rules and that
  dashboard (labels added, alerts left out as configured), and the rendered rules pass promtool too;
- the dashboard JSON is the generator's current output and every expression in it parses.

That every metric named in the rules and the dashboard exists in a real scrape is checked against a
real cluster in tests/e2e/test_metrics.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.test_helm_chart import helm, render  # noqa: F401  (helm is a fixture)

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "deploy" / "helm" / "herald"
RULES = CHART / "alerts" / "herald.rules.yaml"
DASHBOARD = CHART / "dashboards" / "herald.json"
RULE_TESTS = Path(__file__).with_name("alerts.test.yaml")
# Grafana's variables, replaced by what they stand for when a dashboard expression is checked.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$namespace": ".*", "$app_id": ".*"}


def _load(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


dashboard_tool = _load("herald_dashboard", ROOT / "deploy" / "helm" / "dashboard.py")


@pytest.fixture(scope="module")
def promtool() -> str:
    if os.environ.get("HERALD_PROMTOOL"):
        return os.environ["HERALD_PROMTOOL"]
    installer = _load("install_promtool", ROOT / "deploy" / "helm" / "install_promtool.py")
    return str(installer.install(Path(sys.prefix) / "bin"))


def run(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120)


def alert_names(groups: list[dict[str, Any]]) -> list[str]:
    return [rule["alert"] for group in groups for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    """Every PromQL expression of the dashboard with Grafana's variables replaced."""
    out = []
    for expr in dashboard_tool.expressions(json.loads(DASHBOARD.read_text())):
        for var, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, f"unknown Grafana variable in {expr}"
        out.append(expr)
    return out


def as_rule_file(exprs: list[str], path: Path) -> Path:
    """Expressions as recording rules, so `promtool check rules` parses each (label_values() queries
    are Grafana's, not PromQL: their metric selector is checked instead)."""
    rules = []
    for i, expr in enumerate(exprs):
        if expr.startswith("label_values("):
            expr = expr.removeprefix("label_values(").rsplit(",", 1)[0]
        rules.append({"record": f"herald:dashboard_expr_{i}", "expr": expr})
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    return path


# -- alert rules --------------------------------------------------------------------------------------


def test_rules_pass_promtool_check(promtool: str) -> None:
    out = run(promtool, "check", "rules", str(RULES))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 7 rules found" in out.stdout


def test_every_alert_fires_in_promtool_unit_tests(promtool: str) -> None:
    out = run(promtool, "test", "rules", str(RULE_TESTS))
    assert out.returncode == 0, out.stdout + out.stderr
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {case["alertname"] for t in tests for case in t["alert_rule_test"] if case["exp_alerts"]}
    quiet = {case["alertname"] for t in tests for case in t["alert_rule_test"] if not case["exp_alerts"]}
    names = set(alert_names(yaml.safe_load(RULES.read_text())["groups"]))
    assert names == {"HeraldRedisDown", "HeraldBusLagHigh", "HeraldEventLoopLagHigh", "HeraldWebhookBacklogGrowing",
                     "HeraldSlowReaderDisconnectSpike", "HeraldNodeReaped", "HeraldHttp5xxRatioHigh"}
    assert fired == names, "every alert needs a test where it fires"
    assert len(quiet) >= 5, "and most a test where it stays quiet"


def test_chart_renders_the_rules_as_a_prometheus_rule(helm: str, tmp_path: Path, promtool: str) -> None:  # noqa: F811
    values = {"prometheusRule": {"enabled": True, "labels": {"release": "kps"},
                                 "additionalRuleLabels": {"team": "realtime"},
                                 "disabledAlerts": ["HeraldNodeReaped"]}}
    objs = render(helm, tmp_path, values)
    rule = objs["PrometheusRule", "rel-herald"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "kps"
    source = yaml.safe_load(RULES.read_text())["groups"]
    expected = []
    for group in source:
        rules = [{**r, "labels": {**r["labels"], "team": "realtime"}} for r in group["rules"]
                 if r["alert"] != "HeraldNodeReaped"]
        expected.append({"name": group["name"], "rules": rules})
    assert rule["spec"]["groups"] == expected
    rendered = tmp_path / "rendered.rules.yaml"
    rendered.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    out = run(promtool, "check", "rules", str(rendered))
    assert out.returncode == 0, out.stdout + out.stderr
    # Off by default.
    assert ("PrometheusRule", "rel-herald") not in render(helm, tmp_path, {})


# -- dashboard ------------------------------------------------------------------------------------------


def test_dashboard_json_is_generated() -> None:
    assert DASHBOARD.read_text() == dashboard_tool.render(), "python deploy/helm/dashboard.py --write"
    board = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    titles = {p["title"] for p in board["panels"]}
    # What the issue asks an operator to see at a glance.
    for title in ("Open connections", "Deliveries per second by app", "Published per second by app",
                  "Latency p99 by endpoint", "Bus lag p99", "Redis reachable", "Queue by app",
                  "Event-loop lag p99", "Connections by app"):
        assert title in titles, title
    for panel in board["panels"]:
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]


def test_every_dashboard_expression_parses(promtool: str, tmp_path: Path) -> None:
    exprs = dashboard_expressions()
    assert len(exprs) >= 35
    out = run(promtool, "check", "rules", str(as_rule_file(exprs, tmp_path / "dashboard.rules.yaml")))
    assert out.returncode == 0, out.stdout + out.stderr


def test_chart_ships_the_dashboard_for_grafanas_sidecar(helm: str, tmp_path: Path) -> None:  # noqa: F811
    values = {"grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "Herald"}}}
    cm = render(helm, tmp_path, values)["ConfigMap", "rel-herald-dashboard"]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Herald"}
    assert json.loads(cm["data"]["herald.json"]) == json.loads(DASHBOARD.read_text())
    assert ("ConfigMap", "rel-herald-dashboard") not in render(helm, tmp_path, {})
