"""Who is doing it: a process holding connections to an exhausted destination is named."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from auditor.facts.model import Destination, Owner, PortRange, SocketTable
from auditor.facts.owners import find_owners, pressured
from auditor.hostfs import HostRoot
from auditor.progress import ProgressBar
from tests.netns import REPO, make_netns, requires_netns

RULE = """\
id: TST-902
name: test-owners
title: "t"
rationale: test
example: "x"
for_each: destinations
requires: [ports, sockets]
let:
  ratio: dest.used / ports.usable
severity:
  crit: ratio > 0.9
subject: "{dest.src} -> {dest.dst}:{dest.dport}"
message: "{dest.owners}"
evidence:
  owners: dest.owners
fix:
  sysctl: {}
  advice: none
  applicability: display-only
sources: [tcp(7)]
"""

INSIDE = r"""
import json, sys
from pathlib import Path
from auditor.config import Config
from auditor.engine.evaluate import evaluate
from auditor.engine.load import load_rules
from auditor.facts.collect import collect_facts
from auditor.facts.owners import find_owners, pressured, proc_live_inodes
from auditor.hostfs import HostRoot
host = HostRoot()
facts = collect_facts(host, owners_above=0.7)
report = evaluate(load_rules([Path(sys.argv[1])], builtin=False), facts, Config())
hot = pressured(facts.sockets, facts.ports, 0.7)
via_proc = find_owners(host, proc_live_inodes(host, hot, facts.ports))
print(json.dumps({
    "source": facts.sockets.source,
    "owners": [[o.pid, o.command, o.count, o.dst, o.dport] for o in facts.sockets.owners],
    "owners_proc": [[o.pid, o.command, o.count] for o in via_proc],
    "findings": [[f.subject, f.evidence["owners"]] for f in report.findings],
}))
"""


@requires_netns
@pytest.mark.netns
def test_process_holding_connections_is_named(tmp_path: Path) -> None:
    rule = tmp_path / "tst.yaml"
    rule.write_text(RULE)
    with make_netns() as ns:
        ns.sysctl_write("net.ipv4.ip_local_port_range", "40000 40099")
        ns.sysctl_write("net.ipv4.tcp_tw_reuse", "0")
        holder = subprocess.Popen(
            # --hold counts sockets, both ends: 60 sockets are 30 client connections
            [
                *("ip", "netns", "exec", ns.name, sys.executable, "-m", "tests.workloads.exhaust"),
                *("--port", "5000", "--max", "500", "--hold", "60", "--hold-seconds", "60"),
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        try:
            assert holder.stdout is not None
            started = json.loads(holder.stdout.readline())
            assert started["eaddrnotavail"], started
            got = json.loads(ns.python("-c", INSIDE, str(rule)).stdout)
        finally:
            holder.kill()
            holder.wait(timeout=10)
    assert got["source"] == "netlink"
    # `ip netns exec` execs python in place, so the holder's pid is the Popen's
    assert got["owners"] == [[holder.pid, "python3", 30, "127.0.0.1", 5000]] or got["owners"] == [
        [holder.pid, Path(sys.executable).name[:15], 30, "127.0.0.1", 5000]
    ]
    assert [o[::2] for o in got["owners_proc"]] == [[holder.pid, 30]]
    (subject, owners_text), *rest = got["findings"]
    assert not rest
    assert subject == "127.0.0.1 -> 127.0.0.1:5000"
    assert f"(pid {holder.pid}) holds 30 connections" in owners_text


def test_pressured_uses_the_ratio_it_is_given() -> None:
    ports = PortRange(low=1000, high=1099, reserved=(), usable=100)
    table = SocketTable(
        source="proc",
        total_by_state={},
        destinations=(
            Destination("10.0.0.2", "10.0.0.5", 80, {"TIME_WAIT": 71}),
            Destination("10.0.0.2", "10.0.0.6", 80, {"TIME_WAIT": 70}),
        ),
        listeners=(),
    )
    assert pressured(table, ports, 0.7) == [("10.0.0.2", "10.0.0.5", 80)]
    assert pressured(table, ports, 0.5) == [
        ("10.0.0.2", "10.0.0.5", 80),
        ("10.0.0.2", "10.0.0.6", 80),
    ]


def test_find_owners_over_a_fixture_proc(tmp_path: Path) -> None:
    """A fake /proc: fd symlinks to socket:[inode] as the kernel shows them."""
    dest = ("10.0.0.2", "10.0.0.5", 3306)
    for pid, comm, inodes in ((812, "php-fpm", [11, 12, 13]), (900, "cron", [99]), (5, "x", [])):
        fd = tmp_path / str(pid) / "fd"
        fd.mkdir(parents=True)
        (tmp_path / str(pid) / "comm").write_text(comm + "\n")
        for i, ino in enumerate(inodes):
            (fd / str(i + 3)).symlink_to(f"socket:[{ino}]")
        (fd / "0").symlink_to("/dev/null")
    (tmp_path / "self").mkdir()
    owners = find_owners(HostRoot(proc=tmp_path), {dest: {11, 12, 13, 14}})
    assert owners == (Owner(*dest, pid=812, command="php-fpm", count=3),)
    assert find_owners(HostRoot(proc=tmp_path), {dest: set()}) == ()


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_terminal_and_after_the_delay() -> None:
    pipe = io.StringIO()
    bar = ProgressBar("reading sockets", 100, stream=pipe, delay=0.0, interval=0.0)
    bar.update(50)
    bar.close()
    assert pipe.getvalue() == ""
    tty = FakeTty()
    late = ProgressBar("reading sockets", 100, stream=tty, delay=3600.0)
    late.update(50)
    assert tty.getvalue() == ""
    now = ProgressBar("reading sockets", 100, stream=tty, delay=0.0, interval=0.0)
    now.update(50)
    assert "50%" in tty.getvalue() and "50/~100" in tty.getvalue()
    now.close()
    assert tty.getvalue().endswith("\r\x1b[K")
    assert ProgressBar("x", None, stream=tty).render(1234) == "x: 1,234 sockets"
