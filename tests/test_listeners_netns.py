"""Listener facts on a real kernel, in a namespace the test makes: both socket readers agree
with a v6-only listener in the mix, a server that never accept()s fills its queue (LSN-002),
and a server at its RLIMIT_NOFILE, or above a soft limit lowered after it opened its
descriptors, is named (FD-003)."""

from __future__ import annotations

import json

import pytest

from tests.netns import COMPARE_READERS, Netns, make_netns, requires_netns, workload

pytestmark = [requires_netns, pytest.mark.netns]

V6ONLY_MIX = r"""
import socket, sys
held = []
def server(family, addr, port, v6only=None, backlog=16):
    s = socket.socket(family, socket.SOCK_STREAM)
    if v6only is not None:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
    s.bind((addr, port)); s.listen(backlog); held.append(s); return s
s4 = server(socket.AF_INET, "127.0.0.1", 5000)
v6 = server(socket.AF_INET6, "::", 30010, v6only=1)
# an IPv4 client bound explicitly to the port the v6-only listener holds: IPv4 may take it
c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
c.bind(("127.0.0.1", 30010)); c.connect(("127.0.0.1", 5000)); held.append(c)
held.append(s4.accept()[0])
# two ordinary clients of the same server, and one waiting connection on the v6 listener
for _ in range(2):
    d = socket.create_connection(("127.0.0.1", 5000)); held.append(d); held.append(s4.accept()[0])
held.append(socket.create_connection(("::1", 30010)))
print("ready", flush=True)
sys.stdin.read()
"""


NEVER_ACCEPTS = r"""
import socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 8080)); s.listen(1)
ok = socket.socket(); ok.bind(("127.0.0.1", 8081)); ok.listen(64)
clients = []
for port, n in ((8080, 4), (8081, 1)):
    for _ in range(n):
        c = socket.socket(); c.setblocking(False); c.connect_ex(("127.0.0.1", port)); clients.append(c)
# the kernel completes at most backlog + 1 handshakes; wait until the queue is there
import time
for _ in range(200):
    line = [l for l in open("/proc/net/tcp") if ":1F90 " in l.split()[1] and l.split()[3] == "0A"]
    if line and int(line[0].split()[4].split(":")[1], 16) >= 2:
        break
    time.sleep(0.01)
print("ready", flush=True)
sys.stdin.read()
"""

OUT_OF_FDS = r"""
import os, resource, socket, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (32, 32))
s = socket.socket(); s.bind(("127.0.0.1", 8090)); s.listen(8)
held = []
try:
    while True:
        held.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass
print("ready", os.getpid(), flush=True)
sys.stdin.read()
"""

LOWERED_BELOW_HELD = r"""
import errno, os, resource, socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 8092)); s.listen(8)
held = [os.open("/dev/null", os.O_RDONLY) for _ in range(6)]
if sys.argv[1] == "hole":  # one number below the limit freed: a new descriptor still fits
    os.close(held.pop(0))
count = len(os.listdir("/proc/self/fd")) - 1  # less the descriptor listdir itself had open
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
limit = max(held) - 1
resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
try:
    os.close(os.open("/dev/null", os.O_RDONLY))
    refused = "none"
except OSError as exc:
    refused = errno.errorcode[exc.errno]
print("ready", count, limit, refused, os.getpid(), flush=True)
sys.stdin.read()
"""

ROOMY = r"""
import os, socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 8091)); s.listen(8)
print("ready", os.getpid(), flush=True)
sys.stdin.read()
"""


def _audit(ns: Netns, only: str) -> dict[str, object]:
    got = ns.portaudit("audit", "--only", only, "--format", "json", "--fail-on", "never")
    assert got.returncode == 0, got.stderr
    data: dict[str, object] = json.loads(got.stdout)
    return data


def test_both_readers_agree_with_a_v6only_listener_and_a_v4_client_on_its_port() -> None:
    with make_netns() as ns:
        ns.sysctl_write("net.ipv4.ip_local_port_range", "20000 40000")
        with workload(ns, V6ONLY_MIX):
            got = json.loads(ns.python("-c", COMPARE_READERS).stdout)
    nlt, proc = got["netlink"], got["proc"]
    assert (nlt["source"], proc["source"]) == ("netlink", "proc")

    def dests(t: dict[str, list[dict[str, object]]]) -> dict[object, object]:
        return {(d["src"], d["dst"], d["dport"]): d["by_state"] for d in t["destinations"]}

    assert dests(nlt) == dests(proc)
    assert nlt["total_by_state"] == proc["total_by_state"]
    # the ordinary clients are destinations; the IPv4 socket on 30010 is not one
    assert dests(nlt) == {
        ("127.0.0.1", "127.0.0.1", 5000): {"ESTABLISHED": 2},
        ("::1", "::1", 30010): {"ESTABLISHED": 1},
    }
    by_port = {li["port"]: li for li in nlt["listeners"]}
    proc_port = {li["port"]: li for li in proc["listeners"]}
    assert (by_port[30010]["v6only"], by_port[30010]["v6only_source"]) == (True, "sock_diag")
    # /proc cannot see the flag: the estimate from bindv6only (0 here) is marked as such
    assert proc_port[30010]["v6only"] is False
    assert proc_port[30010]["v6only_source"] == "estimate: net.ipv6.bindv6only"
    assert by_port[5000]["v6only"] is None
    # the accept queue agrees; the backlog only sock_diag shows
    assert by_port[30010]["queued"] == proc_port[30010]["queued"] == 1
    assert (by_port[30010]["backlog"], proc_port[30010]["backlog"]) == (16, None)


def test_a_server_that_never_accepts_is_named_by_lsn002() -> None:
    with make_netns() as ns:
        with workload(ns, NEVER_ACCEPTS):
            report = _audit(ns, "LSN-002")
    findings = report["findings"]
    assert isinstance(findings, list)
    assert [f["subject"] for f in findings] == ["127.0.0.1:8080"], findings
    ev = findings[0]["evidence"]
    assert ev["backlog"] == 1 and ev["queued"] >= 1
    assert "held by pid" in findings[0]["title"], findings[0]


def test_a_server_at_its_descriptor_limit_is_named_by_fd003() -> None:
    with make_netns() as ns:
        with workload(ns, OUT_OF_FDS) as out, workload(ns, ROOMY) as roomy_line:
            report = _audit(ns, "FD-003")
    findings = report["findings"]
    assert isinstance(findings, list)
    assert [(f["subject"], f["severity"]) for f in findings] == [("127.0.0.1:8090", "crit")]
    ev = findings[0]["evidence"]
    pid, roomy = out.split()[-1], roomy_line.split()[-1]
    assert ev["pid"] == int(pid) and ev["fd_limit"] == 32 and ev["fds"] == 32
    assert int(roomy) not in [f["evidence"]["pid"] for f in findings]


@pytest.mark.parametrize("case", ["full", "hole"])
def test_a_server_above_a_lowered_soft_limit_is_told_what_accept_does(case: str) -> None:
    """More descriptors open than a lowered soft limit: accept() fails now exactly when no
    number below the limit is free, which the process's own next open() shows."""
    with make_netns() as ns:
        with workload(ns, LOWERED_BELOW_HELD, case) as line:
            report = _audit(ns, "FD-003")
    _ready, count, limit, refused, pid = line.split()
    assert int(count) > int(limit)
    assert refused == ("EMFILE" if case == "full" else "none")  # what the kernel does
    findings = report["findings"]
    assert isinstance(findings, list)
    # full: every number below the limit taken; hole: all but one (7 of 8: warn)
    level = "crit" if case == "full" else "warn"
    assert [(f["subject"], f["severity"]) for f in findings] == [("127.0.0.1:8092", level)]
    ev, message = findings[0]["evidence"], findings[0]["title"]
    assert (ev["pid"], ev["fds"], ev["fd_limit"]) == (int(pid), int(count), int(limit))
    assert ev["fds_free"] == (0 if case == "full" else 1)
    assert f"has {count} descriptors open against a soft limit of {limit}" in message, message
    if case == "full":
        assert "none is free, so accept() fails with EMFILE now" in message, message
    else:
        assert "accept() fails with EMFILE once none is free" in message, message
        assert "EMFILE now" not in message, message
    assert f"{count} of {limit}" not in message, message
