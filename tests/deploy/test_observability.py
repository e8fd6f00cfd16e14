"""The observability pack in deploy/: alert rules (promtool unit tests), the Grafana
dashboard, and the Prometheus Operator objects. Every metric they name is one that a
real running receiver exports (scraped here from ``serve`` in a subprocess)."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import require_tool
from tests.harness import ReceiverProcess, base_config, event_body, signed_headers

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yaml"
ALERT_TESTS = PROMETHEUS / "alerts.test.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "bighub-siem.json"
K8S_DIRS = sorted(p for p in (ROOT / "deploy" / "k8s").iterdir() if p.is_dir())
OPERATIONS = ROOT / "docs" / "operations.md"

# What Grafana substitutes before a query reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$job": ".*", "$sink": ".*"}
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def files() -> set[Path]:
    """The deploy/ files these tests check (tests/deploy/test_deploy.py counts them)."""
    return {ALERTS, ALERT_TESTS, DASHBOARD}


def promtool() -> str:
    return require_tool("promtool", "apt-get install prometheus (make test installs it)")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, labels or keywords)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range and subquery durations
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", text):
        if text[match.end() :].lstrip().startswith("(") or match.group(0) in PROMQL_KEYWORDS:
            continue  # a function call or an operator word
        names.add(match.group(0))
    return names


def test_metric_names_reads_promql() -> None:
    """The extractor skips functions, grouping labels, matchers, strings and keywords."""
    expr = (
        'sum by (job, sink) (rate(a_total{reason=~"x|y"}[5m])) / on (job) b > 0.8'
        " and histogram_quantile(0.9, sum by (le) (rate(c_bucket[1m]))) or time() - d offset 5m"
    )
    assert metric_names(expr) == {"a_total", "b", "c_bucket", "d"}


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable's selector."""
    out = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            out.append((f"{panel['title']}/{target['refId']}", target["expr"]))
    for var in dashboard()["templating"]["list"]:
        if var["type"] == "query":
            match = re.fullmatch(r"label_values\((.+),\s*\w+\)", var["query"]["query"])
            assert match, var["name"]
            out.append((f"${var['name']}", match.group(1)))
    return out


def substituted(expr: str) -> str:
    for var, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, expr
    return expr


# -- a real receiver's /metrics -------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """The metric names ``serve`` exports after taking, repeating and refusing events."""
    tmp = tmp_path_factory.mktemp("observability")
    with ReceiverProcess(tmp, base_config(tmp)) as proc:
        body = event_body("evt-observability")
        for _ in range(2):  # new, then duplicate
            httpx.post(proc.url, content=body, headers=signed_headers(body))
        httpx.post(proc.url, content=body, headers=signed_headers(body, secret="x" * 32))
        proc.wait_exported(1)
        text = httpx.get(f"{proc.admin_url}/metrics", timeout=10).text
    assert 'bighub_siem_requests_rejected_total{reason="signature_mismatch"}' in text
    assert 'bighub_siem_sink_delivered_total{sink="console"}' in text
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, flags=re.MULTILINE):
        suffixes = ["_bucket", "_count", "_sum"] if kind == "histogram" else [""]
        names.update(name + s for s in suffixes)
    return names


def test_alert_rules_name_only_exported_metrics(exported: set[str]) -> None:
    """Every alert expression selects metrics the receiver exports, and at least one."""
    for rule in alert_rules():
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        assert names <= exported, (rule["alert"], names - exported)


def test_dashboard_queries_name_only_exported_metrics(exported: set[str]) -> None:
    """Every dashboard query selects metrics the receiver exports, and at least one."""
    for where, expr in dashboard_queries():
        names = metric_names(expr)
        assert names, where
        assert names <= exported, (where, names - exported)


# -- promtool ---------------------------------------------------------------------------------


def test_alert_rules_pass_promtool() -> None:
    """`promtool check rules` accepts alerts.yaml and `promtool test rules` passes."""
    tool = promtool()
    for argv in (["check", "rules", ALERTS.name], ["test", "rules", ALERT_TESTS.name]):
        done = subprocess.run(
            [tool, *argv], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_fires_in_a_unit_test_and_has_a_runbook_entry() -> None:
    """Each alert has a firing case in alerts.test.yaml and a section in docs/operations.md."""
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    runbook = OPERATIONS.read_text()
    for rule in alert_rules():
        assert rule["alert"] in fired, rule["alert"]
        anchor = rule["annotations"]["runbook"]
        page, _, fragment = anchor.partition("#")
        assert page == "docs/operations.md"
        headings = re.findall(r"^#+ (.+)$", runbook, flags=re.MULTILINE)
        assert fragment in {
            re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in headings
        }


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Each query, with Grafana's variables substituted, parses (promtool check rules)."""
    tool = promtool()
    rules = [
        {"record": f"dashboard:query_{i}", "expr": substituted(expr)}
        for i, (_, expr) in enumerate(dashboard_queries())
    ]
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run(
        [tool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_dashboard_is_importable() -> None:
    """Unique panel ids, panels inside the 24-column grid, the datasource is a variable."""
    data = dashboard()
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids))
    for panel in data["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"


# -- Prometheus Operator ------------------------------------------------------------------------


def k8s_objects(directory: Path) -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted(directory.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


@pytest.mark.parametrize("directory", K8S_DIRS, ids=[d.name for d in K8S_DIRS])
def test_prometheus_rule_holds_the_alert_rules(directory: Path) -> None:
    """The PrometheusRule's groups are exactly deploy/prometheus/alerts.yaml's."""
    (rule,) = [o for o in k8s_objects(directory) if o["kind"] == "PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"] == yaml.safe_load(ALERTS.read_text())


@pytest.mark.parametrize("directory", K8S_DIRS, ids=[d.name for d in K8S_DIRS])
def test_service_monitor_scrapes_the_admin_port(directory: Path) -> None:
    """The ServiceMonitor selects a Service (labels after kustomize) with the admin port."""
    objects = k8s_objects(directory)
    (monitor,) = [o for o in objects if o["kind"] == "ServiceMonitor"]
    kustomization = next(o for o in objects if o["kind"] == "Kustomization")
    common = {k: v for entry in kustomization["labels"] for k, v in entry["pairs"].items()}
    wanted = monitor["spec"]["selector"]["matchLabels"]
    services = [
        o
        for o in objects
        if o["kind"] == "Service"
        and wanted.items() <= {**common, **o["metadata"].get("labels", {})}.items()
    ]
    assert len(services) == 1, "the ServiceMonitor must select exactly the metrics Service"
    ports = {p["name"] for p in services[0]["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in ports
        assert endpoint["port"] == "admin"
        assert endpoint["path"] == "/metrics"
