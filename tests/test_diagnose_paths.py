"""`diagnose` on the cases that need a bigger stage: a full conntrack table, servers that
change their answer between attempts, a Docker-style published port, legacy iptables rules.

Built for real in namespaces (tests/test_diagnose_netns.py's `pair`, real servers); each test
asserts the verdict, the likely cause and its evidence, that no wrong cause is likely, and the
exit code, from the client and with `--local` where that applies.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

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


@contextmanager
def docker_container(host: Netns) -> Iterator[Netns]:
    """A container namespace behind a veth of `host` (10.9.0.2, routed through 10.9.0.1),
    with forwarding on in `host`: what Docker sets up for a published port."""
    with make_netns("pa-dctr") as ctr:
        behind(host, ctr, ("vh9", "10.9.0.1/24"), ("vc9", "10.9.0.2/24"))
        yield ctr


pytestmark = [pytest.mark.netns, requires_netns]

CT_MAX_LIMIT = 1 << 20
"""Above this many entries filling a namespace's table costs too much time and memory."""

TRACK = """
table inet pa_track {
  chain input {
    type filter hook input priority 0; policy accept;
    ct state established,related accept
  }
}
"""
"""A rule that needs conntrack: a namespace tracks connections only once a hook does."""


def _evidence(c: dict[str, object]) -> str:
    return " | ".join(f"{e['what']}={e['value']}@{e['where']}" for e in c["evidence"])  # type: ignore[index, union-attr]


def test_full_conntrack_table_is_found_on_the_server_not_blamed_on_a_firewall() -> None:
    ct_max = int(Path("/proc/sys/net/netfilter/nf_conntrack_max").read_text())
    if ct_max > CT_MAX_LIMIT:
        pytest.skip(f"nf_conntrack_max is {ct_max}: filling a namespace's table is too costly")
    with pair() as (client, server), serve(server, "hold", "0.0.0.0", 8130):
        nft(server, TRACK)
        filled = server.python("-m", "tests.conntrack_fill", SERVER_IP, check=False, timeout=120)
        if filled.returncode != 0:
            pytest.skip(f"could not fill the namespace's conntrack table: {filled.stdout}"
                        f"{filled.stderr.strip()[-200:]}")  # fmt: skip
        rc, rep = diagnose(client, f"{SERVER_IP}:8130")
        src, srv = diagnose(server, f"{SERVER_IP}:8130", "--local")
    assert (rc, rep["verdict"]) == (1, "timeout")
    assert cause(rep, "ct-1")["status"] in ("possible", "ruled-out")
    assert all(c["status"] != "likely" for c in rep["causes"] if c["id"] in FIREWALL_CAUSES)
    assert (src, srv["verdict"]) == (1, "timeout")
    ct1 = cause(srv, "ct-1")
    assert ct1["status"] == "likely" and ct1["rule"] == "CT-001"
    assert f"{ct_max} has reached nf_conntrack_max {ct_max}" in ct1["why"]
    assert f"{ct_max} of {ct_max}" in _evidence(ct1)
    assert srv["likely"] == ["ct-1"]


FIREWALL_CAUSES = ("timeout-1", "fw-out", "fw-path", "timeout-2", "timeout-3")


@pytest.mark.parametrize(
    ("mode", "target", "after"),
    [
        ("alternate-reset", f"http://{SERVER_IP}:8131/", "reset"),
        # Over HTTP a close with the request unread becomes a reset; raw TCP sees the FIN.
        ("alternate-close", f"{SERVER_IP}:8131", "closed"),
    ],
)
def test_a_server_that_accepts_and_then_answers_differently_flaps(
    mode: str, target: str, after: str
) -> None:
    """Every connect succeeds; what follows accept alternates between an answer and a reset
    (or a close): comparing connect() results alone would call this healthy or broken."""
    with pair() as (client, server), serve(server, mode, "0.0.0.0", 8131):
        rc, rep = diagnose(client, target)
    assert (rc, rep["verdict"]) == (1, "flapping"), rep["summary"]
    tries = rep["addresses"][0]["tries"]
    assert len(tries) == 3 and "ok" in tries and after in tries
    f1 = cause(rep, "flap-1")
    assert f1["status"] == "likely" and SERVER_IP in f1["why"] and after in f1["why"]
    assert rep["likely"] == ["flap-1"]


def test_flapping_is_found_on_every_address_of_a_name(tmp_path: Path) -> None:
    """A name with two addresses: the first answers steadily, the second only every other
    time; attempts go to every address, so the second one's flapping is named."""
    hosts = tmp_path / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n{SERVER_IP} twice.diagnose.test\n"
                     "10.203.0.3 twice.diagnose.test\n")  # fmt: skip
    with pair() as (client, server):
        server.run(["ip", "addr", "add", "10.203.0.3/24", "dev", "vs0"])
        with serve(server, "http", SERVER_IP, 8132), \
                serve(server, "alternate-reset", "10.203.0.3", 8132):  # fmt: skip
            rc, rep = diagnose(
                client, "http://twice.diagnose.test:8132/", over=(hosts, "/etc/hosts")
            )
    assert rc == 1
    assert rep["verdict"] == "flapping", rep["summary"]
    by_addr = {a["address"]: a["tries"] for a in rep["addresses"]}
    assert set(by_addr) == {SERVER_IP, "10.203.0.3"}
    assert set(by_addr[SERVER_IP]) == {"ok"}
    assert {"ok", "reset"} <= set(by_addr["10.203.0.3"])
    f1 = cause(rep, "flap-1")
    assert f1["status"] == "likely" and "10.203.0.3" in f1["why"]
    assert rep["likely"] == ["flap-1"]


PUBLISH = """
table ip pa_docker {
  chain pre {
    type nat hook prerouting priority -100;
    tcp dport 8133 dnat to 10.9.0.2:80
  }
}
"""


@pytest.mark.parametrize(("container", "verdict", "likely"),
                         [(None, "refused", ["nat-1"]), ("http", "ok", [])])  # fmt: skip
def test_published_port_is_judged_on_the_path_an_outside_client_takes(
    container: str | None, verdict: str, likely: list[str]
) -> None:
    """A Docker-style host: prerouting DNATs its port 8133 to a container (a namespace behind
    a veth) and a local proxy listens on the port itself, as docker-proxy does. This host's
    own connection reaches the proxy; an outside client's is rewritten to the container.
    `--local` must judge the client's path and keep its own result beside it."""
    with pair() as (client, host), docker_container(host) as ctr:
        nft(host, PUBLISH)
        with serve(host, "http", "0.0.0.0", 8133), ExitStack() as stack:
            if container is not None:
                stack.enter_context(serve(ctr, container, "0.0.0.0", 80))
            rc, rep = diagnose(client, f"http://{SERVER_IP}:8133/")
            hrc, hst = diagnose(host, f"http://{SERVER_IP}:8133/", "--local")
    assert (rc, rep["verdict"], rep["likely"]) == (int(verdict != "ok"), verdict, [])
    assert (hrc, hst["verdict"]) == (rc, verdict), hst["summary"]
    assert hst["likely"] == likely
    assert "ip pa_docker pre handle" in hst["path"] and "10.9.0.2:80" in hst["path"]
    assert hst["addresses"][0]["address"] == "10.9.0.2"
    assert hst["own_path"]["verdict"] == "ok"
    assert any("this host's own connection" in e for e in hst["evidence"])
    n1 = cause(hst, "nat-1")
    assert "ip pa_docker pre handle" in n1["why"]
    assert n1["status"] == ("likely" if likely else "possible")


needs_legacy = pytest.mark.skipif(
    shutil.which("iptables-legacy") is None or shutil.which("iptables-legacy-save") is None,
    reason="needs iptables-legacy (Debian package iptables) to load legacy rules",
)


def _legacy(ns: Netns, *rules: str) -> None:
    """Load rules with iptables-legacy: x_tables the kernel runs, invisible to nft."""
    for rule in rules:
        ns.run(["iptables-legacy", *rule.split()])


@needs_legacy
def test_legacy_input_drop_is_read_on_the_server() -> None:
    with pair() as (client, server), serve(server, "hold", "0.0.0.0", 8140):
        _legacy(server, "-A INPUT -p tcp --dport 8140 -j DROP")
        assert "8140" not in server.run(["nft", "list", "ruleset"]).stdout
        rc, rep = diagnose(client, f"{SERVER_IP}:8140")
        src, srv = diagnose(server, f"{SERVER_IP}:8140", "--local")
    assert (rc, rep["verdict"], rep["likely"]) == (1, "timeout", [])
    assert (src, srv["verdict"]) == (1, "timeout")
    t1 = cause(srv, "timeout-1")
    assert t1["status"] == "likely" and "iptables-legacy filter INPUT rule 1" in t1["why"]
    assert "iptables-legacy-save" in t1["why"] and "during this probe" in t1["why"]
    assert srv["likely"] == ["timeout-1"]


@needs_legacy
def test_legacy_output_reject_and_nat_redirect_are_read_on_the_client() -> None:
    with pair() as (client, server), serve(server, "hold", "0.0.0.0", 8141), \
            serve(server, "hold", "0.0.0.0", 8142):  # fmt: skip
        _legacy(client, "-A OUTPUT -p tcp --dport 8141 -j REJECT",
                "-t nat -A OUTPUT -p tcp --dport 8142 -j REDIRECT --to-ports 3128")  # fmt: skip
        rc1, rej = diagnose(client, f"{SERVER_IP}:8141")
        rc2, red = diagnose(client, f"{SERVER_IP}:8142")
    assert (rc1, rej["verdict"], rej["likely"]) == (1, "refused", ["fw-out"])
    assert "iptables-legacy filter OUTPUT rule 1" in cause(rej, "fw-out")["why"]
    assert cause(rej, "timeout-1")["status"] == "ruled-out"
    assert (rc2, red["verdict"], red["likely"]) == (1, "refused", ["nat-1"])
    n1 = cause(red, "nat-1")
    assert "iptables-legacy nat OUTPUT rule 1" in n1["why"] and ":3128" in n1["why"]


@needs_legacy
def test_legacy_docker_chain_dnat_and_forward_drop_are_judged_on_the_host() -> None:
    """Docker's own layout with iptables-legacy: PREROUTING jumps to a DOCKER chain for local
    destinations, which DNATs the published port; FORWARD drops it on the way."""
    with pair() as (client, host), docker_container(host) as ctr:
        _legacy(host, "-t nat -N DOCKER",
                "-t nat -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER",
                "-t nat -A DOCKER -p tcp --dport 8143 -j DNAT --to-destination 10.9.0.2:80",
                "-A FORWARD -p tcp -d 10.9.0.2 --dport 80 -j DROP")  # fmt: skip
        with serve(ctr, "http", "0.0.0.0", 80):
            rc, rep = diagnose(client, f"http://{SERVER_IP}:8143/")
            hrc, hst = diagnose(host, f"http://{SERVER_IP}:8143/", "--local")
    assert (rc, rep["verdict"], rep["likely"]) == (1, "timeout", [])
    assert "iptables-legacy nat DOCKER rule 1" in hst["path"]
    assert "iptables-legacy filter FORWARD rule 1" in hst["path"]
    assert hst["verdict"] == "timeout", hst["summary"]
    assert hst["own_path"]["verdict"] == "refused"
    fp = cause(hst, "fw-path")
    assert fp["status"] == "likely" and "iptables-legacy filter FORWARD rule 1" in fp["why"]
    assert "refused-5" not in hst["likely"] and "timeout-1" not in hst["likely"]
    assert hrc == 1 and "fw-path" in hst["likely"]


def test_iptables_nft_rules_are_read_once() -> None:
    """Rules made with iptables-nft are nft's: read through nft, not again as iptables."""
    if shutil.which("iptables-nft") is None:
        pytest.skip("needs iptables-nft (Debian package iptables)")
    with pair() as (_client, server), serve(server, "hold", "0.0.0.0", 8144):
        server.run(["iptables-nft", "-A", "INPUT", "-p", "tcp", "--dport", "8144", "-j", "DROP"])
        _, srv = diagnose(server, f"{SERVER_IP}:8144", "--local")
    fw = srv["local"]["firewall"]
    assert len(fw) == 1 and fw[0]["where"].startswith("ip filter INPUT handle")
    assert srv["likely"] == ["timeout-1"]


def test_docker_on_iptables_nft_is_read_from_iptables_nft_save() -> None:
    """Docker's rules made with iptables-nft: nft shows `xt match addrtype` and `xt target
    DNAT` without their options, so the tables holding them are read with iptables-nft-save
    (once: nft's copy of those tables is set aside)."""
    if shutil.which("iptables-nft") is None or shutil.which("iptables-nft-save") is None:
        pytest.skip("needs iptables-nft (Debian package iptables)")
    with pair() as (client, host), docker_container(host):
        for rule in (
            "-t nat -N DOCKER",
            "-t nat -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER",
            "-t nat -A DOCKER -p tcp --dport 8145 -j DNAT --to-destination 10.9.0.2:80",
        ):
            host.run(["iptables-nft", *rule.split()])  # fmt: skip
        assert '"xt"' in host.run(["nft", "-j", "list", "ruleset"]).stdout
        with serve(host, "http", "0.0.0.0", 8145):
            rc, rep = diagnose(client, f"http://{SERVER_IP}:8145/")
            hrc, hst = diagnose(host, f"http://{SERVER_IP}:8145/", "--local")
    assert (rc, rep["verdict"], rep["likely"]) == (1, "refused", [])
    assert (hrc, hst["verdict"], hst["likely"]) == (1, "refused", ["nat-1"]), hst["summary"]
    assert "iptables-nft nat DOCKER rule 1" in hst["path"] and "10.9.0.2:80" in hst["path"]
    assert hst["own_path"]["verdict"] == "ok"
    hits = [n["where"] for n in hst["local"]["nat"]]
    assert hits == ["iptables-nft nat DOCKER rule 1"]


REDIRECT = """
table ip pa_redir {
  chain pre {
    type nat hook prerouting priority -100;
    tcp dport 8150 redirect to :8151
  }
}
"""


@pytest.mark.parametrize(("bound", "cid"), [(None, "refused-5"), ("127.0.0.1", "refused-7")])
def test_prerouting_redirect_is_judged_where_it_sends_outside_clients(
    bound: str | None, cid: str
) -> None:
    """Outside clients' port 8150 is redirected to 8151, where nothing serves them (nothing
    listens, or only on loopback); this host's own connection to 8150 reaches a listener
    there. `--local` reads the listeners of the port the clients really reach."""
    with pair() as (client, server), serve(server, "http", "0.0.0.0", 8150), ExitStack() as st:
        if bound is not None:
            st.enter_context(serve(server, "http", bound, 8151))
        nft(server, REDIRECT)
        rc, rep = diagnose(client, f"http://{SERVER_IP}:8150/")
        src, srv = diagnose(server, f"http://{SERVER_IP}:8150/", "--local")
    assert (rc, rep["verdict"], rep["likely"]) == (1, "refused", [])
    assert (src, srv["verdict"]) == (1, "refused"), srv["summary"]
    assert sorted(srv["likely"]) == sorted(["nat-1", cid])
    assert "ip pa_redir pre handle" in srv["path"]
    assert srv["own_path"]["verdict"] == "ok"
    assert "port 8151" in cause(srv, cid)["why"] or "127.0.0.1" in cause(srv, cid)["why"]
    assert any(e.startswith("listeners on port 8151") for e in srv["evidence"])
