"""`--all-netns`: two test-made namespaces, each with its own port range and one destination
exhausted for real (EADDRNOTAVAIL); each finding is reported once, under its namespace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from auditor.config import Config
from auditor.engine.load import builtin_rules_dir, load_rules
from auditor.facts.model import PortRange, SocketTable, Unavailable
from auditor.facts.netns import NetnsRef, collect_in_netns, list_netns
from auditor.hostfs import HostRoot
from tests.netns import REPO, Netns, make_netns, requires_netns

# A copy of EPH-001's decision under a test id, so this test does not depend on the catalog's
# wording and can run next to it (`--rules` adds to the built-in rules).
RULE = """\
id: TST-901
name: test-destination-port-exhaustion
title: "Ephemeral ports to {dest.dst}:{dest.dport} are {ratio:.0%} used"
rationale: Test copy of EPH-001's condition.
example: "CRIT TST-901 ..."
params:
  warn_ratio: 0.7
  crit_ratio: 0.9
for_each: destinations
requires: [ports, sockets]
let:
  ratio: dest.used / ports.usable
severity:
  crit: ratio > params.crit_ratio
  warn: ratio > params.warn_ratio
subject: "{dest.src} -> {dest.dst}:{dest.dport}"
message: "{dest.used} of {ports.usable} used"
evidence:
  used: dest.used
  capacity: ports.usable
  owners: dest.owners
fix:
  sysctl: {}
  advice: none
  applicability: display-only
sources:
  - https://docs.kernel.org/networking/ip-sysctl.html
"""

RANGES = {"a": ("20000", "20199", 200), "b": ("30000", "30149", 150)}


def exhaust(ns: Netns, low: str, high: str) -> dict[str, object]:
    ns.sysctl_write("net.ipv4.ip_local_port_range", f"{low} {high}")
    ns.sysctl_write("net.ipv4.tcp_tw_reuse", "0")
    out = ns.python("-m", "tests.workloads.exhaust", "--port", "5000", "--max", "2000").stdout
    got: dict[str, object] = json.loads(out)
    assert got["eaddrnotavail"], got
    return got


@pytest.fixture(scope="module")
def two_exhausted() -> Iterator[dict[str, Netns]]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    with ExitStack() as stack:
        spaces = {k: stack.enter_context(make_netns(f"pa-{k}")) for k in RANGES}
        for key, ns in spaces.items():
            low, high, _ = RANGES[key]
            exhaust(ns, low, high)
        yield spaces


@requires_netns
@pytest.mark.netns
def test_list_netns_finds_named_namespaces_once(two_exhausted: dict[str, Netns]) -> None:
    refs, _ = list_netns(HostRoot())
    names = [r.name for r in refs]
    for ns in two_exhausted.values():
        assert names.count(ns.name) == 1
    inodes = [r.inode for r in refs]
    assert len(inodes) == len(set(inodes))
    assert sum(r.current for r in refs) == 1


@requires_netns
@pytest.mark.netns
def test_collect_in_netns_sees_that_namespaces_range_and_sockets(
    two_exhausted: dict[str, Netns],
) -> None:
    refs = {r.name: r for r in list_netns(HostRoot())[0] if r.name}
    for key, ns in two_exhausted.items():
        facts = collect_in_netns(HostRoot(), refs[ns.name])
        low, high, usable = RANGES[key]
        assert not isinstance(facts, type(None))
        assert isinstance(facts.ports, PortRange)  # type: ignore[union-attr]
        assert (facts.ports.low, facts.ports.high) == (int(low), int(high))  # type: ignore[union-attr]
        sockets = facts.sockets  # type: ignore[union-attr]
        assert isinstance(sockets, SocketTable) and sockets.source == "netlink"
        dest = {(d.src, d.dst, d.dport): d for d in sockets.destinations}[
            ("127.0.0.1", "127.0.0.1", 5000)
        ]
        assert dest.used == usable


def test_unreadable_namespace_is_skipped_with_a_reason(tmp_path: Path) -> None:
    ref = NetnsRef(inode=1, path=str(tmp_path / "missing"), name="gone")
    got = collect_in_netns(HostRoot(), ref)
    assert isinstance(got, Unavailable)
    if os.geteuid() == 0:
        assert got.reason.startswith(str(tmp_path / "missing")), got.reason
    else:
        assert "needs root" in got.reason, got.reason


def _by_netns(findings: list[dict[str, object]], label: str) -> list[dict[str, object]]:
    return [f for f in findings if f.get("netns") == label and f["id"] == "TST-901"]


def _check_report(report: dict[str, object], spaces: dict[str, Netns]) -> None:
    findings = report["findings"]
    assert isinstance(findings, list)
    labels = {n["netns"] for n in report["namespaces"]}  # type: ignore[attr-defined]
    for key, ns in spaces.items():
        assert ns.name in labels
        mine = _by_netns(findings, ns.name)
        assert len(mine) == 1, mine
        f = mine[0]
        # the subject is the same text as in a single-namespace audit; `netns` says where
        assert f["subject"] == "127.0.0.1 -> 127.0.0.1:5000"
        assert f["severity"] == "crit"
        usable = RANGES[key][2]
        assert f["evidence"] == {"used": usable, "capacity": usable, "owners": ""}  # type: ignore[comparison-overlap]
    # the same destination is not reported again under any other namespace's label
    where = [f.get("netns") for f in findings if f["id"] == "TST-901"]  # type: ignore[union-attr]
    for ns in spaces.values():
        assert where.count(ns.name) == 1


@requires_netns
@pytest.mark.netns
def test_audit_all_netns_reports_each_finding_once_in_process(
    two_exhausted: dict[str, Netns], tmp_path: Path
) -> None:
    from auditor.audit import run_audit
    from auditor.render.json import render_json
    from auditor.render.table import render_table

    rule = tmp_path / "tst.yaml"
    rule.write_text(RULE)
    result = run_audit(
        HostRoot(), load_rules([rule], builtin=False), Config(), all_netns=True, state=False
    )
    _check_report(json.loads(render_json(result)), two_exhausted)
    table = render_table(result).splitlines()
    for ns in two_exhausted.values():
        rows = [ln for ln in table if f"[netns {ns.name}]" in ln]
        assert len(rows) == 1 and rows[0].startswith("CRIT   TST-901"), rows
        footer = next(ln for ln in table if ln.startswith("Network namespaces audited"))
        assert ns.name in footer


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m auditor ARGS`, with the time --all-netns needs to enter every namespace."""
    return subprocess.run(
        [sys.executable, "-m", "auditor", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        cwd=REPO,
        timeout=300,
    )


@requires_netns
@pytest.mark.netns
@pytest.mark.skipif(
    not builtin_rules_dir().is_dir(), reason="the built-in rule catalog is not on this branch yet"
)
def test_cli_audit_all_netns_json(two_exhausted: dict[str, Netns], tmp_path: Path) -> None:
    rule = tmp_path / "tst.yaml"
    rule.write_text(RULE)
    run = _cli(
        "audit",
        "--all-netns",
        "--no-state",
        "--format",
        "json",
        "--rules",
        str(rule),
        "--fail-on",
        "crit",
    )
    assert run.returncode == 1, run.stderr
    report = json.loads(run.stdout)
    _check_report(report, two_exhausted)
    assert "skipped_netns" in report
    facts = _cli("facts", "--all-netns")
    assert facts.returncode == 0, facts.stderr
    rows = {r["netns"]: r for r in json.loads(facts.stdout)["namespaces"]}
    for key, ns in two_exhausted.items():
        assert rows[ns.name]["facts"]["ports"]["low"] == int(RANGES[key][0])
    # the snapshot is audited as the live namespaces were: one finding under each namespace
    snap = tmp_path / "all.json"
    snap.write_text(facts.stdout)
    saved = _cli("audit", "--facts", str(snap), "--format", "json", "--rules", str(rule))
    assert saved.returncode == 1, saved.stderr
    _check_report(json.loads(saved.stdout), two_exhausted)


@requires_netns
@pytest.mark.netns
def test_namespaces_read_two_at_a_time_keep_their_own_facts_in_order(
    two_exhausted: dict[str, Netns],
) -> None:
    """Children run concurrently (one per processor); each reply lands on its own namespace,
    the current one is read in process, and a namespace that cannot be opened is skipped."""
    from auditor.facts.netns import _collect

    named = {r.name: r for r in list_netns(HostRoot())[0] if r.name}
    current = next(r for r in list_netns(HostRoot())[0] if r.current)
    gone = NetnsRef(inode=2, path="/run/netns/pa-no-such-namespace", name="pa-gone")
    order = ["b", "a", "gone", "current", "b", "a"]
    refs = [
        gone if k == "gone" else current if k == "current" else named[two_exhausted[k].name]
        for k in order
    ]
    got = _collect(HostRoot(), refs, 60.0, None, workers=2)
    for key, facts in zip(order, got, strict=True):
        if key == "gone":
            assert isinstance(facts, Unavailable) and "pa-no-such-namespace" in facts.reason
            continue
        assert not isinstance(facts, Unavailable), facts
        assert isinstance(facts.ports, PortRange)
        if key == "current":
            assert (str(facts.ports.low), str(facts.ports.high)) not in {
                (lo, hi) for lo, hi, _ in RANGES.values()
            }
        else:
            low, high, _ = RANGES[key]
            assert (facts.ports.low, facts.ports.high) == (int(low), int(high))
