"""`portaudit diagnose` against the real kernel: a client and a server namespace on a veth pair.

Every address used here (10.203.0.0/24 and the unrouted 10.203.x / 10.77.x ones) exists only
inside the namespaces the tests create; unreachable or blackhole routes and a forwarding-off
server make sure no packet can leave them. Servers are tests/fixtures/diagnose/servers.py
processes started inside the server namespace. Every probe uses --timeout 1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.netns import REPO, Netns, make_netns, requires_netns

pytestmark = [pytest.mark.netns, requires_netns]

SERVERS = REPO / "tests" / "fixtures" / "diagnose" / "servers.py"
CLIENT_IP = "10.203.0.1"
SERVER_IP = "10.203.0.2"
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k.lower() not in _PROXY_VARS and not k.startswith("PORTAUDIT")
    }
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


@contextmanager
def pair() -> Iterator[tuple[Netns, Netns]]:
    """Client and server namespaces joined by veth: 10.203.0.1/24 <-> 10.203.0.2/24."""
    with make_netns("pa-dc") as client, make_netns("pa-ds") as server:
        link(client, server, ("vc0", f"{CLIENT_IP}/24"), ("vs0", f"{SERVER_IP}/24"))
        yield client, server


def link(near: Netns, far: Netns, near_end: tuple[str, str], far_end: tuple[str, str]) -> None:
    """A veth between `near` and `far`, each end (name, address/prefix) up."""
    near.run(["ip", "link", "add", near_end[0], "type", "veth", "peer", "name", far_end[0],
              "netns", far.name])  # fmt: skip
    for ns, (name, addr) in ((near, near_end), (far, far_end)):
        ns.run(["ip", "addr", "add", addr, "dev", name])
        ns.run(["ip", "link", "set", name, "up"])


def behind(gateway: Netns, far: Netns, gateway_end: tuple[str, str], far_end: tuple[str, str],
           route: bool = True) -> None:  # fmt: skip
    """`far` linked to `gateway`, which forwards; with `route`, `far`'s default route goes
    through the gateway's address (a router's far side, a container behind its host)."""
    link(gateway, far, gateway_end, far_end)
    if route:
        far.run(["ip", "route", "add", "default", "via", gateway_end[1].split("/")[0]])
    gateway.sysctl_write("net.ipv4.ip_forward", "1")


@contextmanager
def serve(
    ns: Netns, mode: str, addr: str, port: int, *extra: str
) -> Iterator[subprocess.Popen[str]]:
    """The server process (`ip netns exec` execs it, so its pid is the server's own)."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns.name, sys.executable, str(SERVERS), mode, addr, str(port),
         *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "ready", proc.stderr.read() if proc.stderr else line
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


_BIND_OVER = """
import os, subprocess, sys
subprocess.run(["mount", "--bind", sys.argv[1], sys.argv[2]], check=True)
os.execvp(sys.argv[3], sys.argv[3:])
"""


def diagnose(
    ns: Netns,
    *args: str,
    env: dict[str, str] | None = None,
    over: tuple[Path, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    """`portaudit diagnose ARGS --timeout 1 --format json` in `ns`. With `over` (a file, the
    path it stands for: /etc/hosts, /etc/resolv.conf), the run has a private mount namespace
    with the file bind-mounted there: seen by this run only, the host's /etc never touched."""
    argv = [sys.executable, "-m", "auditor", "diagnose", *args, "--timeout", "1", "--format",
            "json"]  # fmt: skip
    if over is not None:
        argv = ["unshare", "--mount", "--propagation", "private", sys.executable, "-c",
                _BIND_OVER, str(over[0]), over[1], *argv]  # fmt: skip
    proc = ns.run(argv, check=False, env=env or clean_env())
    assert proc.returncode in (0, 1), proc.stderr
    assert proc.stderr == "", proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def cause(report: dict[str, Any], cid: str) -> dict[str, Any]:
    found = [c for c in report["causes"] if c["id"] == cid]
    assert found, f"{cid} not among {[c['id'] for c in report['causes']]}"
    return found[0]


def nft(ns: Netns, ruleset: str) -> None:
    ns.run(["nft", "-f", "-"], input=ruleset)


# --- refused ---------------------------------------------------------------------------------


def test_nothing_listening_is_refused_and_only_the_server_can_say_why() -> None:
    """From the client a reset to the SYN cannot tell no listener from a loopback-only one or
    a reset rule: all stay possible, with the reset as evidence. On the server, likely."""
    with pair() as (client, server):
        rc, rep = diagnose(client, f"{SERVER_IP}:8080")
        _, srv = diagnose(server, f"{SERVER_IP}:8080")
    assert rc == 1
    assert rep["verdict"] == "refused"
    r5 = cause(rep, "refused-5")
    assert r5["status"] == "possible"
    assert rep["likely"] == []
    assert any("TCP reset to the SYN" in e["value"] for e in r5["evidence"])
    assert cause(srv, "refused-5")["status"] == "likely"
    assert srv["likely"] == ["refused-5"]
    assert rep["addresses"][0]["result"]["errno_name"] == "ECONNREFUSED"
    assert rep["addresses"][0]["route"]["interface"] == "vc0"
    assert rep["next_steps"]


def test_loopback_only_listener_seen_from_client_and_from_server() -> None:
    with pair() as (client, server), serve(server, "accept", "127.0.0.1", 8081):
        rc, rep = diagnose(client, f"{SERVER_IP}:8081")
        assert (rc, rep["verdict"]) == (1, "refused")
        assert cause(rep, "refused-7")["status"] in ("likely", "possible")
        # On the server the listeners are visible: the loopback binding is the cause. The
        # address is the server's own, so the host checks run even without --local.
        _, auto = diagnose(server, f"{SERVER_IP}:8081")
        assert auto["local"]["reason"] == f"{SERVER_IP} is an address of this host"
        assert cause(auto, "refused-7")["status"] == "likely"
        rc, srv = diagnose(server, f"{SERVER_IP}:8081", "--local")
    assert (rc, srv["verdict"]) == (1, "refused")
    r7 = cause(srv, "refused-7")
    assert r7["status"] == "likely"
    assert "bound to loopback" in r7["why"] and "127.0.0.1" in r7["why"]
    assert cause(srv, "refused-5")["status"] == "ruled-out"
    listeners = srv["local"]["listeners"]
    assert [(li["address"], li["reaches_target"]) for li in listeners] == [("127.0.0.1", False)]


def test_listener_on_the_right_address_is_ok() -> None:
    with pair() as (client, server), serve(server, "hold", "0.0.0.0", 8085):
        rc, rep = diagnose(client, f"{SERVER_IP}:8085")
    assert (rc, rep["verdict"]) == (0, "ok")


# --- firewall --------------------------------------------------------------------------------

DROP_RULES = """
table inet pa_test {
  chain input {
    type filter hook input priority 0; policy accept;
    tcp dport 8082 counter drop
    tcp dport 8083 reject with icmp type host-prohibited
    tcp dport 8084 reject with tcp reset
  }
}
"""


def test_nft_drop_is_a_timeout_with_the_firewall_likely() -> None:
    with pair() as (client, server), serve(server, "accept", "0.0.0.0", 8082):
        nft(server, DROP_RULES)
        rc, rep = diagnose(client, f"{SERVER_IP}:8082")
        assert (rc, rep["verdict"]) == (1, "timeout")
        # ARP answered but the SYN did not: the server exists. A drop rule, a full accept
        # queue and a full conntrack table look the same from here: possible, not likely.
        assert cause(rep, "timeout-1")["status"] == "possible"
        assert cause(rep, "timeout-4")["status"] == "ruled-out"
        assert rep["likely"] == []
        rc, srv = diagnose(server, f"{SERVER_IP}:8082", "--local")
    assert srv["verdict"] == "timeout"
    t1 = cause(srv, "timeout-1")
    assert t1["status"] == "likely"
    assert "inet pa_test input handle" in t1["why"] and "tcp dport 8082" in t1["why"]
    assert "during this probe" in t1["why"]  # the probe's own SYNs moved the rule's counter
    assert any("drop" in h["action"] for h in srv["local"]["firewall"])


def test_nft_reject_host_prohibited_is_unreachable_with_the_rule_named() -> None:
    with pair() as (client, server), serve(server, "accept", "0.0.0.0", 8083):
        nft(server, DROP_RULES)
        rc, rep = diagnose(client, f"{SERVER_IP}:8083")
        assert (rc, rep["verdict"]) == (1, "unreachable")
        assert rep["addresses"][0]["result"]["errno_name"] == "EHOSTUNREACH"
        assert cause(rep, "timeout-1")["status"] == "likely"
        _, srv = diagnose(server, f"{SERVER_IP}:8083", "--local")
    assert srv["verdict"] in ("unreachable", "refused")
    t1 = cause(srv, "timeout-1")
    assert t1["status"] == "likely"
    assert "reject with icmp host-prohibited" in t1["why"]


def test_nft_reject_tcp_reset_is_refused_with_the_rule_named_on_the_server() -> None:
    with pair() as (client, server), serve(server, "accept", "0.0.0.0", 8084):
        nft(server, DROP_RULES)
        _, rep = diagnose(client, f"{SERVER_IP}:8084")
        assert rep["verdict"] == "refused"
        _, srv = diagnose(server, f"{SERVER_IP}:8084", "--local")
    assert srv["verdict"] == "refused"
    assert cause(srv, "timeout-1")["status"] == "likely"
    assert "reject with tcp reset" in cause(srv, "timeout-1")["why"]
    # Something listens on the right address, so "not listening" is ruled out.
    assert cause(srv, "refused-5")["status"] == "ruled-out"


# --- routes ----------------------------------------------------------------------------------


def test_unreachable_route_is_unreachable_with_the_route_shown() -> None:
    with pair() as (client, _server):
        client.run(["ip", "route", "add", "unreachable", "10.203.9.0/24"])
        rc, rep = diagnose(client, "10.203.9.5:80")
    assert (rc, rep["verdict"]) == (1, "unreachable")
    assert rep["addresses"][0]["route"]["kind"] == "unreachable"
    assert cause(rep, "route-1")["status"] == "likely"
    assert any("route to 10.203.9.5: unreachable" in e for e in rep["evidence"])


def test_unanswered_address_on_the_link_times_out_and_nobody_answers_arp() -> None:
    with pair() as (client, _server):
        rc, rep = diagnose(client, "10.203.0.99:80")
    assert (rc, rep["verdict"]) == (1, "timeout")
    route = rep["addresses"][0]["route"]
    assert (route["interface"], route["gateway"]) == ("vc0", None)
    assert rep["addresses"][0]["result"]["neighbour"] in ("INCOMPLETE", "FAILED")
    assert cause(rep, "timeout-4")["status"] == "likely"
    assert cause(rep, "timeout-6")["status"] == "ruled-out"


def test_internal_address_through_the_default_gateway_is_timeout_6() -> None:
    with pair() as (client, server):
        server.sysctl_write("net.ipv4.ip_forward", "0")  # the gateway forwards nothing
        client.run(["ip", "route", "add", "default", "via", SERVER_IP])
        rc, rep = diagnose(client, "10.77.0.5:5432")
    assert (rc, rep["verdict"]) == (1, "timeout")
    route = rep["addresses"][0]["route"]
    assert route["gateway"] == SERVER_IP and route["via_default"] is True
    # Nothing answered: a private address behind the default gateway may be on another
    # network, or simply down behind a router that does route it. Possible, with the route.
    t6 = cause(rep, "timeout-6")
    assert t6["status"] == "possible" and "default route" in t6["why"]
    assert rep["likely"] == []


def test_route_through_a_tun_device_flags_proxy_software() -> None:
    with pair() as (client, _server):
        client.run(["ip", "tuntap", "add", "dev", "tun7", "mode", "tun"])
        client.run(["ip", "link", "set", "tun7", "up"])
        client.run(["ip", "route", "add", "10.203.5.0/24", "dev", "tun7"])
        _, rep = diagnose(client, "10.203.5.1:443")
    assert rep["verdict"] in ("timeout", "unreachable")
    r6 = cause(rep, "refused-6")
    assert r6["status"] == "likely" and "tun7" in r6["why"]


# --- EADDRNOTAVAIL ---------------------------------------------------------------------------

_EXHAUST = """
import errno, socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ok, misses, last = 0, 0, None
for _ in range(n):
    c = socket.socket()
    try:
        c.connect((host, port))
    except OSError as exc:
        c.close()
        last = errno.errorcode.get(exc.errno)
        misses += 1
        if misses == 3:
            break
        time.sleep(0.2)  # a port freed by a late close is taken on the next round
        continue
    misses = 0
    ok += 1
    c.close()
print("connected", ok, "stopped", last)
"""


def test_exhausted_range_is_addr_not_available_with_the_destination_port_use() -> None:
    with pair() as (client, server), serve(server, "drain", SERVER_IP, 8090):
        client.sysctl_write("net.ipv4.ip_local_port_range", "40000 40099")
        client.sysctl_write("net.ipv4.tcp_tw_reuse", "0")
        # Connect and close (client first: TIME_WAIT) until the kernel has no port left.
        out = client.python("-c", _EXHAUST, SERVER_IP, "8090", "200").stdout
        assert "stopped EADDRNOTAVAIL" in out, out
        rc, rep = diagnose(client, f"{SERVER_IP}:8090")
    assert (rc, rep["verdict"]) == (1, "addr-not-available")
    assert rep["addresses"][0]["result"]["errno_name"] == "EADDRNOTAVAIL"
    use = rep["port_use"]
    assert (use["src"], use["dst"], use["dport"]) == (CLIENT_IP, SERVER_IP, 8090)
    assert (use["used"], use["usable"], use["port_range"]) == (100, 100, "40000-40099")
    assert use["tw_reuse"] == "0"
    assert use["by_state"].get("TIME_WAIT", 0) + use["by_state"].get("FIN_WAIT2", 0) == 100
    a1 = cause(rep, "addr-1")
    assert a1["status"] == "likely" and "EPH-001" in a1["why"]
    assert cause(rep, "addr-2")["status"] == "likely"


# --- protocols -------------------------------------------------------------------------------


def test_http_server_probed_as_websocket_is_unexpected_response_code() -> None:
    with pair() as (client, server), serve(server, "http", "0.0.0.0", 8091):
        rc, rep = diagnose(client, f"ws://{SERVER_IP}:8091/chat")
    assert (rc, rep["verdict"]) == (1, "protocol-mismatch")
    assert "Unexpected response code: 200" in rep["summary"]
    assert cause(rep, "proto-1")["status"] == "likely"
    # The test server sends `Via`: reported as something in front.
    assert any("Via: 1.1 test-proxy" in f for f in rep["addresses"][0]["protocol"]["front"])
    assert cause(rep, "refused-4")["status"] == "likely"


def test_echo_server_probed_as_websocket_is_invalid_http_response() -> None:
    with pair() as (client, server), serve(server, "echo", "0.0.0.0", 8092):
        rc, rep = diagnose(client, f"ws://{SERVER_IP}:8092/")
    assert (rc, rep["verdict"]) == (1, "protocol-mismatch")
    assert "ERR_INVALID_HTTP_RESPONSE" in rep["summary"]
    assert rep["addresses"][0]["protocol"]["first_bytes"].startswith("GET / HTTP/1.1")


def test_websocket_server_probed_as_websocket_is_ok() -> None:
    with pair() as (client, server), serve(server, "ws", "0.0.0.0", 8093):
        rc, rep = diagnose(client, f"ws://{SERVER_IP}:8093/chat")
    assert (rc, rep["verdict"]) == (0, "ok")
    assert rep["addresses"][0]["protocol"]["status"] == 101
    assert cause(rep, "proto-1")["status"] == "ruled-out"


def test_http_client_against_a_websocket_server_is_a_mismatch() -> None:
    """The document's reverse case: an HTTP client at a websocket:// (Workerman-style) port."""
    with pair() as (client, server), serve(server, "ws", "0.0.0.0", 8094):
        rc, rep = diagnose(client, f"http://{SERVER_IP}:8094/")
    assert (rc, rep["verdict"]) == (1, "protocol-mismatch")
    assert "400" in rep["summary"] and "WebSocket" in rep["summary"]
    assert cause(rep, "proto-1")["status"] == "likely"


def test_plain_server_probed_as_https_is_a_mismatch() -> None:
    with pair() as (client, server), serve(server, "http", "0.0.0.0", 8095):
        rc, rep = diagnose(client, f"https://{SERVER_IP}:8095/")
    assert (rc, rep["verdict"]) == (1, "protocol-mismatch")
    assert "TLS expected but the server" in rep["summary"]
    assert rep["addresses"][0]["protocol"]["tls_seen"] is False


@pytest.fixture(scope="module")
def cert() -> Iterator[tuple[str, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        key, crt = Path(tmp) / "key.pem", Path(tmp) / "cert.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
             "-out", str(crt), "-days", "1", "-subj", "/CN=diagnose.test"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        yield str(crt), str(key)


def test_tls_server_probed_as_http_is_a_mismatch_and_https_is_ok(cert: tuple[str, str]) -> None:
    with pair() as (client, server), serve(server, "tls-http", "0.0.0.0", 8096, *cert):
        rc, rep = diagnose(client, f"http://{SERVER_IP}:8096/")
        assert (rc, rep["verdict"]) == (1, "protocol-mismatch")
        assert "speaks TLS" in rep["summary"]
        assert rep["addresses"][0]["protocol"]["tls_seen"] is True
        # A self-signed certificate: curl fails with exit 60, so diagnose does too...
        rc, bad = diagnose(client, f"https://{SERVER_IP}:8096/")
        assert (rc, bad["verdict"]) == (1, "tls-untrusted")
        t1 = cause(bad, "tls-1")
        assert t1["status"] == "likely" and "self-signed" in t1["why"]
        assert "200 OK" in bad["summary"]  # the exchange still went on, unverified
        # ...and --insecure skips the check, as curl -k does.
        rc, ok = diagnose(client, f"https://{SERVER_IP}:8096/", "--insecure")
        assert (rc, ok["verdict"]) == (0, "ok")
        rc, wss = diagnose(client, f"wss://{SERVER_IP}:8096/")
    assert (rc, wss["verdict"]) == (1, "protocol-mismatch"), wss["summary"]
    assert "Unexpected response code: 200" in wss["summary"]
    assert cause(wss, "tls-1")["status"] == "likely"


# --- resolution and the client's environment -------------------------------------------------


def test_name_resolving_elsewhere_than_expect_ip_is_flagged(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n# the stale entry\n10.203.0.2 db.diagnose.test\n")
    with pair() as (client, _server):
        rc, rep = diagnose(
            client,
            "db.diagnose.test:8080",
            "--expect-ip",
            "10.203.0.7",
            over=(hosts, "/etc/hosts"),
        )
    assert rc == 1
    assert rep["resolution"]["addresses"] == [SERVER_IP]
    assert rep["resolution"]["hosts_file"] == [
        {"file": "/etc/hosts", "line": 3, "address": SERVER_IP}
    ]
    assert rep["resolution"]["expect_mismatch"] is True
    r3 = cause(rep, "refused-3")
    assert r3["status"] == "likely"
    assert "/etc/hosts line 3" in r3["why"] and "10.203.0.7" in r3["why"]


def test_http_proxy_in_the_environment_is_flagged() -> None:
    proxy = f"http://user:secret@{SERVER_IP}:3128"
    with pair() as (client, server), serve(server, "http", "0.0.0.0", 8097):
        rc, rep = diagnose(client, f"http://{SERVER_IP}:8097/", env=clean_env(http_proxy=proxy))
        _, excluded = diagnose(
            client,
            f"http://{SERVER_IP}:8097/",
            env=clean_env(http_proxy=proxy, no_proxy="10.203.0.0/24"),
        )
    assert (rc, rep["verdict"]) == (1, "ok")  # the direct path works...
    r6 = cause(rep, "refused-6")  # ...but the client would go through a dead proxy: exit 1
    assert r6["status"] == "likely"
    assert rep["likely"] == ["refused-6"] and "but refused-6 is likely" in rep["summary"]
    assert "$http_proxy" in r6["why"] and "refused" in r6["why"]
    assert "secret" not in json.dumps(rep)
    assert rep["proxies"][0]["url"] == f"http://{SERVER_IP}:3128"
    assert excluded["proxies"] == []
    assert all(c["id"] != "refused-6" for c in excluded["causes"])


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "fragment"),
    [
        ("host", "missing port"),
        ("host:0", "port 0"),
        ("host:99999", "port 99999"),
        ("[::1", "closing ']'"),
        ("", "empty"),
    ],
)
def test_bad_targets_exit_2_with_one_line(target: str, fragment: str) -> None:
    with make_netns("pa-dbad") as ns:
        proc = ns.run(
            [sys.executable, "-m", "auditor", "diagnose", target], check=False, env=clean_env()
        )
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("portaudit: bad target") and fragment in lines[0]
    assert repr(target) in lines[0]


_EMFILE = """
import errno, resource
from auditor.diagnose.probe import connect
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
held = []
try:
    while True:
        held.append(open("/dev/null"))
except OSError as exc:
    assert exc.errno == errno.EMFILE
result, sock = connect("127.0.0.1", 9, 1)
print(result.outcome, result.errno_name)
"""


def test_no_descriptor_left_is_classified_as_descriptor_limit() -> None:
    with make_netns("pa-dfd") as ns:
        out = ns.python("-c", _EMFILE).stdout
    assert out.split() == ["descriptor-limit", "EMFILE"]


def test_ipv6_loopback_target_against_ipv4_only_listener() -> None:
    with make_netns("pa-d6") as ns, serve(ns, "hold", "127.0.0.1", 8100):
        rc, rep = diagnose(ns, "[::1]:8100")
        assert (rc, rep["verdict"]) == (1, "refused")
        r7 = cause(rep, "refused-7")
        assert r7["status"] == "likely" and "bound to another address" in r7["why"]
        with serve(ns, "hold", "::", 8101):
            # A `::` listener takes IPv4 too (bindv6only=0): the v4 loopback connects.
            rc, ok = diagnose(ns, "127.0.0.1:8101")
    assert (rc, ok["verdict"]) == (0, "ok")
    assert ok["local"]["listeners"][0]["reaches_target"] is True
