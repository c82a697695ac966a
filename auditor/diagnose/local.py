"""Host checks for a target that is this host: who listens on the port, and the firewall.

These are the server-side halves of the source document's cases: nothing listening (refused-5),
a listener bound to 127.0.0.1 while clients use another address (refused-7), a firewall rule
that drops (timeout-1) or rejects the port. What portaudit cannot see from inside the host (a
cloud security group, a hosting panel's firewall) is named, not guessed (timeout-2/3).
"""

from __future__ import annotations

import ipaddress

from auditor.diagnose.firewall import Packet, evaluate
from auditor.diagnose.iptables import read_iptables
from auditor.diagnose.model import FirewallHit, ListenerView, LocalView
from auditor.diagnose.nftables import read_nft
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


def reaches(listener: Listener, target_addr: str, bindv6only: bool) -> bool:
    """Would a SYN to `target_addr` be accepted by this listening socket?"""
    target = ipaddress.ip_address(target_addr.split("%", 1)[0])
    addr = ipaddress.ip_address(listener.addr.split("%", 1)[0])
    if addr.is_unspecified:
        if addr.version == target.version:
            return True
        # `::` also takes IPv4 unless bindv6only (a per-socket IPV6_V6ONLY is not visible here).
        return addr.version == 6 and not bindv6only
    return addr == target


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


def firewall_hits(target_addr: str, port: int) -> tuple[tuple[FirewallHit, ...] | Unavailable, str]:
    """Rules of this namespace's firewall that would drop or reject the port; and the source."""
    chains = read_nft()
    source = "nft -j list ruleset"
    if isinstance(chains, Unavailable):
        fallback = read_iptables()
        if isinstance(fallback, Unavailable):
            return Unavailable(f"{chains.reason}; {fallback.reason}"), ""
        chains, source = fallback, "iptables-save"
    family = 6 if ":" in target_addr else 4
    return evaluate(chains, Packet(family=family, daddr=target_addr, dport=port)), source


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
) -> LocalView:
    hits, source = firewall_hits(target_addr, port)
    return LocalView(
        reason=reason,
        listeners=listener_views(sockets, port, target_addr, bindv6only),
        firewall=hits,
        firewall_source=source,
        panels=installed_panels(host),
    )
