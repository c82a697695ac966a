"""Bad host content and bad flags: exit 2 with one line naming file and line, never a traceback."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest

from auditor.atomicfile import NotRegularFile, write_atomic
from tests.helpers import assert_one_line_error, copy_root, root_args, run_cli


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return copy_root("busy-client", tmp_path)


def test_fixture_audits_cleanly_before_breaking_it(root: Path) -> None:
    result = run_cli("audit", *root_args(root), "--fail-on", "never")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("rel", "mutate", "line", "words"),
    [
        (
            "proc/net/tcp",
            lambda t: t.replace(" 06 ", " ZZ ", 1),
            "first-tw",
            "malformed socket line",
        ),
        ("proc/net/tcp", lambda t: "garbage\n" + t, 1, "missing the '  sl  local_address"),
        (
            "proc/net/tcp6",
            lambda t: t + "   9: 0000:1F90 00000000:0000 0A\n",
            2,
            "malformed socket line",
        ),
        ("proc/net/sockstat", lambda t: t.replace("tw ", "tw x", 1), 2, "not an integer"),
        (
            "proc/net/netstat",
            lambda t: t.rsplit("\n", 2)[0] + "\n",
            5,
            "header line without a value line",
        ),
        (
            "proc/net/snmp",
            lambda t: t.replace("Tcp: 1", "Tcp: 1 2 3 4 5 6 7", 1),
            None,
            "values for",
        ),
        ("proc/sys/net/ipv4/ip_local_port_range", lambda t: "40000\n", 1, "expected two integers"),
        (
            "proc/sys/net/ipv4/ip_local_port_range",
            lambda t: "50000 40000\n",
            1,
            "impossible port range",
        ),
        (
            "proc/sys/net/ipv4/ip_local_reserved_ports",
            lambda t: "80,x\n",
            None,
            "bad reserved port entry",
        ),
        ("proc/sys/fs/file-nr", lambda t: "1 2\n", 1, "expected three integers"),
    ],
)
def test_malformed_proc_content(root: Path, rel: str, mutate, line, words: str) -> None:  # type: ignore[no-untyped-def]
    path = root / rel
    if line == "first-tw":
        line = next(n for n, ln in enumerate(path.read_text().splitlines(), 1) if " 06 " in ln)
    path.write_text(mutate(path.read_text()))
    result = run_cli("audit", *root_args(root))
    where = f"{path}:{line}: " if line is not None else f"{path}"
    if line is None and rel.endswith("snmp"):
        where = f"{path}:"
    assert_one_line_error(result, where, words)


def test_absent_proc_files_are_unavailable_not_errors(root: Path) -> None:
    (root / "proc/net/netstat").unlink()
    (root / "proc/net/snmp").unlink()
    (root / "proc/net/tcp").unlink()
    (root / "proc/net/tcp6").unlink()
    result = run_cli("audit", *root_args(root), "--format", "json", "--fail-on", "never")
    assert result.returncode == 0, result.stderr
    skipped = {s["id"]: s["reason"] for s in json.loads(result.stdout)["skipped"]}
    assert "EPH-001" in skipped and "not present" in skipped["EPH-001"]


def test_unreadable_sysctl_is_unavailable(root: Path) -> None:
    (root / "proc/sys/net/ipv4/tcp_timestamps").unlink()
    (root / "proc/sys/net/ipv4/tcp_timestamps").mkdir()
    result = run_cli("facts", *root_args(root))
    assert result.returncode == 0, result.stderr
    missing = json.loads(result.stdout)["sysctl_missing"]
    assert "is a directory" in missing["net.ipv4.tcp_timestamps"]


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("{not json", "not JSON"),
        ('{"schema": 99}', "$.schema: expected 1"),
        ("[]", "expected an object"),
    ],
)
def test_bad_facts_snapshot(tmp_path: Path, content: str, words: str) -> None:
    snap = tmp_path / "facts.json"
    snap.write_text(content)
    assert_one_line_error(run_cli("audit", "--facts", str(snap)), str(snap), words)


def test_snapshot_with_a_wrong_field_type_names_the_field(root: Path, tmp_path: Path) -> None:
    facts = json.loads(run_cli("facts", *root_args(root)).stdout)
    facts["ports"]["usable"] = "many"
    snap = tmp_path / "facts.json"
    snap.write_text(json.dumps(facts))
    assert_one_line_error(
        run_cli("audit", "--facts", str(snap)), "$.ports.usable: expected an integer"
    )


def test_missing_facts_file(tmp_path: Path) -> None:
    assert_one_line_error(run_cli("audit", "--facts", str(tmp_path / "nope.json")), "no such file")


@pytest.mark.parametrize(
    ("config", "line", "words"),
    [
        ("rules:\n  EPH-001:\n    params: {warn_ratio: high}\n", 2, "expected a number"),
        ("rules:\n  EPH-001:\n    params: {warn_ration: 0.5}\n", 2, "unknown param 'warn_ration'"),
        ("rules:\n  NOPE-001: {skip: true}\n", 2, "unknown rule id 'NOPE-001'"),
        ("rules:\n  EPH-001: {skip: maybe}\n", 2, "expected true or false"),
        ("public_ports: [80, 70000]\n", 1, "70000 is not a port"),
        ("colour: red\n", 1, "unknown key 'colour'"),
        ("rules: [1, 2\n", 2, ""),
    ],
)
def test_bad_config(root: Path, config: str, line: int, words: str) -> None:
    cfg = root / "etc/portaudit/config.yaml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(config)
    assert_one_line_error(run_cli("audit", *root_args(root)), f"{cfg}:{line}: ", words)


def test_bad_flags(root: Path) -> None:
    assert_one_line_error(
        run_cli("audit", *root_args(root), "--only", "EPH-999"), "unknown rule id 'EPH-999'"
    )
    assert_one_line_error(run_cli("audit", "--proc", str(root / "nope")), "not a directory")
    assert_one_line_error(run_cli("rules", "show", "XYZ-001"), "unknown rule id")
    assert run_cli("audit", "--format", "xml").returncode == 2


def test_unwritable_output_is_input_error(root: Path) -> None:
    out = root / "no-such-dir" / "out.json"
    assert_one_line_error(run_cli("audit", *root_args(root), "-o", str(out)), "cannot write")


def test_output_into_a_fifo_writes_through_it(root: Path, tmp_path: Path) -> None:
    """`-o` on a FIFO (or /dev/stdout) writes into it, as a shell redirection would: a rename
    over it would replace the FIFO with a regular file."""
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    run = run_cli(
        "audit", *root_args(root), "--format", "json", "--fail-on", "never", "-o", str(fifo)
    )
    reader.join(timeout=30)
    assert run.returncode == 0, run.stderr
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert json.loads(got[0])["summary"]


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a character device needs root")
def test_output_onto_a_device_keeps_the_device(root: Path, tmp_path: Path) -> None:
    """`-o` on a character device (here a private copy of /dev/null) must leave it a device."""
    null = tmp_path / "null"
    os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    run = run_cli("audit", *root_args(root), "--fail-on", "never", "-o", str(null))
    assert run.returncode == 0, run.stderr
    assert stat.S_ISCHR(null.lstat().st_mode)


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a character device needs root")
def test_atomic_writes_never_replace_anything_but_a_regular_file(tmp_path: Path) -> None:
    null = tmp_path / "null"
    os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    link = tmp_path / "link.conf"
    link.symlink_to(null)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (null, link, fifo, tmp_path):
        with pytest.raises(NotRegularFile, match="not a regular file"):
            write_atomic(path, b"x = 1\n")
    assert stat.S_ISCHR(null.lstat().st_mode) and link.is_symlink()
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert not [p for p in tmp_path.iterdir() if "portaudit-tmp" in p.name]
