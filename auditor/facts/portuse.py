"""Host-wide port use: the distinct local ports inside the usable range that sockets hold.

connect() needs a port unused for one destination (EPH-001); bind() with port 0 and UDP
sockets need a port no socket of the protocol holds at all on an overlapping address
(`inet_csk_find_open_port` and `inet_csk_bind_conflict` in net/ipv4/inet_connection_sock.c,
`udp_lib_get_port` in net/ipv4/udp.c). So a proxy that binds before connecting (to pick its
source address) runs out when the *union* of ports in use fills the range, long before any one
destination is full, and so do UDP clients. This module counts that union, by protocol.

On the live host the TCP ports come from the same sock_diag walks as the per-destination scan
(auditor/facts/netlink.py gathers them while parsing), the UDP ports from one more small dump;
elsewhere from `/proc/net/{tcp,udp}{,6}`. Who holds them is looked up only when use is high,
as for EPH-001's owners.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from auditor import record
from auditor.errors import AuditorError
from auditor.facts.model import Listener, PortHolder, PortRange, PortUse, Unavailable
from auditor.facts.owners import _command
from auditor.facts.sockets import hex_to_packed
from auditor.facts.sockstat import collect_sockstat
from auditor.facts.tcp import STATE_NAMES, address_text
from auditor.hostfs import HostRoot, absent

_HEX = frozenset("0123456789abcdefABCDEF")

TYPE_CHECKING = False
if TYPE_CHECKING:
    from auditor.facts.netlink import NetlinkScan

HOLDERS_RATIO = 0.5
"""Use of the range above which the processes holding ports are looked up."""
BOUND_RATIO = 0.5
"""Bound-but-inactive TCP sockets are read when they could take use of the range above this.
Reading them costs a walk of the bind table and one of the socket hash (about 20 ms per 100k
sockets), and /proc/net/sockstat bounds how many there can be: TCP `alloc` (every TCP socket
allocated, in every namespace) less `inuse` of TCP and TCP6 (the sockets hashed in this one:
connected or listening; TIME_WAIT is in neither). Most hosts then skip the walk."""
MAX_HOLDERS = 5
MAX_UDP_LISTENERS = 1024
"""UDP sockets bound outside the range listed in the facts, lowest ports first: a resolver
or media server with a socket per query or per stream can hold tens of thousands."""
BOUND_INACTIVE_SINCE = (6, 7)
"""The first kernel whose sock_diag dumps bound-but-inactive TCP sockets (TCP_BOUND_INACTIVE)."""
BOUND = "BOUND"
"""The state name for a socket bound to a port but neither listening nor connected."""


def reserved_in_range(ports: PortRange) -> frozenset[int]:
    """The reserved ports inside the range: bind(0) and connect() never hand them out."""
    return frozenset(
        p for a, b in ports.reserved for p in range(max(a, ports.low), min(b, ports.high) + 1)
    )


def _usable(held: set[int], ports: PortRange, reserved: frozenset[int]) -> set[int]:
    """`held` less reserved ports and ports outside the range (set operations in C; the
    per-port check only runs when some port lies outside, which the readers avoid)."""
    held = held - reserved if reserved else held
    if held and (min(held) < ports.low or max(held) > ports.high):
        held = {p for p in held if ports.low <= p <= ports.high}
    return held


def kernel_version(release: str) -> tuple[int, int] | None:
    """(major, minor) of a `uname -r` string such as "6.7.0-14-amd64"; None if it has none."""
    parts = release.split(".", 2)
    try:
        return int(parts[0]), int("".join(c for c in parts[1][:3] if c.isdigit()) or "x")
    except (IndexError, ValueError):
        return None


def bound_inactive_reason(release: str) -> str | None:
    """Why this kernel cannot dump bound-but-inactive TCP sockets; None when it can."""
    version = kernel_version(release)
    if version is None:
        return f"kernel release {release!r} not understood; bound-but-inactive sockets not read"
    if version < BOUND_INACTIVE_SINCE:
        return (
            f"kernel {release} cannot dump TCP sockets that are bound but not connected "
            "(sock_diag TCP_BOUND_INACTIVE needs Linux 6.7): bind() before connect() shows "
            "only once connected"
        )
    return None


def by_state(
    encoded: Iterable[int], ports: PortRange, time_wait: Iterable[int] = ()
) -> tuple[int, dict[str, int]]:
    """(distinct usable ports, distinct usable ports per state) from `state << 16 | port`
    values, and the plain ports of TIME_WAIT sockets (read apart, see netlink.scan_sockets).

    State 7 (TCP_CLOSE) with a port is a bound, never connected socket (the kernel reports
    bound-inactive sockets so); it is named BOUND."""
    reserved = reserved_in_range(ports)
    grouped: dict[int, set[int]] = {}
    for value in encoded:
        grouped.setdefault(value >> 16, set()).add(value & 0xFFFF)
    per_state: dict[str, set[int]] = {}
    tw = _usable(set(time_wait), ports, reserved)
    if tw:
        per_state["TIME_WAIT"] = tw
    for state, held in grouped.items():
        held = _usable(held, ports, reserved)
        if held:
            name = BOUND if state == 7 else STATE_NAMES.get(state, str(state))
            per_state.setdefault(name, set()).update(held)
    union: set[int] = set().union(*per_state.values())
    return len(union), {k: len(v) for k, v in sorted(per_state.items())}


def port_holders(host: HostRoot, tcp: set[int], udp: set[int]) -> tuple[PortHolder, ...]:
    """The processes owning the most of these socket inodes, per protocol: one capped
    `/proc/*/fd` walk (`process.socket_holders`; inodes are global, so this works across
    namespaces, as facts/owners.py does)."""
    from auditor.facts.process import socket_holders

    found = socket_holders(host.proc, {"tcp": tcp, "udp": udp}).found
    counts = {(proto, pid): n for proto, per_pid in found.items() for pid, n in per_pid.items()}
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_HOLDERS]
    return tuple(
        PortHolder(protocol=proto, pid=pid, command=_command(host, str(pid)), count=n)
        for (proto, pid), n in ranked
    )


def udp_listeners(found: Iterable[tuple[int, str, int]]) -> tuple[tuple[Listener, ...], int]:
    """`PortUse.udp_listeners` from (family, address, port) of sockets outside the range: the
    MAX_UDP_LISTENERS lowest ports (the services; sockets per query or per stream sit above
    them), and how many more there were (`PortUse.udp_listeners_omitted`)."""
    distinct = found if isinstance(found, (set, frozenset)) else set(found)
    kept = heapq.nsmallest(MAX_UDP_LISTENERS, distinct, key=lambda t: (t[2], t[0], t[1]))
    listed = tuple(Listener(addr=addr, port=port, family=family) for family, addr, port in kept)
    return listed, len(distinct) - len(kept)


def port_use(
    source: str,
    tcp_encoded: Iterable[int],
    tcp_bound: int | Unavailable,
    udp_ports: set[int] | Unavailable,
    ports: PortRange,
    tcp_time_wait: Iterable[int] = (),
    udp_servers: Iterable[tuple[int, str, int]] = (),
) -> PortUse:
    """The fact from what a reader gathered (ports outside the usable range are dropped;
    `udp_servers` are the UDP sockets outside the whole range, see `udp_listeners`)."""
    tcp, states = by_state(tcp_encoded, ports, tcp_time_wait)
    servers, omitted = udp_listeners(udp_servers)
    udp: int | Unavailable = (
        udp_ports
        if isinstance(udp_ports, Unavailable)
        else len(_usable(udp_ports, ports, reserved_in_range(ports)))
    )
    return PortUse(
        source=source,
        tcp=tcp,
        tcp_by_state=states,
        tcp_bound=tcp_bound,
        udp=udp,
        udp_listeners=servers,
        udp_listeners_omitted=omitted,
    )


def needs_holders(use: PortUse, ports: PortRange) -> bool:
    """Whether use is high enough to look up who holds the ports."""
    udp = use.udp if isinstance(use.udp, int) else 0
    return ports.usable > 0 and max(use.tcp, udp) / ports.usable > HOLDERS_RATIO


# --- /proc ---------------------------------------------------------------------------------


def _proc_lines(host: HostRoot, rel: str) -> Iterable[tuple[int, int, int, str]] | str:
    """(local port, state, inode, local address in hex) of each line of one /proc/net table;
    a reason if unreadable."""
    path = host.proc_path(rel)
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            lines = fh.readlines()
    except FileNotFoundError:
        return absent(path).reason
    except OSError as exc:
        return f"{path}: {exc.strerror or exc}"
    out = []
    for line in lines[1:]:
        f = line.split()
        if len(f) < 10:
            continue
        try:
            addr, _, port = f[1].rpartition(":")
            out.append((int(port, 16), int(f[3], 16), int(f[9]), addr))
        except ValueError:
            continue
    return out


def _proc_ports(
    host: HostRoot,
    rels: tuple[str, str],
    ports: PortRange,
    *,
    tcp: bool,
    outside: set[tuple[int, str, int]] | None = None,
) -> tuple[set[int], set[int]] | Unavailable:
    """The ports in range that the tables `rels` list (TCP ones as `state << 16 | port`, the
    form `port_use` counts), and their socket inodes; Unavailable when neither file reads.
    Sockets bound outside the range go to `outside` as (family, address, port) when given."""
    found: set[int] = set()
    inodes: set[int] = set()
    reasons = []
    for rel in rels:
        got = _proc_lines(host, rel)
        if isinstance(got, str):
            reasons.append(got)
            continue
        family = 6 if rel.endswith("6") else 4
        for port, state, inode, addr in got:
            if ports.low <= port <= ports.high:
                found.add(state << 16 | port if tcp else port)
                if inode:
                    inodes.add(inode)
            elif outside is not None and port and _HEX.issuperset(addr):
                outside.add((family, address_text(hex_to_packed(addr)), port))
    if len(reasons) == len(rels):
        return Unavailable("; ".join(reasons))
    return found, inodes


def collect_port_use_proc(host: HostRoot, ports: PortRange | Unavailable) -> PortUse | Unavailable:
    """Port use from `/proc/net/tcp{,6}` and `/proc/net/udp{,6}` (fixtures, `--proc`, and hosts
    where sock_diag is refused). These files never list bound-but-inactive TCP sockets."""
    if isinstance(ports, Unavailable):
        return Unavailable(f"ports: {ports.reason}")
    tcp_read = _proc_ports(host, ("net/tcp", "net/tcp6"), ports, tcp=True)
    if isinstance(tcp_read, Unavailable):
        return tcp_read
    tcp, tcp_inodes = tcp_read
    servers: set[tuple[int, str, int]] = set()
    udp_read = _proc_ports(host, ("net/udp", "net/udp6"), ports, tcp=False, outside=servers)
    udp, udp_inodes = udp_read if not isinstance(udp_read, Unavailable) else (udp_read, set())
    use = port_use(
        "proc",
        tcp,
        Unavailable("/proc/net/tcp does not list TCP sockets that are bound but not connected"),
        udp,
        ports,
        udp_servers=servers,
    )
    if needs_holders(use, ports) and host.is_live:
        return _replace(use, holders=port_holders(host, tcp_inodes, udp_inodes))
    return use


def _replace(use: PortUse, **changes: object) -> PortUse:
    return record.replace(use, **changes)


def unhashed_tcp_sockets(host: HostRoot) -> int | None:
    """At most how many TCP sockets here are bound but not hashed (see BOUND_RATIO); None
    when sockstat cannot say."""
    try:
        stat = collect_sockstat(host)
    except AuditorError:
        return None
    if isinstance(stat, Unavailable) or "alloc" not in stat.get("TCP", {}):
        return None
    tcp, tcp6 = stat["TCP"], stat.get("TCP6", {})
    return max(0, tcp["alloc"] - tcp.get("inuse", 0) - tcp6.get("inuse", 0))


def port_use_from_scan(
    host: HostRoot, scan: NetlinkScan, ports: PortRange, release: str
) -> PortUse:
    """Port use from a netlink scan's TCP tally, one UDP dump and, when they could take use
    above BOUND_RATIO, the bound-but-inactive TCP sockets."""
    from auditor.facts import netlink

    udp: set[int] | Unavailable
    servers: set[tuple[int, str, int]] = set()
    try:
        udp, _n = netlink.scan_udp_ports(ports.low, ports.high)
        servers = netlink.scan_udp_servers(ports.low, ports.high)
    except netlink.NetlinkRefused as exc:
        udp = Unavailable(f"UDP sock_diag refused ({exc})")
    unhashed = unhashed_tcp_sockets(host)
    not_read = Unavailable(
        f"not read: at most {unhashed} TCP sockets are unconnected (sockstat), too few to"
        f" take use above {BOUND_RATIO:.0%} of the range"
    )
    use = port_use("netlink", scan.ports, not_read, udp, ports, scan.time_wait_ports, servers)
    if unhashed is not None and use.tcp + unhashed <= BOUND_RATIO * ports.usable:
        return use
    reason = bound_inactive_reason(release)
    if reason is not None:
        return _replace(use, tcp_bound=Unavailable(reason))
    try:
        bound, n = scan.bound_ports(ports.low, ports.high)
    except netlink.NetlinkRefused as exc:
        return _replace(use, tcp_bound=Unavailable(f"sock_diag refused ({exc})"))
    encoded = scan.ports | {7 << 16 | p for p in bound}
    return port_use("netlink", encoded, n, udp, ports, scan.time_wait_ports, servers)


def collect_port_use_netlink(
    host: HostRoot, ports: PortRange, scan: NetlinkScan, release: str
) -> PortUse:
    """`port_use_from_scan`, UDP from /proc where sock_diag has no UDP module, and the
    processes holding the most ports when use is high."""
    from auditor.facts import netlink

    use = port_use_from_scan(host, scan, ports, release)
    if isinstance(use.udp, Unavailable):
        servers: set[tuple[int, str, int]] = set()
        udp = _proc_ports(host, ("net/udp", "net/udp6"), ports, tcp=False, outside=servers)
        if not isinstance(udp, Unavailable):
            listed, omitted = udp_listeners(servers)
            use = _replace(
                use,
                udp=len(_usable(udp[0], ports, reserved_in_range(ports))),
                udp_listeners=listed,
                udp_listeners_omitted=omitted,
            )
    if not needs_holders(use, ports):
        return use
    try:
        tcp_inodes, udp_inodes = netlink.port_inodes(ports.low, ports.high)
    except netlink.NetlinkRefused:
        return use
    return _replace(use, holders=port_holders(host, tcp_inodes, udp_inodes))
