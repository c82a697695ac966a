"""What the server's kernel knows about the port, read when the target is this host.

The listeners come from the facts layer's sock_diag listener dump (`netlink.dump_listeners`),
read again before and after the probe, because two things only netlink carries decide the
common timeouts and refusals:
`INET_DIAG_SKV6ONLY` (a `[::]` listener with IPV6_V6ONLY set never accepts IPv4, whatever
net.ipv6.bindv6only says) and, for a LISTEN socket, `idiag_rqueue` / `idiag_wqueue`: the
accept queue and its limit (the backlog, capped by somaxconn). A queue at its limit drops new
SYNs silently; the client sees a timeout, not a firewall. The process holding the socket and its
open descriptors against RLIMIT_NOFILE (facts/process.py reads them from /proc) tell an
application that cannot accept() any more (EMFILE) from one that is merely slow.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from auditor.facts import netlink
from auditor.facts.counters import parse_counter_pairs
from auditor.facts.model import Unavailable
from auditor.facts.process import describe, socket_holders
from auditor.hostfs import HostRoot

COUNTERS = ("ListenOverflows", "ListenDrops", "TCPReqQFullDrop", "SyncookiesSent")
"""TcpExt counters that move when the listen path drops a connection attempt."""


@dataclass(frozen=True, slots=True)
class ListenerDetail:
    addr: str
    port: int
    family: int
    v6only: bool | None
    queued: int
    """Connections completed by the kernel and not yet accept()ed."""
    backlog: int
    """The accept queue's limit: listen()'s backlog capped by net.core.somaxconn."""
    inode: int


@dataclass(frozen=True, slots=True)
class Holder:
    """The process holding a listening socket."""

    pid: int
    name: str
    state: str
    """As psutil's status(): running, sleeping, stopped (SIGSTOP), zombie..."""
    fds: int | None
    fd_limit: int | None
    """The soft RLIMIT_NOFILE. Both are None when they could not be read, or when there is
    no limit to reach."""
    fds_free: int | None = None
    """Descriptor numbers free below `fd_limit`: accept() fails with EMFILE at 0."""


@dataclass(frozen=True, slots=True)
class ServerSample:
    """The listeners on the port and the listen-path counters at one moment."""

    listeners: tuple[ListenerDetail, ...] | Unavailable
    counters: dict[str, int] | Unavailable


def _text(family: int, raw: bytes) -> str:
    """The address as the socket holds it (a v4-mapped IPv6 bind stays IPv6 text)."""
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    return socket.inet_ntop(socket.AF_INET6, raw)


def listeners_on(port: int) -> tuple[ListenerDetail, ...] | Unavailable:
    """Every TCP listener of this namespace on `port`, IPv4 and IPv6, from sock_diag (the
    facts layer's listener dump, with its accept queue, backlog, inode and IPV6_V6ONLY)."""
    try:
        with netlink.DiagSocket(timeout=2.0) as diag:
            rows = netlink.dump_listeners(diag)
    except (OSError, netlink.NetlinkRefused, netlink.NetlinkReplyError) as exc:
        return Unavailable(f"sock_diag: {exc}")
    return tuple(
        ListenerDetail(
            addr=_text(af, src),
            port=sport,
            family=4 if af == socket.AF_INET else 6,
            v6only=v6only,
            queued=queued,
            backlog=backlog,
            inode=inode,
        )
        for af, sport, src, queued, backlog, inode, v6only in rows
        if sport == port
    )


def holder(inode: int, proc: str = "/proc") -> Holder | None:
    """The process with `socket:[inode]` among its descriptors (the lowest pid, where forked
    workers share it), if one can be found."""
    pids = socket_holders(proc, {inode: (inode,)}).found.get(inode)
    if not pids:
        return None
    got = describe(proc, min(pids))
    if isinstance(got, str):
        return None
    fds: int | None = None
    limit: int | None = None
    free: int | None = None
    if not isinstance(got.descriptors, str) and got.descriptors.soft_limit is not None:
        d = got.descriptors
        fds, limit, free = d.open, d.soft_limit, d.free
    return Holder(
        pid=got.pid, name=got.name, state=got.state, fds=fds, fd_limit=limit, fds_free=free
    )


def listen_counters(host: HostRoot) -> dict[str, int] | Unavailable:
    """The TcpExt listen-path drop counters now (sampled before and after the probe)."""
    text = host.read_text(host.proc_path("net/netstat"))
    if isinstance(text, Unavailable):
        return text
    tcpext = parse_counter_pairs(text, "/proc/net/netstat").get("TcpExt", {})
    return {k: tcpext[k] for k in COUNTERS if k in tcpext}


def conntrack(host: HostRoot) -> tuple[int, int] | Unavailable:
    """(nf_conntrack_count, nf_conntrack_max), or why they are not there."""
    values: list[int] = []
    for key in ("nf_conntrack_count", "nf_conntrack_max"):
        text = host.read_text(host.sysctl_path(f"net.netfilter.{key}"))
        if isinstance(text, Unavailable):
            return Unavailable(f"net.netfilter.{key}: {text.reason} (conntrack not loaded?)")
        values.append(int(text.split()[0]))
    return values[0], values[1]
