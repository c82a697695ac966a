"""The firewall evaluator against rulesets dumped from a real nft (JSON) and iptables-save text."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from auditor.diagnose.firewall import Chain, Packet, decisive, evaluate, nat_hits
from auditor.diagnose.iptables import parse_save, run_save
from auditor.diagnose.model import FirewallHit
from auditor.diagnose.nftables import parse_ruleset
from auditor.errors import InputError
from auditor.facts.model import Unavailable

FIXTURES = Path(__file__).parent / "fixtures" / "diagnose"


@pytest.fixture(scope="module")
def nft_chains() -> list[Chain]:
    return parse_ruleset(json.loads((FIXTURES / "nft-ruleset.json").read_text()))


def _hits(
    chains: list[Chain], port: int, daddr: str = "10.9.0.1", family: int = 4
) -> tuple[FirewallHit, ...]:
    return evaluate(chains, Packet(family=family, daddr=daddr, dport=port))


def test_nft_drop_rule_is_decisive_and_named(nft_chains: list[Chain]) -> None:
    hit = decisive(_hits(nft_chains, 8080))
    assert hit is not None
    assert (hit.where, hit.rule, hit.action) == (
        "inet filter input handle 6",
        "tcp dport 8080 counter drop",
        "drop",
    )
    assert hit.packets == 0


def test_nft_reject_in_an_anonymous_set(nft_chains: list[Chain]) -> None:
    hit = decisive(_hits(nft_chains, 8082))
    assert hit is not None and hit.action == "reject icmp host-prohibited"
    assert hit.where == "inet filter input handle 8"


def test_nft_source_address_match_is_a_condition_not_a_guess(nft_chains: list[Chain]) -> None:
    hits = _hits(nft_chains, 8083)
    assert hits[0].conditions == ("ip saddr 10.0.0.0/8",)
    assert hits[0].action == "reject tcp reset"
    # The strict table's drop policy still decides for every other client.
    last = decisive(hits)
    assert last is not None and last.where == "ip strict inp policy"


def test_nft_named_interval_set_and_jump(nft_chains: list[Chain]) -> None:
    assert decisive(_hits(nft_chains, 9150)).where == "inet filter input handle 10"
    sub = decisive(_hits(nft_chains, 7005))
    assert sub is not None and sub.where == "inet filter sub handle 13"


def test_nft_accepted_ports_and_daddr_matches(nft_chains: list[Chain]) -> None:
    assert _hits(nft_chains, 22) == ()
    assert _hits(nft_chains, 6000, daddr="10.9.0.1") == ()
    # Same port to another address of the host: the accept does not match, the policy drops.
    other = decisive(_hits(nft_chains, 6000, daddr="10.9.0.2"))
    assert other is not None and other.action == "drop"


def test_nft_ip_family_table_does_not_apply_to_ipv6(nft_chains: list[Chain]) -> None:
    assert _hits(nft_chains, 5555, daddr="fd00::1", family=6) == ()
    assert decisive(_hits(nft_chains, 5555)) is not None


def test_nft_bad_document_is_input_error() -> None:
    with pytest.raises(InputError):
        parse_ruleset({"rules": []})


@pytest.fixture(scope="module")
def ipt_chains() -> list[Chain]:
    return parse_save((FIXTURES / "iptables-save.txt").read_text())


def test_iptables_reject_and_policy(ipt_chains: list[Chain]) -> None:
    hit = decisive(_hits(ipt_chains, 3306))
    assert hit is not None
    assert hit.where == "iptables filter INPUT rule 4"
    assert hit.action == "reject icmp-host-prohibited"
    assert _hits(ipt_chains, 22) == ()
    pol = decisive(_hits(ipt_chains, 7777))
    assert pol is not None and pol.where == "iptables filter INPUT policy"


def test_iptables_conditional_accept_is_reported_as_unless(ipt_chains: list[Chain]) -> None:
    hit = decisive(_hits(ipt_chains, 8050))
    assert hit is not None and hit.action == "drop"
    assert len(hit.unless) == 1 and "-s 192.168.0.0/16" in hit.unless[0]


def test_iptables_user_chain_jump(ipt_chains: list[Chain]) -> None:
    hit = decisive(_hits(ipt_chains, 5000))
    assert hit is not None
    assert (hit.where, hit.action) == ("iptables filter blocked rule 1", "reject tcp-reset")


def test_iptables_nat_dnat_is_read_with_its_destination(ipt_chains: list[Chain]) -> None:
    hits = nat_hits(ipt_chains, Packet(family=4, daddr="10.0.0.5", dport=80), "prerouting")
    assert [(h.where, h.kind, h.to_addr, h.to_port, h.conditions) for h in hits] == [
        ("iptables nat PREROUTING rule 1", "dnat", "10.0.0.1", 8080, ())
    ]


def test_iptables_target_options_and_counters_are_not_conditions() -> None:
    chains = parse_save(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n"
        "[7:420] -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n"
        "[3:180] -A DOCKER -p tcp -m tcp --dport 8080 -j DNAT --to-destination [fd00::2]:80\n"
        '-A DOCKER -p tcp -m comment --comment "unbalanced -j ACCEPT\nCOMMIT\n',
        family=6,
        prefix="ip6tables-legacy",
    )
    local = Packet(family=6, daddr="fd00::1", dport=8080, dst_local=True)
    hits = nat_hits(chains, local, "prerouting")
    assert [(h.where, h.to_addr, h.to_port, h.conditions) for h in hits] == [
        ("ip6tables-legacy nat DOCKER rule 1", "fd00::2", 80, ())
    ]
    assert chains[0].rules[0].packets == 7
    unknown = Packet(family=6, daddr="fd00::1", dport=8080)
    assert nat_hits(chains, unknown, "prerouting")[0].conditions == ("--dst-type LOCAL",)
    assert nat_hits(chains, dataclasses.replace(local, dst_local=False), "prerouting") == ()


def test_save_output_is_bounded() -> None:
    """`yes` prints forever: the reader stops at its cap instead of filling memory."""
    if shutil.which("yes") is None:
        pytest.skip("needs coreutils yes")
    got = run_save(["yes"], timeout=10, limit=1 << 16)
    assert isinstance(got, Unavailable) and "output over 65536 bytes" in got.reason
