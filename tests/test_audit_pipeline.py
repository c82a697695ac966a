"""One audit pipeline whatever the source: flags that work for one namespace work for all, a
`facts --all-netns` snapshot is audited like the live namespaces, `--only` is one parser."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from auditor.errors import FixError, InputError, RefusedError, UsageError
from auditor.exitcodes import ExitCode
from tests.helpers import ROOTS, assert_one_line_error, copy_root, root_args, run_cli

live_netns = pytest.mark.skipif(
    not Path("/proc/self/ns/net").exists(), reason="this kernel has no network namespaces"
)


def _audit_json(*args: str) -> dict[str, Any]:
    run = run_cli("audit", *args, "--format", "json", "--fail-on", "never")
    assert run.returncode == 0, run.stderr
    got: dict[str, Any] = json.loads(run.stdout)
    return got


def _facts(tree: str) -> dict[str, Any]:
    run = run_cli("facts", *root_args(ROOTS / tree))
    assert run.returncode == 0, run.stderr
    got: dict[str, Any] = json.loads(run.stdout)
    return got


def _all_netns_snapshot(tmp_path: Path) -> Path:
    """What `facts --all-netns` writes, made from two fixture trees and one lost namespace."""
    doc = {
        "schema": 1,
        "namespaces": [
            {"netns": "net:[1]", "inode": 1, "name": None, "pid": 1, "facts": _facts("minimal")},
            {
                "netns": "client",
                "inode": 2,
                "name": "client",
                "pid": None,
                "facts": _facts("busy-client"),
            },
            {
                "netns": "pid 9 net:[3]",
                "inode": 3,
                "name": None,
                "pid": 9,
                "unavailable": "the process exited",
            },
        ],
        "skipped_netns": [{"netns": "2 processes", "reason": "not readable here"}],
    }
    path = tmp_path / "all.json"
    path.write_text(json.dumps(doc))
    return path


def _keys(findings: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(f["id"], f["severity"], f["subject"]) for f in findings]


def test_all_netns_snapshot_is_audited_per_namespace(tmp_path: Path) -> None:
    snap = _all_netns_snapshot(tmp_path)
    got = _audit_json("--facts", str(snap))
    assert [n["netns"] for n in got["namespaces"]] == ["net:[1]", "client"]
    assert got["skipped_netns"] == [
        {"netns": "pid 9 net:[3]", "reason": "the process exited"},
        {"netns": "2 processes", "reason": "not readable here"},
    ]
    # each namespace's findings are exactly what a single audit of its tree reports
    for label, tree in (("net:[1]", "minimal"), ("client", "busy-client")):
        alone = _audit_json(*root_args(ROOTS / tree))["findings"]
        mine = [f for f in got["findings"] if f["netns"] == label]
        assert sorted(_keys(mine)) == sorted(_keys(alone)), label
    assert got["host"] == _audit_json(*root_args(ROOTS / "minimal"))["host"]
    client = next(n for n in got["namespaces"] if n["netns"] == "client")
    assert client["findings"] == len(_audit_json(*root_args(ROOTS / "busy-client"))["findings"])
    assert sum(got["summary"].values()) == len(got["findings"]) > 0


def test_all_netns_snapshot_in_every_format(tmp_path: Path) -> None:
    snap = _all_netns_snapshot(tmp_path)
    table = run_cli("audit", "--facts", str(snap), "--fail-on", "never").stdout
    assert "[netns client] 10.0.0.2 ->" in table
    assert "Network namespaces audited (2): net:[1], client" in table
    assert "  pid 9 net:[3]: the process exited" in table
    prom = run_cli("audit", "--facts", str(snap), "-f", "prometheus", "--fail-on", "never").stdout
    per_dest = [ln for ln in prom.splitlines() if ln.startswith("portaudit_destination_")]
    assert per_dest and all('netns="' in ln for ln in per_dest)
    crit = run_cli("audit", "--facts", str(snap), "--fail-on", "warn")
    assert crit.returncode == ExitCode.FINDINGS


def test_bad_all_netns_snapshot_names_the_field(tmp_path: Path) -> None:
    snap = _all_netns_snapshot(tmp_path)
    doc = json.loads(snap.read_text())
    doc["namespaces"][1]["facts"]["ports"]["usable"] = "many"
    snap.write_text(json.dumps(doc))
    assert_one_line_error(
        run_cli("audit", "--facts", str(snap)), "$.namespaces[1].facts.ports.usable"
    )
    doc["namespaces"] = [{"netns": "x", "inode": 1, "unavailable": "gone"}]
    snap.write_text(json.dumps(doc))
    assert_one_line_error(run_cli("audit", "--facts", str(snap)), "no namespace in it has facts")


def test_only_is_case_insensitive_and_one_parser() -> None:
    tree = ROOTS / "busy-client"
    got = _audit_json(*root_args(tree), "--only", "eph-001, tw-001")
    assert {f["id"] for f in got["findings"]} == {"EPH-001", "TW-001"}
    assert_one_line_error(run_cli("audit", *root_args(tree), "--only", " , "), "at least one")
    assert_one_line_error(
        run_cli("fix", *root_args(tree), "--dry-run", "--only", "eph-999"), "'EPH-999'"
    )


def test_state_is_refused_for_a_snapshot(tmp_path: Path) -> None:
    snap = tmp_path / "f.json"
    snap.write_text(json.dumps(_facts("minimal")))
    assert_one_line_error(run_cli("audit", "--facts", str(snap), "--state"), "--state")


@live_netns
def test_log_findings_and_state_with_all_netns(tmp_path: Path) -> None:
    """Both flags used to be dropped silently with --all-netns."""
    run = run_cli(
        "audit",
        "--all-netns",
        "--root",
        str(tmp_path),
        "--state",
        "--log-findings",
        "--fail-on",
        "never",
        "--format",
        "json",
    )
    assert run.returncode == 0, run.stderr
    lines = run.stderr.splitlines()
    assert lines and lines[-1].startswith("<6>portaudit: "), run.stderr
    report = json.loads(run.stdout)
    assert len(lines) - 1 == len(report["findings"])
    inode = os.stat("/proc/self/ns/net").st_ino
    state = json.loads((tmp_path / f"var/lib/portaudit/counters/net-{inode}.json").read_text())
    assert state["netns"] == f"net:[{inode}]"


def test_error_classes_carry_the_named_exit_codes() -> None:
    assert UsageError("x").exit_code == ExitCode.USAGE
    assert InputError(None, None, "x").exit_code == ExitCode.USAGE
    assert RefusedError("x").exit_code == ExitCode.USAGE
    assert FixError("x").exit_code == ExitCode.FIX_FAILED
    assert run_cli("audit", "--format", "xml").returncode == ExitCode.USAGE


def test_fix_takes_the_same_config_and_rules_as_audit(tmp_path: Path) -> None:
    tree = copy_root("busy-client", tmp_path)
    plain = run_cli("fix", *root_args(tree), "--dry-run")
    assert plain.returncode == 0, plain.stderr
    assert "net.ipv4.tcp_tw_reuse" in plain.stdout
    cfg = tmp_path / "other.yaml"
    cfg.write_text("rules:\n  TW-001: {skip: true}\n")
    skipped = run_cli("fix", *root_args(tree), "--dry-run", "--config", str(cfg))
    assert skipped.returncode == 0, skipped.stderr
    assert "net.ipv4.tcp_tw_reuse" not in skipped.stdout
