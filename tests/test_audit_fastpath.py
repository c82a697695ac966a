"""A plain `portaudit audit` runs without typer: same flags, same output, same exit codes.

`auditor.auditcmd` reads `audit`'s argv itself so an idle audit does not pay for building the
typer app; the typer command stays the interface's definition. These tests hold the two
together: the fast path knows exactly the typer command's options, and every option gives the
same stdout, stderr, exit code (and written file) both ways.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

from auditor.auditcmd import AUDIT_FLAGS, parse_audit_argv
from auditor.cli import app
from tests.helpers import REPO, ROOTS, copy_root, root_args

TREE = ROOTS / "busy-client"
RULES = REPO / "rules" / "EPH-001.yaml"

# Run the typer app directly, never the fast path (what `portaudit` did before it existed).
VIA_TYPER = "import sys; from auditor.cli import main; sys.argv[0] = 'portaudit'; main()"


def _audit_options() -> dict[str, bool]:
    """Every option string of the typer `audit` command -> whether it takes no value."""
    group = typer.main.get_command(app)
    assert isinstance(group, typer.main.TyperGroup)
    command = group.commands["audit"]
    out: dict[str, bool] = {}
    for param in command.params:
        for opt in [*param.opts, *getattr(param, "secondary_opts", [])]:
            out[opt] = bool(getattr(param, "is_flag", False))
    return out


def test_fast_path_knows_exactly_the_typer_options() -> None:
    options = _audit_options()
    assert set(AUDIT_FLAGS) == set(options) - {"--help"}
    for flag, (_field, kind) in AUDIT_FLAGS.items():
        assert isinstance(kind, bool) == options[flag], flag


def _untimed(text: str) -> str:
    """The output without the run's own clock reading (prometheus' last-run timestamp)."""
    return re.sub(r"(?m)^(portaudit_last_run_timestamp_seconds) .*$", r"\1 T", text)


def _run(argv: list[str], typer_only: bool, cwd: Path) -> subprocess.CompletedProcess[str]:
    head = [sys.executable, "-c", VIA_TYPER] if typer_only else [sys.executable, "-m", "auditor"]
    return subprocess.run(
        [*head, *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        stdin=subprocess.DEVNULL,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(REPO)},
    )


# One case per flag (and its short form), with the fixture tree so the output is deterministic.
CASES: dict[str, list[str]] = {
    "--format": ["--format", "json"],
    "-f": ["-f", "prometheus"],
    "--format=": ["--format=table"],
    "--output": ["--output", "OUT"],
    "-o": ["-o", "OUT"],
    "--rules": ["--rules", str(RULES), "--rules", str(REPO / "rules")],
    "--only": ["--only", "EPH-001,TW-001"],
    "--fail-on": ["--fail-on", "info"],
    "--facts": ["--facts", str(REPO / "tests" / "golden" / "facts-busy-client.json")],
    "--config": ["--config", "MISSING.yaml"],
    "--all-netns": ["--all-netns"],
    "--root": [],  # with --proc: every case reads the fixture tree through both
    "--proc": [],
    "--log-findings": ["--log-findings"],
    "--verbose": ["--verbose"],
    "-v": ["-v"],
    "--state": ["--state"],
    "--no-state": ["--no-state"],
    "bad format": ["--format", "yaml"],
    "bad fail-on": ["--fail-on", "sometimes"],
    "unknown flag": ["--frobnicate"],
    "missing value": ["--only"],
}


def test_every_flag_has_a_case() -> None:
    assert set(AUDIT_FLAGS) <= set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_output_both_ways(name: str, tmp_path: Path) -> None:
    extra = CASES[name]
    results = []
    for typer_only in (False, True):
        cwd = tmp_path / ("typer" if typer_only else "fast")
        cwd.mkdir()
        # --state saves counters under --root: each way gets its own copy of the tree
        tree = copy_root(TREE.name, cwd) if name == "--state" else TREE
        fixed = root_args(tree) + ([] if name in ("--state", "--no-state") else ["--no-state"])
        run = _run(["audit", *fixed, *extra], typer_only, cwd)
        written = (cwd / "OUT").read_text() if (cwd / "OUT").exists() else None
        # click names the program after how it was started
        stderr = run.stderr.replace("python -m auditor", "portaudit")
        results.append((run.returncode, _untimed(run.stdout), stderr, written))
    assert results[0] == results[1]
    assert results[0][0] in (0, 1, 2)


def test_plain_argv_is_read_by_the_fast_path() -> None:
    args = parse_audit_argv(["-f", "json", "--rules", "a", "--rules=b", "--no-state", "-v"])
    assert args is not None
    assert (args.format.value, args.rules, args.state, args.verbose) == (
        "json",
        [Path("a"), Path("b")],
        False,
        True,
    )
    for handed_to_typer in (
        ["--help"],
        ["-fjson"],
        ["--only", "--format"],
        ["--format", "json", "--format", "table"],
        ["--verbose=yes"],
        ["positional"],
    ):
        assert parse_audit_argv(handed_to_typer) is None, handed_to_typer
