"""Who is doing it: the processes holding live sockets to destinations under pressure.

TIME_WAIT sockets belong to no process, but the processes with live connections to the same
destination are the ones opening and closing them, so naming those (pid, command, count) points
the operator at the culprit. Socket inodes are mapped to processes through `/proc/<pid>/fd`
(`readlink` gives `socket:[inode]`), as psutil does, but only for the few destinations above
the threshold the caller passes (the audit passes the lowest share its rules flag), so an idle
host pays nothing and a busy one pays one `/proc/*/fd` walk.
Inodes are global, so this also works for a socket in another network namespace.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from auditor import record
from auditor.errors import InputError
from auditor.facts.model import Owner, PortRange, SocketTable
from auditor.facts.process import describe, socket_holders
from auditor.facts.sockets import hex_to_packed, parse_proc_tcp, read_listeners
from auditor.facts.tcp import Dest, DestinationCounter, address_text
from auditor.hostfs import HostRoot

MAX_OWNERS_PER_DEST = 5


def pressured(table: SocketTable, ports: PortRange, ratio: float) -> list[Dest]:
    """Destinations whose share of the usable ports exceeds `ratio`."""
    if ports.usable <= 0:
        return []
    return [(d.src, d.dst, d.dport) for d in table.rows.where(lambda u: ports.share(u) > ratio)]


def proc_live_inodes(
    host: HostRoot, wanted: Iterable[Dest], ports: PortRange
) -> dict[Dest, set[int]]:
    """The /proc fallback for netlink's `live_inodes`: inodes from `/proc/net/tcp{,6}`, read
    by the socket table's own parser (so a server's sockets are left out the same way).

    Attribution is a hint next to a finding, so a file that cannot be read or parsed here
    leaves its owners unknown rather than failing the audit."""
    want = set(wanted)
    out: dict[Dest, set[int]] = {d: set() for d in want}
    counter = DestinationCounter()
    for rel, family in (("net/tcp", 4), ("net/tcp6", 6)):  # both files' listeners first
        try:
            with open(host.proc_path(rel), encoding="ascii", errors="strict") as fh:
                read_listeners(fh, rel, family, counter)
        except (OSError, UnicodeDecodeError, InputError):
            continue
    for rel, family in (("net/tcp", 4), ("net/tcp6", 6)):
        path = host.proc_path(rel)
        raw: dict[tuple[str, str, str], set[int]] = {}
        try:
            with open(path, encoding="ascii", errors="strict") as fh:
                parse_proc_tcp(fh, str(path), family, ports, counter, inodes=raw)
        except (OSError, UnicodeDecodeError, InputError):
            continue
        for (lip, rip, rport_hex), nodes in raw.items():
            key = (
                address_text(hex_to_packed(lip)),
                address_text(hex_to_packed(rip)),
                int(rport_hex, 16),
            )
            if key in want:
                out[key] |= nodes
    return out


def _command(host: HostRoot, pid: str) -> str:
    try:
        with open(host.proc_path(f"{pid}/comm"), encoding="utf-8", errors="replace") as fh:
            return fh.read().strip() or "?"
    except OSError:
        return "?"


def find_owners(
    host: HostRoot, inodes: dict[Dest, set[int]], unread: list[str] | None = None
) -> tuple[Owner, ...]:
    """Walk `/proc/*/fd` once; count each destination's wanted socket inodes per process.

    Why some processes' open files could not be read (no CAP_SYS_PTRACE) is added to `unread`.
    """
    if not any(inodes.values()):
        return ()
    walk = socket_holders(host.proc, inodes)
    if walk.why and unread is not None:
        unread.append(walk.why)
    commands: dict[int, str] = {}
    per_dest: dict[Dest, list[Owner]] = {}
    for dest, pids in walk.found.items():
        for pid, n in pids.items():
            if pid not in commands:
                commands[pid] = _command(host, str(pid))
            per_dest.setdefault(dest, []).append(
                Owner(
                    src=dest[0], dst=dest[1], dport=dest[2], pid=pid, command=commands[pid], count=n
                )
            )
    out: list[Owner] = []
    for dest in sorted(per_dest):
        ranked = sorted(per_dest[dest], key=lambda o: (-o.count, o.pid))
        out.extend(ranked[:MAX_OWNERS_PER_DEST])
    return tuple(out)


def attach_owners(
    host: HostRoot,
    table: SocketTable,
    ports: PortRange,
    inodes_of: Callable[[list[Dest]], dict[Dest, set[int]]],
    ratio: float,
) -> SocketTable:
    """`table` with `owners` filled for destinations above `ratio` of the usable ports
    (unchanged if none). The caller chooses `ratio` from the rules it runs."""
    hot = pressured(table, ports, ratio)
    if not hot:
        return table
    unread: list[str] = []
    owners = find_owners(host, inodes_of(hot), unread)
    why = f"attribution unavailable: {unread[0]}" if unread else ""
    return SocketTable(
        source=table.source,
        total_by_state=table.total_by_state,
        destinations=table.destinations,
        listeners=table.listeners,
        owners=owners,
        owners_unavailable=why,
    )


MAX_LISTENER_PROCESSES = 256
"""Processes described at most (a few /proc files each): a host with more listening processes
gets the rest named "not read"."""

ListenerKey = tuple[str, int, int]


def _descriptors(host: HostRoot, pid: int) -> tuple[str, int, int, int] | str:
    """(command, open descriptors, soft RLIMIT_NOFILE, numbers free below it) of `pid`, or
    why not."""
    got = describe(host.proc, pid)
    if isinstance(got, str):
        return got
    if isinstance(got.descriptors, str):
        return got.descriptors
    d = got.descriptors
    fds, soft, free = d.open, d.soft_limit, d.free
    if soft is None or free is None:
        return f"pid {pid} ({got.name}) has no descriptor limit"
    return got.name, fds, soft, free


def attach_listener_processes(
    host: HostRoot, table: SocketTable, inodes: dict[ListenerKey, set[int]]
) -> SocketTable:
    """`table` with each listener's holding process, its open descriptors and RLIMIT_NOFILE
    (the process nearest its limit, where several share a SO_REUSEPORT group), or the reason
    they are unknown in `process_note`. Live host only: the caller checks."""
    walk = socket_holders(host.proc, inodes)
    pids, why = walk.found, walk.why
    described: dict[int, tuple[str, int, int, int] | str] = {}
    listeners = []
    for li in table.listeners:
        key = (li.addr, li.port, li.family)
        found = sorted(pids.get(key, ()))
        if not found:
            note = why or "no process holds the socket (or it exited before it was found)"
            listeners.append(record.replace(li, process_note=note))
            continue
        best: tuple[int, str, int, int, int] | None = None
        note = ""
        for pid in found:
            if pid not in described:
                if len(described) >= MAX_LISTENER_PROCESSES:
                    note = f"not read: more than {MAX_LISTENER_PROCESSES} listening processes"
                    continue
                described[pid] = _descriptors(host, pid)
            got = described[pid]
            if isinstance(got, str):
                note = got
                continue
            name, fds, limit, free = got
            # the one nearest EMFILE: the highest share of the numbers below its limit taken
            # (what FD-003 judges; none free is all of them)
            if best is None or (limit - free) * best[3] > (best[3] - best[4]) * limit:
                best = (pid, name, fds, limit, free)
        if best is None:
            listeners.append(record.replace(li, pid=found[0], process_note=note))
        else:
            pid, name, fds, limit, free = best
            listeners.append(
                record.replace(li, pid=pid, command=name, fds=fds, fd_limit=limit, fds_free=free)
            )
    return record.replace(table, listeners=tuple(listeners))
