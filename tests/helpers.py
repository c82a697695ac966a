"""Shared test helpers: run the CLI as a user would, copy fixture trees."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from auditor.engine.report import Applicability, Finding, Fix, Severity

REPO = Path(__file__).resolve().parent.parent
ROOTS = REPO / "tests" / "fixtures" / "roots"


def run_cli(
    *args: str, cwd: Path = REPO, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m auditor ARGS` in a child process: exit codes and stderr exactly as a user sees."""
    return subprocess.run(
        [sys.executable, "-m", "auditor", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
    )


def copy_root(name: str, dest: Path) -> Path:
    """A writable copy of a fixture tree (symlinks kept as symlinks)."""
    target = dest / name
    shutil.copytree(ROOTS / name, target, symlinks=True)
    return target


def root_args(root: Path) -> list[str]:
    return ["--proc", str(root / "proc"), "--root", str(root)]


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("portaudit: ") and result.stderr.count("\n") == 1, result.stderr
    for frag in fragments:
        assert frag in result.stderr, (frag, result.stderr)


def make_finding(
    rule: str,
    sysctl: dict[str, str],
    applicability: str = "safe",
    severity: str = "warn",
) -> Finding:
    """A finding carrying only what `fix` reads: the rule id and its sysctl fix."""
    return Finding(
        id=rule,
        name="n",
        severity=Severity.parse(severity),
        title="t",
        subject="s",
        message="m",
        evidence={},
        fix=Fix(sysctl=sysctl, advice="do it", applicability=Applicability(applicability)),
        sources=(),
    )
