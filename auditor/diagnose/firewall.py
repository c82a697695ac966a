"""Would this host's firewall let a new TCP connection to the port in? A small, honest evaluator.

nftables and iptables rulesets are both read into the neutral model below (`nftables.py`,
`iptables.py`), then the input-hook base chains are walked in priority order for one packet:
a new TCP SYN to (address, port) from a client portaudit does not know. Matches on what is
known (protocol, destination port, destination address, conntrack state `new`, `iif lo` for a
remote client) are decided; matches on what is not (source address, input interface, anything
unmodelled) make a rule *conditional*: reported with the condition, never guessed.

A DROP is what the source document's timeout-1 is ("the server's firewall blocks the
connection"); a REJECT turns the same block into *refused* (tcp reset, icmp port-unreachable)
or *unreachable* (icmp host-prohibited), so the rule is named whatever the client saw.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from auditor.diagnose.model import FirewallHit, NatHit

LOOPBACK_IFACES = frozenset({"lo", "1"})


@dataclass(frozen=True, slots=True)
class Cond:
    field: str
    """l4proto | dport | ctstate | iif | daddr | saddr | family | other"""
    values: tuple[object, ...]
    """dport: (low, high) pairs; daddr/saddr: networks; others: lower-case names."""
    text: str
    negate: bool = False
    family: int | None = None
    """For address matches: 4 (`ip daddr`) or 6 (`ip6 daddr`)."""


@dataclass(frozen=True, slots=True)
class FirewallRule:
    where: str
    text: str
    conds: tuple[Cond, ...]
    verdict: str
    """accept | drop | reject | jump | goto | return | "" (no verdict: counter, log...)."""
    target: str = ""
    """The chain key for jump/goto; the reject type for reject."""
    packets: int | None = None
    nat: str = ""
    """`redirect` or `dnat` when the rule rewrites the destination; empty otherwise."""
    nat_addr: str | None = None
    nat_port: int | None = None
    opaque: bool = False
    """nft shows the rule only as an iptables-nft `xt` statement (its match or target's
    options unreadable there): `iptables-nft-save` has them."""


@dataclass(frozen=True, slots=True)
class Chain:
    key: str
    """`family table name`, how jumps name it."""
    label: str
    hook: str | None
    priority: int
    policy: str
    rules: tuple[FirewallRule, ...]
    families: frozenset[int]
    kind: str = "filter"
    """The chain type: filter | nat | route."""


@dataclass(frozen=True, slots=True)
class Packet:
    family: int
    daddr: str | None
    dport: int
    dst_local: bool | None = None
    """The destination is an address of this host (`-m addrtype --dst-type LOCAL`); None
    when unknown."""


def _in_range(port: int, value: object) -> bool:
    if isinstance(value, tuple) and len(value) == 2:
        lo, hi = value
        return isinstance(lo, int) and isinstance(hi, int) and lo <= port <= hi
    return False


def _match(cond: Cond, pkt: Packet) -> bool | None:
    result: bool | None
    if cond.field == "l4proto":
        result = "tcp" in cond.values or "6" in cond.values
    elif cond.field == "dport":
        result = any(_in_range(pkt.dport, v) for v in cond.values)
    elif cond.field == "ctstate":
        result = "new" in cond.values
    elif cond.field == "family":
        result = pkt.family in cond.values
    elif cond.field == "iif":
        # A client on another host never arrives on loopback; any other interface is unknown.
        if all(str(v) in LOOPBACK_IFACES for v in cond.values):
            result = False
        else:
            return None
    elif cond.field == "daddr":
        if cond.family is not None and cond.family != pkt.family:
            return False
        if pkt.daddr is None:
            return None
        ip = ipaddress.ip_address(pkt.daddr.split("%", 1)[0])
        result = any(ip in net for net in cond.values)  # type: ignore[operator]
    elif cond.field == "saddr" and cond.family is not None and cond.family != pkt.family:
        return False
    elif (
        cond.field == "dsttype"
        and pkt.dst_local is not None
        and cond.values
        in (
            ("local",),
            ("unicast",),
        )
    ):
        result = pkt.dst_local if cond.values == ("local",) else True
    else:
        return None
    return (not result) if cond.negate else result


def _conditions(rule: FirewallRule, pkt: Packet) -> tuple[str, ...] | None:
    """None when the rule cannot match the packet; else the undecided conditions' texts."""
    unknown: list[str] = []
    for cond in rule.conds:
        got = _match(cond, pkt)
        if got is False:
            return None
        if got is None:
            unknown.append(cond.text)
    return tuple(unknown)


def _action(rule: FirewallRule) -> str:
    if rule.verdict == "reject":
        return f"reject {rule.target}".strip()
    return rule.verdict


def _walk(
    chain: Chain,
    chains: dict[str, Chain],
    pkt: Packet,
    hits: list[FirewallHit],
    accepts: list[str],
    depth: int,
) -> str | None:
    """Walk one chain; returns the decisive verdict (accept/drop/reject) or None (fell through)."""
    if depth > 16:
        return None
    for rule in chain.rules:
        unknown = _conditions(rule, pkt)
        if unknown is None or not rule.verdict:
            continue
        if rule.verdict in ("drop", "reject"):
            hits.append(
                FirewallHit(
                    where=rule.where,
                    rule=rule.text,
                    action=_action(rule),
                    conditions=unknown,
                    unless=tuple(accepts),
                    packets=rule.packets,
                )
            )
            if not unknown:
                return rule.verdict
            continue
        if rule.verdict == "accept":
            if not unknown:
                return "accept"
            accepts.append(f"{rule.where}: {rule.text}")
            continue
        if rule.verdict == "return":
            if not unknown:
                return None
            continue
        if rule.verdict in ("jump", "goto"):
            sub = chains.get(rule.target)
            if sub is None:
                continue
            got = _walk(sub, chains, pkt, hits, accepts, depth + 1)
            if got is not None and not unknown:
                return got
            if rule.verdict == "goto" and not unknown:
                return None
    return None


def evaluate(chains: list[Chain], pkt: Packet, hook: str = "input") -> tuple[FirewallHit, ...]:
    """Rules that would drop or reject the packet on the hook, decisive one last."""
    by_key = {c.key: c for c in chains}
    hits: list[FirewallHit] = []
    base = sorted(
        (c for c in chains if c.hook == hook and c.kind == "filter" and pkt.family in c.families),
        key=lambda c: c.priority,
    )
    for chain in base:
        accepts: list[str] = []
        verdict = _walk(chain, by_key, pkt, hits, accepts, 0)
        if verdict is None and chain.policy == "drop":
            hits.append(
                FirewallHit(
                    where=f"{chain.label} policy",
                    rule=f"policy drop (no rule accepts tcp dport {pkt.dport})",
                    action="drop",
                    unless=tuple(accepts),
                )
            )
            verdict = "drop"
        if verdict in ("drop", "reject") and not hits[-1].conditions:
            break
    return tuple(hits)


def nat_hits(chains: list[Chain], pkt: Packet, hook: str) -> tuple[NatHit, ...]:
    """REDIRECT/DNAT rules of the nat chains on `hook` that would rewrite the packet; the
    first one that applies without conditions ends the list (the kernel stops there)."""
    hits: list[NatHit] = []
    by_key = {c.key: c for c in chains}
    base = sorted(
        (c for c in chains if c.kind == "nat" and c.hook == hook and pkt.family in c.families),
        key=lambda c: c.priority,
    )
    for chain in base:
        if _nat_walk(chain, by_key, pkt, (), hits, 0) == "rewritten":
            return tuple(hits)
    return tuple(hits)


def _nat_walk(
    chain: Chain,
    chains: dict[str, Chain],
    pkt: Packet,
    outer: tuple[str, ...],
    hits: list[NatHit],
    depth: int,
) -> str | None:
    """Walk one nat chain (and the chains it jumps to, as Docker's DOCKER chain): `rewritten`
    when a rewrite applies without conditions (the kernel stops there), `accept` when the
    chain ends without one, None when it falls through. `outer` are the undecided conditions
    of the jumps that led here."""
    if depth > 16:
        return None
    for rule in chain.rules:
        unknown = _conditions(rule, pkt)
        if unknown is None:
            continue
        unknown = (*outer, *unknown)
        if rule.nat:
            hits.append(
                NatHit(
                    where=rule.where,
                    rule=rule.text,
                    kind=rule.nat,
                    to_addr=rule.nat_addr,
                    to_port=rule.nat_port,
                    conditions=unknown,
                )
            )
            if not unknown:
                return "rewritten"
        elif rule.verdict in ("jump", "goto") and rule.target in chains:
            got = _nat_walk(chains[rule.target], chains, pkt, unknown, hits, depth + 1)
            if got is not None and (got == "rewritten" or not unknown):
                return got
            if rule.verdict == "goto" and not unknown:
                return None
        elif rule.verdict in ("accept", "drop") and not unknown:
            return "accept"
        elif rule.verdict == "return" and not unknown:
            return None
    return None


def decisive(hits: tuple[FirewallHit, ...]) -> FirewallHit | None:
    """The rule that blocks every new connection to the port, if there is one."""
    return next((h for h in hits if not h.conditions), None)
