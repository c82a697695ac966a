"""The source document's catalogue of causes, and how the evidence rates each one.

Every case of `client-connect-fail.it.md` has an id here (refused-1..7, timeout-1..6, addr-1..2,
proto-1) with the document's words in English and the remedy; two causes the document does not
list but the errno can mean (route-1, fd-1) are marked as portaudit's own. `judge` rates each
cause relevant to the verdict as likely / possible / ruled-out and says why, from the evidence
only: what is not visible (a cloud security group, the client's own environment) stays
"possible" with the reason, never "ruled-out".
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from auditor.diagnose.firewall import decisive
from auditor.diagnose.model import (
    CUT_SHORT,
    AddressAttempt,
    Cause,
    CauseStatus,
    FirewallHit,
    IcmpError,
    ListenerView,
    LocalView,
    NatHit,
    PortUse,
    ProtocolResult,
    ProxyUse,
    Resolution,
    RouteInfo,
    Target,
    Verdict,
    flaps,
    stops_answering,
)
from auditor.diagnose.observed import EVIDENCE_OF, observations
from auditor.diagnose.route import is_internal, is_tunnel
from auditor.facts.model import Unavailable, bracketed, endpoint


@dataclass(frozen=True, slots=True)
class CaseInfo:
    case: str
    remedy: str
    source: str = "client-connect-fail"
    """`client-connect-fail` (the source document) or `portaudit` (not in the document)."""


CATALOGUE: dict[str, CaseInfo] = {
    "refused-1": CaseInfo(
        "The client uses the wrong port.",
        "Check the port the server is configured to listen on and use that one in the client.",
    ),
    "refused-2": CaseInfo(
        "The client uses the wrong domain name or IP address.",
        "Check the host name or IP address configured in the client.",
    ),
    "refused-3": CaseInfo(
        "The domain name resolves to the wrong server IP.",
        "Fix the DNS record or the /etc/hosts entry so the name points at the server.",
    ),
    "refused-4": CaseInfo(
        "A CDN or accelerating proxy in front of the server makes the IP actually reached "
        "differ from the one expected.",
        "Connect to the origin server directly, or configure the CDN/proxy to pass this port "
        "and protocol (WebSocket upgrades included).",
    ),
    "refused-5": CaseInfo(
        "The server is not running, or nothing listens on the port.",
        "Start the server and check it listens on the port (`ss -ltnp 'sport = :PORT'`).",
    ),
    "refused-6": CaseInfo(
        "Network proxy software on the client side is in the way.",
        "Disable the proxy/VPN for this destination (unset the proxy variable or add the host "
        "to no_proxy) and retry.",
    ),
    "refused-7": CaseInfo(
        "The server listens on an address the client cannot reach: bound to 127.0.0.1 it is "
        "reachable only through 127.0.0.1, not through its LAN or public IP.",
        "Make the server listen on 0.0.0.0 (or the address clients use) instead of 127.0.0.1.",
    ),
    "timeout-1": CaseInfo(
        "The server's firewall blocks the connection.",
        "Open the port in the server's firewall (or disable it briefly to confirm).",
    ),
    "timeout-2": CaseInfo(
        "On a cloud server, the security group does not open the port.",
        "Open the port in the cloud provider's security group for the server.",
    ),
    "timeout-3": CaseInfo(
        "A hosting control panel (Plesk and the like) does not open the port.",
        "Open the port in the hosting panel's firewall settings.",
    ),
    "timeout-4": CaseInfo(
        "The server does not exist or is not running.",
        "Check the server machine is up and has this address.",
    ),
    "timeout-5": CaseInfo(
        "The domain name resolves to the wrong server IP.",
        "Fix the DNS record or the /etc/hosts entry so the name points at the server.",
    ),
    "timeout-6": CaseInfo(
        "The client targets the server's internal IP from outside that local network.",
        "Use the server's public address (or a VPN into its network) from outside its LAN.",
    ),
    "addr-1": CaseInfo(
        "The connections to one server exceed the local (ephemeral) ports available for it.",
        "Widen net.ipv4.ip_local_port_range (e.g. 10000 65535) persistently "
        "(`portaudit fix`), reuse connections (keep-alive, pooling), or add source addresses.",
    ),
    "addr-2": CaseInfo(
        "Closed connections stay in TIME_WAIT and keep their local ports, so a burst of short "
        "connections uses them up.",
        "Reuse connections; set net.ipv4.tcp_tw_reuse=1 (with tcp_timestamps on) so outgoing "
        "connections may reuse TIME_WAIT ports (`portaudit audit --only TW-001`).",
    ),
    "proto-1": CaseInfo(
        "Client and server speak different protocols (a WebSocket client against an HTTP "
        "server, an HTTP client against a WebSocket server, TLS against plain text).",
        "Serve the protocol the client speaks (e.g. a websocket:// listener for ws:// clients), "
        "or point the client at the port and scheme that serve it.",
    ),
    "route-1": CaseInfo(
        "The client host has no usable route to the address (not in the source document).",
        "Add a route to the destination network, or fix the address.",
        source="portaudit",
    ),
    "fw-out": CaseInfo(
        "This host's own firewall (its output hook) drops or rejects the connection before "
        "it leaves (portaudit's own case).",
        "Remove or narrow the output rule named in the evidence, or add an accept before it.",
        source="portaudit",
    ),
    "fw-path": CaseInfo(
        "A firewall on the way (the router named in the evidence) rejects the connection "
        "(portaudit's own case).",
        "Open the port on that router or firewall (its forward chain), or route around it.",
        source="portaudit",
    ),
    "app-1": CaseInfo(
        "The server accepts the connection, then resets it (it crashed, refuses this client, "
        "hit a connection limit, or expects another protocol; portaudit's own case).",
        "Read the server's log at the time of the probe; check its connection limits and "
        "the protocol it expects on this port.",
        source="portaudit",
    ),
    "app-2": CaseInfo(
        "The server accepts the connection and closes it at once without sending anything "
        "(it rejects this client, hit a limit, or fails right after accept; portaudit's own "
        "case).",
        "Read the server's log; check allow-lists, connection limits and descriptors.",
        source="portaudit",
    ),
    "app-3": CaseInfo(
        "The kernel accepts the connection for the server, but the application does not "
        "answer: it is hung, stopped, overloaded or never calls accept() (portaudit's own "
        "case).",
        "Check the server process (state, CPU, threads, log); restart it if it is hung; run "
        "`portaudit diagnose --local` on the server to see its accept queue.",
        source="portaudit",
    ),
    "lsn-1": CaseInfo(
        "The listener's accept queue is full: the application does not accept() as fast as "
        "connections arrive, so the kernel drops new SYNs and clients time out (LSN-002; "
        "LSN-001 for the drop counters).",
        "Make the application accept faster (more workers) and raise its listen() backlog "
        "and net.core.somaxconn (`portaudit audit --only LSN-002,LSN-001`).",
        source="portaudit",
    ),
    "ct-1": CaseInfo(
        "The conntrack table is full: netfilter drops packets that would create a new entry, "
        "so new connections time out (CT-001).",
        "Raise net.netfilter.nf_conntrack_max (`portaudit audit --only CT-001`) or exempt "
        "the traffic from tracking.",
        source="portaudit",
    ),
    "fd-2": CaseInfo(
        "The server process has used up its descriptor limit (RLIMIT_NOFILE): accept() fails "
        "with EMFILE, so connections queue and nobody serves them (FD-003).",
        "Raise the service's LimitNOFILE= / ulimit -n, and look for a descriptor leak "
        "(`portaudit audit --only FD-003`).",
        source="portaudit",
    ),
    "tls-1": CaseInfo(
        "The server's TLS certificate is not trusted by a client that verifies it "
        "(self-signed, expired, for another name, or from an unknown CA), as curl reports "
        "with exit 60 (portaudit's own case).",
        "Install a certificate valid for the name clients use, from a CA in their trust "
        "store, with its full chain; or add the CA to the clients' trust store.",
        source="portaudit",
    ),
    "flap-1": CaseInfo(
        "Attempts moments apart end differently: the server is restarting or crashing in a "
        "loop, or a balancer sends some connections to a dead backend (portaudit's own case).",
        "Look at the service manager (`systemctl status`, restart counters) and the server's "
        "log for crashes; check every backend behind a balancer.",
        source="portaudit",
    ),
    "multi-1": CaseInfo(
        "The name has several addresses and some of them fail while another works: a client "
        "that takes one address fails now and then, one that tries them in turn stalls for a "
        "connect timeout first (portaudit's own case).",
        "Remove the dead address from DNS or /etc/hosts, or bring its server back.",
        source="portaudit",
    ),
    "nat-1": CaseInfo(
        "A NAT rule (REDIRECT or DNAT) sends the connection to another address or port: "
        "what answers is that target, a local proxy or a container (portaudit's own case).",
        "Start what the rule points at, or fix or remove the rule (`nft list ruleset`).",
        source="portaudit",
    ),
    "dns-1": CaseInfo(
        "The resolver failed (no answer from the nameservers, SERVFAIL, a timeout): the name "
        "may well exist, but it could not be looked up (portaudit's own case).",
        "Check the nameservers in /etc/resolv.conf answer (`dig @SERVER NAME`), and the "
        "network path to them.",
        source="portaudit",
    ),
    "fd-1": CaseInfo(
        "The client has no file descriptor left for a new socket (EMFILE/ENFILE; not in the "
        "source document).",
        "Raise the process limit (ulimit -n / LimitNOFILE) or fs.file-max, or close leaked "
        "sockets.",
        source="portaudit",
    ),
}

FAMILIES: dict[Verdict, tuple[str, ...]] = {
    Verdict.REFUSED: (
        "refused-5", "refused-7", "refused-1", "refused-2", "refused-3", "refused-4",
        "refused-6", "timeout-1",
    ),
    Verdict.TIMEOUT: (
        "timeout-1", "lsn-1", "ct-1", "timeout-2", "timeout-3", "timeout-4", "timeout-5",
        "timeout-6", "refused-6",
    ),
    Verdict.UNREACHABLE: (
        "route-1", "timeout-1", "timeout-4", "timeout-6", "timeout-5", "refused-6",
    ),
    Verdict.ADDR_NOT_AVAILABLE: ("addr-1", "addr-2"),
    Verdict.PROTOCOL_MISMATCH: ("proto-1", "refused-4", "refused-1", "refused-6"),
    Verdict.UNRESOLVED: ("dns-1", "refused-2", "refused-3"),
    Verdict.DESCRIPTOR_LIMIT: ("fd-1",),
    Verdict.OK: ("proto-1",),
    Verdict.RESET: ("app-1", "fd-2", "proto-1", "refused-6"),
    Verdict.CLOSED: ("app-2", "fd-2", "proto-1", "refused-6"),
    Verdict.NO_REPLY: ("app-3", "lsn-1", "fd-2", "proto-1", "refused-6"),
    Verdict.TLS_UNTRUSTED: ("tls-1", "refused-4", "refused-6"),
    Verdict.FLAPPING: ("flap-1",),
}  # fmt: skip
"""The causes shown for each verdict; any other cause is shown only when it is flagged."""

FLAGGABLE = ("refused-3", "timeout-5", "refused-4", "refused-6", "timeout-1", "fw-out",
             "fw-path", "lsn-1", "ct-1", "fd-2", "tls-1", "nat-1", "app-3", "multi-1")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Evidence:
    """Everything the judges may look at, gathered by `run.py`."""

    target: Target
    verdict: Verdict
    resolution: Resolution
    attempts: tuple[AddressAttempt, ...]
    primary: AddressAttempt | None
    local: LocalView | None
    proxies: tuple[ProxyUse, ...]
    port_use: PortUse | Unavailable | None
    client_firewall: tuple[FirewallHit, ...] | Unavailable | None = None
    client_nat: tuple[NatHit, ...] | Unavailable | None = None
    client_conntrack: tuple[int, int] | Unavailable | None = None
    outside: NatHit | None = None
    """The prerouting DNAT/REDIRECT whose destination the attempts went to: the verdict is
    an outside client's path, not this host's own connection."""
    port: int | None = None
    """The port the attempts went to when not the target's (the DNAT's)."""

    @property
    def icmp(self) -> IcmpError | None:
        return self.primary.connect.icmp if self.primary else None

    @property
    def from_target(self) -> bool:
        """The ICMP error was sent by the target itself, not by a router on the way."""
        icmp = self.icmp
        return icmp is not None and icmp.sender == self.address.split("%", 1)[0]

    @property
    def route(self) -> RouteInfo | None:
        if self.primary is None or isinstance(self.primary.route, Unavailable):
            return None
        return self.primary.route

    @property
    def address(self) -> str:
        return self.primary.address if self.primary else self.target.host

    @property
    def protocol(self) -> ProtocolResult | None:
        return self.primary.protocol if self.primary else None

    @property
    def is_local(self) -> bool:
        """The probed address is this host (not a host this one forwards to, nor the DNAT
        destination an outside client's connection is sent to)."""
        if self.outside is not None and self.outside.kind == "dnat":
            return False
        return self.local is not None and not self.local.forwarding

    @property
    def probed_port(self) -> int:
        """The port the attempts went to: the target's, or the DNAT's for an outside path."""
        return self.port or self.target.port

    @property
    def nat(self) -> NatHit | None:
        """The NAT rule that rewrites every new connection to the target, on this host."""
        for hits in (self.client_nat, self.local.nat if self.local else None):
            if isinstance(hits, tuple) and hits and not hits[-1].conditions:
                return hits[-1]
        return None


Judgement = tuple[CauseStatus, str]
L, P, R = CauseStatus.LIKELY, CauseStatus.POSSIBLE, CauseStatus.RULED_OUT


def _where(ev: Evidence) -> str:
    res = ev.resolution
    if ev.target.is_literal:
        return "given as an IP address"
    if res.hosts_entries:
        e = res.hosts_entries[0]
        return f"from {e.file} line {e.line}"
    return "from DNS (no /etc/hosts entry)"


def _listeners(ev: Evidence) -> tuple[list[str], list[str]] | None:
    """(addresses that reach the target, addresses that do not) of listeners on the port;
    None when they do not decide (not read, this host forwards, or NAT sends it elsewhere)."""
    if ev.local is None or isinstance(ev.local.listeners, Unavailable):
        return None
    redirected_here = ev.outside is not None and ev.outside.kind == "redirect"
    if ev.local.forwarding or (ev.nat is not None and not redirected_here):
        return None
    good = [v.address for v in ev.local.listeners if v.reaches_target]
    bad = [v.address for v in ev.local.listeners if not v.reaches_target]
    return good, bad


def _refused_1(ev: Evidence) -> Judgement:
    port = ev.probed_port
    if ev.verdict is Verdict.PROTOCOL_MISMATCH:
        return P, (
            f"port {port} answers, but not with the client's protocol: the service the "
            "client wants may be on another port"
        )
    seen = _listeners(ev)
    if seen is not None:
        good, bad = seen
        if good:
            return R, f"a server listens on port {port} at {', '.join(good)}"
        if bad:
            return P, f"port {port} is listened on only at {', '.join(bad)} (see refused-7)"
        return P, f"nothing listens on port {port} on this host: is it the server's port?"
    return P, f"{ev.address} answered port {port} with a reset: check it is the server's port"


def _refused_2(ev: Evidence) -> Judgement:
    if ev.verdict is Verdict.UNRESOLVED:
        if ev.resolution.error_kind == "resolver-failure":
            return P, (
                f"the resolver failed ({ev.resolution.error}): whether {ev.target.host} "
                "exists is not known (see dns-1)"
            )
        return L, f"{ev.target.host} does not resolve ({ev.resolution.error})"
    seen = _listeners(ev)
    if seen is not None and seen[0]:
        return R, f"{ev.address} is this host and a server listens there on port {ev.probed_port}"
    return P, f"{ev.target.host} led to {ev.address} ({_where(ev)}): check it is the server"


def _wrong_ip(ev: Evidence) -> Judgement:
    res = ev.resolution
    if ev.target.is_literal:
        if res.expect_mismatch:
            return L, f"the client targets {ev.target.host}, not the expected {res.expect_ip}"
        return R, "the target is an IP address: no name is resolved"
    if ev.verdict is Verdict.UNRESOLVED:
        return P, f"{ev.target.host} does not resolve at all ({res.error})"
    got = ", ".join(res.addresses)
    if res.expect_ip is not None:
        if res.expect_mismatch:
            return L, (
                f"{ev.target.host} resolves to {got} ({_where(ev)}), not the expected "
                f"{res.expect_ip}"
            )
        return R, f"{ev.target.host} resolves to the expected {res.expect_ip} ({_where(ev)})"
    return P, (
        f"{ev.target.host} resolves to {got} ({_where(ev)}); pass --expect-ip with the "
        "server's address to check"
    )


def _refused_4(ev: Evidence) -> Judgement:
    proto = ev.protocol
    if proto is not None and proto.front:
        status = L if ev.verdict is Verdict.PROTOCOL_MISMATCH else P
        return status, "the reply names a proxy or CDN in front: " + "; ".join(proto.front)
    if ev.resolution.expect_mismatch:
        return P, (
            f"the name resolves to {', '.join(ev.resolution.addresses)}, not "
            f"{ev.resolution.expect_ip}: a CDN or proxy address?"
        )
    if ev.is_local:
        return R, f"{ev.address} is this host: nothing stands in front of it on the way here"
    if ev.target.is_literal and ev.verdict is not Verdict.PROTOCOL_MISMATCH:
        return R, f"the client connects to the IP address {ev.address} directly"
    if proto is not None:
        return R, "the reply carries no proxy or CDN headers (Via, Server, cf-ray, x-cache...)"
    return P, "no reply headers to look at; a CDN in front would answer from its own address"


def _refused_5(ev: Evidence) -> Judgement:
    seen = _listeners(ev)
    port = ev.probed_port
    if seen is not None:
        good, bad = seen
        if good:
            return R, f"listening on port {port} at {', '.join(good)}"
        if bad:
            return R, f"a server runs: port {port} is listened on at {', '.join(bad)}"
        return L, f"nothing listens on port {port} on this host"
    if ev.local is not None and isinstance(ev.local.listeners, Unavailable):
        return P, f"the listeners could not be read: {ev.local.listeners.reason}"
    icmp = ev.icmp
    if icmp is not None:
        return P, (
            f"{icmp.sender} answered with ICMP {icmp.name}, which a REJECT rule sends, not a "
            "closed port: whether a server runs behind the rule cannot be seen from here"
        )
    return P, (
        f"{ev.address} answered the SYN to port {port} with a reset: nothing accepts there "
        "for this client; no listener, one bound to another address (refused-7) and a "
        "`reject with tcp reset` rule look the same from here (run `portaudit diagnose "
        "--local` on the server to tell them apart)"
    )


def _refused_6(ev: Evidence) -> Judgement:
    for p in ev.proxies:
        what = f"${p.variable} sends this client through the proxy {p.url}"
        if p.reachable and p.reachable != "connected":
            return L, f"{what}, which is {p.reachable}"
        failed = ev.verdict is not Verdict.OK
        return (L if failed else P), f"{what} (portaudit connected directly, the client would not)"
    route = ev.route
    if route is not None and is_tunnel(route):
        kind = f" ({route.interface_kind})" if route.interface_kind else ""
        status = P if ev.verdict is Verdict.OK else L
        return status, (
            f"the route to {ev.address} goes through {route.interface}{kind}: VPN or proxy software"
        )
    dev = f" and the route uses {route.interface}" if route and route.interface else ""
    return R, (
        f"no proxy variable applies to this target{dev} (not a tunnel); a proxy "
        "configured inside the client application itself is not visible"
    )


def _refused_7(ev: Evidence) -> Judgement:
    port = ev.probed_port
    seen = _listeners(ev)
    if seen is not None:
        good, bad = seen
        if bad and not good:
            loop = all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in bad) and not (
                ipaddress.ip_address(ev.address.split("%")[0]).is_loopback
            )
            kind = "bound to loopback" if loop else "bound to another address"
            v6 = [
                v
                for v in ev.local.listeners  # type: ignore[union-attr]
                if v.v6only and not v.reaches_target
            ]
            if v6 and ":" not in ev.address:
                kind = "IPv6-only listener (IPV6_V6ONLY set): it never accepts IPv4"
            return L, (
                f"{kind}: port {port} is listened on only at {', '.join(bad)}, not at {ev.address}"
            )
        if good:
            return R, f"a listener on port {port} accepts {ev.address} ({', '.join(good)})"
        return R, f"nothing listens on port {port} on any address"
    try:
        if ipaddress.ip_address(ev.address.split("%")[0]).is_loopback:
            return R, f"the client itself uses the loopback address {ev.address}"
    except ValueError:
        pass
    return P, (
        "seen from the client, a server bound to 127.0.0.1 only looks the same as no "
        "server (a reset); run `portaudit diagnose --local` on the server to tell them apart"
    )


def _next_hop(ev: Evidence) -> str:
    """Whose ARP/ND entry the neighbour state is: the gateway's when routed, else the
    target's own."""
    route = ev.route
    if route is not None and route.gateway is not None and not route.connected:
        return f"the gateway {route.gateway}"
    return ev.address


def _timeout_1(ev: Evidence) -> Judgement:
    local = ev.local if ev.is_local else None
    if local is not None:
        if isinstance(local.firewall, Unavailable):
            return P, f"the firewall could not be read: {local.firewall.reason}"
        hit = decisive(local.firewall)
        if hit is not None:
            count = f", counter {hit.packets} packets" if hit.packets is not None else ""
            if hit.delta:
                count += f", +{hit.delta} during this probe"
            effect = (
                "the client waits for an answer that never comes"
                if hit.action == "drop"
                else "the client gets refused or unreachable instead of a timeout"
            )
            unless = f" (unless accepted first by: {'; '.join(hit.unless)})" if hit.unless else ""
            return L, (
                f"{local.firewall_source}: {hit.where}: `{hit.rule}` ({hit.action}{count}): "
                f"{effect}{unless}"
            )
        if local.firewall:
            h = local.firewall[0]
            return (
                P,
                f"{h.where}: `{h.rule}` ({h.action}) applies when {' and '.join(h.conditions)}",
            )
        return R, (
            f"no rule in this host's input chains ({local.firewall_source}) drops or "
            f"rejects tcp dport {ev.probed_port}"
        )
    own = _own_block(ev)
    if own is not None:
        return R, f"the SYN never left this host: its own output rule {own.where} blocks it"
    icmp = ev.icmp
    if icmp is not None:
        if ev.from_target:
            return L, (
                f"{icmp.sender} (the server) answered the SYN with ICMP {icmp.name}: a REJECT "
                "rule on the server sends exactly this"
            )
        if not ev.from_target and "prohibited" in icmp.name:
            return P, f"the router {icmp.sender} rejects it on the way (see fw-path)"
        return P, (
            f"ICMP {icmp.name} came from {icmp.sender}, not the server: the packet was "
            "stopped before the server's firewall (a reject rule may also send this)"
        )
    if ev.verdict is Verdict.TIMEOUT:
        neigh = ev.primary.connect.neighbour if ev.primary else None
        arp = (
            f" ({_next_hop(ev)} answers ARP/ND: {neigh})"
            if neigh in ("REACHABLE", "STALE", "DELAY")
            else ""
        )
        return P, (
            f"the SYN got no answer{arp}; a dropping firewall, a full accept queue (lsn-1) and "
            "a full conntrack table (ct-1) all look exactly like this from the client (run "
            "`portaudit diagnose --local` on the server to read its rules and queues)"
        )
    if ev.verdict is Verdict.UNREACHABLE:
        return P, "no ICMP error was read; the route, not a firewall, is the first suspect"
    return P, "a REJECT rule with `tcp reset` answers exactly like a closed port"


def _own_block(ev: Evidence) -> FirewallHit | None:
    fw = ev.client_firewall
    if fw is None or isinstance(fw, Unavailable):
        return None
    return decisive(fw)


def _fw_out(ev: Evidence) -> Judgement:
    fw = ev.client_firewall
    if fw is None:
        return P, "this host's output rules were not read (the target is this host)"
    if isinstance(fw, Unavailable):
        return P, f"this host's output rules could not be read: {fw.reason}"
    hit = decisive(fw)
    if hit is not None:
        return L, f"{hit.where}: `{hit.rule}` ({hit.action}) on this host's output hook"
    if fw:
        h = fw[0]
        return P, f"{h.where}: `{h.rule}` ({h.action}) applies when {' and '.join(h.conditions)}"
    return R, f"no output rule of this host drops or rejects tcp dport {ev.target.port}"


def _from_this_host(ev: Evidence) -> bool:
    """The ICMP error was sent by this host itself (its own output reject, or its own failed
    neighbour lookup): the route's source address is the sender."""
    icmp, route = ev.icmp, ev.route
    return icmp is not None and route is not None and route.source == icmp.sender


def _fw_path(ev: Evidence) -> Judgement:
    fwd = ev.local.forward if ev.local is not None else None
    if isinstance(fwd, tuple):
        hit = decisive(fwd)
        if hit is not None:
            return L, f"this host's forward rule {hit.where}: `{hit.rule}` ({hit.action})"
        if ev.local is not None and ev.local.forwarding:
            return R, f"no forward rule of this host drops or rejects tcp dport {ev.target.port}"
    icmp = ev.icmp
    own = _own_block(ev)
    if own is not None or (icmp is not None and _from_this_host(ev)):
        where = f": its own output rule {own.where}" if own is not None else ""
        return R, f"the SYN was stopped on this host{where}, before any router"
    if icmp is not None and not ev.from_target and "prohibited" in icmp.name:
        return L, f"the router {icmp.sender} answered the SYN with ICMP {icmp.name}"
    if icmp is not None and ev.from_target:
        return R, f"the ICMP error came from the server {icmp.sender} itself"
    return P, "a firewall on the way that drops silently cannot be told from one on the server"


def _nat_1(ev: Evidence) -> Judgement:
    hit = ev.nat
    if hit is not None:
        to = (hit.to_addr or "this host") + (f":{hit.to_port}" if hit.to_port else "")
        what = f"{hit.where}: `{hit.rule}` sends tcp dport {ev.target.port} to {to}"
        if hit.answers and hit.answers != "connected":
            return L, f"{what}, which is {hit.answers}"
        return P, f"{what}" + (f" ({hit.answers})" if hit.answers else "")
    every = [ev.client_nat, ev.local.nat if ev.local else None]
    if any(isinstance(h, Unavailable) for h in every):
        reason = next(h.reason for h in every if isinstance(h, Unavailable))
        return P, f"the nat rules could not be read: {reason}"
    conditional = [h for hits in every if isinstance(hits, tuple) for h in hits]
    if conditional:
        h = conditional[0]
        return P, f"{h.where}: `{h.rule}` applies when {' and '.join(h.conditions)}"
    return R, f"no nat rule on this host rewrites tcp dport {ev.target.port}"


def _verdicts(ev: Evidence, rule_id: str) -> list[tuple[str, str]]:
    """The engine's outcome of `rule_id` for each listener that would take the connection,
    as `rule_outcomes` (run.py) wrote it: (`fail crit`, message), (`pass`, ""), (`skipped`,
    reason) or (`error`, reason). The audit reaches the same outcome over the same facts."""
    if ev.local is None or isinstance(ev.local.listeners, Unavailable) or _off_path(ev):
        return []
    wanted = {f"{rule_id} {v.endpoint}" for v in ev.local.listeners if v.reaches_target}
    out = []
    for key, text in ev.local.rules.items():
        if key in wanted:
            head, _, rest = text.partition(": ")
            out.append((head, rest))
    return sorted(out, key=lambda hr: _ORDER.get(hr[0], 9))


_ORDER = {"fail crit": 0, "fail warn": 1, "fail info": 2, "skipped": 3, "error": 4, "pass": 5}


def _rule(ev: Evidence, rule_id: str) -> str:
    if ev.local is None:
        return ""
    text = next((v for k, v in ev.local.rules.items() if k.split()[0] == rule_id), "")
    return f"; {rule_id}: {text}" if text else ""


def _lsn_1(ev: Evidence) -> Judgement:
    """LSN-002's outcome for the listeners that take the connection decides; listen-path
    drops counted during the probe are evidence of their own (LSN-001 judges their rate)."""
    if ev.local is None:
        tries = ev.primary.tries if ev.primary else ()
        if stops_answering(tries):
            return P, (
                f"tries {', '.join(tries)}: the first connected, then the SYN went "
                "unanswered, as when a server that does not accept fills its queue; the "
                "queue cannot be seen from the client (run `portaudit diagnose --local` on "
                "the server)"
            )
        return P, "the server's accept queue cannot be seen from the client"
    if off := _off_path(ev):
        return P, off
    if isinstance(ev.local.listeners, Unavailable):
        return P, f"the listeners could not be read: {ev.local.listeners.reason}"
    drops = ev.local.drops if isinstance(ev.local.drops, dict) else {}
    grew = {k: v for k, v in drops.items() if v > 0 and k != "SyncookiesSent"}
    grew_text = ", ".join(f"{k} +{v}" for k, v in grew.items())
    during = f"; during the probe {grew_text}" if grew_text else ""
    verdicts = _verdicts(ev, "LSN-002")
    if verdicts and verdicts[0][0].startswith("fail"):
        return L, f"LSN-002 {verdicts[0][0]}: {verdicts[0][1]}{during}"
    if verdicts and verdicts[0][0] in ("skipped", "error"):
        return P, f"LSN-002 {verdicts[0][0]}: {verdicts[0][1]}{during}"
    if grew:
        said = f"LSN-002 {verdicts[0][0]}" if verdicts else "no listener takes the connection"
        return P, (
            f"{said}, but the listen path dropped connections during the probe: {grew_text} "
            "(counted for the whole namespace, not for this port)" + _rule(ev, "LSN-001")
        )
    if verdicts:
        return R, "LSN-002 passes: no listener on the port has a full accept queue, and no " + (
            "listen drop counted"
        )
    return R, "no listener takes the connection, and no listen drop counted"


def _ct_1(ev: Evidence) -> Judgement:
    if ev.local is None:
        own = ev.client_conntrack
        if isinstance(own, tuple) and own[0] >= own[1]:
            return L, (
                f"this host's own conntrack table is full ({own[0]} of {own[1]}): its new "
                "connections are dropped on the way out"
            )
        mine = f" (this host's: {own[0]} of {own[1]})" if isinstance(own, tuple) else ""
        return P, f"the server's and routers' conntrack tables cannot be seen from here{mine}"
    ct = ev.local.conntrack
    rule = _rule(ev, "CT-001")
    if ct is None or isinstance(ct, Unavailable):
        reason = ct.reason if isinstance(ct, Unavailable) else "not read"
        return R if isinstance(ct, Unavailable) and "not present" in reason else P, (
            f"conntrack: {reason}"
        )
    count, limit = ct
    if count >= limit:
        return L, f"nf_conntrack_count {count} has reached nf_conntrack_max {limit}{rule}"
    if "fail" in rule:
        return P, f"nf_conntrack_count {count} of {limit}{rule}"
    return R, f"nf_conntrack_count {count} of nf_conntrack_max {limit}{rule}"


def _off_path(ev: Evidence) -> str:
    """Why this host's own listeners on the port are not on the judged path (an outside
    client's connection is DNATed to another address); empty when they are."""
    out = ev.outside
    if ev.local is None or out is None or out.kind != "dnat":
        return ""
    dest = endpoint(out.to_addr or ev.address, out.to_port or ev.target.port)
    return (
        f"outside clients are sent to {dest} by {out.where}; this host's own listeners on "
        f"port {ev.target.port} are not on their path, and {dest}'s cannot be read from here"
    )


def _holders(ev: Evidence) -> list[ListenerView]:
    if ev.local is None or isinstance(ev.local.listeners, Unavailable) or _off_path(ev):
        return []
    return [v for v in ev.local.listeners if v.reaches_target and v.pid is not None]


def _fd_2(ev: Evidence) -> Judgement:
    """FD-003's outcome for the listeners that take the connection decides: crit (at or near
    RLIMIT_NOFILE, accept() fails with EMFILE) is likely, warn possible, pass ruled out."""
    if ev.local is None:
        return P, "the server process's descriptors cannot be seen from the client"
    if off := _off_path(ev):
        return P, off
    verdicts = _verdicts(ev, "FD-003")
    if not verdicts:
        return P, "the process holding the listener was not found"
    head, text = verdicts[0]
    if head == "fail crit":
        return L, f"FD-003 {head}: {text}"
    if head.startswith("fail"):
        return P, f"FD-003 {head}: {text}"
    if head == "pass":
        v = next((v for v in _holders(ev) if v.fds is not None), None)
        seen = f": pid {v.pid} ({v.process}), {v.descriptors}" if v else ""
        return R, f"FD-003 passes{seen}"
    return P, f"FD-003 {head}: {text}"


def _app(ev: Evidence, what: str) -> Judgement:
    proto = ev.protocol
    summary = proto.summary if proto else what
    if ev.local is not None:
        stopped = [v for v in _holders(ev) if v.state in ("stopped", "tracing-stop")]
        if stopped:
            v = stopped[0]
            return L, f"{summary}; pid {v.pid} ({v.process}) holding the listener is stopped"
        if _lsn_1(ev)[0] is L or _fd_2(ev)[0] is L:
            return P, f"{summary}; see lsn-1 / fd-2"
        waiting = [
            v for v in _holders(ev)
            if v.queued and v.queued_before is not None and v.queued >= v.queued_before
        ]  # fmt: skip
        if waiting:
            v = waiting[0]
            return L, (
                f"{summary}; {v.queued} connections wait in the accept queue of "
                f"{v.endpoint} (before the probe: {v.queued_before}): pid "
                f"{v.pid} ({v.process}, {v.state}) does not accept them"
            )
    if ev.verdict in (Verdict.RESET, Verdict.CLOSED) or (proto and proto.after == "unfinished"):
        return L, summary
    return P, (
        f"{summary}; the kernel completed the handshake, so the server host is up, but an "
        "application that is hung, stopped or never accepts looks the same from the client"
    )


def _app_1(ev: Evidence) -> Judgement:
    return _app(ev, "reset after accept")


def _app_2(ev: Evidence) -> Judgement:
    return _app(ev, "closed after accept")


def _app_3(ev: Evidence) -> Judgement:
    if ev.verdict in (Verdict.RESET, Verdict.CLOSED):
        return R, f"the server answered: it {ev.verdict.value} the connection (not hung)"
    return _app(ev, "no reply after accept")


def _tls_1(ev: Evidence) -> Judgement:
    proto = ev.protocol
    if proto is not None and proto.tls_untrusted:
        return L, f"certificate verification failed: {proto.tls_untrusted}"
    if ev.target.tls and proto is not None:
        return R, "the certificate verified against the system trust store and the name"
    return P, "no certificate was verified"


def _flap_1(ev: Evidence) -> Judgement:
    tries = ev.primary.tries if ev.primary else ()
    if stops_answering(tries):
        return P, (
            f"{len(tries)} attempts to {ev.address} ended: {', '.join(tries)}: it connected, "
            "then stopped answering the SYN; a server that stops accepting fills its accept "
            "queue exactly like this (lsn-1), and a restarting server would refuse instead"
        )
    if flaps(tries):
        return L, f"{len(tries)} attempts to {ev.address} ended: {', '.join(tries)}"
    return R, f"{len(tries)} attempts ended alike ({', '.join(tries)})"


def _failing_addresses(ev: Evidence) -> list[AddressAttempt]:
    """The name's other addresses whose every try failed, while the primary one worked."""
    primary = ev.primary
    if primary is None or primary.tries[:1] != ("ok",) or flaps(primary.tries):
        return []
    return [
        a
        for a in ev.attempts
        if a.address != primary.address
        and any(t != CUT_SHORT for t in a.tries)
        and "ok" not in a.tries
    ]


def _multi_1(ev: Evidence) -> Judgement:
    bad = _failing_addresses(ev)
    if bad:
        shown = "; ".join(f"{bracketed(a.address)}: {', '.join(a.tries)}" for a in bad)
        said = (
            f"{ev.target.host} has {len(ev.attempts)} addresses; {ev.address} works but "
            f"every attempt failed at {shown}"
        )
        if any("timeout" in a.tries for a in bad):
            return L, f"{said}: a client that tries it waits a whole connect timeout"
        return P, (
            f"{said}: it fails at once, so a client that tries every address falls back "
            "(one that takes only the first fails)"
        )
    return R, "every address of the name answered alike"


def _dns_1(ev: Evidence) -> Judgement:
    res = ev.resolution
    servers = ", ".join(res.nameservers) or "none listed"
    if res.error_kind == "resolver-failure":
        return L, f"{res.error} (nameservers in /etc/resolv.conf: {servers})"
    if res.error_kind == "no-such-name":
        return R, f"the resolver answered: {res.error}"
    if res.error_kind == "invalid-name":
        return R, f"no query was possible: {res.error}"
    return P, res.error or "the name resolved"


def _behind(ev: Evidence, what: str) -> Judgement:
    local = ev.local
    if local is not None:
        seen = _listeners(ev)
        blocked = not isinstance(local.firewall, Unavailable) and decisive(local.firewall)
        if seen is not None and seen[0] and not blocked:
            return P, (
                f"this host listens on port {ev.target.port} and its firewall lets it in: "
                f"{what} outside the host (invisible from here) is the remaining suspect"
            )
        if blocked:
            return P, f"a rule on this host already explains it; {what} cannot be seen from here"
        return P, f"{what} cannot be seen from the host"
    return P, f"{what} cannot be seen from the client; it drops the SYN just like this"


def _timeout_2(ev: Evidence) -> Judgement:
    return _behind(ev, "a cloud security group")


def _timeout_3(ev: Evidence) -> Judgement:
    if ev.local is not None and ev.local.panels:
        return P, (
            f"{', '.join(ev.local.panels)} is installed here; its firewall settings may "
            "not open the port"
        )
    return _behind(ev, "a hosting panel's firewall (Plesk and the like)")


def _timeout_4(ev: Evidence) -> Judgement:
    if ev.is_local:
        return R, f"{ev.address} is this host"
    icmp = ev.icmp
    unreachable = icmp is not None and icmp.name in ("host-unreachable", "addr-unreachable")
    if icmp is not None and unreachable and not ev.from_target:
        route = ev.route
        own = route is not None and route.source == icmp.sender
        who = "this host" if own else f"the router {icmp.sender}"
        return L, (
            f"{who} reports ICMP {icmp.name} for {ev.address}: nothing answers ARP/ND "
            "for it on the last network (down, or not there), or that router has no route "
            "onward to it"
        )
    if icmp is not None and ev.from_target:
        return R, f"{ev.address} itself answered (ICMP {icmp.name}): it exists"
    primary = ev.primary
    neigh = primary.connect.neighbour if primary else None
    route = ev.route
    if route is not None and route.connected:
        if neigh in ("FAILED", "INCOMPLETE"):
            return L, (
                f"nobody answers ARP/ND for {ev.address} on {route.interface} ({neigh}): "
                "no machine has this address, or it is down"
            )
        if neigh in ("REACHABLE", "STALE", "DELAY", "PERMANENT"):
            return R, f"{ev.address} answers ARP/ND on {route.interface} ({neigh}): it exists"
    return P, f"{ev.address} may be down or not exist; nothing answered before the timeout"


def _timeout_6(ev: Evidence) -> Judgement:
    route = ev.route
    addr = ev.address
    if ev.is_local:
        return R, f"{addr} is this host"
    try:
        internal = is_internal(addr)
    except ValueError:
        return P, "the address could not be classified"
    if not internal:
        return R, f"{addr} is not a private or CGNAT address"
    if route is None:
        return P, f"{addr} is internal; its route could not be read"
    if route.connected:
        return R, f"{addr} is on the network connected to {route.interface}"
    if ev.from_target and ev.icmp is not None:
        return R, f"{addr} itself answered (ICMP {ev.icmp.name}): the route reaches it"
    if route.gateway is not None:
        how = "the default route" if route.via_default else "a specific route"
        return P, (
            f"{addr} is an internal address reached via {how} through gateway "
            f"{route.gateway} ({route.interface}): if it belongs to another network (a VPN, "
            "a peered network), this host has no route of its own to it; nothing here can tell"
        )
    return P, f"{addr} is internal and the route is {route.kind}"


def _addr_1(ev: Evidence) -> Judgement:
    """EPH-001's crit outcome for the destination, from the engine over the same facts."""
    use = ev.port_use
    if isinstance(use, Unavailable):
        return P, f"the port use could not be read: {use.reason}"
    if use is None:
        return P, "the port use was not read"
    share = f"{use.used} of {use.usable} usable ports ({use.port_range}) to {use.dst}:{use.dport}"
    if use.eph001.startswith("fail crit"):
        return L, f"EPH-001 {use.eph001}"
    outcome = f" (EPH-001: {use.eph001})" if use.eph001 else ""
    return P, (
        f"only {share} are in use{outcome}: EADDRNOTAVAIL may also mean a source address that"
        " is not configured, or ports held by bind() before connect()"
    )


def _addr_2(ev: Evidence) -> Judgement:
    use = ev.port_use
    if not isinstance(use, PortUse):
        return P, "the port use was not read"
    tw = use.by_state.get("TIME_WAIT", 0)
    reuse = f"tcp_tw_reuse={use.tw_reuse}" if use.tw_reuse is not None else "tcp_tw_reuse unread"
    if use.used and tw >= use.used / 2:
        return L, (
            f"{tw} of the {use.used} ports to {use.dst}:{use.dport} are in TIME_WAIT "
            f"({reuse}; TW-001)"
        )
    if tw:
        return P, f"{tw} of the {use.used} ports are in TIME_WAIT ({reuse})"
    return (
        R,
        f"no TIME_WAIT sockets to {use.dst}:{use.dport}: the ports are held by live connections",
    )


def _proto_1(ev: Evidence) -> Judgement:
    proto = ev.protocol
    if proto is None:
        return P, "no protocol exchange took place"
    if proto.after:
        return P, (
            f"{proto.summary}: a server waiting for another protocol can behave so, but "
            "nothing it sent shows it"
        )
    if not proto.ok:
        extra = f" (reply began {proto.first_bytes!r})" if proto.first_bytes else ""
        return L, proto.summary + extra
    return R, f"the {ev.target.protocol} exchange succeeded: {proto.summary}"


def _route_1(ev: Evidence) -> Judgement:
    primary = ev.primary
    if primary is None:
        return P, "nothing was tried"
    if isinstance(primary.route, Unavailable):
        return P, f"the route could not be read: {primary.route.reason}"
    r = primary.route
    if r.kind in ("unreachable", "blackhole", "prohibit", "none", "throw"):
        label = "no route" if r.kind == "none" else f"a {r.kind} route"
        return L, f"{label} to {primary.address} ({r.error})"
    icmp = primary.connect.icmp
    if icmp is not None and icmp.name in ("net-unreachable", "no-route", "net-unknown"):
        return L, f"the router {icmp.sender} reports ICMP {icmp.name}: it has no route onward"
    if primary.connect.errno_name == "ENETUNREACH":
        return L, "the kernel reports the network unreachable"
    return R, (
        f"route to {primary.address}: dev {r.interface}"
        + (f" via {r.gateway}" if r.gateway else "")
    )


def _fd_1(ev: Evidence) -> Judgement:
    primary = ev.primary
    if primary is not None and primary.connect.outcome == "descriptor-limit":
        return L, f"socket() failed with {primary.connect.errno_name}: {primary.connect.message}"
    return R, "a socket was created"


JUDGES: dict[str, Callable[[Evidence], Judgement]] = {
    "refused-1": _refused_1,
    "refused-2": _refused_2,
    "refused-3": _wrong_ip,
    "refused-4": _refused_4,
    "refused-5": _refused_5,
    "refused-6": _refused_6,
    "refused-7": _refused_7,
    "timeout-1": _timeout_1,
    "timeout-2": _timeout_2,
    "timeout-3": _timeout_3,
    "timeout-4": _timeout_4,
    "timeout-5": _wrong_ip,
    "timeout-6": _timeout_6,
    "addr-1": _addr_1,
    "addr-2": _addr_2,
    "proto-1": _proto_1,
    "route-1": _route_1,
    "fd-1": _fd_1,
    "fw-out": _fw_out,
    "fw-path": _fw_path,
    "app-1": _app_1,
    "app-2": _app_2,
    "app-3": _app_3,
    "lsn-1": _lsn_1,
    "ct-1": _ct_1,
    "fd-2": _fd_2,
    "tls-1": _tls_1,
    "flap-1": _flap_1,
    "multi-1": _multi_1,
    "dns-1": _dns_1,
    "nat-1": _nat_1,
}

RULE_OF = {"lsn-1": "LSN-002", "ct-1": "CT-001", "refused-7": "RCH-001", "addr-1": "EPH-001",
           "addr-2": "TW-001", "fd-2": "FD-003"}  # fmt: skip
"""Causes the audit's rule catalogue also judges, and the rule that does."""


def _flagged(cid: str, ev: Evidence) -> bool:
    """Worth showing outside its verdict's family: there is positive evidence for it."""
    if cid in ("refused-3", "timeout-5"):
        return ev.resolution.expect_mismatch
    if cid == "refused-4":
        return ev.protocol is not None and bool(ev.protocol.front)
    if cid == "refused-6":
        return bool(ev.proxies) or (ev.route is not None and is_tunnel(ev.route))
    if cid == "timeout-1":
        return (
            ev.local is not None
            and not isinstance(ev.local.firewall, Unavailable)
            and bool(ev.local.firewall)
        )
    if cid == "fw-out":
        return _own_block(ev) is not None
    if cid == "fw-path":
        fwd = ev.local.forward if ev.local is not None else None
        if isinstance(fwd, tuple) and decisive(fwd) is not None:
            return True
        return (
            ev.icmp is not None
            and not ev.from_target
            and not _from_this_host(ev)
            and _own_block(ev) is None
            and "prohibited" in ev.icmp.name
        )
    if cid == "tls-1":
        return ev.protocol is not None and bool(ev.protocol.tls_untrusted)
    if cid == "multi-1":
        return bool(_failing_addresses(ev))
    if cid == "nat-1":
        return ev.nat is not None
    if cid == "lsn-1" and ev.local is None and ev.primary is not None:
        return ev.verdict is Verdict.FLAPPING and stops_answering(ev.primary.tries)
    if cid in ("lsn-1", "ct-1", "fd-2", "app-3"):
        return ev.local is not None and JUDGES[cid](ev)[0] is CauseStatus.LIKELY
    return False


def judge(ev: Evidence) -> tuple[tuple[Cause, ...], tuple[str, ...]]:
    """The causes for the verdict (likely first) and the next steps they call for."""
    ids = list(FAMILIES[ev.verdict])
    if ev.verdict is Verdict.TIMEOUT and ev.resolution.expect_mismatch:
        ids = [i for i in ids if i != "refused-3"]
    for cid in FLAGGABLE:
        if cid not in ids and _flagged(cid, ev):
            if cid == "refused-3" and "timeout-5" in ids:
                continue
            if cid == "timeout-5" and "refused-3" in ids:
                continue
            ids.append(cid)
    if ev.verdict is Verdict.OK and ev.protocol is None:
        ids = [i for i in ids if i != "proto-1"]
    if ev.target.protocol.value == "tcp" and not ev.target.tls:
        ids = [i for i in ids if i != "proto-1" or ev.verdict is Verdict.PROTOCOL_MISMATCH]
    seen = observations(ev)
    causes: list[Cause] = []
    for cid in ids:
        status, why = JUDGES[cid](ev)
        shown = tuple(seen[k] for k in EVIDENCE_OF.get(cid, ()) if k in seen)
        causes.append(
            Cause(
                id=cid, case=CATALOGUE[cid].case, status=status, why=why, evidence=shown,
                rule=RULE_OF.get(cid, ""),
            )
        )  # fmt: skip
    order = {CauseStatus.LIKELY: 0, CauseStatus.POSSIBLE: 1, CauseStatus.RULED_OUT: 2}
    causes.sort(key=lambda c: order[c.status])
    likely = [c for c in causes if c.status is CauseStatus.LIKELY]
    chosen = likely or [c for c in causes if c.status is CauseStatus.POSSIBLE][:3]
    steps: list[str] = []
    for c in chosen:
        remedy = CATALOGUE[c.id].remedy.replace("PORT", str(ev.target.port))
        if remedy not in steps:
            steps.append(remedy)
    return tuple(causes), tuple(steps)
