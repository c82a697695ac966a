"""Derived values live in the facts model, once: the port range's arithmetic, a destination's
share and endpoint, sysctl value equality (shared by CFG-001 and `fix`), and the owners
threshold, which comes from the rules that run rather than from the facts layer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from auditor.audit import owners_threshold
from auditor.config import Config, RuleConfig
from auditor.engine.load import load_rules
from auditor.facts.model import Destination, PortRange
from auditor.facts.sysctlvalue import fold, same_value
from auditor.fix.prepare import build_plan
from auditor.hostfs import HostRoot
from tests.helpers import make_finding, run_cli


def test_port_range_parse_and_arithmetic() -> None:
    r = PortRange.parse("32768\t61000", "40000-40009, 61000,1-5")
    assert (r.low, r.high, r.reserved) == (32768, 61000, ((40000, 40009), (61000, 61000), (1, 5)))
    assert (r.width, r.usable, r.reserved_count) == (28233, 28222, 11)
    assert r.same_parity
    assert not PortRange.parse("32768 60999").same_parity
    for bad, words in [
        ("32768", "two integers"),
        ("a b", "two integers"),
        ("5 4", "impossible"),
        ("0 10", "impossible"),
    ]:
        with pytest.raises(ValueError, match=words):
            PortRange.parse(bad)
    with pytest.raises(ValueError, match="bad reserved port entry 'x'"):
        PortRange.parse("1 10", "x")


def test_destination_ratio_and_endpoint() -> None:
    ports = PortRange.parse("1000 1099")
    v4 = Destination("10.0.0.2", "10.0.0.5", 3306, {"TIME_WAIT": 71, "ESTABLISHED": 4})
    v6 = Destination("2001:db8::2", "2001:db8::5", 443, {"ESTABLISHED": 1})
    assert v4.ratio(ports) == 0.75 and v4.endpoint == "10.0.0.5:3306"
    assert v6.endpoint == "[2001:db8::5]:443"
    assert v6.ratio(PortRange(1000, 1000, ((1000, 1000),), 0)) == 1.0


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("16", "0x10", True),
        ("8", "010", True),
        ("32768\t60999", "32768 60999", True),
        ("1", "01", True),
        ("1", "2", False),
        ("cubic", "cubic", True),
        ("cubic", "reno", False),
        ("1 2", "1", False),
        ("09", "9", False),  # not octal, not decimal to the kernel either: text differs
    ],
)
def test_same_value(a: str, b: str, same: bool) -> None:
    assert same_value(a, b) is same
    assert same_value(b, a) is same


def test_fold() -> None:
    assert fold(" 32768\t 60999\n") == "32768 60999"


def _root(tmp: Path) -> HostRoot:
    """Runtime tcp_tw_reuse 1; the boot file writes the same number as 0x1."""
    for rel, text in {
        "proc/sys/net/ipv4/tcp_tw_reuse": "1\n",
        "proc/sys/net/ipv4/ip_local_port_range": "32768\t60999\n",
    }.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_text(text)
    conf = tmp / "etc/sysctl.d/90-reuse.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("net.ipv4.tcp_tw_reuse = 0x1\n")
    return HostRoot(proc=tmp / "proc", root=tmp)


def test_fix_and_cfg001_agree_that_0x1_is_1(tmp_path: Path) -> None:
    host = _root(tmp_path)
    plan = build_plan(host, [make_finding("TW-001", {"net.ipv4.tcp_tw_reuse": "1"})])
    assert plan.empty and not plan.files, plan
    run = run_cli(
        "audit",
        "--proc",
        str(host.proc),
        "--root",
        str(host.root),
        "--only",
        "CFG-001",
        "--format",
        "json",
        "--fail-on",
        "never",
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["findings"] == []


def test_owners_threshold_follows_the_config_effective_warn_ratio() -> None:
    rules = load_rules()
    eph = next(r for r in rules if r.id == "EPH-001")
    assert owners_threshold(rules, Config()) == eph.params["warn_ratio"]
    tuned = Config(rules={"EPH-001": RuleConfig(params={"warn_ratio": 0.55})})
    assert owners_threshold(rules, tuned) == 0.55
    assert owners_threshold(rules, Config(rules={"EPH-001": RuleConfig(skip=True)})) is None
    assert owners_threshold([r for r in rules if r.id != "EPH-001"], Config()) is None
