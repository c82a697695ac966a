"""Shared test helpers: run the CLI as a user would, copy fixture trees."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from auditor.engine.report import Applicability, Finding, Fix, Severity
from tests.jsonschema_lite import errors as schema_errors

REPO = Path(__file__).resolve().parent.parent
ROOTS = REPO / "tests" / "fixtures" / "roots"


def run_cli(
    *args: str, cwd: Path = REPO, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m auditor ARGS` in a child process: exit codes and stderr exactly as a user sees.

    Every JSON document a run prints is checked against its schema in docs/schema/, so the
    published interface and the output cannot drift apart unnoticed."""
    result = subprocess.run(
        [sys.executable, "-m", "auditor", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
    )
    schema = json_schema_of(args)
    if schema is not None and result.returncode in (0, 1) and result.stdout.strip():
        problems = schema_errors(json.loads(result.stdout), schema)
        assert not problems, (schema, problems[:10])
    return result


def json_schema_of(args: tuple[str, ...] | list[str]) -> str | None:
    """The docs/schema file a command line's stdout must conform to (None: not JSON)."""
    if not args:
        return None
    command, rest = args[0], list(args[1:])
    formats = [rest[i + 1] for i, a in enumerate(rest[:-1]) if a in ("--format", "-f")]
    if command == "facts":
        return "facts-all-netns.json" if "--all-netns" in rest else "facts.json"
    if command == "audit" and formats[-1:] == ["json"]:
        return "audit.json"
    if command == "diagnose" and formats[-1:] == ["json"]:
        return "diagnose.json"
    return None


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
