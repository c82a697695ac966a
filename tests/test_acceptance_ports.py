"""Acceptance: host-wide port exhaustion judged against the running kernel, in test namespaces.

bind() with port 0 cannot take over a TIME_WAIT socket's port the way connect() can with
tcp_tw_reuse, so a client that binds before connecting to one destination and closes first
runs out of ports (EADDRINUSE) while that destination's TIME_WAIT sockets are all reusable for
a plain connect(): EPH-001 is rightly quiet, and EPH-002 must say so instead of "No findings".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.netns import Netns, make_netns, requires_netns

SERVER_PORT = 5000  # outside the range, so the listener takes none of its ports

BIND_CONNECT_CLOSE = """
import errno, json, socket
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", %d))
srv.listen(4096)
ok, err = 0, None
for _ in range(1000):
    c = socket.socket()
    try:
        c.bind(("127.0.0.1", 0))
        c.connect(srv.getsockname())
    except OSError as exc:
        err = exc.errno
        c.close()
        break
    s, _ = srv.accept()
    c.close()  # the client closes first: its port stays bound in TIME_WAIT
    s.close()
    ok += 1
print(json.dumps({"ok": ok, "eaddrinuse": err == errno.EADDRINUSE}))
"""

BIND_ONCE = """
import errno, json, socket
c = socket.socket()
try:
    c.bind(("127.0.0.1", 0))
    print(json.dumps({"eaddrinuse": False}))
except OSError as exc:
    print(json.dumps({"eaddrinuse": exc.errno == errno.EADDRINUSE}))
"""


def _audit(ns: Netns) -> dict[str, object]:
    run = ns.portaudit("audit", "--format", "json", "--no-state", "--only", "EPH-001,EPH-002")
    assert run.returncode in (0, 1), run.stderr
    report: dict[str, object] = json.loads(run.stdout)
    return report


@requires_netns
def test_bind_before_connect_to_one_destination_with_reusable_time_wait_is_eph002() -> None:
    with make_netns("pa-acc-bind") as ns:
        ns.sysctl_write("net.ipv4.ip_local_port_range", "40000 40199")
        ns.sysctl_write("net.ipv4.tcp_tw_reuse", "1")
        ns.sysctl_write("net.ipv4.tcp_timestamps", "1")
        if os.path.exists("/proc/sys/net/ipv4/tcp_tw_reuse_delay"):
            ns.sysctl_write("net.ipv4.tcp_tw_reuse_delay", "1")
        filled = json.loads(ns.python("-c", BIND_CONNECT_CLOSE % SERVER_PORT).stdout)
        assert filled["eaddrinuse"], filled
        time.sleep(1.2)  # past any tcp_tw_reuse_delay: connect() may now reuse every port

        report = _audit(ns)
        # The kernel is the judge: bind(0) still fails although connect() would succeed.
        again = json.loads(ns.python("-c", BIND_ONCE).stdout)
        assert again["eaddrinuse"], again
        findings = report["findings"]
        assert isinstance(findings, list)
        got = {(f["id"], f["severity"], f["subject"]) for f in findings}
        assert ("EPH-002", "crit", "TCP") in got, report
        assert not [f for f in findings if f["id"] == "EPH-001"], report


@requires_netns
def test_tw_reuse_2_does_not_free_ports_to_a_local_non_loopback_address() -> None:
    """tcp_tw_reuse = 2 reuses TIME_WAIT only for loopback addresses; a host's own veth
    address routed over lo is not one, so connect() still fails and EPH-001 stays crit."""
    with make_netns("pa-acc-rw2") as ns:
        ns.run(["ip", "link", "add", "acc0", "type", "veth", "peer", "name", "acc1"])
        ns.run(["ip", "link", "set", "acc0", "up"])
        ns.run(["ip", "addr", "add", "10.9.0.1/24", "dev", "acc0"])
        ns.sysctl_write("net.ipv4.ip_local_port_range", "40000 40099")
        ns.sysctl_write("net.ipv4.tcp_tw_reuse", "2")
        ns.sysctl_write("net.ipv4.tcp_timestamps", "1")
        if os.path.exists("/proc/sys/net/ipv4/tcp_tw_reuse_delay"):
            ns.sysctl_write("net.ipv4.tcp_tw_reuse_delay", "1")
        exhaust = ["-m", "tests.workloads.exhaust", "--host", "10.9.0.1"]
        first = json.loads(ns.python(*exhaust, "--port", str(SERVER_PORT), "--max", "300").stdout)
        assert first["eaddrnotavail"], first
        time.sleep(1.2)  # past any tcp_tw_reuse_delay
        again = json.loads(ns.python(*exhaust, "--port", str(SERVER_PORT), "--max", "3").stdout)
        assert again["eaddrnotavail"] and again["connected"] == 0, again

        findings = _audit(ns)["findings"]
        assert isinstance(findings, list)
        eph = [f for f in findings if f["id"] == "EPH-001"]
        assert [f["severity"] for f in eph] == ["crit"], findings
        assert eph[0]["evidence"]["time_wait_reusable"] == 0, eph[0]["evidence"]


LISTEN_27017 = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 27017))
s.listen(16)
print("ready", flush=True)
sys.stdin.read()
"""


@requires_netns
def test_eph002_widening_reserves_a_listener_inside_the_new_range(tmp_path: Path) -> None:
    """EPH-002's fix widens the range like EPH-001's; it must reserve, in the same change
    set, the port a server listens on inside the new range (27017), or the next busy client
    can take it and the server cannot restart."""
    with make_netns("pa-acc-w2") as ns:
        ns.sysctl_write("net.ipv4.ip_local_port_range", "40000 40199")
        ns.sysctl_write("net.ipv4.tcp_tw_reuse", "1")
        ns.sysctl_write("net.ipv4.tcp_timestamps", "1")
        if os.path.exists("/proc/sys/net/ipv4/tcp_tw_reuse_delay"):
            ns.sysctl_write("net.ipv4.tcp_tw_reuse_delay", "1")
        server = subprocess.Popen(
            ["ip", "netns", "exec", ns.name, sys.executable, "-c", LISTEN_27017],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None and server.stdout.readline().strip() == "ready"
            filled = json.loads(ns.python("-c", BIND_CONNECT_CLOSE % SERVER_PORT).stdout)
            assert filled["eaddrinuse"], filled
            time.sleep(1.2)  # past any tcp_tw_reuse_delay: EPH-001 quiet, EPH-002 crit
            run = ns.portaudit(
                "fix", "--yes", "--include-unsafe", "--for-host", "--root", str(tmp_path)
            )
            assert run.returncode == 0, run.stdout + run.stderr
            assert ns.sysctl_read("net.ipv4.ip_local_port_range") == "10000 65535"
            reserved = ns.sysctl_read("net.ipv4.ip_local_reserved_ports")
            assert "27017" in reserved.split(","), (reserved, run.stdout)
            drop_in = (tmp_path / "etc/sysctl.d/99-zz-portaudit.conf").read_text()
            assert "net.ipv4.ip_local_reserved_ports = 27017" in drop_in, drop_in
        finally:
            assert server.stdin is not None
            server.stdin.close()
            server.wait(timeout=10)
