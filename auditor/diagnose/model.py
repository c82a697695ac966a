"""What `portaudit diagnose` finds: frozen dataclasses the renderers turn into table or JSON.

The probe and the host checks fill these in; `causes.py` judges them; `render.py` only prints.
`Unavailable` (from the facts model) stands for "could not check, and why" here too.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from auditor.exitcodes import ExitCode
from auditor.facts.model import Unavailable, endpoint


class Verdict(enum.StrEnum):
    """What the client sees: how connect() and the protocol probe ended; UNRESOLVED and
    DESCRIPTOR_LIMIT name failures before any packet leaves (no address for the name, no
    descriptor for the socket); the rest what the server did after accepting, or how repeated
    attempts disagreed."""

    REFUSED = "refused"
    TIMEOUT = "timeout"
    ADDR_NOT_AVAILABLE = "addr-not-available"
    UNREACHABLE = "unreachable"
    PROTOCOL_MISMATCH = "protocol-mismatch"
    OK = "ok"
    UNRESOLVED = "unresolved"
    DESCRIPTOR_LIMIT = "descriptor-limit"
    RESET = "reset"
    """The server accepted, then reset the connection before answering."""
    CLOSED = "closed"
    """The server accepted, then closed (FIN) without sending anything."""
    NO_REPLY = "no-reply"
    """The server accepted but never completed a reply (hung, stopped, an endless head)."""
    TLS_UNTRUSTED = "tls-untrusted"
    """The TLS handshake worked but the certificate fails verification, as curl would refuse."""
    FLAPPING = "flapping"
    """Attempts a few hundred ms apart ended differently: the server restarts or crashes."""


class CauseStatus(enum.StrEnum):
    LIKELY = "likely"
    POSSIBLE = "possible"
    RULED_OUT = "ruled-out"


class Protocol(enum.StrEnum):
    TCP = "tcp"
    HTTP = "http"
    WS = "ws"
    TLS = "tls"


@dataclass(frozen=True, slots=True)
class Target:
    """The target, normalised: `ws://h:8080/x` and `h:8080 --protocol ws` meet here."""

    text: str
    host: str
    port: int
    protocol: Protocol
    tls: bool
    """TLS is expected under the protocol (https://, wss://, --protocol tls)."""
    path: str = "/"
    scheme: str = ""
    """The URL scheme as given (`ws`, `https`), empty for HOST:PORT."""

    @property
    def is_literal(self) -> bool:
        """True when `host` is an IP address, so no name resolution can be wrong."""
        import ipaddress

        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True


@dataclass(frozen=True, slots=True)
class HostsEntry:
    file: str
    line: int
    address: str


@dataclass(frozen=True, slots=True)
class Resolution:
    addresses: tuple[str, ...]
    hosts_entries: tuple[HostsEntry, ...] = ()
    """Lines of the hosts file naming the host: the answer came from there, not DNS."""
    error: str = ""
    expect_ip: str | None = None
    error_kind: str = ""
    """no-such-name (NXDOMAIN / no address) | resolver-failure (EAI_AGAIN, EAI_FAIL: SERVFAIL,
    timeout, no server answers) | invalid-name (a label longer than 63 bytes) | "" (no error)."""
    nameservers: tuple[str, ...] = ()
    """The `nameserver` lines of resolv.conf, read when resolution failed."""

    @property
    def expect_mismatch(self) -> bool:
        return self.expect_ip is not None and self.expect_ip not in self.addresses


@dataclass(frozen=True, slots=True)
class RouteInfo:
    """The kernel's answer to `ip route get ADDR`."""

    kind: str
    """unicast | local | unreachable | blackhole | prohibit | throw | none (no route)."""
    interface: str | None = None
    interface_kind: str | None = None
    """The link kind from rtnetlink (`tun`, `wireguard`, `veth`...), None for plain devices."""
    source: str | None = None
    gateway: str | None = None
    via_default: bool = False
    """The route that matched is a default route (0.0.0.0/0 or ::/0)."""
    error: str = ""

    @property
    def connected(self) -> bool:
        return self.kind == "unicast" and self.gateway is None


@dataclass(frozen=True, slots=True)
class Seen:
    """One observation a cause rests on: what was read, the value read, and where."""

    what: str
    value: str
    where: str


@dataclass(frozen=True, slots=True)
class IcmpError:
    """An ICMP error the kernel queued on the socket (IP_RECVERR), with its sender."""

    type: int
    code: int
    name: str
    """port-unreachable | host-unreachable | net-unreachable | admin-prohibited | ..."""
    sender: str
    """The address the ICMP came from: the server itself, or a router on the way."""


@dataclass(frozen=True, slots=True)
class ConnectResult:
    outcome: str
    """connected | refused | timeout | addr-not-available | unreachable | descriptor-limit"""
    errno_name: str = ""
    message: str = ""
    local: str | None = None
    """The local address:port the kernel chose, when the connection succeeded."""
    neighbour: str | None = None
    """The ARP/ND state of the next hop after a failure (`FAILED`, `INCOMPLETE`, `REACHABLE`)."""
    icmp: IcmpError | None = None
    """The ICMP error that ended the attempt; None when a RST or silence did."""


@dataclass(frozen=True, slots=True)
class ProtocolResult:
    ok: bool
    summary: str
    """One line: `HTTP/1.1 101 Switching Protocols` or `Unexpected response code: 200`."""
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    front: tuple[str, ...] = ()
    """Proxies or CDNs the reply reveals (`Cloudflare (cf-ray)`, `Via: 1.1 varnish`)."""
    first_bytes: str = ""
    """The start of the reply, printable, when it was not what the protocol expects."""
    tls_seen: bool | None = None
    """The server answered with a TLS record (None when not looked at)."""
    after: str = ""
    """How the server behaved when nothing usable came back: reset (RST after accept), closed
    (FIN with nothing sent), silent (no byte before the timeout), unfinished (a reply head
    that never ended); empty when it answered."""
    tls_untrusted: str = ""
    """`ok` says whether the exchange itself worked; this says why certificate verification
    failed (self-signed, expired, wrong name, unknown CA);
    empty when it passed or was not done."""


@dataclass(frozen=True, slots=True)
class AddressAttempt:
    address: str
    route: RouteInfo | Unavailable
    connect: ConnectResult
    protocol: ProtocolResult | None = None
    tries: tuple[str, ...] = ()
    """The outcome of every attempt at this address, in order (`connected`, `refused`...)."""


@dataclass(frozen=True, slots=True)
class ListenerView:
    address: str
    port: int
    family: int
    reaches_target: bool
    """A connection to the target address would be accepted by this listener."""
    v6only: bool | None = None
    """IPV6_V6ONLY of an IPv6 listener (sock_diag INET_DIAG_SKV6ONLY); None when unread."""
    queued_before: int | None = None
    queued: int | None = None
    """The accept queue before and after the probe (connections not yet accept()ed)."""
    backlog: int | None = None
    """The accept queue's limit (listen() backlog capped by net.core.somaxconn)."""
    pid: int | None = None
    process: str = ""
    state: str = ""
    """The holding process's state as psutil names it: `stopped` (SIGSTOP) serves nobody."""
    fds: int | None = None
    fd_limit: int | None = None
    """Open descriptors of the holding process and its soft RLIMIT_NOFILE."""
    fds_free: int | None = None
    """Descriptor numbers free below `fd_limit`: accept() fails with EMFILE at 0."""

    @property
    def endpoint(self) -> str:
        return endpoint(self.address, self.port)

    @property
    def described(self) -> str:
        """The endpoint with what decides whether it takes the target's connection."""
        return (
            self.endpoint
            + (" v6only" if self.v6only else "")
            + ("" if self.reaches_target else " (does not accept the target address)")
        )

    @property
    def queue_full(self) -> bool:
        # The kernel drops once the queue holds more than the backlog (sk_acceptq_is_full).
        return self.queued is not None and self.backlog is not None and self.queued > self.backlog

    @property
    def descriptors(self) -> str:
        """ "N descriptors open, soft limit M (K free below it)", or "" when unread."""
        if self.fds is None:
            return ""
        free = "" if self.fds_free is None else f" ({self.fds_free} free below it)"
        return f"{self.fds} descriptors open, soft limit {self.fd_limit}{free}"


@dataclass(frozen=True, slots=True)
class FirewallHit:
    """A firewall rule that would drop or reject a new TCP connection to the port."""

    where: str
    """`inet filter input handle 6` or `filter INPUT rule 3` (iptables)."""
    rule: str
    """The rule as text (`tcp dport 8080 counter drop`)."""
    action: str
    """drop | reject (with the reject type, as `reject icmp host-prohibited`)."""
    conditions: tuple[str, ...] = ()
    """Matches portaudit could not decide (source address, input interface): empty = applies."""
    unless: tuple[str, ...] = ()
    """Earlier conditional ACCEPT rules that let some clients through before this one."""
    packets: int | None = None
    delta: int | None = None
    """How much the rule's counter grew while the probe ran (the probe's own SYNs)."""


@dataclass(frozen=True, slots=True)
class NatHit:
    """A REDIRECT or DNAT rule that sends a new connection to the port somewhere else."""

    where: str
    rule: str
    kind: str
    """redirect | dnat"""
    to_addr: str | None
    """The new destination address (None: unchanged for dnat, this host for redirect)."""
    to_port: int | None
    conditions: tuple[str, ...] = ()
    answers: str = ""
    """What a connect from this host to the rewritten destination gave (`connected`,
    `refused`, `timeout`...); empty when not tried (the rule has conditions)."""


@dataclass(frozen=True, slots=True)
class LocalView:
    """What this host shows about the port, when the target is this host."""

    reason: str
    """Why the host checks ran: `10.0.0.2 is an address of this host` or `--local`."""
    listeners: tuple[ListenerView, ...] | Unavailable
    firewall: tuple[FirewallHit, ...] | Unavailable
    firewall_source: str = ""
    panels: tuple[str, ...] = ()
    """Hosting panels installed here (Plesk, cPanel...) whose firewall portaudit cannot read."""
    drops: dict[str, int] | Unavailable | None = None
    """TcpExt listen-path drop counters, increase over the probe (ListenOverflows...)."""
    conntrack: tuple[int, int] | Unavailable | None = None
    """(nf_conntrack_count, nf_conntrack_max) after the probe."""
    forwarding: bool = False
    """The target is not an address of this host (`--local` on a router or a NAT host): its
    listeners are not the target's; the forward chain and prerouting DNAT are."""
    nat: tuple[NatHit, ...] | Unavailable | None = None
    """Prerouting REDIRECT/DNAT rules for the port."""
    forward: tuple[FirewallHit, ...] | Unavailable | None = None
    """Forward-hook rules that would drop or reject the (possibly DNATed) connection."""
    rules: dict[str, str] = field(default_factory=dict)
    """The audit's outcome, from the same engine and facts, for the rules diagnose cites:
    `LSN-001` -> `fail warn: ...` / `pass` / `skipped: reason`."""


@dataclass(frozen=True, slots=True)
class ProxyUse:
    variable: str
    url: str
    host: str
    port: int
    reachable: str = ""
    """Result of a TCP connect to the proxy itself (`connected`, `refused`...)."""


@dataclass(frozen=True, slots=True)
class PortUse:
    """That destination's share of the ephemeral range, from the facts (EPH-001/TW-001)."""

    src: str
    dst: str
    dport: int
    used: int
    usable: int
    by_state: dict[str, int]
    port_range: str
    tw_reuse: str | None
    eph001: str = ""
    """EPH-001's outcome for this destination from the rule engine over the same facts
    ("fail crit: <message>", "pass", "skipped: <reason>"); "" when it was not evaluated."""


@dataclass(frozen=True, slots=True)
class Cause:
    id: str
    case: str
    status: CauseStatus
    why: str
    evidence: tuple[Seen, ...] = ()
    rule: str = ""
    """The audit rule that judges the same condition (LSN-001, CT-001...), when one does."""


@dataclass(frozen=True, slots=True)
class OwnPath:
    """This host's own connection to the target, kept beside the verdict when that verdict
    judges an outside client's path instead: a prerouting DNAT/REDIRECT rewrites their
    packets, while this host's own leave through nat output and never meet it."""

    verdict: Verdict
    attempts: tuple[AddressAttempt, ...]


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """The whole answer; `headline` leads with the likely causes, and `exit_code` follows
    them: a likely cause is a problem even when TCP connected."""

    target: Target
    verdict: Verdict
    summary: str
    resolution: Resolution
    attempts: tuple[AddressAttempt, ...]
    evidence: tuple[str, ...]
    causes: tuple[Cause, ...]
    next_steps: tuple[str, ...]
    local: LocalView | None = None
    proxies: tuple[ProxyUse, ...] = ()
    port_use: PortUse | Unavailable | None = None
    client_firewall: tuple[FirewallHit, ...] | Unavailable | None = None
    """This host's output-hook rules that would drop or reject the SYN (it leaves from here)."""
    client_nat: tuple[NatHit, ...] | Unavailable | None = None
    """This host's nat output rules (REDIRECT/DNAT) for the target port."""
    path: str = ""
    """Which path the verdict judges, when not this host's own connection (an outside
    client's, through a prerouting DNAT/REDIRECT named by table, chain and handle)."""
    own_path: OwnPath | None = None
    """This host's own connection's result when `path` is an outside client's."""

    @property
    def likely(self) -> tuple[Cause, ...]:
        return tuple(c for c in self.causes if c.status is CauseStatus.LIKELY)

    @property
    def exit_code(self) -> ExitCode:
        """OK only when the connection worked and nothing observed points at a problem."""
        if self.verdict is Verdict.OK and not self.likely:
            return ExitCode.OK
        return ExitCode.FINDINGS


CUT_SHORT = "cut-short"
"""A repeated attempt the run's time budget cut before its own timeout: not compared."""

_ONE_FAILURE = frozenset({"timeout", "unreachable"})

_KIND = {"unreachable": "timeout", "closed": "reset"}
"""Tries that are one failure: a timeout, then EHOSTUNREACH once the neighbour entry has
failed; a server that closes right after accept, seen as a FIN or, when the request
crossed the close, as the reset its kernel answers it with."""


def flaps(tries: tuple[str, ...]) -> bool:
    """Attempts at one address ended differently (each try is that attempt's whole outcome:
    connect result, then what the server did after accept and the protocol's answer). A
    timeout, then EHOSTUNREACH once the neighbour entry has failed, is one failure, not a
    flap; a try cut short by the time budget is not compared."""
    kinds = {_KIND.get(t, t) for t in tries if t != CUT_SHORT}
    return len(kinds) > 1


def stops_answering(tries: tuple[str, ...]) -> bool:
    """Attempts at one address connected, then every later SYN went unanswered: a server
    that stops accepting fills its accept queue (each accepted-by-the-kernel connection
    stays queued) exactly like this, as does a host going down; a restarting server refuses
    instead. Tries cut short by the time budget are not compared."""
    seen = [t for t in tries if t != CUT_SHORT]
    failed = [i for i, t in enumerate(seen) if t in _ONE_FAILURE]
    if not failed or failed[0] == 0:
        return False
    return all(t in _ONE_FAILURE for t in seen[failed[0] :]) and not any(
        t in _ONE_FAILURE or t == "refused" for t in seen[: failed[0]]
    )
