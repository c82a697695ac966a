"""`diagnose` on the cases that need a bigger stage: a full conntrack table, servers that
change their answer between attempts, a Docker-style published port, legacy iptables rules.

Built for real in namespaces (tests/test_diagnose_netns.py's `pair`, real servers); each test
asserts the verdict, the likely cause and its evidence, that no wrong cause is likely, and the
exit code, from the client and with `--local` where that applies.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.netns import requires_netns
from tests.test_diagnose_netns import SERVER_IP, cause, diagnose, nft, pair, serve

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
