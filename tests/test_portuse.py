"""Host-wide port use: the tally taken while parsing (fast and slow paths agree), the facts
from /proc tables, and the netlink readers against /proc on a real kernel."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from auditor.facts import netlink as nl
from auditor.facts.model import PortRange, Unavailable
from auditor.facts.portuse import (
    bound_inactive_reason,
    by_state,
    collect_port_use_proc,
    kernel_version,
    port_use_from_scan,
    reserved_in_range,
)
from auditor.facts.tcp import DestinationCounter
from auditor.hostfs import HostRoot
from tests.netns import make_netns, requires_netns
from tests.test_netlink import V4A, V4B, diag_msg, done

TW = nl.TIME_WAIT_STATE
EST = 1


def tally(*chunks: bytes, states: bool = True) -> set[int]:
    """With states: `state << 16 | port` values; without: the ports of the raw fields."""
    ports: set[int] = set()
    fields: list[bytes] = []
    parser = nl.DumpParser(nl.AGG_FORMAT, nl.TCPDIAG_GETSOCK, 7, ports if states else fields)
    for chunk in chunks:
        parser.feed(chunk)
    parser.finish()
    return ports if states else nl.port_set(fields)


def test_tally_is_the_same_on_the_fast_path_and_message_by_message() -> None:
    msgs = [diag_msg(TW, 40000 + i % 50, 3306, V4A, V4B) for i in range(200)]
    msgs += [diag_msg(EST, 40007, 3306, V4A, V4B, extra=b"\0" * 8)]  # another length: _step
    fast = tally(b"".join(msgs) + done())
    slow = tally(*msgs, done())  # one message per buffer never forms a run
    assert fast == slow
    assert fast == {TW << 16 | 40000 + i for i in range(50)} | {EST << 16 | 40007}
    plain = tally(b"".join(msgs) + done(), states=False)
    assert plain == tally(*msgs, done(), states=False) == {40000 + i for i in range(50)} | {40007}


def test_by_state_names_bound_sockets_and_drops_reserved_ports() -> None:
    ports = PortRange(low=100, high=109, reserved=((105, 200),), usable=5)
    assert reserved_in_range(ports) == frozenset(range(105, 110))
    encoded = {TW << 16 | 100, EST << 16 | 100, 7 << 16 | 101, TW << 16 | 107, EST << 16 | 99}
    assert by_state(encoded, ports) == (2, {"BOUND": 1, "ESTABLISHED": 1, "TIME_WAIT": 1})
    # TIME_WAIT ports read apart, as plain ports, join the same union
    assert by_state({EST << 16 | 100}, ports, {100, 102, 107}) == (
        2,
        {"ESTABLISHED": 1, "TIME_WAIT": 2},
    )


def test_kernel_versions_that_can_dump_bound_inactive_sockets() -> None:
    assert kernel_version("6.7.0-14-amd64") == (6, 7)
    assert kernel_version("6.18.44-fc-v669") == (6, 18)
    assert bound_inactive_reason("6.7.0") is None
    reason = bound_inactive_reason("6.1.0-28-amd64")
    assert reason is not None and "Linux 6.7" in reason
    assert bound_inactive_reason("weird") is not None


def _write(proc: Path, name: str, lines: list[str]) -> None:
    (proc / "net").mkdir(parents=True, exist_ok=True)
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode"
    (proc / "net" / name).write_text("\n".join([header, *lines]) + "\n")


def test_proc_tables_give_tcp_by_state_and_udp(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    tcp_line = "   0: 0100007F:{port:04X} 0100007F:1388 {st} 00000000:00000000 00:00000000 00000000     0        0 {ino} 1"
    _write(
        proc,
        "tcp",
        [
            tcp_line.format(port=40000, st="01", ino=11),
            tcp_line.format(port=40000, st="06", ino=0),
            tcp_line.format(port=40001, st="06", ino=0),
            tcp_line.format(port=20000, st="01", ino=12),  # outside the range
        ],
    )
    _write(proc, "tcp6", [])
    udp_line = tcp_line.replace("0100007F:1388", "00000000:0000")
    _write(
        proc,
        "udp",
        [
            tcp_line.format(port=40005, st="07", ino=13),
            udp_line.replace("0100007F", "00000000").format(port=20001, st="07", ino=14),
        ],
    )
    _write(
        proc, "udp6", [udp_line.replace("0100007F", "0" * 32).format(port=20011, st="07", ino=15)]
    )
    host = HostRoot(proc=proc, root=tmp_path)
    use = collect_port_use_proc(host, PortRange(low=40000, high=40099, reserved=(), usable=100))
    assert not isinstance(use, Unavailable)
    assert (use.tcp, use.tcp_by_state, use.udp) == (2, {"ESTABLISHED": 1, "TIME_WAIT": 2}, 1)
    # UDP sockets outside the range are servers; the TCP socket on 20000 is not among them.
    assert [(li.addr, li.port, li.family) for li in use.udp_listeners] == [
        ("0.0.0.0", 20001, 4),
        ("::", 20011, 6),
    ]
    assert isinstance(use.tcp_bound, Unavailable)
    assert "bound but not connected" in use.tcp_bound.reason


@requires_netns
def test_netlink_udp_and_bound_counts_match_the_sockets_made() -> None:
    code = """
import json, socket
from auditor.facts import netlink as nl
from auditor.facts.portuse import collect_port_use_proc
from auditor.facts.model import PortRange
from auditor.hostfs import HostRoot
open("/proc/sys/net/ipv4/ip_local_port_range", "w").write("40000 40099\\n")
keep = []
for fam, addr in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
    for _ in range(4):
        u = socket.socket(fam, socket.SOCK_DGRAM); u.bind((addr, 0)); keep.append(u)
    for _ in range(3):
        t = socket.socket(fam); t.bind((addr, 0)); keep.append(t)
outside = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); outside.bind(("127.0.0.1", 20000))
udp, n = nl.scan_udp_ports(40000, 40099)
servers = sorted(nl.scan_udp_servers(40000, 40099))
bound, bound_n = nl.scan_bound_ports(40000, 40099)
proc = collect_port_use_proc(HostRoot(), PortRange(40000, 40099, (), 100))
made_udp = sorted({k.getsockname()[1] for k in keep if k.type == socket.SOCK_DGRAM})
made_tcp = {k.getsockname()[1] for k in keep if k.type == socket.SOCK_STREAM}
print(json.dumps({"udp": sorted(udp), "n": n, "bound": bound_n, "servers": servers,
                  "proc_servers": [[li.family, li.addr, li.port] for li in proc.udp_listeners],
                  "proc_udp": proc.udp, "tcp_ports": sorted(bound),
                  "made_udp": made_udp, "made_tcp": sorted(made_tcp)}))
"""
    with make_netns("pa-pu") as ns:
        got = json.loads(ns.python("-c", code).stdout)
    # v4 and v6 sockets on different addresses may share a port number
    assert got["n"] == 8
    assert got["udp"] == got["made_udp"] and got["proc_udp"] == len(got["made_udp"])
    assert got["bound"] == 6 and got["tcp_ports"] == got["made_tcp"]
    assert got["servers"] == got["proc_servers"] == [[4, "127.0.0.1", 20000]]


def test_bound_sockets_are_read_only_when_sockstat_says_they_could_matter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def bound(low: int, high: int) -> tuple[set[int], int]:
        calls.append(low)
        return {40001, 40003}, 2

    monkeypatch.setattr(nl, "scan_udp_ports", lambda low, high: (set(), 0))
    monkeypatch.setattr(nl, "scan_udp_servers", lambda low, high: set())
    monkeypatch.setattr(nl, "scan_bound_ports", bound)
    ports = PortRange(low=40000, high=40099, reserved=(), usable=100)
    scan = nl.NetlinkScan(
        DestinationCounter(), None, {EST << 16 | 40000}, [(40002).to_bytes(2, "big")]
    )
    proc = tmp_path / "proc"
    (proc / "net").mkdir(parents=True)
    sockstat = proc / "net" / "sockstat"
    host = HostRoot(proc=proc, root=tmp_path)

    sockstat.write_text("TCP: inuse 10 orphan 0 tw 1 alloc 12 mem 0\n")  # 2 unhashed at most
    use = port_use_from_scan(host, scan, ports, "6.18.0")
    assert calls == [] and use.tcp == 2
    assert isinstance(use.tcp_bound, Unavailable) and "at most 2" in use.tcp_bound.reason

    sockstat.write_text("TCP: inuse 10 orphan 0 tw 1 alloc 70 mem 0\n")  # 60 could be bound
    use = port_use_from_scan(host, scan, ports, "6.18.0")
    assert calls == [40000]
    assert (use.tcp, use.tcp_bound, use.tcp_by_state["BOUND"]) == (4, 2, 2)

    use = port_use_from_scan(host, scan, ports, "6.1.0")  # cannot dump them: says why
    assert isinstance(use.tcp_bound, Unavailable) and "Linux 6.7" in use.tcp_bound.reason


HOLDERS = r"""
import os, socket, sys
held = []
for i in range(70):  # bound, never connected: each holds a port of the range
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    held.append(s)
for i in range(60):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", 0))
    held.append(u)
print("ready", os.getpid(), flush=True)
sys.stdin.read()
"""


@requires_netns
@pytest.mark.netns
def test_the_processes_holding_most_ports_are_named() -> None:
    """Above half the range in use, the facts name the process holding the ports, per
    protocol, with how many sockets it holds (one capped walk of /proc/*/fd)."""
    from tests.netns import workload

    with make_netns("pa-holders") as ns:
        ns.sysctl_write("net.ipv4.ip_local_port_range", "40000 40099")
        with workload(ns, HOLDERS) as line:
            got = ns.portaudit("facts")
    pid = int(line.split()[1])
    assert got.returncode == 0, got.stderr
    use = json.loads(got.stdout)["port_use"]
    assert use["udp"] == 60
    holders = {(h["protocol"], h["pid"]): h["count"] for h in use["holders"]}
    assert holders[("udp", pid)] == 60
    if isinstance(use["tcp_bound"], int):  # Linux 6.7+ reports bound-only TCP sockets
        assert holders[("tcp", pid)] == 70
    assert all(h["command"].startswith("python") for h in use["holders"])
