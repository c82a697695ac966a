"""What was observed, as (what, value, where) records each cause carries as its evidence.

A cause is `likely` only when something observed here shows it; these records are those
observations, named once so the table and the JSON show, beside each cause, what was read, the
value read and where it was read (the socket's error queue, sock_diag, /proc, the ruleset).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from auditor.diagnose.model import Seen
from auditor.facts.model import Unavailable, bracketed, endpoint

if TYPE_CHECKING:
    from auditor.diagnose.causes import Evidence

EVIDENCE_OF: dict[str, tuple[str, ...]] = {
    "refused-1": ("connect", "listeners"),
    "refused-2": ("resolve", "listeners"),
    "refused-3": ("resolve", "expect"),
    "timeout-5": ("resolve", "expect"),
    "refused-4": ("front", "expect"),
    "refused-5": ("connect", "icmp", "listeners", "firewall"),
    "refused-6": ("proxy", "route"),
    "refused-7": ("connect", "listeners", "rule:RCH-001"),
    "timeout-1": ("connect", "icmp", "neighbour", "firewall", "client_firewall"),
    "timeout-2": ("connect", "firewall"),
    "timeout-3": ("connect", "firewall"),
    "timeout-4": ("connect", "icmp", "neighbour", "route"),
    "timeout-6": ("route", "icmp"),
    "addr-1": ("connect", "port_use", "rule:EPH-001"),
    "addr-2": ("port_use",),
    "proto-1": ("reply",),
    "route-1": ("route", "connect", "icmp"),
    "fd-1": ("connect",),
    "fw-out": ("client_firewall",),
    "fw-path": ("icmp", "route", "forward"),
    "app-1": ("reply", "queue", "process"),
    "app-2": ("reply", "queue", "process"),
    "app-3": ("reply", "queue", "process"),
    "lsn-1": ("queue", "drops", "rule:LSN-002", "rule:LSN-001"),
    "ct-1": ("conntrack", "client_conntrack", "rule:CT-001"),
    "fd-2": ("process", "rule:FD-003"),
    "tls-1": ("tls",),
    "flap-1": ("tries",),
    "multi-1": ("other_addresses",),
    "dns-1": ("resolve", "nameservers"),
    "nat-1": ("nat",),
}
"""For each cause, the observations that bear on it (shown when they were made)."""


def observations(ev: Evidence) -> dict[str, Seen]:
    """Every observation of this run, by key."""
    out: dict[str, Seen] = {}
    t = ev.target
    res = ev.resolution
    if not t.is_literal:
        where = (
            f"{res.hosts_entries[0].file} line {res.hosts_entries[0].line}"
            if res.hosts_entries
            else "getaddrinfo (DNS)"
        )
        value = res.error or ", ".join(res.addresses)
        out["resolve"] = Seen(f"addresses of {t.host}", value, where)
        if res.error:
            out["nameservers"] = Seen(
                "nameservers", ", ".join(res.nameservers) or "none", "/etc/resolv.conf"
            )
    if res.expect_ip is not None:
        out["expect"] = Seen("expected address", res.expect_ip, "--expect-ip")
    p = ev.primary
    if p is not None:
        r = p.route
        if isinstance(r, Unavailable):
            out["route"] = Seen(f"route to {p.address}", f"unknown ({r.reason})", "rtnetlink")
        else:
            via = f" via {r.gateway}" if r.gateway else ""
            dev = f" dev {r.interface}" if r.interface else ""
            out["route"] = Seen(
                f"route to {p.address}", f"{r.kind}{dev}{via} src {r.source}", "ip route get"
            )
        c = p.connect
        value = c.outcome + (f" ({c.errno_name})" if c.errno_name else "")
        if c.outcome == "refused" and c.icmp is None:
            value += ": TCP reset to the SYN"
        if c.outcome == "timeout":
            value += ": no answer to the SYN"
        out["connect"] = Seen(f"connect {endpoint(p.address, t.port)}", value, "TCP from this host")
        if c.icmp is not None:
            out["icmp"] = Seen(
                "ICMP error",
                f"{c.icmp.name} (type {c.icmp.type} code {c.icmp.code}) from {c.icmp.sender}",
                "socket error queue (IP_RECVERR)",
            )
        if c.neighbour:
            out["neighbour"] = Seen("next hop ARP/ND state", c.neighbour, "neighbour table")
        others = [a for a in ev.attempts if a.address != p.address]
        if others:
            out["other_addresses"] = Seen(
                "the name's other addresses",
                "; ".join(f"{bracketed(a.address)}: {', '.join(a.tries)}" for a in others),
                "TCP from this host",
            )
        if len(p.tries) > 1:
            out["tries"] = Seen("attempts", ", ".join(p.tries), f"{len(p.tries)} connects")
        if p.protocol is not None:
            out["reply"] = Seen(f"{t.protocol} exchange", p.protocol.summary, "this probe")
            if p.protocol.front:
                out["front"] = Seen("reply headers", "; ".join(p.protocol.front), "this probe")
            if p.protocol.tls_untrusted:
                out["tls"] = Seen(
                    "certificate verification", p.protocol.tls_untrusted, "system trust store"
                )
    for proxy in ev.proxies:
        state = f" ({proxy.reachable})" if proxy.reachable else ""
        out["proxy"] = Seen(f"${proxy.variable}", proxy.url + state, "environment")
        break
    fw = ev.client_firewall
    if isinstance(fw, Unavailable):
        out["client_firewall"] = Seen("this host's output rules", fw.reason, "nft")
    elif fw is not None:
        value = "; ".join(f"{h.where}: {h.rule} ({h.action})" for h in fw) or "none blocks"
        out["client_firewall"] = Seen("this host's output rules", value, "nft -j list ruleset")
    if isinstance(ev.client_conntrack, tuple):
        count, limit = ev.client_conntrack
        out["client_conntrack"] = Seen(
            "this host's conntrack entries", f"{count} of {limit}", "/proc/sys/net/netfilter"
        )
    for hits in (ev.client_nat, ev.local.nat if ev.local else None):
        if isinstance(hits, Unavailable):
            out["nat"] = Seen("nat rules", hits.reason, "nft")
        elif hits:
            out["nat"] = Seen(
                "nat rules for the port",
                "; ".join(
                    f"{h.where}: {h.rule}" + (f" (destination {h.answers})" if h.answers else "")
                    for h in hits
                ),
                "nft -j list ruleset",
            )
    _local(ev, out)
    if ev.port_use is not None and not isinstance(ev.port_use, Unavailable):
        u = ev.port_use
        out["port_use"] = Seen(
            f"ports to {u.dst}:{u.dport}", f"{u.used} of {u.usable} usable", "sock_diag"
        )
        if u.eph001:
            out["rule:EPH-001"] = Seen("audit rule EPH-001", u.eph001, "portaudit rule engine")
    return out


def _local(ev: Evidence, out: dict[str, Seen]) -> None:
    lv = ev.local
    if lv is None:
        return
    port = ev.target.port
    if isinstance(lv.listeners, Unavailable):
        out["listeners"] = Seen(f"listeners on port {port}", lv.listeners.reason, "sock_diag")
    else:
        shown = ", ".join(v.described for v in lv.listeners)
        out["listeners"] = Seen(f"listeners on port {port}", shown or "none", "sock_diag")
        for v in lv.listeners:
            if v.queued is not None and v.reaches_target:
                out["queue"] = Seen(
                    f"accept queue of {v.endpoint}",
                    f"{v.queued_before} before, {v.queued} after the probe, backlog {v.backlog}",
                    "sock_diag idiag_rqueue/idiag_wqueue",
                )
            if v.pid is not None and v.reaches_target:
                fds = f", {v.descriptors}" if v.descriptors else ""
                out["process"] = Seen(
                    "process holding the listener",
                    f"pid {v.pid} ({v.process}), {v.state}{fds}",
                    f"/proc/{v.pid} (RLIMIT_NOFILE)",
                )
    if isinstance(lv.drops, dict):
        out["drops"] = Seen(
            "listen drops during the probe",
            ", ".join(f"{k} +{v}" for k, v in lv.drops.items()),
            "/proc/net/netstat TcpExt",
        )
    if isinstance(lv.conntrack, tuple):
        out["conntrack"] = Seen(
            "conntrack entries",
            f"{lv.conntrack[0]} of {lv.conntrack[1]}",
            "/proc/sys/net/netfilter",
        )
    if isinstance(lv.firewall, Unavailable):
        out["firewall"] = Seen("input firewall", lv.firewall.reason, "nft/iptables")
    else:
        value = "; ".join(
            f"{h.where}: {h.rule} ({h.action})"
            + (f" counter +{h.delta} during the probe" if h.delta is not None else "")
            for h in lv.firewall
        )
        out["firewall"] = Seen(
            f"input rules for tcp dport {port}", value or "none drops or rejects",
            lv.firewall_source,
        )  # fmt: skip
    if isinstance(lv.forward, tuple):
        value = "; ".join(
            f"{h.where}: {h.rule} ({h.action})"
            + (f" counter +{h.delta} during the probe" if h.delta is not None else "")
            for h in lv.forward
        )
        out["forward"] = Seen("forward rules", value or "none drops or rejects", "nft")
    for key, text in lv.rules.items():
        out[f"rule:{key.split()[0]}"] = Seen(f"audit rule {key}", text, "portaudit rule engine")
