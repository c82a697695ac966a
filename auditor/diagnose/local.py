"""Host checks for a target that is this host: who listens on the port, and the firewall.

These are the server-side halves of the source document's cases: nothing listening (refused-5),
a listener bound to 127.0.0.1 while clients use another address (refused-7), a firewall rule
that drops (timeout-1) or rejects the port. What portaudit cannot see from inside the host (a
cloud security group, a hosting panel's firewall) is named, not guessed (timeout-2/3).
"""

from __future__ import annotations

import dataclasses
import ipaddress

from auditor.diagnose.firewall import Chain, Packet, evaluate, nat_hits
from auditor.diagnose.iptables import read_iptables, read_legacy, read_nft_save
from auditor.diagnose.model import FirewallHit, ListenerView, LocalView, NatHit
from auditor.diagnose.nftables import read_nft
from auditor.diagnose.server import ListenerDetail, ServerSample, holder
from auditor.facts.model import Listener, SocketTable, Unavailable
from auditor.hostfs import HostRoot

PANELS: tuple[tuple[str, str], ...] = (
    ("/usr/local/psa", "Plesk"),
    ("/etc/psa", "Plesk"),
    ("/usr/local/cpanel", "cPanel"),
    ("/usr/local/directadmin", "DirectAdmin"),
    ("/www/server/panel", "aaPanel (BT)"),
    ("/usr/local/CyberCP", "CyberPanel"),
    ("/usr/local/hestia", "HestiaCP"),
    ("/etc/csf/csf.conf", "ConfigServer Firewall (csf)"),
)
"""Hosting panels whose own firewall or port settings sit beside the kernel's (timeout-3)."""


def reaches(listener: Listener | ListenerDetail, target_addr: str, v6only: bool) -> bool:
    """Would a SYN to `target_addr` be accepted by this listening socket? `v6only` is the
    socket's own IPV6_V6ONLY when sock_diag told it, else net.ipv6.bindv6only."""
    target = ipaddress.ip_address(target_addr.split("%", 1)[0])
    addr = ipaddress.ip_address(listener.addr.split("%", 1)[0])
    if isinstance(target, ipaddress.IPv6Address) and target.ipv4_mapped is not None:
        target = target.ipv4_mapped
    if addr.is_unspecified:
        if addr.version == target.version:
            return True
        return addr.version == 6 and not v6only
    return addr == target


def detail_views(
    before: ServerSample | None, after: ServerSample, target_addr: str
) -> tuple[ListenerView, ...] | Unavailable:
    """Listeners from sock_diag: v6only per socket, accept queue before/after, the holder."""
    if isinstance(after.listeners, Unavailable):
        return after.listeners
    earlier: dict[int, int] = {}
    if before is not None and not isinstance(before.listeners, Unavailable):
        earlier = {li.inode: li.queued for li in before.listeners}
    views: list[ListenerView] = []
    for li in after.listeners:
        h = holder(li.inode) if li.inode else None
        views.append(
            ListenerView(
                address=li.addr,
                port=li.port,
                family=li.family,
                reaches_target=reaches(li, target_addr, bool(li.v6only)),
                v6only=li.v6only,
                queued_before=earlier.get(li.inode),
                queued=li.queued,
                backlog=li.backlog,
                pid=h.pid if h else None,
                process=h.name if h else "",
                state=h.state if h else "",
                fds=h.fds if h else None,
                fd_limit=h.fd_limit if h else None,
                fds_free=h.fds_free if h else None,
            )
        )
    return tuple(views)


def counter_delta(
    before: ServerSample | None, after: ServerSample
) -> dict[str, int] | Unavailable | None:
    if isinstance(after.counters, Unavailable):
        return after.counters
    if before is None or isinstance(before.counters, Unavailable):
        return None
    return {k: v - before.counters.get(k, v) for k, v in after.counters.items()}


def listener_views(
    table: SocketTable | Unavailable, port: int, target_addr: str, bindv6only: bool
) -> tuple[ListenerView, ...] | Unavailable:
    if isinstance(table, Unavailable):
        return table
    return tuple(
        ListenerView(
            address=li.addr,
            port=li.port,
            family=li.family,
            reaches_target=reaches(li, target_addr, bindv6only),
        )
        for li in table.listeners
        if li.port == port
    )


NFT_SOURCE = "nft -j list ruleset"


def read_rules() -> tuple[list[Chain] | Unavailable, str]:
    """Every rule the kernel runs for this namespace, and where they were read: nft's ruleset
    (iptables-nft rules included) plus the rules iptables-legacy loaded, which nft never
    shows; on a host without nft, iptables-save."""
    chains = read_nft()
    if isinstance(chains, Unavailable):
        fallback = read_iptables()
        if isinstance(fallback, Unavailable):
            return Unavailable(f"{chains.reason}; {fallback.reason}"), ""
        return fallback, "iptables-save"
    chains, source = _with_xt(chains)
    legacy = read_legacy()
    if isinstance(legacy, Unavailable):
        return chains, f"{source} (legacy rules unread: {legacy.reason})"
    if legacy:
        return [*chains, *legacy], f"{source} + iptables-legacy-save"
    return chains, source


_NFT_FAMILY = {"ip": 4, "ip6": 6}


def _with_xt(chains: list[Chain]) -> tuple[list[Chain], str]:
    """nft's chains, where a table holds iptables-nft rules nft can only show as opaque `xt`
    statements, replaced by the same table as `iptables-nft-save` prints it (once, not both)."""
    opaque = {
        (_NFT_FAMILY.get(c.key.split()[0]), c.key.split()[1])
        for c in chains
        if any(r.opaque for r in c.rules) and len(c.key.split()) >= 3
    }
    if not opaque:
        return chains, NFT_SOURCE
    saved = read_nft_save()
    if isinstance(saved, Unavailable):
        return chains, f"{NFT_SOURCE} (xt rules unread: {saved.reason})"

    def key(c: Chain, nft: bool) -> tuple[int | None, str]:
        parts = c.key.split()
        if nft:
            return _NFT_FAMILY.get(parts[0]), parts[1]
        return next(iter(c.families), None), parts[1]

    kept = [c for c in chains if key(c, True) not in opaque]
    added = [c for c in saved if key(c, False) in opaque]
    return [*kept, *added], f"{NFT_SOURCE} + iptables-nft-save"


def rule_counters() -> dict[str, int]:
    """Every counting rule's packet count now, by where it is (`inet t input handle 4`)."""
    chains, _ = read_rules()
    if isinstance(chains, Unavailable):
        return {}
    return {r.where: r.packets for c in chains for r in c.rules if r.packets is not None}


def with_deltas(
    hits: tuple[FirewallHit, ...] | Unavailable | None, before: dict[str, int]
) -> tuple[FirewallHit, ...] | Unavailable | None:
    """The hits with their counter's growth over the probe, where the rule counts."""
    if not isinstance(hits, tuple):
        return hits
    return tuple(
        dataclasses.replace(h, delta=h.packets - before[h.where])
        if h.packets is not None and h.where in before
        else h
        for h in hits
    )


def _packet(addr: str, port: int, dst_local: bool | None = None) -> Packet:
    return Packet(family=6 if ":" in addr else 4, daddr=addr, dport=port, dst_local=dst_local)


def client_rules(
    target_addr: str, port: int, dst_local: bool | None = None
) -> tuple[tuple[FirewallHit, ...] | Unavailable, tuple[NatHit, ...] | Unavailable]:
    """This host's output-hook filter rules that would drop or reject the SYN it sends, and
    its nat output rules (REDIRECT/DNAT) that would send it elsewhere."""
    chains, _ = read_rules()
    if isinstance(chains, Unavailable):
        return chains, chains
    pkt = _packet(target_addr, port, dst_local)
    return evaluate(chains, pkt, hook="output"), nat_hits(chains, pkt, "output")


def nat_destination(hit: NatHit, addr: str, port: int) -> tuple[str, int]:
    """Where a rewritten connection goes: REDIRECT means this host (loopback for its own
    packets), DNAT the rule's address; the port is the rule's or unchanged."""
    if hit.kind == "redirect":
        return ("::1" if ":" in addr else "127.0.0.1"), hit.to_port or port
    return hit.to_addr or addr, hit.to_port or port


def forwarding_rules(
    target_addr: str, port: int, dst_local: bool | None = None
) -> tuple[tuple[NatHit, ...] | Unavailable, tuple[FirewallHit, ...] | Unavailable]:
    """For a connection arriving from outside: prerouting REDIRECT/DNAT of the port, then the
    forward-hook rules for where it goes after DNAT."""
    chains, _ = read_rules()
    if isinstance(chains, Unavailable):
        return chains, chains
    pkt = _packet(target_addr, port, dst_local)
    nat = nat_hits(chains, pkt, "prerouting")
    last = nat[-1] if nat and not nat[-1].conditions else None
    if last is not None and last.kind == "dnat":
        addr, dport = nat_destination(last, target_addr, port)
        pkt = _packet(addr, dport)
    return nat, evaluate(chains, pkt, hook="forward")


def firewall_hits(target_addr: str, port: int) -> tuple[tuple[FirewallHit, ...] | Unavailable, str]:
    """Rules of this namespace's firewall that would drop or reject the port; and the source."""
    chains, source = read_rules()
    if isinstance(chains, Unavailable):
        return chains, ""
    return evaluate(chains, _packet(target_addr, port, dst_local=True)), source


def installed_panels(host: HostRoot) -> tuple[str, ...]:
    found: list[str] = []
    for path, name in PANELS:
        if host.path(path).exists() and name not in found:
            found.append(name)
    return tuple(found)


def local_view(
    host: HostRoot,
    reason: str,
    target_addr: str,
    port: int,
    sockets: SocketTable | Unavailable,
    bindv6only: bool,
    before: ServerSample | None = None,
    after: ServerSample | None = None,
    forwarding: bool = False,
    served_port: int | None = None,
) -> LocalView:
    """The server side of `port` on this host. `served_port` is where the connection is
    served when a prerouting REDIRECT sends it elsewhere on this host: its listeners and the
    input rules are read there, the nat and forward rules at the port the client uses."""
    inner = served_port or port
    hits, source = firewall_hits(target_addr, inner)
    nat, forward = forwarding_rules(target_addr, port, dst_local=not forwarding)
    listeners: tuple[ListenerView, ...] | Unavailable
    if after is not None and not isinstance(after.listeners, Unavailable):
        listeners = detail_views(before, after, target_addr)
    else:
        listeners = listener_views(sockets, inner, target_addr, bindv6only)
    return LocalView(
        reason=reason,
        listeners=listeners,
        firewall=hits,
        firewall_source=source,
        panels=installed_panels(host),
        drops=counter_delta(before, after) if after is not None else None,
        forwarding=forwarding,
        nat=nat,
        forward=forward,
    )
