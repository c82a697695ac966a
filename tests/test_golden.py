"""Whole runs of `portaudit audit` over fixture trees against golden files.

Regenerate with `pytest tests/test_golden.py --update-golden` and review the diff: a changed
golden is a changed user-visible output.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers import ROOTS, root_args, run_cli

GOLDEN = Path(__file__).parent / "golden"
TREES = sorted(p.name for p in ROOTS.iterdir() if (p / "proc").is_dir())
FORMATS = {"json": "json", "table": "txt", "prometheus": "prom"}
_STAMP = re.compile(r"^(portaudit_last_run_timestamp_seconds) .*$", re.M)


def normalise(text: str, tree: Path) -> str:
    """Paths of the temp checkout and the collection time are the only run-dependent bits."""
    text = _STAMP.sub(r"\1 0", text)
    return text.replace(str(tree), "<root>")


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("name", TREES)
def test_audit_output_matches_golden(name: str, fmt: str, update_golden: bool) -> None:
    tree = ROOTS / name
    result = run_cli("audit", *root_args(tree), "--format", fmt, "--fail-on", "never")
    assert result.returncode == 0, result.stderr
    got = normalise(result.stdout, tree)
    golden = GOLDEN / f"audit-{name}.{FORMATS[fmt]}"
    if update_golden:
        golden.write_text(got)
    assert got == golden.read_text()


@pytest.mark.parametrize("name", TREES)
def test_exit_code_follows_fail_on(name: str) -> None:
    import json

    tree = ROOTS / name
    report = json.loads(
        run_cli("audit", *root_args(tree), "--format", "json", "--fail-on", "never").stdout
    )
    severities = {f["severity"] for f in report["findings"]}
    order = ["info", "warn", "crit"]
    for level in order:
        expected = 1 if any(order.index(s) >= order.index(level) for s in severities) else 0
        assert run_cli("audit", *root_args(tree), "--fail-on", level).returncode == expected, level


def test_snapshot_audit_equals_live_audit(tmp_path: Path) -> None:
    tree = ROOTS / "busy-client"
    snap = tmp_path / "facts.json"
    assert run_cli("facts", *root_args(tree), "-o", str(snap)).returncode == 0
    live = run_cli("audit", *root_args(tree), "--format", "json", "--fail-on", "never").stdout
    saved = run_cli(
        "audit", "--facts", str(snap), "--format", "json", "--fail-on", "never", "--root", str(tree)
    ).stdout
    assert live == saved


def test_output_file_is_written_atomically_and_fully(tmp_path: Path) -> None:
    tree = ROOTS / "busy-client"
    out = tmp_path / "portaudit.prom"
    out.write_text("old\n")
    result = run_cli(
        "audit", *root_args(tree), "--format", "prometheus", "-o", str(out), "--fail-on", "never"
    )
    assert result.returncode == 0 and result.stdout == ""
    assert out.read_text().startswith("# HELP ")
    assert [p.name for p in tmp_path.iterdir()] == ["portaudit.prom"]
