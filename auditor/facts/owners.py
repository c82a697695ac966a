"""Who is doing it: the processes holding live sockets to destinations under pressure.

TIME_WAIT sockets belong to no process, but the processes with live connections to the same
destination are the ones opening and closing them, so naming those (pid, command, count) points
the operator at the culprit. Socket inodes are mapped to processes through `/proc/<pid>/fd`
(`readlink` gives `socket:[inode]`), as psutil does, but only for the few destinations above
the pressure threshold, so an idle host pays nothing and a busy one pays one `/proc/*/fd` walk.
Inodes are global, so this also works for a socket in another network namespace.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable

from auditor.facts.model import Owner, PortRange, SocketTable
from auditor.facts.sockets import hex_to_packed
from auditor.facts.tcp import Dest, address_text
from auditor.hostfs import HostRoot

PRESSURE_RATIO = 0.7
"""EPH-001's default warn ratio: attribution runs for the destinations it would flag."""
MAX_OWNERS_PER_DEST = 5


def pressured(table: SocketTable, ports: PortRange, ratio: float = PRESSURE_RATIO) -> list[Dest]:
    """Destinations whose used ports exceed `ratio` of the usable range."""
    if ports.usable <= 0:
        return []
    return [(d.src, d.dst, d.dport) for d in table.destinations if d.used / ports.usable > ratio]


def proc_live_inodes(
    host: HostRoot, wanted: Iterable[Dest], ports: PortRange
) -> dict[Dest, set[int]]:
    """The /proc fallback for netlink's `live_inodes`: inode column of `/proc/net/tcp{,6}`.

    As in the readers, a socket on a listening port is a server's, not a client's (LISTEN
    lines come first in each file)."""
    want = set(wanted)
    out: dict[Dest, set[int]] = {d: set() for d in want}
    listening: set[int] = set()
    for rel in ("net/tcp", "net/tcp6"):
        try:
            fh = open(host.proc_path(rel), encoding="ascii", errors="replace")  # noqa: SIM115
        except OSError:
            continue
        with fh:
            next(fh, None)
            for line in fh:
                f = line.split()
                if len(f) < 10 or f[3] == "06":
                    continue
                lip, _, lport = f[1].partition(":")
                rip, _, rport = f[2].partition(":")
                try:
                    port = int(lport, 16)
                    if f[3] == "0A":
                        listening.add(port)
                        continue
                    if not ports.low <= port <= ports.high or port in listening:
                        continue
                    key = (
                        address_text(hex_to_packed(lip)),
                        address_text(hex_to_packed(rip)),
                        int(rport, 16),
                    )
                    inode = int(f[9])
                except ValueError:
                    continue
                if key in want and inode:
                    out[key].add(inode)
    return out


def _command(host: HostRoot, pid: str) -> str:
    try:
        with open(host.proc_path(f"{pid}/comm"), encoding="utf-8", errors="replace") as fh:
            return fh.read().strip() or "?"
    except OSError:
        return "?"


def find_owners(
    host: HostRoot, inodes: dict[Dest, set[int]], refused: list[int] | None = None
) -> tuple[Owner, ...]:
    """Walk `/proc/*/fd` once; count each destination's wanted socket inodes per process.

    Processes whose fd directory we may not read (no CAP_SYS_PTRACE) are added to `refused`.
    """
    link_to_dest: dict[str, Dest] = {}
    for dest, nodes in inodes.items():
        for ino in nodes:
            link_to_dest[f"socket:[{ino}]"] = dest
    if not link_to_dest:
        return ()
    counts: Counter[tuple[Dest, int]] = Counter()
    try:
        pids = [e.name for e in os.scandir(host.proc) if e.name.isdigit()]
    except OSError:
        return ()
    for pid_text in pids:
        fd_dir = host.proc_path(f"{pid_text}/fd")
        try:
            entries = list(os.scandir(fd_dir))
        except PermissionError:
            if refused is not None:
                refused.append(int(pid_text))
            continue
        except OSError:  # gone
            continue
        for entry in entries:
            try:
                link = os.readlink(entry.path)
            except OSError:
                continue
            hit = link_to_dest.get(link)
            if hit is not None:
                counts[(hit, int(pid_text))] += 1
    commands: dict[int, str] = {}
    per_dest: dict[Dest, list[Owner]] = {}
    for (dest, pid), n in counts.items():
        if pid not in commands:
            commands[pid] = _command(host, str(pid))
        per_dest.setdefault(dest, []).append(
            Owner(src=dest[0], dst=dest[1], dport=dest[2], pid=pid, command=commands[pid], count=n)
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
) -> SocketTable:
    """`table` with `owners` filled for its pressured destinations (unchanged if none)."""
    hot = pressured(table, ports)
    if not hot:
        return table
    refused: list[int] = []
    owners = find_owners(host, inodes_of(hot), refused)
    why = ""
    if refused:
        why = (
            f"attribution unavailable: the open files of {len(refused)} processes could not be"
            " read (/proc/PID/fd: permission denied; it needs root with CAP_SYS_PTRACE)"
        )
    return SocketTable(
        source=table.source,
        total_by_state=table.total_by_state,
        destinations=table.destinations,
        listeners=table.listeners,
        owners=owners,
        owners_unavailable=why,
    )


def owner_text(owners: Iterable[Owner], dest: Dest) -> str:
    """ "php-fpm (pid 812) holds 412 connections" for one destination ("" when none known)."""
    parts = []
    for o in owners:
        if (o.src, o.dst, o.dport) == dest:
            noun = "connection" if o.count == 1 else "connections"
            parts.append(f"{o.command} (pid {o.pid}) holds {o.count} {noun}")
    return "; ".join(parts)
