"""Every rule against its scenarios: a fake host tree in, the rule's findings out.

One parametrized test over `tests/scenarios/<RULE-ID>/<case>.yaml`. The tree is built in a temp
dir (tests/scenario.py), collected with the real collectors, audited with the whole catalog
(so rules are also checked not to trip over each other's facts), and the findings of the
scenario's rule are compared exactly by (severity, subject), evidence by subset.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from auditor.config import load_config
from auditor.engine.evaluate import evaluate
from auditor.engine.load import load_rules
from auditor.engine.report import Report, Status
from auditor.facts.collect import collect_facts
from auditor.facts.model import Unavailable
from auditor.facts.sockets import DestinationCounter, parse_proc_tcp
from auditor.hostfs import HostRoot
from tests.scenario import (
    SCENARIOS,
    Scenario,
    all_scenarios,
    build_tree,
    load_scenario,
    render_sockets,
    socket_line,
    with_live_listener_facts,
    with_previous_run,
)

SCENARIO_PATHS = all_scenarios()


def run_scenario(scenario: Scenario, tmp: Path) -> Report:
    root = build_tree(scenario, tmp / "host")
    host = HostRoot(proc=root / "proc", root=root)
    facts = with_previous_run(scenario, host, collect_facts(host))
    facts = with_live_listener_facts(scenario, facts)
    config = load_config(host, None)
    return evaluate(load_rules(), facts, config)


def _subset(expected: Any, actual: Any) -> bool:
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and _subset(v, actual[k]) for k, v in expected.items()
        )
    if isinstance(expected, float) or isinstance(actual, float):
        return isinstance(actual, (int, float)) and abs(float(actual) - float(expected)) < 1e-9
    return bool(expected == actual)


@pytest.mark.parametrize(
    "path", SCENARIO_PATHS, ids=[f"{p.parent.name}/{p.stem}" for p in SCENARIO_PATHS]
)
def test_rule_scenario(path: Path, tmp_path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario.rule == path.parent.name, f"{path}: rule {scenario.rule} in the wrong folder"
    report = run_scenario(scenario, tmp_path)
    errors = [o for o in report.outcomes if o.status is Status.ERROR]
    assert not errors, f"rules errored on this tree: {errors}"
    if scenario.skipped:
        mine = [o for o in report.outcomes if o.rule_id == scenario.rule]
        assert mine and all(o.status is Status.SKIPPED and o.reason for o in mine), mine
    if scenario.passed:
        mine = [o for o in report.outcomes if o.rule_id == scenario.rule]
        assert mine and all(o.status is Status.PASS for o in mine), mine
    got = [f for f in report.findings if f.id == scenario.rule]
    assert [(str(f.severity), f.subject) for f in got] == [
        (e.severity, e.subject) for e in scenario.expect
    ], "\n".join(f"{f.severity} {f.subject!r}: {f.message}" for f in got) or "no findings"
    for finding, expected in zip(got, scenario.expect, strict=True):
        assert _subset(expected.evidence, finding.evidence), (
            f"evidence {finding.evidence} does not contain {expected.evidence}"
        )
        for text in expected.message:
            assert text in finding.message, finding.message
        for text in expected.advice:
            assert text in finding.fix.advice, finding.fix.advice
        for key, value in expected.fix_sysctl.items():
            assert finding.fix.sysctl.get(key) == value, finding.fix.sysctl
        # Every rendered text is free of unrendered template braces.
        for text in (finding.message, finding.fix.advice, *finding.fix.sysctl.values()):
            assert "{" not in text and "}" not in text, text


# --- the builder itself ------------------------------------------------------------------------


def test_socket_line_is_the_kernel_format() -> None:
    line = socket_line(0, 4, "10.0.0.2", 40000, "10.0.0.5", 3306, "TIME_WAIT", 0)
    if sys.byteorder == "little":
        assert line.rstrip() == (
            "   0: 0200000A:9C40 0500000A:0CEA 06 00000000:00000000 03:00000E9B "
            "00000000     0        0 0 3 0000000000000000"
        )
    assert len(line) == 149  # tcp4_seq_show pads every line to TMPSZ - 1


def test_generated_lines_read_back_through_the_proc_reader() -> None:
    from auditor.facts.model import PortRange

    sockets: list[dict[str, Any]] = [
        {"src": "10.0.0.2", "dst": "10.0.0.5", "dport": 3306, "state": "TIME_WAIT", "count": 3},
        {"src": "10.0.0.2", "dst": "10.0.0.5", "dport": 3306, "state": "ESTABLISHED"},
        {"src": "::ffff:10.0.0.2", "dst": "::ffff:10.0.0.5", "dport": 3306, "state": "SYN_SENT"},
        {"src": "2001:db8::1", "dst": "2001:db8::5", "dport": 443, "state": "ESTABLISHED"},
        {"listen": "127.0.0.1:6379"},
        {"listen": "[::]:8080"},
    ]
    ports = PortRange(low=40000, high=40099, reserved=(), usable=100)
    lines, _ = render_sockets(sockets, 40000, 40099)
    counter = DestinationCounter()
    header = "  sl  local_address rem_address   st tx_queue rx_queue"
    for fam in (4, 6):
        parse_proc_tcp([header, *lines[fam]], f"tcp{fam}", fam, ports, counter)
    table = counter.table("proc")
    by_dest = {(d.src, d.dst, d.dport): d.by_state for d in table.destinations}
    # The v4-mapped socket counts against the same destination as the v4 ones.
    assert by_dest[("10.0.0.2", "10.0.0.5", 3306)] == {
        "ESTABLISHED": 1,
        "SYN_SENT": 1,
        "TIME_WAIT": 3,
    }
    assert by_dest[("2001:db8::1", "2001:db8::5", 443)] == {"ESTABLISHED": 1}
    assert {(li.addr, li.port, li.family) for li in table.listeners} == {
        ("127.0.0.1", 6379, 4),
        ("::", 8080, 6),
    }


def test_minimal_base_collects_cleanly(tmp_path: Path) -> None:
    scenario = load_scenario(SCENARIO_PATHS[0])
    quiet = Scenario(
        path=scenario.path,
        rule=scenario.rule,
        description="bare base",
        base="minimal",
        sysctl={},
        files={},
        counters={},
        sockets=[],
        config=None,
        expect=[],
    )
    root = build_tree(quiet, tmp_path / "host")
    facts = collect_facts(HostRoot(proc=root / "proc", root=root))
    assert facts.host.kernel and facts.host.netns == "net:[4026531840]"
    assert set(facts.sysctl_missing) == {"net.ipv4.tcp_tw_recycle"}
    # No sysctl file in the base: each scenario's `files:` are the only ones boot reads.
    assert not isinstance(facts.persisted, Unavailable) and facts.persisted.files == ()
    report = evaluate(load_rules(), facts, load_config(HostRoot(root=root), None))
    assert report.findings == (), [f.message for f in report.findings]


@pytest.mark.parametrize("case", ["EPH-001/fires-crit", "EPH-004/fires"])
def test_snapshot_without_unprivileged_port_start_keeps_1024_floor(
    case: str, tmp_path: Path
) -> None:
    """A snapshot that does not record ip_unprivileged_port_start at all (written before the key
    was collected, or trimmed by hand) proposes the same range as a kernel without the key."""
    import dataclasses

    key = "net.ipv4.ip_unprivileged_port_start"
    scenario = load_scenario(SCENARIOS / f"{case}.yaml")
    root = build_tree(scenario, tmp_path / "host")
    facts = collect_facts(HostRoot(proc=root / "proc", root=root))
    facts = dataclasses.replace(
        facts,
        sysctl={k: v for k, v in facts.sysctl.items() if k != key},
        sysctl_missing={k: v for k, v in facts.sysctl_missing.items() if k != key},
    )
    report = evaluate(load_rules(), facts, load_config(HostRoot(root=root), None))
    got = [f for f in report.findings if f.id == scenario.rule]
    assert got
    for finding in got:
        assert finding.fix.sysctl.get("net.ipv4.ip_local_port_range") == "10000 65535"
        assert "unknown" not in finding.fix.advice, finding.fix.advice
        assert "1024" in finding.fix.advice, finding.fix.advice
