"""`portaudit fix` and `rollback` as an operator runs them, on copies of fixture trees.

No kernel is touched: `--proc` points at a copied fixture, whose files stand for /proc/sys.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from auditor.errors import RefusedError
from auditor.fix.command import FixOptions, run_fix
from auditor.hostfs import HostRoot
from tests.helpers import REPO, copy_root, root_args, run_cli

UNSAFE_RULE = """\
id: TST-950
name: test-always-somaxconn
title: Test rule that always fails with an unsafe fix
rationale: Test only.
example: "WARN TST-950"
requires: [ports]
severity:
  warn: ports.low > 0
subject: ""
message: "somaxconn wants raising (test)"
fix:
  sysctl:
    net.core.somaxconn: "8192"
  advice: test
  applicability: unsafe
sources:
  - https://docs.kernel.org/networking/ip-sysctl.html
"""


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    d = tmp_path / "rules"
    d.mkdir()
    (d / "TST-950.yaml").write_text(UNSAFE_RULE)
    return d


def somaxconn(root: Path) -> str:
    return (root / "proc/sys/net/core/somaxconn").read_text().strip()


def test_nothing_to_do_only_when_nothing_fails(tmp_path: Path) -> None:
    root = copy_root("minimal", tmp_path)
    run = run_cli("fix", "--yes", *root_args(root))
    assert run.returncode == 0, run.stderr
    assert run.stdout == "nothing to do: no rule fails\n"


def test_unsafe_left_out_with_yes_says_how_to_include_and_exits_1(
    tmp_path: Path, rules_dir: Path
) -> None:
    root = copy_root("minimal", tmp_path)
    before = somaxconn(root)
    run = run_cli("fix", "--yes", "--rules", str(rules_dir), *root_args(root))
    assert run.returncode == 1, run.stdout + run.stderr
    assert "nothing to do" not in run.stdout
    assert "left out: TST-950: unsafe fix; include with --only TST-950 or --include-unsafe" in (
        run.stdout
    )
    assert "would set net.core.somaxconn = 8192 (risk: longer accept queues" in run.stdout
    assert somaxconn(root) == before

    run = run_cli("fix", "--yes", "--include-unsafe", "--rules", str(rules_dir), *root_args(root))
    assert run.returncode == 0, run.stdout + run.stderr
    assert somaxconn(root) == "8192"
    assert "TST-950: warn -> warn" in run.stdout  # measured again: the test rule still fails


def test_only_names_the_unsafe_rule(tmp_path: Path, rules_dir: Path) -> None:
    root = copy_root("minimal", tmp_path)
    run = run_cli("fix", "--yes", "--only", "tst-950", "--rules", str(rules_dir), *root_args(root))
    assert run.returncode == 0, run.stdout + run.stderr
    assert somaxconn(root) == "8192"


def test_unsafe_fix_asked_on_its_own_at_a_terminal(tmp_path: Path, rules_dir: Path) -> None:
    root = copy_root("minimal", tmp_path)
    args = ["fix", "--rules", str(rules_dir), *root_args(root)]
    code, out = _on_pty(args, b"n\n")
    assert code == 1, out  # said no to the only fix: left out
    assert "unsafe: TST-950" in out and "risk: longer accept queues" in out
    assert "Include the unsafe fix of TST-950?" in out
    assert "Apply these changes?" not in out
    code, out = _on_pty(args, b"y\ny\n")
    assert code == 0, out
    assert "Apply these changes?" in out and "applied change set" in out
    assert somaxconn(root) == "8192"


def _on_pty(args: list[str], answer: bytes) -> tuple[int, str]:
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "auditor", *args],
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    os.close(slave)
    os.write(master, answer)
    out, _ = proc.communicate(timeout=120)
    os.close(master)
    return proc.returncode, out.decode()


def test_config_reserve_ports_reach_fix(tmp_path: Path) -> None:
    root = copy_root("busy-client", tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text("reserve_ports: [20000]\npublic_ports: [30443, 443]\n")
    run = run_cli("fix", "--dry-run", "--config", str(config), *root_args(root))
    assert run.returncode == 0, run.stderr
    assert "reserve 20000: config reserve_ports" in run.stdout
    assert "reserve 30443: config public_ports, inside the new range 10000-65535" in run.stdout
    assert "reserve 443" not in run.stdout
    assert "net.ipv4.ip_local_reserved_ports = 20000,30443" in run.stdout


def test_bad_config_is_one_line_exit_2(tmp_path: Path) -> None:
    root = copy_root("busy-client", tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text("reserve_ports: [70000]\n")
    run = run_cli("fix", "--dry-run", "--config", str(config), *root_args(root))
    assert run.returncode == 2
    assert run.stderr == f"portaudit: {config}:1: reserve_ports: 70000 is not a port (1-65535)\n"


def test_paths_and_undo_hint_carry_the_root(tmp_path: Path) -> None:
    root = copy_root("busy-client", tmp_path)
    run = run_cli("fix", "--yes", *root_args(root))
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"+++ {root}/etc/sysctl.d/99-zz-portaudit.conf" in run.stdout
    assert "+++ /etc/" not in run.stdout
    hint = run.stdout.split("undo with: ", 1)[1].split(")", 1)[0]
    assert hint.startswith("portaudit rollback ")
    assert f"--root {root}" in hint and f"--proc {root}/proc" in hint
    listed = run_cli("rollback", "--list", *root_args(root))
    assert listed.returncode == 0 and "applied" in listed.stdout
    back = run_cli(*hint.split()[1:], "--yes")
    assert back.returncode == 0, back.stdout + back.stderr
    assert f"remove {root}/etc/sysctl.d/99-zz-portaudit.conf" in back.stdout
    assert not (root / "etc/sysctl.d/99-zz-portaudit.conf").exists()


def test_not_root_is_said_before_the_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    """On the live /proc a runtime write needs root: refused before any plan is printed."""
    printed: list[str] = []
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(RefusedError, match="needs root") as exc:
        run_fix(HostRoot(), FixOptions(yes=True), printed.append, None)
    assert "--no-runtime" in str(exc.value)
    assert printed == []


def _report(name: str):  # type: ignore[no-untyped-def]
    from auditor.config import Config
    from auditor.engine.evaluate import evaluate
    from auditor.engine.load import load_rules
    from auditor.engine.report import AuditReport
    from auditor.facts.collect import collect_facts
    from tests.helpers import ROOTS

    tree = ROOTS / name
    facts = collect_facts(HostRoot(proc=tree / "proc", root=tree))
    return AuditReport.single(evaluate(load_rules(), facts, Config()))


@pytest.mark.parametrize("name", ["busy-client", "busy-server"])
def test_table_fits_80_columns_and_uses_a_wide_terminal(name: str) -> None:
    from auditor.render.table import render_table

    report = _report(name)
    narrow = render_table(report, 80)
    assert max(len(line) for line in narrow.splitlines()) <= 80, narrow
    for f in report.findings:
        assert f.id in narrow and f.message.split()[0] in narrow
    wide = render_table(report, 200)
    assert "SEV" in wide and max(len(line) for line in wide.splitlines()) <= 200
    assert max(len(line) for line in wide.splitlines()) > 100  # the width is used


@pytest.mark.parametrize("name", ["busy-client", "busy-server", "kernel-3"])
@pytest.mark.parametrize("width", [40, 60, 79])
@pytest.mark.parametrize("verbose", [False, True])
def test_blocks_fit_a_narrow_terminal(name: str, width: int, verbose: bool) -> None:
    """Every line, the heading, each finding's first line and the footer included, fits."""
    from auditor.render.table import render_table

    report = _report(name)
    text = render_table(report, width, verbose=verbose)
    wide = [line for line in text.splitlines() if len(line) > width]
    assert not wide, "\n".join(wide)
    for f in report.findings:
        assert f.id in text


def test_verbose_shows_evidence_owners_and_advice() -> None:
    from auditor.render.table import render_table

    report = _report("busy-client")
    plain, verbose = render_table(report, 100), render_table(report, 100, verbose=True)
    eph = next(f for f in report.findings if f.id == "EPH-001")
    assert "evidence:" not in plain and "evidence: src=10.0.0.2" in verbose
    assert "by_state={ESTABLISHED: 10, TIME_WAIT: 340}" in " ".join(verbose.split())
    assert eph.fix.advice.split()[0] in verbose and "advice: Exhaustion" in verbose
    run = run_cli(
        "audit",
        "-v",
        "--fail-on",
        "never",
        *root_args(Path(REPO / "tests/fixtures/roots/busy-client")),
    )
    assert run.returncode == 0 and "evidence: src=10.0.0.2" in run.stdout


def test_version() -> None:
    run = run_cli("--version")
    assert run.returncode == 0 and run.stdout.startswith("portaudit ")


def test_without_a_terminal_the_plan_is_shown_then_refused(tmp_path: Path) -> None:
    root = copy_root("busy-client", tmp_path)
    run = run_cli("fix", *root_args(root))
    assert run.returncode == 2 and "no terminal to confirm on" in run.stderr
    assert "widen 40000-40399 to 10000-65535" in run.stdout
    assert not (root / "etc/sysctl.d/99-zz-portaudit.conf").exists()
    quiet = copy_root("minimal", tmp_path)
    run = run_cli("fix", *root_args(quiet))
    assert run.returncode == 0 and run.stdout == "nothing to do: no rule fails\n"
