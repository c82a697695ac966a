"""A sysctl.d value with an inline comment, `net.ipv4.tcp_tw_reuse = 1 # fast reuse`:
systemd-sysctl treats only lines *starting* with `#` or `;` as comments and writes the whole
rest of the line after `=`, so every view of the next boot (`portaudit boot`, the facts'
persisted settings, the audit) shows that whole string, and none shows `1` as if the file
said `1`. What the kernel then does with the string is tests/test_persisted_systemd.py's."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import copy_root, root_args, run_cli

REUSE = "net.ipv4.tcp_tw_reuse"
RANGE = "net.ipv4.ip_local_port_range"
CONF = "/etc/sysctl.d/50-tuning.conf"
LINES = {REUSE: "1 # fast reuse", RANGE: "20000 40000 # wide"}


def tree(tmp_path: Path) -> Path:
    """The minimal fixture with tcp_tw_reuse 1 at runtime and the commented lines in a file."""
    root = copy_root("minimal", tmp_path)
    (root / "proc/sys/net/ipv4/tcp_tw_reuse").write_text("1\n")
    conf = root / CONF.lstrip("/")
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text("".join(f"{key} = {value}\n" for key, value in LINES.items()))
    return root


def test_boot_shows_the_whole_string_systemd_writes(tmp_path: Path) -> None:
    root = tree(tmp_path)
    got = run_cli("boot", "-f", "json", *root_args(root), REUSE, RANGE)
    assert got.returncode == 0, got.stderr
    rows = {row["key"]: row for row in json.loads(got.stdout)["keys"]}
    for line, (key, value) in enumerate(LINES.items(), 1):
        assert rows[key]["boot"] == value, rows[key]
        assert rows[key]["where"] == f"{CONF}:{line}"
    # the running 1 is not taken for the boot value: the file sets the whole string, which
    # leaves a one-integer key at 1 (the kernel reads the number and ignores the rest), so
    # the running value does not differ from what boot leaves
    assert rows[REUSE]["runtime"] == "1" and rows[REUSE]["runtime_differs"] is False

    table = run_cli("boot", *root_args(root), REUSE)
    assert table.returncode == 0, table.stderr
    row = next(line for line in table.stdout.splitlines() if line.startswith(REUSE))
    assert row.split()[1:5] == ["1", "#", "fast", "reuse"], row


def test_facts_and_audit_keep_the_comment_in_the_boot_value(tmp_path: Path) -> None:
    root = tree(tmp_path)
    facts = run_cli("facts", *root_args(root))
    assert facts.returncode == 0, facts.stderr
    persisted = json.loads(facts.stdout)["persisted"]
    for key, value in LINES.items():
        assert persisted["effective"][key]["value"] == value
    problems = {(a["key"], a["value"], a["problem"]) for a in persisted["assignments"]}
    assert {(k, v, "inline-comment") for k, v in LINES.items()} <= problems

    audit = run_cli("audit", "-f", "json", "--fail-on", "never", "--no-state", *root_args(root))
    assert audit.returncode == 0, audit.stderr
    findings = json.loads(audit.stdout)["findings"]
    cfg5 = {f["evidence"]["key"]: f["evidence"]["text"] for f in findings if f["id"] == "CFG-005"}
    assert cfg5 == {key: f"{key} = {value}" for key, value in LINES.items()}
    # no finding reports the boot value as the bare number
    for f in findings:
        boot = f["evidence"].get("boot")
        assert boot is None or boot in LINES.values(), f
        assert "boot sets 1 " not in f["title"], f
