"""Verdicts checked against the running kernel, in namespaces the tests make: connect() is the
judge of whether ports are exhausted, and the audit must say what connect() says."""

from __future__ import annotations

import json
import time

from tests.netns import make_netns, requires_netns

SERVER_PORT = 5000  # outside the test ranges, so the listener takes none of their ports


@requires_netns
def test_whole_range_reserved_is_crit_without_any_socket() -> None:
    with make_netns("pa-rsv") as ns:
        ns.sysctl_write("net.ipv4.ip_local_port_range", "40000 40099")
        ns.sysctl_write("net.ipv4.ip_local_reserved_ports", "40000-40099")
        run = ns.python("-m", "tests.workloads.exhaust", "--port", str(SERVER_PORT), "--max", "5")
        workload = json.loads(run.stdout)
        assert workload["eaddrnotavail"] and workload["connected"] == 0, workload

        table = ns.portaudit("audit")
        assert table.returncode == 1, table.stderr
        assert "No findings" not in table.stdout
        assert "EPH-003" in table.stdout
        report = json.loads(ns.portaudit("audit", "--format", "json").stdout)
        eph = [f for f in report["findings"] if f["id"] == "EPH-003"]
        assert [f["severity"] for f in eph] == ["crit"]
        assert eph[0]["evidence"]["usable"] == 0


@requires_netns
def test_tw_reuse_that_ended_the_outage_ends_the_crit() -> None:
    with make_netns("pa-reuse") as ns:
        ns.sysctl_write("net.ipv4.ip_local_port_range", "40000 40099")
        ns.sysctl_write("net.ipv4.tcp_tw_reuse", "0")
        ns.sysctl_write("net.ipv4.tcp_timestamps", "1")
        exhaust = ["-m", "tests.workloads.exhaust", "--port", str(SERVER_PORT), "--max", "300"]
        first = json.loads(ns.python(*exhaust).stdout)
        assert first["eaddrnotavail"] and first["connected"] == 100, first
        report = json.loads(ns.portaudit("audit", "--format", "json").stdout)
        before = [f for f in report["findings"] if f["id"] == "EPH-001"]
        assert [f["severity"] for f in before] == ["crit"], before

        # The fix: reuse on, with the shortest delay this kernel allows where it has the key.
        ns.sysctl_write("net.ipv4.tcp_tw_reuse", "1")
        has_delay = ns.run(["test", "-e", "/proc/sys/net/ipv4/tcp_tw_reuse_delay"], check=False)
        if has_delay.returncode == 0:
            ns.sysctl_write("net.ipv4.tcp_tw_reuse_delay", "1")
        time.sleep(1.1)  # past the delay (a fixed second on kernels without the key)

        report = json.loads(ns.portaudit("audit", "--format", "json").stdout)
        after = [f for f in report["findings"] if f["id"] == "EPH-001"]
        assert after == [], after
        # connect() agrees: the old TIME_WAIT ports are taken over, none fails
        again = json.loads(ns.python(*exhaust[:-1], "50").stdout)
        assert not again["eaddrnotavail"] and again["connected"] == 50, again


_BOTH_READERS = """
import json, sys
from auditor.facts import livesockets, netlink
from auditor.facts.collect import collect_sysctls, port_range
from auditor.facts.sockets import collect_sockets_proc
from auditor.hostfs import HostRoot
host = HostRoot()
values, missing = collect_sysctls(host)
ports = port_range(values, missing, host)
scan = netlink.scan_sockets(ports.low, ports.high)
livesockets._add_reusable(host, scan)
out = {}
for name, table in (("netlink", scan.table()), ("proc", collect_sockets_proc(host, ports))):
    out[name] = {f"{d.dst}:{d.dport}": [d.used, d.time_wait_reusable] for d in table.destinations}
print(json.dumps(out))
"""


@requires_netns
def test_both_readers_count_the_same_reusable_time_wait() -> None:
    """The netlink reader takes each TIME_WAIT socket's age from `idiag_expires`, the /proc
    reader from the timer column: with every socket over a second old, a 1 s delay frees them
    all and a 59 s delay none, in both."""
    with make_netns("pa-age") as ns:
        ns.sysctl_write("net.ipv4.ip_local_port_range", "40000 40099")
        ns.sysctl_write("net.ipv4.tcp_tw_reuse", "0")
        exhaust = ["-m", "tests.workloads.exhaust", "--port", str(SERVER_PORT), "--max", "40"]
        assert json.loads(ns.python(*exhaust).stdout)["connected"] == 40
        ns.sysctl_write("net.ipv4.tcp_tw_reuse", "1")
        has_delay = ns.run(["test", "-e", "/proc/sys/net/ipv4/tcp_tw_reuse_delay"], check=False)
        time.sleep(1.5)
        dest = f"127.0.0.1:{SERVER_PORT}"
        for delay, reusable in ((1000, 40), (59000, 0)):
            if has_delay.returncode == 0:
                ns.sysctl_write("net.ipv4.tcp_tw_reuse_delay", str(delay))
            elif delay != 1000:
                continue
            got = json.loads(ns.python("-c", _BOTH_READERS).stdout)
            assert got["netlink"][dest] == [40, reusable], (delay, got)
            assert got["proc"][dest] == [40, reusable], (delay, got)
