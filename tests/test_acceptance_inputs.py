"""Acceptance: a facts snapshot with values no kernel reports is refused with one line and
exit 2, never judged, printed or turned into a proposal (a port range of `-5 40099`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOTS, run_cli


def _snapshot(tmp_path: Path) -> dict[str, Any]:
    base = ROOTS / "busy-client"
    run = run_cli("facts", "--root", str(base), "--proc", str(base / "proc"))
    assert run.returncode == 0, run.stderr
    data: dict[str, Any] = json.loads(run.stdout)
    assert data["sockets"]["destinations"], "the fixture has a busy destination"
    return data


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node: Any = data
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    node[int(last) if last.isdigit() else last] = value


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        ("ports.low", -5, "$.ports"),
        ("ports.low", 0, "$.ports"),
        ("ports.high", 70000, "$.ports"),
        ("ports.reserved", [[70000, 70001]], "$.ports.reserved[0]"),
        ("ports.usable", 123456, "$.ports.usable"),
        ("sockets.destinations.0.dport", -1, "$.sockets.destinations[0].dport"),
        ("sockets.destinations.0.dport", 65536, "$.sockets.destinations[0].dport"),
    ],
)
def test_out_of_range_snapshot_values_are_refused(
    tmp_path: Path, path: str, value: Any, named: str
) -> None:
    data = _snapshot(tmp_path)
    _set(data, path, value)
    snap = tmp_path / "facts.json"
    snap.write_text(json.dumps(data))
    run = run_cli("audit", "--facts", str(snap))
    assert run.returncode == 2, (run.returncode, run.stdout, run.stderr)
    assert run.stdout == ""
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and str(snap) in lines[0], run.stderr


def test_a_valid_snapshot_still_audits(tmp_path: Path) -> None:
    snap = tmp_path / "facts.json"
    snap.write_text(json.dumps(_snapshot(tmp_path)))
    run = run_cli("audit", "--facts", str(snap), "--format", "json")
    assert run.returncode == 1, run.stderr
    assert "EPH-001" in {f["id"] for f in json.loads(run.stdout)["findings"]}


@pytest.mark.parametrize("value", ["{a: 1}", "[1, 2]"])
def test_rule_for_each_that_is_not_text_is_a_load_error(tmp_path: Path, value: str) -> None:
    rule = (Path(__file__).resolve().parent.parent / "rules" / "CFG-006.yaml").read_text()
    lines = [f"for_each: {value}" if ln.startswith("for_each:") else ln for ln in rule.splitlines()]
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "CFG-006.yaml").write_text("\n".join(lines) + "\n")
    run = run_cli("rules", "list", "--rules", str(rules))
    assert run.returncode == 2, (run.returncode, run.stderr)
    assert "internal error" not in run.stderr
    assert f"{rules / 'CFG-006.yaml'}:" in run.stderr and "for_each" in run.stderr, run.stderr
