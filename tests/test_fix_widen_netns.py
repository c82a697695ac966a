"""`fix` with no --only on a namespace with a real EADDRNOTAVAIL and a server inside the range
that widening would bring in: the widening reserves the server's port in the same change set.

A second namespace stands for a container: nothing is written under the root's sysctl.d, and
the runtime's way to persist the values is printed instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from auditor.facts.persisted import effective
from auditor.fix import target
from auditor.hostfs import HostRoot
from tests.netns import Netns, make_netns, requires_netns, workload

pytestmark = [requires_netns, pytest.mark.netns]

RANGE = "net.ipv4.ip_local_port_range"
RESERVED = "net.ipv4.ip_local_reserved_ports"
REUSE = "net.ipv4.tcp_tw_reuse"
CLIENT_SERVER_PORT = 5000
DB_PORT = 27017  # outside 40000-40099, inside the widened 10000-65535


SERVER = "import runpy; runpy.run_module('tests.workloads.server', run_name='__main__')"
"""tests/workloads/server.py as a `workload` script (it prints "ready" once listening)."""


@contextmanager
def server(ns: Netns, port: int) -> Iterator[None]:
    """A listener on `port` in the namespace, up until the block ends."""
    with workload(ns, SERVER, "--listen", f"0.0.0.0:{port}", "--hold-seconds", "120") as line:
        assert line == "ready"
        yield


def exhaust(ns: Netns) -> dict[str, object]:
    run = ns.python(
        "-m", "tests.workloads.exhaust", "--port", str(CLIENT_SERVER_PORT), "--max", "300"
    )
    result: dict[str, object] = json.loads(run.stdout)
    return result


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_fix_widens_reserves_the_server_port_and_survives_boot(tmp_path: Path) -> None:
    root = tmp_path / "host"
    (root / "etc/sysctl.d").mkdir(parents=True)
    with make_netns("pa-widen") as ns, server(ns, DB_PORT):
        ns.sysctl_write(RANGE, "40000 40099")
        ns.sysctl_write(REUSE, "0")
        first = exhaust(ns)
        assert first["eaddrnotavail"] is True, first

        done = ns.portaudit("fix", "--yes", "--for-host", "--root", str(root))
        assert done.returncode == 0, done.stdout + done.stderr
        out = done.stdout
        assert f"reserve {DB_PORT}: listener 0.0.0.0:{DB_PORT} inside the new range" in out
        assert "undo with: portaudit rollback " in out and f"--root {root}" in out
        assert f"+++ {root}/etc/sysctl.d/99-zz-portaudit.conf" in out
        assert "effect (facts read again):" in out
        assert "EPH-001 127.0.0.1 -> 127.0.0.1:5000: 100% -> " in out, out

        low, high = (int(x) for x in ns.sysctl_read(RANGE).split())
        assert (low, high) == (10000, 65535)
        assert str(DB_PORT) in ns.sysctl_read(RESERVED).split(",")
        dropin = (root / "etc/sysctl.d/99-zz-portaudit.conf").read_text()
        assert dropin.index(RESERVED) < dropin.index(RANGE)

        second = exhaust(ns)
        assert second["eaddrnotavail"] is False and second["connected"] == 300, second

        audit = ns.portaudit("audit", "--format", "json", "--root", str(root), "--no-state")
        ids = {f["id"] for f in json.loads(audit.stdout)["findings"]}
        assert not ids & {"EPH-001", "EPH-006"}, ids

    boot = target.simulate_boot(HostRoot(proc=Path("/proc"), root=root), {})
    got_range, got_reserved = effective(boot, RANGE), effective(boot, RESERVED)
    assert got_range is not None and got_range.value == "10000 65535"
    assert got_reserved is not None and str(DB_PORT) in got_reserved.value.split(",")


def test_container_namespace_gets_runtime_only_and_the_way_to_persist(tmp_path: Path) -> None:
    root = tmp_path / "host"
    (root / "etc/sysctl.d").mkdir(parents=True)
    (root / "etc/sysctl.d/10-site.conf").write_text(f"{RANGE} = 40000 40099\n")
    before = files_under(root / "etc")
    with make_netns("pa-ctr") as ns:
        ns.sysctl_write(RANGE, "40000 40099")
        ns.sysctl_write(REUSE, "0")
        exhaust(ns)
        done = ns.portaudit("fix", "--yes", "--root", str(root))
        assert done.returncode == 0, done.stdout + done.stderr
        assert ns.sysctl_read(RANGE) == "10000 65535"
        assert "is not the host's" in done.stdout, done.stdout
        assert f"ip netns exec {ns.name} sysctl -w {RANGE}=" in done.stdout, done.stdout
        assert f"netns {ns.name}" in done.stdout
    assert files_under(root / "etc") == before  # the journal under var/lib is for rollback


UDP_SERVER = """
import socket, sys, time
v4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
v4.bind(("0.0.0.0", int(sys.argv[1])))
v6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
v6.bind(("::", int(sys.argv[2])))
print("ready", flush=True)
time.sleep(120)
"""
UDP_V4_PORT, UDP_V6_PORT = 20001, 20011  # outside 40000-40099, inside 10000-65535


@contextmanager
def udp_servers(ns: Netns) -> Iterator[None]:
    """UDP sockets bound on 0.0.0.0:20001 and [::]:20011 in the namespace."""
    with workload(ns, UDP_SERVER, str(UDP_V4_PORT), str(UDP_V6_PORT)) as line:
        assert line == "ready"
        yield


def test_fix_widening_reserves_udp_servers_v4_and_v6(tmp_path: Path) -> None:
    root = tmp_path / "host"
    (root / "etc/sysctl.d").mkdir(parents=True)
    with make_netns("pa-wudp") as ns, udp_servers(ns):
        ns.sysctl_write(RANGE, "40000 40099")
        ns.sysctl_write(REUSE, "0")
        assert exhaust(ns)["eaddrnotavail"] is True

        facts = json.loads(ns.portaudit("facts").stdout)
        held = {(li["addr"], li["port"]) for li in facts["port_use"]["udp_listeners"]}
        assert {("0.0.0.0", UDP_V4_PORT), ("::", UDP_V6_PORT)} <= held, held

        done = ns.portaudit("fix", "--yes", "--for-host", "--root", str(root))
        assert done.returncode == 0, done.stdout + done.stderr
        out = done.stdout
        assert f"reserve {UDP_V4_PORT}: UDP listener 0.0.0.0:{UDP_V4_PORT} inside the new" in out
        assert f"reserve {UDP_V6_PORT}: UDP listener [::]:{UDP_V6_PORT} inside the new" in out
        assert ns.sysctl_read(RANGE) == "10000 65535"
        reserved = ns.sysctl_read(RESERVED).split(",")
        assert str(UDP_V4_PORT) in reserved and str(UDP_V6_PORT) in reserved, reserved
    dropin = (root / "etc/sysctl.d/99-zz-portaudit.conf").read_text()
    assert f"{RESERVED} = {UDP_V4_PORT},{UDP_V6_PORT}\n" in dropin, dropin
