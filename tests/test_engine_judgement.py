"""The engine judges first and describes after: what a rule's verdict needs is all it reads.

Lets are computed when first read, so a fact that only the message or the fix needs degrades
that text and never skips or errors the verdict; severities are tried from crit down whatever
their YAML order.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from auditor.config import load_config
from auditor.engine.evaluate import evaluate
from auditor.engine.load import load_rules
from auditor.engine.report import Report, Status
from auditor.errors import InputError
from auditor.facts.collect import collect_facts
from auditor.hostfs import HostRoot
from tests.scenario import build_tree, load_scenario

HEAD = """\
id: XX-001
name: test-rule
title: t
rationale: r
message: "{msg}"
sources: [tcp(7)]
"""


def _audit(tmp: Path, rule: str, scenario: str) -> Report:
    rules = tmp / "rules"
    rules.mkdir()
    (rules / "XX-001.yaml").write_text(rule)
    spec = tmp / "case.yaml"
    spec.write_text(scenario)
    root = build_tree(load_scenario(spec), tmp / "host")
    host = HostRoot(proc=root / "proc", root=root)
    return evaluate(
        load_rules([rules], builtin=False), collect_facts(host), load_config(host, None)
    )


def test_crit_wins_even_when_written_after_warn(tmp_path: Path) -> None:
    rule = HEAD.format(msg="{dest.used}") + (
        "for_each: destinations\n"
        "severity:\n  warn: dest.ratio > 0.5\n  crit: dest.ratio > 0.9\n"
        "fix: {advice: a, applicability: display-only}\n"
    )
    case = (
        "rule: XX-001\ndescription: d\nexpect: []\n"
        "sysctl: {net.ipv4.ip_local_port_range: '40000 40099'}\n"
        "sockets: [{src: 10.0.0.2, dst: 10.0.0.5, dport: 80, state: TIME_WAIT, count: 95}]\n"
    )
    report = _audit(tmp_path, rule, case)
    assert [str(f.severity) for f in report.findings] == ["crit"]


def test_a_level_given_twice_is_a_load_error(tmp_path: Path) -> None:
    (tmp_path / "XX-001.yaml").write_text(
        HEAD.format(msg="m")
        + "severity:\n  warn: 1 > 0\n  WARN: 2 > 0\nfix: {advice: a, applicability: safe}\n"
    )
    with pytest.raises(InputError, match=r"XX-001.yaml:9: severity: warn given twice"):
        load_rules([tmp_path], builtin=False)


MISSING_FOR_TEXT = (
    HEAD.format(msg="{start} is the floor; use {sysctl.net.ipv4.ip_unprivileged_port_start}")
    + """\
let:
  start: sysctl.net.ipv4.ip_unprivileged_port_start
  floor: start + start % 2
severity:
  crit: ports.usable < 200
evidence:
  usable: ports.usable
  floor: floor
fix:
  sysctl:
    net.ipv4.ip_local_port_range: "{floor} 65535"
    net.ipv4.tcp_tw_reuse: "1"
  advice: Keep the low end at or above {start}.
  applicability: unsafe
"""
)


def test_a_fact_only_the_text_needs_degrades_the_text_not_the_verdict(tmp_path: Path) -> None:
    case = (
        "rule: XX-001\ndescription: d\nexpect: []\n"
        "sysctl:\n  net.ipv4.ip_local_port_range: '40000 40099'\n"
        "  net.ipv4.ip_unprivileged_port_start: null\n"
    )
    report = _audit(tmp_path, MISSING_FOR_TEXT, case)
    assert [o.status for o in report.outcomes] == [Status.FAIL]
    (finding,) = report.findings
    assert finding.message == "unknown is the floor; use unknown"
    assert finding.evidence == {"usable": 100, "floor": None}
    assert finding.fix.sysctl == {"net.ipv4.tcp_tw_reuse": "1"}
    assert finding.fix.advice.startswith("Keep the low end at or above unknown.")
    assert "No value is proposed for net.ipv4.ip_local_port_range" in finding.fix.advice
    assert "ip_unprivileged_port_start" in finding.fix.advice


def test_with_the_fact_present_the_text_is_whole(tmp_path: Path) -> None:
    case = (
        "rule: XX-001\ndescription: d\nexpect: []\n"
        "sysctl:\n  net.ipv4.ip_local_port_range: '40000 40099'\n"
        "  net.ipv4.ip_unprivileged_port_start: '1025'\n"
    )
    (finding,) = _audit(tmp_path, MISSING_FOR_TEXT, case).findings
    assert finding.message == "1025 is the floor; use 1025"
    assert finding.fix.sysctl["net.ipv4.ip_local_port_range"] == "1026 65535"


def test_rows_that_do_not_fire_never_compute_their_lets(tmp_path: Path) -> None:
    """A let that fails on every row (division by zero) but only feeds the message: the
    destinations that pass are passes, not errors."""
    rule = HEAD.format(msg="{broken}") + (
        "for_each: destinations\n"
        "let:\n  broken: dest.used / 0\n"
        "severity:\n  warn: dest.ratio > 0.9\n"
        "fix: {advice: a, applicability: display-only}\n"
    )
    case = (
        "rule: XX-001\ndescription: d\nexpect: []\n"
        "sysctl: {net.ipv4.ip_local_port_range: '40000 40099'}\n"
        "sockets: [{src: 10.0.0.2, dst: 10.0.0.5, dport: 80, state: TIME_WAIT, count: 5}]\n"
    )
    report = _audit(tmp_path, rule, case)
    assert [o.status for o in report.outcomes] == [Status.PASS]


def test_a_fact_the_verdict_needs_still_skips_with_the_reason(tmp_path: Path) -> None:
    rule = HEAD.format(msg="m") + (
        "severity:\n  warn: sysctl.net.ipv4.ip_unprivileged_port_start > 0\n"
        "fix: {advice: a, applicability: display-only}\n"
    )
    case = (
        "rule: XX-001\ndescription: d\nexpect: []\n"
        "sysctl: {net.ipv4.ip_unprivileged_port_start: null}\n"
    )
    (outcome,) = _audit(tmp_path, rule, case).outcomes
    assert outcome.status is Status.SKIPPED
    assert "ip_unprivileged_port_start" in outcome.reason
