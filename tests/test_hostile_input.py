"""Inputs that are not what they claim: a FIFO, /dev/zero, a directory, nesting and numbers
beyond any parser's comfort. Each is one line on stderr and exit 2, quickly, in bounded memory.

Exit 1 means "findings", so an input that ends in an internal error (exit 1) is a false alarm
on a fleet dashboard; a FIFO that hangs the timer's run is worse. run_cli's timeout bounds a
hang; `ulimit -v` is not used, so memory is bounded by construction (reads stop at a limit).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.helpers import assert_one_line_error, copy_root, root_args, run_cli


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return copy_root("busy-client", tmp_path)


def make(kind: str, path: Path) -> None:
    """Put a FIFO, a link to /dev/zero or a directory at `path` (replacing what is there)."""
    if path.is_file() or path.is_symlink():
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "zero":
        path.symlink_to("/dev/zero")
    else:
        path.mkdir()


KINDS = ["fifo", "zero", "dir"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("flag", ["--facts", "--config", "--rules"])
def test_flag_file_that_is_not_a_regular_file(
    root: Path, tmp_path: Path, kind: str, flag: str
) -> None:
    bad = tmp_path / "input.yaml"
    make(kind, bad)
    got = run_cli("audit", *root_args(root), flag, str(bad))
    if flag == "--rules" and kind == "dir":
        assert got.returncode in (0, 1), got.stderr  # an empty rules directory is fine
        return
    assert_one_line_error(got, str(bad))
    assert "no such" not in got.stderr


@pytest.mark.parametrize("kind", ["fifo", "zero"])
@pytest.mark.parametrize(
    "rel", ["proc/net/tcp", "proc/net/netstat", "proc/net/sockstat", "proc/sys/fs/file-nr"]
)
def test_proc_file_that_is_not_a_regular_file(root: Path, kind: str, rel: str) -> None:
    make(kind, root / rel)
    assert_one_line_error(run_cli("audit", *root_args(root), "--no-state"), rel, "not a regular")


def test_directory_where_net_tcp_should_be(root: Path) -> None:
    make("dir", root / "proc/net/tcp")
    assert_one_line_error(
        run_cli("audit", *root_args(root), "--no-state"), "proc/net/tcp", "is a directory"
    )


@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_default_config_that_is_not_a_regular_file(root: Path, kind: str) -> None:
    """`fix` reads the root's default config too; a dry run must not hang on it."""
    make(kind, root / "etc/portaudit/config.yaml")
    assert_one_line_error(
        run_cli("fix", "--dry-run", *root_args(root)), "etc/portaudit/config.yaml"
    )


def test_deeply_nested_facts_json(tmp_path: Path) -> None:
    snap = tmp_path / "facts.json"
    snap.write_text("[" * 100_000 + "]" * 100_000)
    assert_one_line_error(run_cli("audit", "--facts", str(snap)), str(snap))


def test_huge_integer_in_facts(root: Path, tmp_path: Path) -> None:
    facts = run_cli("facts", *root_args(root)).stdout
    snap = tmp_path / "facts.json"
    snap.write_text(
        facts.replace('"collected_at": ', '"collected_at": ' + "9" * 5000 + ', "x": ', 1)
    )
    assert_one_line_error(run_cli("audit", "--facts", str(snap)), str(snap))


@pytest.mark.parametrize(
    "text",
    [
        "public_ports: [" + "9" * 5000 + "]\n",
        "rules: " + "[" * 20_000 + "]" * 20_000 + "\n",
        "rules: " + "{a: " * 5_000 + "1" + "}" * 5_000 + "\n",
    ],
)
def test_config_beyond_any_parser(root: Path, tmp_path: Path, text: str) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(text)
    assert_one_line_error(run_cli("audit", *root_args(root), "--config", str(cfg)), str(cfg))


def test_rule_file_with_a_huge_integer(root: Path, tmp_path: Path) -> None:
    rule = tmp_path / "r.yaml"
    rule.write_text("id: TST-001\nparams: {x: " + "9" * 5000 + "}\n")
    assert_one_line_error(run_cli("audit", *root_args(root), "--rules", str(rule)), str(rule))


def _in_range_line(root: Path) -> tuple[Path, str]:
    path = root / "proc/net/tcp"
    line = next(ln for ln in path.read_text().splitlines() if " 06 " in ln)
    return path, line


def test_address_that_is_not_hex(root: Path) -> None:
    path, line = _in_range_line(root)
    remote = line.split()[2]
    bad = line.replace(remote, "0100ZZ7F:" + remote.split(":")[1])
    path.write_text(path.read_text().replace(line, bad))
    assert_one_line_error(
        run_cli("audit", *root_args(root), "--no-state"), str(path), "0100ZZ7F", "not hexadecimal"
    )


def test_five_digit_hex_port(root: Path) -> None:
    path, line = _in_range_line(root)
    remote = line.split()[2]
    bad = line.replace(remote, remote.split(":")[0] + ":1B63F")
    path.write_text(path.read_text().replace(line, bad))
    assert_one_line_error(
        run_cli("audit", *root_args(root), "--no-state"), str(path), "malformed socket line"
    )


def test_facts_json_still_round_trips(root: Path, tmp_path: Path) -> None:
    snap = tmp_path / "facts.json"
    snap.write_text(run_cli("facts", *root_args(root)).stdout)
    got = run_cli("audit", "--facts", str(snap), "--format", "json", "--fail-on", "never")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["summary"]


def test_fifo_and_device_in_sysctl_d_are_reported_not_read(root: Path) -> None:
    """systemd-sysctl would read these at boot; portaudit must neither hang nor crash on them."""
    make("fifo", root / "etc/sysctl.d/50-fifo.conf")
    make("zero", root / "etc/sysctl.d/60-zero.conf")
    audit = run_cli("audit", *root_args(root), "--no-state", "--fail-on", "never")
    assert audit.returncode == 0, audit.stderr
    dry = run_cli("fix", "--dry-run", *root_args(root))
    assert dry.returncode == 0, dry.stderr
    assert "internal error" not in dry.stderr
