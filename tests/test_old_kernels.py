"""Older kernels, audited from fixture trees built out of public /proc snapshots.

No old kernel boots here, so the trees carry what those kernels print:

- `kernel-3`: /proc/net/netstat, snmp and sockstat from prometheus/node_exporter's fixtures
  at commit 788ac9a8 (collector/fixtures/proc/net/*; a TcpExt line ending at TCPSYNChallenge,
  added in 3.6, before 3.7's TCPFastOpen counters), /proc/net/tcp from prometheus/procfs
  (testdata/fixtures.ttar, fixtures/proc/net/tcp), no tcp6 or sockstat6; the sysctl set of a
  3.10 kernel (RHEL 7): no ip_unprivileged_port_start (4.11), tcp_tw_recycle still present
  (removed in 4.12), no tcp_ehash_entries (6.1) or tcp_tw_reuse_delay (6.13), the old
  default range 32768-61000, no conntrack and no conf/*/rp_filter; a classic
  /etc/sysctl.conf turning tcp_tw_recycle on and lowering tcp_max_tw_buckets.
- `kernel-4`: netstat and snmp of prometheus/procfs's fixture process 26231 (TcpExt up to
  TCPWqueueTooBig), its sockstat, sockstat6, tcp and tcp6; the sysctl set of a 4.19 kernel
  (Debian 10): ip_unprivileged_port_start present, tcp_tw_recycle gone, tcp_tw_reuse 2, no
  tcp_ehash_entries or tcp_tw_reuse_delay, and a host with two strict uplinks.

Each is audited whole: what exists gives findings, what is missing skips with its reason,
and nothing errors. (Whole-output goldens for both are in tests/golden like every tree.)
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from auditor.config import load_config
from auditor.engine.evaluate import evaluate
from auditor.engine.load import load_rules
from auditor.engine.report import Report, Status
from auditor.facts.collect import collect_facts
from auditor.facts.model import Unavailable
from auditor.hostfs import HostRoot
from tests.scenario import REPO, ROOTS

EXPECTED = {
    "kernel-3": {
        "findings": {
            ("TW-003", "warn"),
            ("TW-004", "warn"),
            ("CON-001", "info"),
            ("EPH-005", "info"),
        },
        "skipped": {
            "CT-001": "nf_conntrack_max",
            "RPF-001": "conf",
            "LSN-002": "backlog",
            "FD-003": "live host",
        },
        "missing_keys": {
            "net.ipv4.ip_unprivileged_port_start",
            "net.ipv4.tcp_ehash_entries",
            "net.ipv4.tcp_tw_reuse_delay",
        },
    },
    "kernel-4": {
        "findings": {("TW-005", "warn"), ("CON-001", "info")},
        "skipped": {"CT-001": "nf_conntrack_max", "LSN-002": "backlog", "FD-003": "live host"},
        "missing_keys": {
            "net.ipv4.tcp_tw_recycle",
            "net.ipv4.tcp_ehash_entries",
            "net.ipv4.tcp_tw_reuse_delay",
        },
    },
}


def _audit(name: str) -> Report:
    root = ROOTS / name
    host = HostRoot(proc=root / "proc", root=root)
    return evaluate(load_rules(), collect_facts(host), load_config(host, None))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_old_kernel_is_judged_where_it_can_be_and_skipped_with_reasons(name: str) -> None:
    want = EXPECTED[name]
    report = _audit(name)
    facts = report.facts
    assert want["missing_keys"] <= set(facts.sysctl_missing), facts.sysctl_missing
    for group in ("ports", "sockets", "sockstat", "counters", "files", "persisted"):
        assert not isinstance(getattr(facts, group), Unavailable), group
    assert not [o for o in report.outcomes if o.status is Status.ERROR]
    assert {(f.id, str(f.severity)) for f in report.findings} == want["findings"]
    skipped = {o.rule_id: o.reason for o in report.outcomes if o.status is Status.SKIPPED}
    assert set(skipped) == set(want["skipped"]), skipped
    for rule_id, word in want["skipped"].items():
        assert word in skipped[rule_id], skipped[rule_id]
    # The exhaustion checks are judged, not skipped, on kernels before 4.11 too.
    judged = {o.rule_id for o in report.outcomes if o.status is Status.PASS}
    assert {"EPH-003", "EPH-004", "TW-002", "SYN-001"} <= judged | {f.id for f in report.findings}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_old_kernel_audits_from_the_command_line(name: str) -> None:
    root = ROOTS / name
    proc = str(root / "proc")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "auditor",
            "audit",
            "--root",
            str(root),
            "--proc",
            proc,
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    report = json.loads(run.stdout)
    assert report["host"]["kernel"].startswith(name.split("-")[1] + ".")
    assert {f["id"] for f in report["findings"]} == {i for i, _ in EXPECTED[name]["findings"]}
