"""`diagnose` names the real cause: each failure built for real, judged from both ends.

Client and server namespaces over veth (tests/test_diagnose_netns.py's `pair`), nftables rules,
real servers (tests/fixtures/diagnose/servers.py). Each test asserts the verdict, the likely
cause and its evidence, that no wrong cause is likely, and the exit code.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.netns import make_netns, requires_netns
from tests.test_diagnose_netns import (
    SERVER_IP,
    SERVERS,
    behind,
    cause,
    clean_env,
    diagnose,
    nft,
    pair,
    serve,
)

pytestmark = [pytest.mark.netns, requires_netns]


def _evidence(c: dict[str, object]) -> str:
    return " | ".join(f"{e['what']}={e['value']}@{e['where']}" for e in c["evidence"])  # type: ignore[index, union-attr]


REJECTS = """
table inet pa_case {
  chain input {
    type filter hook input priority 0; policy accept;
    tcp dport 8110 reject
    tcp dport 8111 reject with icmpx type admin-prohibited
  }
}
"""


def test_icmp_port_unreachable_is_a_reject_rule_not_a_closed_port() -> None:
    with pair() as (client, server), serve(server, "hold", "0.0.0.0", 8110):
        nft(server, REJECTS)
        rc, rep = diagnose(client, f"{SERVER_IP}:8110")
    assert (rc, rep["verdict"]) == (1, "refused")
    icmp = rep["addresses"][0]["result"]["icmp"]
    assert (icmp["name"], icmp["sender"]) == ("port-unreachable", SERVER_IP)
    t1 = cause(rep, "timeout-1")
    assert t1["status"] == "likely" and "REJECT rule on the server" in t1["why"]
    assert "IP_RECVERR" in _evidence(t1)
    assert rep["likely"] == ["timeout-1"]


def test_admin_prohibited_from_the_server_names_the_server() -> None:
    with pair() as (client, server), serve(server, "hold", "0.0.0.0", 8111):
        nft(server, REJECTS)
        rc, rep = diagnose(client, f"{SERVER_IP}:8111")
    assert (rc, rep["verdict"]) == (1, "unreachable")
    assert rep["addresses"][0]["result"]["icmp"]["name"] == "admin-prohibited"
    assert rep["likely"] == ["timeout-1"]


def test_host_unreachable_from_a_router_names_the_router_not_a_firewall() -> None:
    with pair() as (client, router):
        router.sysctl_write("net.ipv4.ip_forward", "1")
        router.run(["ip", "route", "add", "unreachable", "10.77.0.0/24"])
        client.run(["ip", "route", "add", "10.77.0.0/24", "via", SERVER_IP])
        rc, rep = diagnose(client, "10.77.0.5:5432")
    assert (rc, rep["verdict"]) == (1, "unreachable")
    icmp = rep["addresses"][0]["result"]["icmp"]
    assert (icmp["name"], icmp["sender"]) == ("host-unreachable", SERVER_IP)
    t4 = cause(rep, "timeout-4")
    assert t4["status"] == "likely" and f"router {SERVER_IP}" in t4["why"]
    assert cause(rep, "timeout-1")["status"] != "likely"
    assert rep["likely"] == ["timeout-4"]


@pytest.mark.parametrize(
    ("mode", "protocol", "verdict", "cid"),
    [
        ("reset", "tcp", "reset", "app-1"),
        ("accept", "tcp", "closed", "app-2"),
        ("reset", "http", "reset", "app-1"),
    ],
)
def test_what_happens_after_accept(mode: str, protocol: str, verdict: str, cid: str) -> None:
    with pair() as (client, server), serve(server, mode, "0.0.0.0", 8112):
        rc, rep = diagnose(client, f"{SERVER_IP}:8112", "--protocol", protocol)
    assert (rc, rep["verdict"]) == (1, verdict)
    assert cause(rep, cid)["status"] == "likely"
    assert all(c not in rep["likely"] for c in ("refused-5", "timeout-1", "proto-1"))


def test_a_stopped_server_is_no_reply_not_a_protocol_mismatch() -> None:
    with pair() as (client, server), serve(server, "http", "0.0.0.0", 8113) as proc:
        assert str(SERVERS) in Path(f"/proc/{proc.pid}/cmdline").read_text()
        command = Path(f"/proc/{proc.pid}/comm").read_text().strip()
        limit = resource.prlimit(proc.pid, resource.RLIMIT_NOFILE)[0]
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            rc, rep = diagnose(client, f"http://{SERVER_IP}:8113/")
            _, srv = diagnose(server, f"http://{SERVER_IP}:8113/", "--local")
        finally:
            os.kill(proc.pid, signal.SIGCONT)
    (held,) = srv["local"]["listeners"]
    assert (held["pid"], held["process"], held["state"], held["fd_limit"]) == (
        proc.pid,
        command,
        "stopped",
        limit,
    )
    assert (rc, rep["verdict"]) == (1, "no-reply")
    assert cause(rep, "proto-1")["status"] == "possible"
    assert rep["likely"] == []
    assert srv["verdict"] == "no-reply"
    a3 = cause(srv, "app-3")
    assert a3["status"] == "likely" and "stopped" in a3["why"]
    assert "proto-1" not in srv["likely"]


def test_a_reply_head_that_never_ends_is_bounded_and_not_ok() -> None:
    with pair() as (client, server), serve(server, "endless-head", "0.0.0.0", 8114):
        rc, rep = diagnose(client, f"http://{SERVER_IP}:8114/")
    assert (rc, rep["verdict"]) == (1, "no-reply")
    assert "never completed its head" in rep["summary"]
    assert rep["likely"] == ["app-3"]


def test_a_crash_looping_server_flaps() -> None:
    with pair() as (client, server), serve(server, "flap", "0.0.0.0", 8115):
        rc, rep = diagnose(client, f"{SERVER_IP}:8115")
    assert (rc, rep["verdict"]) == (1, "flapping")
    tries = rep["addresses"][0]["tries"]
    assert tries[0] == "ok" and "refused" in tries
    assert rep["likely"] == ["flap-1"]


def test_ipv6_only_listener_refuses_ipv4_and_the_server_says_why() -> None:
    with pair() as (client, server), serve(server, "hold", "::", 8116, "--v6only"):
        rc, rep = diagnose(client, f"{SERVER_IP}:8116")
        _, srv = diagnose(server, f"{SERVER_IP}:8116", "--local")
    assert (rc, rep["verdict"]) == (1, "refused")
    listener = srv["local"]["listeners"][0]
    assert (listener["address"], listener["v6only"], listener["reaches_target"]) == (
        "::",
        True,
        False,
    )
    r7 = cause(srv, "refused-7")
    assert r7["status"] == "likely" and "IPv6-only" in r7["why"]
    assert srv["likely"] == ["refused-7"]


def _fill_queue(ns_name: str, port: int, n: int) -> subprocess.Popen[str]:
    code = (
        "import socket, sys, time\n"
        "held = []\n"
        f"for _ in range({n}):\n"
        "    s = socket.socket(); s.setblocking(False)\n"
        f"    s.connect_ex(('{SERVER_IP}', {port})); held.append(s)\n"
        "time.sleep(1.0); print('ready', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns_name, sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_full_accept_queue_is_not_blamed_on_a_firewall() -> None:
    with pair() as (client, server), serve(server, "never", "0.0.0.0", 8117, "--backlog", "1"):
        filler = _fill_queue(client.name, 8117, 4)
        try:
            rc, rep = diagnose(client, f"{SERVER_IP}:8117")
            _, srv = diagnose(server, f"{SERVER_IP}:8117", "--local")
        finally:
            filler.kill()
            filler.wait()
    assert (rc, rep["verdict"]) == (1, "timeout")
    assert "timeout-1" not in rep["likely"]
    assert srv["verdict"] == "timeout"
    lsn = cause(srv, "lsn-1")
    assert lsn["status"] == "likely" and lsn["rule"] == "LSN-002"
    assert "backlog of 1" in lsn["why"]
    assert "sock_diag" in _evidence(lsn)
    assert cause(srv, "timeout-1")["status"] == "ruled-out"


def test_client_output_reject_is_named_on_the_client() -> None:
    rules = """
table inet pa_out {
  chain output {
    type filter hook output priority 0; policy accept;
    tcp dport 8118 reject
  }
}
"""
    with pair() as (client, server), serve(server, "hold", "0.0.0.0", 8118):
        nft(client, rules)
        rc, rep = diagnose(client, f"{SERVER_IP}:8118")
    assert rc == 1
    fw = cause(rep, "fw-out")
    assert fw["status"] == "likely" and "inet pa_out output handle" in fw["why"]
    assert cause(rep, "timeout-1")["status"] == "ruled-out"


def test_expect_ip_applies_to_a_literal_address_too() -> None:
    with pair() as (client, server), serve(server, "hold", "0.0.0.0", 8119):
        rc, rep = diagnose(client, f"{SERVER_IP}:8119", "--expect-ip", "10.203.0.9")
    assert (rc, rep["verdict"]) == (1, "ok")
    assert "refused-3" in rep["likely"]
    assert "but refused-3 is likely" in rep["summary"]


def test_descriptor_exhausted_server_is_found_with_local() -> None:
    with pair() as (client, server), serve(server, "emfile", "0.0.0.0", 8120, "--nofile", "16"):
        rc, rep = diagnose(client, f"http://{SERVER_IP}:8120/")
        _, srv = diagnose(server, f"http://{SERVER_IP}:8120/", "--local")
    assert (rc, rep["verdict"]) == (1, "no-reply")
    assert rep["likely"] == []  # from the client a starved server looks like a hung one
    fd2 = cause(srv, "fd-2")
    assert fd2["status"] == "likely" and fd2["rule"] == "FD-003"
    assert "16 descriptors open against a soft limit of 16" in fd2["why"]


def test_resolver_outage_is_its_own_cause_naming_the_nameservers(tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 10.203.0.2\noptions timeout:1 attempts:1\n")
    with pair() as (client, _server):
        rc, rep = diagnose(client, "nothere.diagnose.test:80", over=(resolv, "/etc/resolv.conf"))
    assert rc == 1
    assert rep["verdict"] == "unresolved"
    assert rep["resolution"]["error_kind"] == "resolver-failure"
    assert rep["resolution"]["nameservers"] == ["10.203.0.2"]
    d1 = cause(rep, "dns-1")
    assert d1["status"] == "likely" and "10.203.0.2" in d1["why"]
    assert cause(rep, "refused-2")["status"] == "possible"


def test_socket_module_constants_match_the_probe() -> None:
    """The probe hard-codes IP_RECVERR / MSG_ERRQUEUE where the socket module lacks them."""
    from auditor.diagnose import probe

    assert getattr(socket, "IP_RECVERR", probe.IP_RECVERR) == probe.IP_RECVERR
    assert getattr(socket, "MSG_ERRQUEUE", probe.MSG_ERRQUEUE) == probe.MSG_ERRQUEUE


def test_client_nat_redirect_to_a_dead_proxy_is_named() -> None:
    rules = """
table ip pa_nat {
  chain out {
    type nat hook output priority -100;
    tcp dport 8121 redirect to :3128
  }
}
"""
    with pair() as (client, server), serve(server, "hold", "0.0.0.0", 8121):
        nft(client, rules)
        rc, rep = diagnose(client, f"{SERVER_IP}:8121")
    assert (rc, rep["verdict"]) == (1, "refused")
    n1 = cause(rep, "nat-1")
    assert n1["status"] == "likely"
    assert "ip pa_nat out handle" in n1["why"] and ":3128" in n1["why"] and "refused" in n1["why"]
    assert rep["likely"] == ["nat-1"]


def test_published_port_whose_container_is_down_is_named_on_the_host() -> None:
    """A Docker-style DNAT of the host's port 8122 to a container address nobody answers."""
    rules = """
table ip pa_dnat {
  chain pre {
    type nat hook prerouting priority -100;
    tcp dport 8122 dnat to 10.9.0.2:80
  }
}
"""
    with pair() as (client, server):
        # The "container network": a veth whose far end nobody uses.
        server.run(["ip", "link", "add", "br9", "type", "veth", "peer", "name", "br9p"])
        server.run(["ip", "addr", "add", "10.9.0.1/24", "dev", "br9"])
        server.run(["ip", "link", "set", "br9", "up"])
        server.run(["ip", "link", "set", "br9p", "up"])
        server.sysctl_write("net.ipv4.ip_forward", "1")
        nft(server, rules)
        rc, rep = diagnose(client, f"{SERVER_IP}:8122")
        _, srv = diagnose(server, f"{SERVER_IP}:8122", "--local")
    assert rc == 1 and rep["verdict"] in ("timeout", "unreachable")
    n1 = cause(srv, "nat-1")
    assert n1["status"] == "likely" and "10.9.0.2:80" in n1["why"]
    # The host judges the outside client's path (to the DNAT target), so its verdict is the
    # client's, and its own connection's refusal is not blamed on a missing listener.
    assert srv["verdict"] in ("timeout", "unreachable") and "prerouting" in srv["path"]
    assert srv["own_path"]["verdict"] == "refused"
    assert "nat-1" in srv["likely"] and "refused-5" not in srv["likely"]


@pytest.fixture
def routed() -> object:
    """client 10.203.0.1 -- router 10.203.0.2 / 10.204.0.1 -- far 10.204.0.2."""
    with pair() as (client, router), make_netns("pa-dfar") as far:
        behind(router, far, ("vr1", "10.204.0.1/24"), ("vf1", "10.204.0.2/24"))
        client.run(["ip", "route", "add", "10.204.0.0/24", "via", SERVER_IP])
        yield client, router, far


def test_forward_chain_drop_is_named_with_local_on_the_router(routed: object) -> None:
    client, router, far = routed  # type: ignore[misc]
    rules = """
table inet pa_fwd {
  chain forward {
    type filter hook forward priority 0; policy accept;
    tcp dport 8123 counter drop
  }
}
"""
    with serve(far, "hold", "0.0.0.0", 8123):
        nft(router, rules)
        rc, rep = diagnose(client, "10.204.0.2:8123")
        _, rtr = diagnose(router, "10.204.0.2:8123", "--local")
    assert (rc, rep["verdict"]) == (1, "timeout")
    assert rep["likely"] == []
    assert rtr["local"]["forwarding"] is True
    # The router's own connection leaves through output and works; a forwarded client's
    # meets the forward rule: the verdict is theirs, its own result kept beside it.
    assert (rtr["verdict"], rtr["own_path"]["verdict"]) == ("timeout", "ok")
    assert "forward chain" in rtr["path"] and "inet pa_fwd forward handle" in rtr["path"]
    fp = cause(rtr, "fw-path")
    assert fp["status"] == "likely" and "inet pa_fwd forward handle" in fp["why"]
    assert "refused-5" not in rtr["likely"] and "timeout-1" not in rtr["likely"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str]]:
    """A test CA and leaf certificates: valid for the server's IP, for another name, expired."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make test certificates")
    d = tmp_path_factory.mktemp("pki")

    def ossl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "ca.key"),
         "-out", str(d / "ca.pem"), "-days", "2", "-subj", "/CN=diagnose-test-ca")  # fmt: skip
    out: dict[str, tuple[str, str]] = {"ca": (str(d / "ca.pem"), "")}
    for name, san, days in (
        ("good", f"IP:{SERVER_IP}", "2"),
        ("other-name", "DNS:other.diagnose.test", "2"),
        ("expired", f"IP:{SERVER_IP}", "-1"),
    ):
        key, csr, crt = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.pem"
        ext = d / f"{name}.ext"
        ext.write_text(f"subjectAltName={san}\n")
        ossl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
             "-subj", f"/CN={name}")  # fmt: skip
        ossl("x509", "-req", "-in", str(csr), "-CA", str(d / "ca.pem"), "-CAkey",
             str(d / "ca.key"), "-CAcreateserial", "-out", str(crt), "-days", days,
             "-extfile", str(ext))  # fmt: skip
        out[name] = (str(crt), str(key))
    return out


@pytest.mark.parametrize(
    ("leaf", "trusted", "verdict", "reason"),
    [
        ("good", True, "ok", ""),
        ("other-name", True, "tls-untrusted", "wrong name"),
        ("expired", True, "tls-untrusted", "certificate expired"),
        ("good", False, "tls-untrusted", "unknown CA"),
    ],
)
def test_tls_is_verified_as_curl_verifies_it(
    pki: dict[str, tuple[str, str]], leaf: str, trusted: bool, verdict: str, reason: str
) -> None:
    env = clean_env(SSL_CERT_FILE=pki["ca"][0]) if trusted else clean_env()
    with pair() as (client, server), serve(server, "tls-http", "0.0.0.0", 8124, *pki[leaf]):
        rc, rep = diagnose(client, f"https://{SERVER_IP}:8124/", env=env)
    assert rep["verdict"] == verdict, rep["summary"]
    t1 = cause(rep, "tls-1") if verdict != "ok" else None
    if t1 is None:
        assert rc == 0 and rep["likely"] == []
    else:
        assert rc == 1 and t1["status"] == "likely" and reason in t1["why"]
        assert rep["likely"] == ["tls-1"]
