"""One sample of the host for `portaudit watch`: what a refresh reads, and nothing more.

Each refresh walks the socket table with the audit's own filtered dumps (netlink.scan_sockets:
per-destination counts and the host-wide port tally in one pass, no object per socket), reads
the UDP ports, two sysctls files and /proc/net/netstat. The processes behind the top
destinations need one more dump and a /proc/*/fd walk, so they are looked up every few
refreshes only, and kept in between.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from auditor.errors import AuditorError
from auditor.facts import netlink
from auditor.facts.counters import collect_counters
from auditor.facts.model import PortRange, PortUse, Unavailable
from auditor.facts.owners import find_owners
from auditor.facts.portuse import collect_port_use_proc, port_use_from_scan
from auditor.facts.sockets import collect_sockets_proc
from auditor.facts.sysctl import collect_sysctls, port_range
from auditor.facts.tcp import Dest
from auditor.hostfs import HostRoot

OWNERS_EVERY = 5
"""Refreshes between two owner look-ups (each costs a dump of live sockets and a /proc walk)."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What one refresh saw. `per_dest` maps each destination to (used, TIME_WAIT)."""

    at: float
    """time.monotonic() when the sample started: rates divide by differences of it."""
    wall: float
    cost: float
    """Seconds the sample took."""
    ports: PortRange | Unavailable
    per_dest: dict[Dest, tuple[int, int]]
    time_wait: int
    port_use: PortUse | Unavailable
    listen_overflows: int | None
    conntrack: tuple[int, int] | None
    owners: dict[Dest, tuple[tuple[str, int, int], ...]] = field(default_factory=dict)
    """(command, pid, connections) per destination, from the last owner look-up."""
    source: str = "netlink"
    seq: int = 0
    """1 for the first sample of a run, then 2, 3, ..."""


def _conntrack(values: dict[str, str]) -> tuple[int, int] | None:
    try:
        count = int(values["net.netfilter.nf_conntrack_count"])
        limit = int(values["net.netfilter.nf_conntrack_max"])
    except (KeyError, ValueError):
        return None
    return count, limit


def _overflows(host: HostRoot) -> int | None:
    try:
        counters = collect_counters(host)
    except AuditorError:
        return None
    if isinstance(counters, Unavailable):
        return None
    return counters.get("TcpExt", {}).get("ListenOverflows")


class Sampler:
    """Takes samples of one host; keeps only the owners of the last look-up between them."""

    def __init__(self, host: HostRoot, top: int = 10) -> None:
        self.host = host
        self.top = top
        self.refreshes = 0
        self._owners: dict[Dest, tuple[tuple[str, int, int], ...]] = {}
        self._names: dict[tuple[bool, bytes], Dest] = {}
        """Each raw destination key's text, kept from one refresh to the next."""
        self._release = host.read_sysctl("kernel.osrelease")

    def sample(self) -> Snapshot:
        t0, wall = time.monotonic(), time.time()
        values, missing = collect_sysctls(self.host)
        ports = port_range(values, missing, self.host)
        low, high = (ports.low, ports.high) if isinstance(ports, PortRange) else (1, 0)
        scan: netlink.NetlinkScan | None
        try:
            scan = netlink.scan_sockets(low, high)
        except netlink.NetlinkRefused:
            scan = None
        per_dest: dict[Dest, tuple[int, int]]
        use: PortUse | Unavailable
        source = "netlink"
        if scan is not None:
            per_dest = scan.counts.used_and_time_wait(self._names)
            time_wait = scan.counts.totals["TIME_WAIT"]
            use = self._port_use(scan, ports)
        else:
            source = "proc"
            table = collect_sockets_proc(self.host, ports)
            if isinstance(table, Unavailable):
                per_dest, time_wait = {}, 0
            else:
                per_dest = {
                    (d.src, d.dst, d.dport): (d.used, d.by_state.get("TIME_WAIT", 0))
                    for d in table.destinations
                }
                time_wait = table.total_by_state.get("TIME_WAIT", 0)
            use = collect_port_use_proc(self.host, ports)
        if scan is not None and self.refreshes % OWNERS_EVERY == 0:
            self._owners = self._look_up_owners(scan, per_dest)
        self.refreshes += 1
        return Snapshot(
            at=t0,
            wall=wall,
            cost=time.monotonic() - t0,
            ports=ports,
            per_dest=per_dest,
            time_wait=time_wait,
            port_use=use,
            listen_overflows=_overflows(self.host),
            conntrack=_conntrack(values),
            owners=self._owners,
            source=source,
            seq=self.refreshes,
        )

    def _port_use(
        self, scan: netlink.NetlinkScan, ports: PortRange | Unavailable
    ) -> PortUse | Unavailable:
        if not isinstance(ports, PortRange):
            return Unavailable(f"ports: {ports.reason}")
        release = self._release if isinstance(self._release, str) else "unknown"
        return port_use_from_scan(self.host, scan, ports, release)

    def _look_up_owners(
        self, scan: netlink.NetlinkScan, per_dest: dict[Dest, tuple[int, int]]
    ) -> dict[Dest, tuple[tuple[str, int, int], ...]]:
        """The processes with live connections to the busiest destinations."""
        hot = sorted(per_dest, key=lambda d: -per_dest[d][0])[: self.top]
        try:
            inodes = scan.live_inodes(hot)
        except (netlink.NetlinkRefused, AuditorError):
            return {}
        out: dict[Dest, list[tuple[str, int, int]]] = {}
        for o in find_owners(self.host, inodes):
            out.setdefault((o.src, o.dst, o.dport), []).append((o.command, o.pid, o.count))
        return {d: tuple(v) for d, v in out.items()}
