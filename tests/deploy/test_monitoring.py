"""deploy/monitoring: the Prometheus alert rules pass ``promtool check rules`` and their unit tests
(``promtool test rules``: each alert fires on its situation and not on a healthy pipeline), every PromQL
expression of the Grafana dashboard parses (promtool checks them as recording rules), and every metric the
rules and the dashboard use is one the code exports — so a renamed metric fails here, not at 3 a.m.

promtool comes from Debian's ``prometheus`` package (``.ci/run`` installs it); without it the promtool
tests skip with a reason and the structural checks still run."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from processor import metrics as processor_metrics
from processor.gateway.dashboard import dependency_lines
from processor.gateway.metrics import GatewayMetrics, PipelineSnapshot
from processor.sink.metrics import SinkMetrics, _SinkCollector
from tests.deploy.kustomize import build

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"
PROMTOOL = shutil.which("promtool")
requires_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (apt-get install prometheus; .ci/run does)"
)
METRIC_RE = re.compile(r"\bmeterstream_[a-z_]+\b")
ALERTS = {
    "MeterstreamProcessorBehind",
    "MeterstreamProcessorFarBehind",
    "MeterstreamSinkDeadLetters",
    "MeterstreamStripe4xxRate",
    "MeterstreamStripe5xxRate",
    "MeterstreamRedisDown",
    "MeterstreamKafkaDown",
    "MeterstreamGatewayNotScraped",
}


def promtool(*args: str, cwd: Path = MONITORING) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    return data


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def rule_exprs() -> list[str]:
    groups = yaml.safe_load((MONITORING / "prometheus-rules.yaml").read_text())["groups"]
    return [rule["expr"] for g in groups for rule in g["rules"]]


def exported_names() -> set[str]:
    """Every sample name the processor, the sink and the gateway expose (after activity, so labelled
    families have samples)."""

    class _Rec:
        def __init__(self, topic: str, partition: int, received_ms: int) -> None:
            self.topic, self.partition, self.received_ms = topic, partition, received_ms

    processor_metrics.observe_batch({"event:new": 1, "rejected:no_meter": 1}, 0.01, 2)
    processor_metrics.note_processed([_Rec("meter-events", 0, 1000)])
    processor_metrics.set_lag("meter-events", 0, 3)
    texts = [generate_latest(processor_metrics.REGISTRY).decode()]
    sink = SinkMetrics("v1")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SinkCollector(sink))
    texts.append(generate_latest(registry).decode())
    gateway = GatewayMetrics()
    gateway.requests.labels("/x", "GET", "200").inc()
    gateway.latency.labels("/x").observe(0.01)
    gateway.errors.labels("no_meter").inc()
    gateway.events.labels("v1", "acked").inc()
    snapshot = PipelineSnapshot({"event:new": 1, "rejected:no_meter": 1}, {"delivered:v1": 1}, [("g", "t", 0, 1)])
    texts.append(gateway.render(snapshot).decode())
    texts.append(dependency_lines({"redis": {"ok": True}, "kafka": {"ok": False}}).decode())
    return {line.split("{")[0].split(" ")[0] for text in texts for line in text.splitlines() if line and line[0] != "#"}


def test_every_metric_used_is_exported() -> None:
    exported = exported_names()
    used = {name for expr in dashboard_exprs() + rule_exprs() for name in METRIC_RE.findall(expr)}
    assert used and used <= exported, sorted(used - exported)


def test_rules_cover_what_on_call_needs() -> None:
    groups = yaml.safe_load((MONITORING / "prometheus-rules.yaml").read_text())["groups"]
    rules = {r["alert"]: r for g in groups for r in g["rules"]}
    assert set(rules) == ALERTS
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


def test_dashboard_is_a_grafana_dashboard() -> None:
    data = dashboard()
    assert data["uid"] and data["title"] and isinstance(data["schemaVersion"], int)
    assert [v["name"] for v in data["templating"]["list"]] == ["datasource"]
    panels = data["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
    # panels do not overlap
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        g = panel["gridPos"]
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not area & cells, panel["title"]
        cells |= area


def test_the_kustomize_base_ships_both_as_config_maps() -> None:
    built = build(MONITORING.parent / "base")
    dash = built.get("ConfigMap", "meterstream-grafana-dashboard")
    assert dash["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dash["data"]["grafana-dashboard.json"]) == dashboard()
    rules = built.get("ConfigMap", "meterstream-prometheus-rules")
    assert yaml.safe_load(rules["data"]["prometheus-rules.yaml"])["groups"]
    assert "deploy/monitoring" in (MONITORING.parent / "README.md").read_text()


@requires_promtool
def test_promtool_checks_the_rules_and_their_unit_tests() -> None:
    checked = promtool("check", "rules", "prometheus-rules.yaml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in checked.stdout
    tested = promtool("test", "rules", "alerts-test.yaml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    names = {t["alertname"] for test in yaml.safe_load((MONITORING / "alerts-test.yaml").read_text())["tests"]
             for t in test.get("alert_rule_test", [])}  # fmt: skip
    assert names == ALERTS  # every alert has a unit test


@requires_promtool
def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    exprs = [e.replace("$__rate_interval", "5m") for e in dashboard_exprs()]
    rules = {
        "groups": [
            {"name": "dashboard", "rules": [{"record": f"dashboard:q{i}", "expr": e} for i, e in enumerate(exprs)]}
        ]
    }
    (tmp_path / "dashboard-rules.yaml").write_text(yaml.safe_dump(rules))
    checked = promtool("check", "rules", "dashboard-rules.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # and the check can fail: a broken query is refused
    (tmp_path / "broken.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "x", "rules": [{"record": "x:y", "expr": "sum(rate(x[5m])"}]}]})
    )
    assert promtool("check", "rules", "broken.yaml", cwd=tmp_path).returncode != 0
