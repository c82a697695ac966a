"""The running kernel's socket table: netlink sock_diag, `/proc/net/tcp*` where it is refused.

Owners are attached for the destinations above the caller's threshold either way
(facts/owners.py). Kept apart
from the netlink reader so that module stays light to import (facts/tcp.py says why).
"""

from __future__ import annotations

from auditor.facts import netlink
from auditor.facts.model import PortRange, PortUse, SocketTable, Unavailable
from auditor.facts.owners import attach_listener_processes, attach_owners, proc_live_inodes
from auditor.facts.portuse import (
    BOUND_RATIO,
    bound_inactive_reason,
    collect_port_use_netlink,
    collect_port_use_proc,
)
from auditor.facts.sockets import collect_sockets_proc, proc_listener_inodes
from auditor.facts.tcp import Dest
from auditor.facts.twreuse import reusable_after_left, reuse_delay_ms
from auditor.hostfs import HostRoot
from auditor.progress import ProgressBar


def collect_sockets_and_port_use(
    host: HostRoot, ports: PortRange | Unavailable, owners_above: float | None = None
) -> tuple[SocketTable | Unavailable, PortUse | Unavailable]:
    """The socket table (netlink sock_diag, `/proc/net/tcp*` where it is refused) with the
    owners of destinations above `owners_above` of the usable ports (none when None), and the
    host-wide port use gathered by the same walks (facts/portuse.py). A progress bar shows on
    a terminal when the scan takes more than a second."""
    low, high = (ports.low, ports.high) if isinstance(ports, PortRange) else (1, 0)
    known = netlink.sockstat_totals()  # the bar's 100%: every TCP socket the scan walks
    release = host.read_sysctl("kernel.osrelease")
    release = release if isinstance(release, str) else "unknown"
    # the port use reads the bound-but-inactive sockets past this many ports in use, which
    # takes at least as many sockets: the scan then reads them with its TIME_WAIT dump
    bound_above = None
    if isinstance(ports, PortRange) and bound_inactive_reason(release) is None:
        bound_above = int(BOUND_RATIO * ports.usable)
    with ProgressBar("reading sockets", sum(known) or None if known else None) as bar:
        try:
            scan: netlink.NetlinkScan | None = netlink.scan_sockets(
                low, high, bar.update, bound_above
            )
        except netlink.NetlinkRefused:
            scan = None
    if scan is not None:
        _add_reusable(host, scan)
    table = scan.table() if scan is not None else collect_sockets_proc(host, ports)
    if isinstance(table, SocketTable):
        inodes = scan.counts.listener_inodes if scan is not None else proc_listener_inodes(host)
        table = attach_listener_processes(host, table, inodes)
    use: PortUse | Unavailable
    if not isinstance(ports, PortRange):
        use = Unavailable(f"ports: {ports.reason}")
    elif scan is None:
        use = collect_port_use_proc(host, ports)
    else:
        use = collect_port_use_netlink(host, ports, scan, release)
    if isinstance(table, Unavailable) or not isinstance(ports, PortRange) or owners_above is None:
        return table, use

    def inodes_of(hot: list[Dest]) -> dict[Dest, set[int]]:
        if scan is not None:
            try:
                return scan.live_inodes(hot)
            except netlink.NetlinkRefused:
                pass
        return proc_live_inodes(host, hot, ports)

    return attach_owners(host, table, ports, inodes_of, owners_above), use


def _add_reusable(host: HostRoot, scan: netlink.NetlinkScan) -> None:
    """Count the TIME_WAIT sockets connect() may reuse, for the destinations reuse applies to
    (all with tcp_tw_reuse = 1, loopback ones with 2); no extra dump where it applies to none."""
    delay = reuse_delay_ms(host)
    if delay is None:
        return
    counts = scan.counts
    counts.measure_reusable()
    reuse = host.read_sysctl("net.ipv4.tcp_tw_reuse")
    dests = counts.time_wait_dests(loopback_only=reuse != "1")
    if not dests:
        return
    try:
        got = scan.reusable_time_wait(reusable_after_left(delay), dests)
    except netlink.NetlinkRefused:
        counts.reusable = None
        return
    for dest, n in got.items():
        counts.add_reusable(dest, n)
