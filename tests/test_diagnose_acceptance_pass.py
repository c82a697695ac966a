"""`diagnose` marks nothing likely that this host did not observe: failures an operator met,
each built for real (namespaces, veth, nftables, real servers) in a way the other suites do
not, with the wrong answer the judgement used to give asserted away.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from auditor.diagnose.model import flaps, stops_answering
from tests.netns import Netns, make_netns, requires_netns
from tests.test_diagnose_netns import (
    SERVER_IP,
    behind,
    cause,
    diagnose,
    nft,
    pair,
    serve,
)

pytestmark = [pytest.mark.netns, requires_netns]

_FILL = """
import socket, sys
for _ in range(int(sys.argv[3])):
    s = socket.socket()
    s.settimeout(0.3)
    try:
        s.connect((sys.argv[1], int(sys.argv[2])))
    except OSError:
        pass
    s.close()
"""
"""Connect and close N times: each handshake the kernel completes stays in the accept queue of
a server that never accepts, so its queue fills."""

_SYN_FLOOD = """
import socket, sys, time
end = time.monotonic() + float(sys.argv[3])
while time.monotonic() < end:
    s = socket.socket()
    s.settimeout(0.05)
    try:
        s.connect((sys.argv[1], int(sys.argv[2])))
    except OSError:
        pass
    s.close()
"""
"""Keep sending SYNs to a port for S seconds (bounded), each dropped by a full queue."""


def _fill(ns: Netns, addr: str, port: int, n: int = 4) -> None:
    ns.python("-c", _FILL, addr, str(port), str(n), timeout=30)


def test_host_unreachable_sent_by_the_server_itself_is_its_reject_rule() -> None:
    """`reject with icmp type host-unreachable` on the server: the ICMP error comes from the
    target's own address, so it is the server's REJECT rule, not a router's report."""
    rules = """
table inet pa_qa {
  chain input {
    type filter hook input priority 0; policy accept;
    tcp dport 8160 reject with icmp type host-unreachable
  }
}
"""
    with pair() as (client, server), serve(server, "hold", "0.0.0.0", 8160):
        nft(server, rules)
        rc, rep = diagnose(client, f"{SERVER_IP}:8160")
    assert (rc, rep["verdict"]) == (1, "unreachable")
    icmp = rep["addresses"][0]["result"]["icmp"]
    assert (icmp["name"], icmp["sender"]) == ("host-unreachable", SERVER_IP)
    assert rep["likely"] == ["timeout-1"]
    assert "REJECT rule on the server" in cause(rep, "timeout-1")["why"]


def test_router_host_unreachable_behind_the_default_gateway_is_not_another_network() -> None:
    """The client's default route leads to a router that reports host-unreachable: the router
    is named (timeout-4); that the address "belongs to another network" is not observed."""
    with pair() as (client, router):
        router.sysctl_write("net.ipv4.ip_forward", "1")
        router.run(["ip", "route", "add", "unreachable", "10.77.0.0/24"])
        client.run(["ip", "route", "add", "default", "via", SERVER_IP])
        rc, rep = diagnose(client, "10.77.0.5:5432")
    assert (rc, rep["verdict"]) == (1, "unreachable")
    assert rep["addresses"][0]["route"]["via_default"] is True
    assert rep["likely"] == ["timeout-4"]
    assert cause(rep, "timeout-6")["status"] == "possible"


def test_a_server_that_never_accepts_fills_its_queue_during_the_probe() -> None:
    """Backlog 1, the queue empty when the probe starts: the first attempts connect, the
    later SYNs go unanswered. That is a filling accept queue, not a restarting server: from
    the client nothing is likely; on the server LSN-002 names the listener."""
    with pair() as (client, server), serve(server, "never", "0.0.0.0", 8161, "--backlog", "1"):
        rc, rep = diagnose(client, f"{SERVER_IP}:8161")
    assert rc == 1 and rep["verdict"] in ("flapping", "timeout"), rep["summary"]
    assert rep["likely"] == [], rep["likely"]
    if rep["verdict"] == "flapping":
        assert cause(rep, "flap-1")["status"] == "possible"
        assert cause(rep, "lsn-1")["status"] == "possible"
    with pair() as (_client, server), serve(server, "never", "0.0.0.0", 8162, "--backlog", "1"):
        src, srv = diagnose(server, f"{SERVER_IP}:8162", "--local")
    assert src == 1 and srv["verdict"] in ("flapping", "timeout"), srv["summary"]
    assert srv["likely"] == ["lsn-1"]
    assert "LSN-002 fail" in cause(srv, "lsn-1")["why"]


def test_listen_drops_on_another_port_do_not_fail_a_healthy_one() -> None:
    """The netns-wide ListenOverflows counter grows during the probe because of another
    listener; the target port's LSN-002 passes, so the port is healthy: exit 0, as audit."""
    with pair() as (client, server), \
            serve(server, "never", "0.0.0.0", 8163, "--backlog", "1"), \
            serve(server, "http", "0.0.0.0", 8164):  # fmt: skip
        _fill(client, SERVER_IP, 8163)
        flood = subprocess.Popen(
            ["ip", "netns", "exec", client.name, sys.executable, "-c", _SYN_FLOOD, SERVER_IP,
             "8163", "6"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            rc, rep = diagnose(server, f"http://{SERVER_IP}:8164/", "--local")
        finally:
            flood.kill()
            flood.wait(timeout=10)
    assert (rc, rep["verdict"], rep["likely"]) == (0, "ok", [])
    drops = rep["local"]["drops"]
    assert isinstance(drops, dict) and drops.get("ListenOverflows", 0) > 0, drops


def test_close_after_accept_is_not_a_hung_server() -> None:
    """A server that closes at once answered: app-2 on the server, app-3 (hung) ruled out."""
    with pair() as (_client, server), serve(server, "accept", "0.0.0.0", 8165):
        rc, rep = diagnose(server, f"{SERVER_IP}:8165", "--local")
    assert (rc, rep["verdict"]) == (1, "closed")
    assert rep["likely"] == ["app-2"]


def test_a_close_and_a_reset_right_after_accept_are_one_failure() -> None:
    """An HTTP request crossing the server's close draws a reset, the next try reads the
    close: the same server, not one that flaps."""
    assert not flaps(("closed", "reset", "reset"))
    assert flaps(("ok", "closed"))
    assert stops_answering(("ok", "ok", "timeout"))
    assert stops_answering(("no-reply", "timeout", "cut-short"))
    assert not stops_answering(("ok", "refused", "timeout"))
    assert not stops_answering(("timeout", "ok"))


def test_own_output_reject_with_admin_prohibited_is_not_a_router() -> None:
    """The client's own output rule rejects with admin-prohibited: the ICMP error comes from
    this host's own address; no router on the path is to blame."""
    rules = """
table inet pa_qa {
  chain output {
    type filter hook output priority 0; policy accept;
    tcp dport 8166 reject with icmpx type admin-prohibited
  }
}
"""
    with pair() as (client, server), serve(server, "hold", "0.0.0.0", 8166):
        nft(client, rules)
        rc, rep = diagnose(client, f"{SERVER_IP}:8166")
    assert (rc, rep["verdict"]) == (1, "unreachable")
    assert rep["likely"] == ["fw-out"]
    assert all(c["status"] != "likely" for c in rep["causes"] if c["id"] == "fw-path")


PUBLISH = """
table ip pa_qa {
  chain pre {
    type nat hook prerouting priority -100;
    tcp dport 8167 dnat to 10.9.0.2:80
  }
}
"""


def test_outside_dnat_path_does_not_judge_the_hosts_own_listener() -> None:
    """A published port DNATed to a container that is down, and a proxy on the host's own
    port whose accept queue is full: outside clients never reach that proxy, so its queue
    is not a cause of what they see."""
    with pair() as (_client, host), make_netns("pa-dqctr") as ctr:
        behind(host, ctr, ("vq9", "10.9.0.1/24"), ("vr9", "10.9.0.2/24"), route=False)
        nft(host, PUBLISH)
        with serve(host, "never", "0.0.0.0", 8167, "--backlog", "1"):
            _fill(host, "127.0.0.1", 8167)
            rc, rep = diagnose(host, f"{SERVER_IP}:8167", "--local")
    assert rep["addresses"][0]["address"] == "10.9.0.2"
    assert (rc, rep["verdict"]) == (1, "refused"), rep["summary"]
    assert "lsn-1" not in rep["likely"] and "fd-2" not in rep["likely"]
    assert rep["likely"] == ["nat-1"]


@contextmanager
def _hosts(tmp_path: Path, *lines: str) -> Iterator[Path]:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n" + "".join(f"{line}\n" for line in lines))
    yield hosts


def _diagnose_with_hosts(ns: Netns, hosts: Path, *args: str) -> tuple[int, dict[str, object]]:
    """`diagnose` with `hosts` as its /etc/hosts (the host's /etc is never touched)."""
    return diagnose(ns, *args, over=(hosts, "/etc/hosts"))


@pytest.mark.parametrize(
    ("assigned", "rc", "status"), [(False, 1, "likely"), (True, 0, "possible")]
)
def test_a_name_with_a_dead_address_beside_a_working_one(
    tmp_path: Path, assigned: bool, rc: int, status: str
) -> None:
    """The name's first address is dead, its second serves. Nobody answers at an unassigned
    address (every attempt times out: a client stalls a whole connect timeout on it, likely);
    an assigned one with nothing listening refuses at once (clients fall back: possible)."""
    with _hosts(tmp_path, "10.203.0.3 pair.diagnose.test", f"{SERVER_IP} pair.diagnose.test") \
            as hosts, pair() as (client, server), serve(server, "http", SERVER_IP, 8168):  # fmt: skip
        if assigned:
            server.run(["ip", "addr", "add", "10.203.0.3/24", "dev", "vs0"])
        got, rep = _diagnose_with_hosts(client, hosts, "http://pair.diagnose.test:8168/")
    assert (got, rep["verdict"]) == (rc, "ok")
    m1 = cause(rep, "multi-1")
    assert m1["status"] == status and "10.203.0.3" in m1["why"]
    assert rep["likely"] == (["multi-1"] if status == "likely" else [])


def test_expect_ip_in_ipv4_mapped_form_is_the_ipv4_address() -> None:
    """`--expect-ip ::ffff:10.0.0.5` names the same host as 10.0.0.5: no mismatch."""
    from auditor.diagnose.resolve import resolve
    from auditor.diagnose.target import parse_target
    from auditor.hostfs import HostRoot

    target = parse_target("10.0.0.5:80")
    assert not resolve(target, HostRoot(), "::ffff:10.0.0.5").expect_mismatch
    assert resolve(target, HostRoot(), "::ffff:10.0.0.6").expect_mismatch
