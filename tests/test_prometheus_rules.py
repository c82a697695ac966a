"""The alerting rules: promtool accepts them, their unit tests pass, and every alert is tested
both firing and quiet."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "prometheus" / "portaudit.rules.yml"
TESTS = REPO / "prometheus" / "tests"

METRICS = {
    "portaudit_destination_ports_used",
    "portaudit_destination_ports_capacity",
    "portaudit_destination_port_use_ratio",
    "portaudit_time_wait_sockets",
    "portaudit_findings",
    "portaudit_rule_findings",
    "portaudit_finding",
    "portaudit_findings_truncated",
    "portaudit_rules_skipped",
    "portaudit_counter_rate_per_minute",
    "portaudit_last_run_timestamp_seconds",
    "portaudit_last_run_success",
}
"""The metric names auditor/render/prometheus.py writes (docs/fleet.md)."""

promtool = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    promtool is None, reason="promtool not installed (Debian package 'prometheus')"
)


def alerts() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def promtool_test_files() -> list[Path]:
    return sorted(TESTS.glob("*.yml"))


@needs_promtool
def test_promtool_check_rules() -> None:
    assert promtool is not None
    got = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert got.returncode == 0, got.stdout + got.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in got.stdout


@needs_promtool
@pytest.mark.parametrize("path", promtool_test_files(), ids=lambda p: p.name)
def test_promtool_unit_tests(path: Path) -> None:
    assert promtool is not None
    got = subprocess.run(
        [promtool, "test", "rules", path.name],
        cwd=path.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert got.returncode == 0, got.stdout + got.stderr


def test_every_alert_is_tested_firing_and_quiet() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in promtool_test_files():
        doc = yaml.safe_load(path.read_text())
        for case in doc["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {a["alert"] for a in alerts()}
    assert names, "no alerts found"
    assert names - firing == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested quiet"
    assert (firing | quiet) - names == set(), "tests name alerts that do not exist"


def test_alerts_use_only_known_metrics_and_have_runbooks() -> None:
    for alert in alerts():
        used = set(re.findall(r"\bportaudit_[a-z_]+\b", alert["expr"]))
        assert used, alert["alert"]
        assert used <= METRICS, (alert["alert"], used - METRICS)
        assert alert["labels"]["severity"] in {"warning", "critical"}
        notes = alert["annotations"]
        assert {"summary", "description", "runbook"} <= set(notes), alert["alert"]
        assert "portaudit " in notes["runbook"], alert["alert"]


def test_headroom_thresholds_are_eph001s() -> None:
    """The fleet alerts fire where EPH-001 does by default: above warn_ratio a warning, above
    crit_ratio critical, so a dashboard and `portaudit audit` never disagree on a host."""
    from auditor.engine.load import load_rules

    params = next(r for r in load_rules() if r.id == "EPH-001").params
    by_name = {a["alert"]: a for a in alerts()}
    low = by_name["PortauditDestinationPortsLow"]["expr"]
    crit = by_name["PortauditDestinationPortsCritical"]["expr"]
    gauge = "portaudit_destination_port_use_ratio"
    assert low == f"{gauge} > {params['warn_ratio']} <= {params['crit_ratio']}"
    assert crit == f"{gauge} > {params['crit_ratio']}"
    for name in ("PortauditDestinationPortsLow", "PortauditDestinationPortsCritical"):
        assert "portaudit diagnose" in by_name[name]["annotations"]["runbook"]
        assert "portaudit rules show EPH-001" in by_name[name]["annotations"]["runbook"]
