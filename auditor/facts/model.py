"""The facts snapshot: frozen, slotted dataclasses that round-trip through JSON.

Everything a rule may read is here, collected once. A fact that could not be read is an
`Unavailable` carrying the reason, never an exception and never a silent default, so a rule
that needs it is reported as skipped with that reason: "could not check" is a value.
`portaudit facts` writes this snapshot; `portaudit audit --facts FILE` reads it back, so the
JSON form is an interface: bump `SCHEMA` when a field changes meaning.
"""

from __future__ import annotations

import functools
import heapq
import re
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Union, overload

from auditor.facts.tcp import STATE_NAMES, Dest, dest_uses, raw_dest, raw_key
from auditor.record import dataclass, field

SCHEMA = 1

_PORT = re.compile(r"0|[1-9][0-9]*")
"""A port as the kernel prints it: decimal, no sign, no leading zero."""


@dataclass(frozen=True, slots=True)
class Unavailable:
    """A fact that could not be collected, and why (absent file, permission, old kernel)."""

    reason: str


@dataclass(frozen=True, slots=True)
class HostInfo:
    hostname: str
    kernel: str
    netns: str
    """The network namespace as `net:[inode]` (what `readlink /proc/self/ns/net` shows)."""


def bracketed(addr: str) -> str:
    """`10.0.0.5`, `[2001:db8::5]`: an address as it stands before `:port` or beside one."""
    return f"[{addr}]" if ":" in addr else addr


def endpoint(addr: str, port: int) -> str:
    """`10.0.0.5:3306`, `[2001:db8::5]:443`: an address and port as a reader can paste them."""
    return f"{bracketed(addr)}:{port}"


WIDE_LOW = 10000
"""The low end a widened port range starts at (or at ip_unprivileged_port_start, if higher)."""
PORT_MAX = 65535
UNPRIVILEGED_START_KEY = "net.ipv4.ip_unprivileged_port_start"
UNPRIVILEGED_START_BEFORE_4_11 = 1024
"""The first unprivileged port on kernels without the key (fixed at compile time)."""


def unprivileged_start(sysctl: Mapping[str, str]) -> int:
    """ip_unprivileged_port_start as read (1024 where the kernel or snapshot has no such key,
    as before Linux 4.11, or an unreadable value)."""
    text = " ".join(sysctl.get(UNPRIVILEGED_START_KEY, "").split())
    return int(text) if text.isascii() and text.isdigit() else UNPRIVILEGED_START_BEFORE_4_11


@dataclass(frozen=True, slots=True)
class PortRange:
    """The ephemeral range and what is left of it for connect() after reserved ports.

    The one place that knows the range's arithmetic: parsing the two sysctls, the usable
    count, the width and the parity. `usable` is stored (it is part of the snapshot's JSON)
    and `parse` is the way to build one, so it always agrees with `low`, `high` and `reserved`.
    """

    low: int
    high: int
    reserved: tuple[tuple[int, int], ...]
    """`ip_local_reserved_ports` as inclusive (first, last) ranges, as the kernel prints them."""
    usable: int
    """Ports in [low, high] that are not reserved: the per-destination capacity."""

    @classmethod
    def parse(cls, range_text: str, reserved_text: str = "") -> PortRange:
        """`32768 60999` and `8080,9000-9009`; ValueError names the bad part."""
        parts = range_text.split()
        if len(parts) != 2 or not all(p.isascii() and p.isdigit() for p in parts):
            raise ValueError(f"expected two integers, got {range_text!r}")
        low, high = int(parts[0]), int(parts[1])
        if not 0 < low <= high <= 65535:
            raise ValueError(f"impossible port range {range_text!r}")
        reserved = cls.parse_reserved(reserved_text)
        return cls(low, high, reserved, cls.count_usable(low, high, reserved))

    @staticmethod
    def parse_reserved(text: str) -> tuple[tuple[int, int], ...]:
        """`ip_local_reserved_ports` ("8080,9000-9009" or empty) as inclusive ranges.

        Plain decimal only: the kernel prints the list that way, and `fix` writes only what
        it can read back the same way.
        """
        out: list[tuple[int, int]] = []
        for item in text.replace(" ", "").split(","):
            if not item:
                continue
            first, sep, last = item.partition("-")
            if not _PORT.fullmatch(first) or (sep and not _PORT.fullmatch(last)):
                raise ValueError(f"bad reserved port entry {item!r}")
            lo, hi = int(first), int(last if sep else first)
            if not 0 < lo <= hi <= 65535:
                raise ValueError(f"bad reserved port range {item!r}")
            out.append((lo, hi))
        return tuple(out)

    @staticmethod
    def count_usable(low: int, high: int, reserved: tuple[tuple[int, int], ...]) -> int:
        """Ports in [low, high] connect() may pick: the range minus the reserved ones in it."""
        taken: set[int] = set()
        for lo, hi in reserved:
            taken.update(range(max(lo, low), min(hi, high) + 1))
        return high - low + 1 - len(taken)

    @staticmethod
    def in_ranges(port: int, ranges: Iterable[tuple[int, int]]) -> bool:
        """Whether `port` lies in one of the inclusive `(first, last)` ranges."""
        return any(lo <= port <= hi for lo, hi in ranges)

    def is_reserved(self, port: int) -> bool:
        """Whether `port` is listed in `ip_local_reserved_ports` (inside the range or not)."""
        return self.in_ranges(port, self.reserved)

    def share(self, used: int) -> float:
        """`used` as a share of the usable ports (1.0 when none is usable): a destination's
        use ratio, whatever counts as used."""
        return used / self.usable if self.usable else 1.0

    @property
    def width(self) -> int:
        """Ports in [low, high], reserved or not."""
        return self.high - self.low + 1

    @property
    def reserved_count(self) -> int:
        """Reserved ports that fall inside the range."""
        return self.width - self.usable

    def widened_low(self, unprivileged_start: int) -> int:
        """The low end of the widest range `fix` proposes: even (connect() takes the low end's
        parity), at most WIDE_LOW unless the range starts lower, and never below
        ip_unprivileged_port_start, which the kernel refuses (EINVAL) since Linux 4.11."""
        low = max(min(self.low, WIDE_LOW), unprivileged_start)
        return low + low % 2

    def widens(self, unprivileged_start: int) -> bool:
        """Whether `widened_low(...)`-65535 holds more ports than the range in force."""
        low = self.widened_low(unprivileged_start)
        return low <= PORT_MAX and not (low >= self.low and self.high >= PORT_MAX)

    @property
    def same_parity(self) -> bool:
        """Both ends even or both odd: an odd number of ports, so connect()'s half (the low
        end's parity, Linux 4.2+) and bind(0)'s other half are not an even split."""
        return self.low % 2 == self.high % 2


@dataclass(frozen=True, slots=True)
class Destination:
    """Sockets with a local port in the ephemeral range, per (local IP, remote IP, remote port).

    Only the client side of outgoing connections counts: a socket on a port some listener
    holds is that server's (accepted, or its TIME_WAIT), even when the listener sits inside
    the range, and is counted in `total_by_state` only.

    That triple is the unit of exhaustion: connect() needs a local port unused for this exact
    destination, so 28k sockets spread over ten servers are fine and 28k to one are not.
    """

    src: str
    dst: str
    dport: int
    by_state: dict[str, int]
    time_wait_reusable: int | None = None
    """TIME_WAIT sockets older than `tcp_tw_reuse_delay` when collected (from the time left on
    each one's timer): those connect() may take over where reuse is in effect. None when the
    reader could not tell."""

    @property
    def used(self) -> int:
        return sum(self.by_state.values())

    def ratio(self, ports: PortRange) -> float:
        """Share of the usable ports this destination holds (1.0 when none is usable)."""
        return ports.share(self.used)

    @property
    def endpoint(self) -> str:
        """`10.0.0.5:3306`, `[2001:db8::5]:443`: the remote end as a client would write it."""
        return endpoint(self.dst, self.dport)


@dataclass(frozen=True, slots=True)
class Listener:
    addr: str
    port: int
    family: int
    """4 or 6; an IPv6 listener on `::` also accepts IPv4 unless bindv6only."""
    queued: int | None = None
    """Connections waiting in the accept queue (netlink `idiag_rqueue`, /proc `rx_queue`)."""
    backlog: int | None = None
    """The accept-queue limit (netlink `idiag_wqueue` on LISTEN); None from /proc, whose
    `tx_queue` column of a LISTEN line is the unsent byte count (0), not the backlog."""
    v6only: bool | None = None
    """IPV6_V6ONLY of an IPv6 listener (such a `::` listener never accepts IPv4); None for
    IPv4 or when unknown."""
    v6only_source: str = ""
    """"sock_diag" (the socket's own flag, `INET_DIAG_SKV6ONLY`) or "estimate:
    net.ipv6.bindv6only" (the /proc reader: the default a program gets when it does not set
    the flag itself)."""
    pid: int | None = None
    """The process holding the listening socket (live host only; None when not found)."""
    command: str = ""
    fds: int | None = None
    """That process's open descriptors."""
    fd_limit: int | None = None
    """Its soft RLIMIT_NOFILE."""
    fds_free: int | None = None
    """Descriptor numbers below `fd_limit` that none of its descriptors takes: accept() fails
    with EMFILE exactly when this is 0 (a new descriptor needs a free number below the
    limit; with the limit lowered after they were opened, `fds` can pass it while numbers
    below it are free)."""
    process_note: str = ""
    """Why the holding process or its descriptors are unknown ("" when known)."""


@dataclass(frozen=True, slots=True)
class Owner:
    """A process holding live sockets to a destination under pressure (who is doing it)."""

    src: str
    dst: str
    dport: int
    pid: int
    command: str
    count: int


PackedCounts = dict[bytes, "int | dict[int, int]"]
"""Counts per raw destination key (facts/tcp.py `DestinationCounter.add_raw_all` says the
form)."""


class DestinationRows(Sequence[Destination]):
    """The destinations of a table, kept as the scan counted them until someone reads a row.

    A host with 100,000 destinations has a handful a rule can fire on. Here each one is a raw
    key (the kernel's port and address bytes) and its counts; the engine reads every row's
    `used` from the counts (`uses`), picks the rows that can fire, and only those become a
    `Destination` with address text (`at`). As a sequence it is what the table always was:
    busiest first, then by (src, dst, dport) as text, every row made as it is read, so the
    full order (text of every address) is paid for only by a reader of every row.

    Also wraps a plain tuple of `Destination` (the /proc reader, a snapshot read back), where
    the order is the tuple's own: then `at(i)` is `[i]`.
    """

    __slots__ = (
        "_counts",
        "_items",
        "_keys",
        "_n4",
        "_order",
        "_reusable",
        "_shared",
        "_sources",
        "_uses",
    )

    def __init__(
        self,
        items: Sequence[Destination] = (),
        v4: PackedCounts | None = None,
        v6: PackedCounts | None = None,
        reusable: Mapping[Dest, int] | None = None,
    ) -> None:
        """`items`, or the packed counts: `v4` keyed by IPv4 keys (`port, src[4], 12 zero
        bytes, dst[4], 12 zero bytes`), `v6` by IPv6 ones (`port, src[16], dst[16]`).
        `reusable`: TIME_WAIT sockets connect() may take over, per destination, when measured."""
        self._items: Sequence[Destination] | None = None if v4 is not None else items
        v4, v6 = v4 or {}, v6 or {}
        self._keys: list[bytes] = [*v4, *v6]
        self._n4 = len(v4)
        counts = [*v4.values(), *v6.values()]
        self._uses: list[int] = [c >> 4 if isinstance(c, int) else sum(c.values()) for c in counts]
        self._shared: dict[int | tuple[tuple[str, int], ...], dict[str, int]] = {}
        self._reusable = reusable
        self._order: list[int] | None = None
        self._sources: dict[bytes, str] = {}
        self._counts: list[int | dict[int, int]] = counts

    # --- the packed side: one number per row, a Destination per row read --------------------

    def uses(self) -> list[int]:
        """Each row's `used`, by storage index (`at`), without making any row."""
        if self._items is not None:
            return dest_uses(self._items)
        return self._uses

    def decode(self, i: int) -> Dest:
        """Row `i`'s (src, dst, dport) as text, as /proc names them."""
        if self._items is not None:
            d = self._items[i]
            return d.src, d.dst, d.dport
        return raw_dest(self._keys[i], i < self._n4, self._sources)

    def at(self, i: int) -> Destination:
        """The row at storage index `i`, made now (rows with equal counts share `by_state`)."""
        if self._items is not None:
            return self._items[i]
        dest = self.decode(i)
        counts = self._counts[i]
        shape: int | tuple[tuple[str, int], ...]
        if isinstance(counts, int):
            shape = counts
        else:
            shape = tuple(sorted((STATE_NAMES.get(s, str(s)), n) for s, n in counts.items()))
        by_state = self._shared.get(shape)
        if by_state is None:
            if isinstance(shape, int):
                state = STATE_NAMES.get(shape & 15, str(shape & 15))
                by_state = self._shared[shape] = {state: shape >> 4}
            else:
                by_state = self._shared[shape] = dict(shape)
        reusable = self._reusable
        return Destination(
            src=dest[0],
            dst=dest[1],
            dport=dest[2],
            by_state=by_state,
            time_wait_reusable=None if reusable is None else reusable.get(dest, 0),
        )

    def _key(self, i: int) -> tuple[int, str, str, int]:
        src, dst, dport = self.decode(i)
        return -self._uses[i], src, dst, dport

    def in_order(self, indices: Iterable[int]) -> list[int]:
        """Storage indices in the table's order (for a wrapped tuple, the tuple's own)."""
        if self._items is not None:
            return sorted(indices)
        return sorted(indices, key=self._key)

    def order(self) -> list[int]:
        """Every storage index in the table's order: the text of every address, once."""
        if self._items is not None:
            return list(range(len(self._items)))
        if self._order is None:
            self._order = self.in_order(range(len(self._keys)))
        return self._order

    def where(self, used: Callable[[int], bool]) -> list[Destination]:
        """The rows whose `used` passes, in the table's order (asked once per distinct count)."""
        uses = self.uses()
        good = {u for u in set(uses) if used(u)}
        if not good:
            return []
        return [self.at(i) for i in self.in_order(i for i, u in enumerate(uses) if u in good)]

    def find(self, dest: Dest) -> Destination | None:
        """The row of `dest`, if counted (packed: by its raw key, no other row decoded)."""
        if self._items is not None:
            return next((d for d in self._items if (d.src, d.dst, d.dport) == dest), None)
        for v4, lo, hi in ((True, 0, self._n4), (False, self._n4, len(self._keys))):
            key = raw_key(dest, v4)
            if key and key in self._keys[lo:hi]:
                return self.at(self._keys.index(key, lo, hi))
        return None

    def to(self, dst: str, dport: int) -> list[Destination]:
        """The rows to `dst` port `dport` from any local address, in storage order (packed:
        compared by their raw bytes, so no other row is decoded or ordered: `diagnose` reads
        one destination of a table that may hold 100,000)."""
        if self._items is not None:
            return [d for d in self._items if d.dst == dst and d.dport == dport]
        out: list[Destination] = []
        stores = ((True, 0, self._n4, 22), (False, self._n4, len(self._keys), 34))
        for v4, lo, hi, end in stores:
            want = raw_key(("0.0.0.0" if v4 else "::", dst, dport), v4)
            if not want:
                continue
            port, addr = want[:2], want[18:end]
            keys = self._keys
            for i in range(lo, hi):
                if keys[i][18:end] == addr and keys[i][:2] == port:
                    row = self.at(i)
                    if row.dst == dst:  # the text as given: what a reader of every row compares
                        out.append(row)
        return out

    def split_reusable(self) -> tuple[list[Destination], int]:
        """(the rows with some TIME_WAIT connect() may reuse, the highest `used` of the
        others): what the busiest destination's effective use needs, making only those rows."""
        uses = self.uses()
        if self._items is not None:
            with_reuse = [i for i, d in enumerate(self._items) if d.time_wait_reusable]
        elif self._reusable:
            n4, keys = self._n4, self._keys
            where4 = {key: i for i, key in enumerate(keys[:n4])}
            where6 = {key: i + n4 for i, key in enumerate(keys[n4:])}
            with_reuse = []
            for dest, n in self._reusable.items():
                if n:
                    i = where4.get(raw_key(dest, True), where6.get(raw_key(dest, False), -1))
                    if i >= 0:
                        with_reuse.append(i)
        else:
            with_reuse = []
        if not with_reuse:
            return [], max(uses, default=0)
        skip = set(with_reuse)
        rest = max((u for i, u in enumerate(uses) if i not in skip), default=0)
        return [self.at(i) for i in sorted(with_reuse)], rest

    # --- the sequence: the table as it always read ------------------------------------------

    def __len__(self) -> int:
        return len(self._items) if self._items is not None else len(self._keys)

    @overload
    def __getitem__(self, index: int) -> Destination: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[Destination, ...]: ...

    def __getitem__(self, index: int | slice) -> Destination | tuple[Destination, ...]:
        if self._items is not None:
            if isinstance(index, slice):
                return tuple(self._items[index])
            return self._items[index]
        if isinstance(index, slice):
            return tuple(self.at(i) for i in self._head(index))
        return self.at(self.order()[index])

    def _head(self, index: slice) -> list[int]:
        """The storage indices of `[index]`; for the first few rows (the busiest, as a
        renderer shows them) only the rows that tie with or beat the last one are ordered."""
        start, stop, step = index.start or 0, index.stop, index.step or 1
        n = len(self._keys)
        if self._order is not None or start != 0 or step != 1 or stop is None or stop >= n:
            return self.order()[index]
        if stop <= 0:
            return []
        uses = self._uses
        last = heapq.nlargest(stop, uses)[-1]
        return heapq.nsmallest(stop, (i for i, u in enumerate(uses) if u >= last), key=self._key)

    def __iter__(self) -> Iterator[Destination]:
        if self._items is not None:
            yield from self._items
            return
        for i in self.order():
            yield self.at(i)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DestinationRows | tuple | list):
            return tuple(self) == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"DestinationRows({len(self)} rows)"


@dataclass(frozen=True, slots=True)
class SocketTable:
    source: str
    """Where it was read from: "netlink" (sock_diag) or "proc" (/proc/net/tcp{,6})."""
    total_by_state: dict[str, int]
    """Every TCP socket (v4 and v6) by state, ephemeral or not."""
    destinations: Sequence[Destination]
    """Busiest first, then by (src, dst, dport): a tuple, or `DestinationRows` from the live
    scan, which makes each row as it is read (use `rows` to read few)."""
    listeners: tuple[Listener, ...]
    owners: tuple[Owner, ...] = ()
    owners_unavailable: str = ""
    """Why some owners could not be named (processes whose fds we may not read); "" if none."""

    @property
    def rows(self) -> DestinationRows:
        """The destinations as rows to pick from without making the others."""
        d = self.destinations
        return d if isinstance(d, DestinationRows) else DestinationRows(d)


@dataclass(frozen=True, slots=True)
class PortHolder:
    """A process holding sockets on ports inside the range (who fills it host-wide)."""

    protocol: str
    """"tcp" or "udp"."""
    pid: int
    command: str
    count: int
    """Its sockets with a local port inside the usable range."""


@dataclass(frozen=True, slots=True)
class PortUse:
    """Distinct local ports inside the usable range that some socket holds, host-wide.

    bind() with port 0 (a client choosing its source address before connect(), without
    IP_BIND_ADDRESS_NO_PORT) and UDP sockets take a port no other socket of the protocol
    holds on an overlapping address, whatever the destination: their limit is this count, not
    one destination's. TCP and UDP ports are separate spaces; IPv4 and IPv6 share each.
    """

    source: str
    """"netlink" (sock_diag) or "proc" (/proc/net/{tcp,udp}{,6})."""
    tcp: int
    """Distinct TCP ports in use in the usable range, any state (TIME_WAIT and listeners too)."""
    tcp_by_state: dict[str, int]
    """Distinct TCP ports per state; a port held in two states counts under both. BOUND is a
    socket bound to a port but neither listening nor connected."""
    tcp_bound: int | Unavailable
    """TCP sockets bound to a port in the range but inactive, or why they cannot be seen (the
    kernel dumps them from Linux 6.7; /proc/net/tcp never lists them)."""
    udp: int | Unavailable
    """Distinct UDP ports in use in the usable range."""
    holders: tuple[PortHolder, ...] = ()
    """The processes holding the most of them, when use is high (empty otherwise)."""
    udp_listeners: tuple[Listener, ...] = ()
    """UDP sockets bound to a port outside the range (v4 and v6, one per address and port):
    no ephemeral choice put them there, so they are servers, which widening the range must
    reserve as it does TCP listeners. Only address, port and family are set. At most
    `portuse.MAX_UDP_LISTENERS`, the lowest ports first: see `udp_listeners_omitted`."""
    udp_listeners_omitted: int = 0
    """How many more such sockets were found than `udp_listeners` lists (a host with a socket
    per query or per media stream); 0 when the list is complete."""


@dataclass(frozen=True, slots=True)
class FileHandles:
    """`fs.file-nr` (allocated, free, max) with `fs.nr_open`: the system-wide descriptor budget."""

    allocated: int
    free: int
    max: int
    nr_open: int | None


@dataclass(frozen=True, slots=True)
class SysctlAssignment:
    """One `key = value` line of a persistent sysctl file, where it stands."""

    file: str
    """The path as the host sees it (`/etc/sysctl.d/90-x.conf`), whatever `--root` is."""
    line: int
    key: str
    """Normalised dotted form (`net.ipv4.tcp_tw_reuse`); a glob stays a glob."""
    value: str
    ignore_errors: bool = False
    """The line had a leading `-`: systemd-sysctl ignores a failure to apply it."""
    exclude: bool = False
    """A `-key` line without `=` (value ""): no glob may set `key`, and earlier values of it
    are cancelled, so boot leaves the kernel's value alone."""
    problem: str | None = None
    """The SysctlLineProblem kind when boot applies this line but not as meant (quoted-value,
    inline-comment, empty-value); None for a clean line."""


@dataclass(frozen=True, slots=True)
class SysctlLineProblem:
    """A line that boot will read differently from what its author meant."""

    file: str
    line: int
    kind: str
    """quoted-value | inline-comment | bom | no-equals | unknown-key | bad-encoding |
    refused-value ..."""
    text: str


@dataclass(frozen=True, slots=True)
class BootValue:
    """What one key holds after the next boot, and the line that decides it."""

    value: str
    """Whitespace folded."""
    file: str
    line: int
    via: str = ""
    """"" when the key's own line decides, "glob" for a glob line, "default" when the kernel
    copies a `net.ipv4.conf.default` line into this interface."""
    unless_value: str | None = None
    """For an interface key: the value when the interface already holds `value` as boot writes
    it (systemd skips the write, so a later `default` line reaches the interface)."""
    unless_where: str = ""


@dataclass(frozen=True, slots=True)
class PersistedSysctl:
    """What `systemd-sysctl` applies at boot, with the file and line behind every value."""

    files: tuple[str, ...]
    """The files boot reads, in the order it reads them (after basename merge and masking)."""
    assignments: tuple[SysctlAssignment, ...]
    """Every assignment in boot order. Which one decides a key is `effective`, not simply the
    last line: globs, `-key` exclusions and `default` copies take part."""
    problems: tuple[SysctlLineProblem, ...] = ()
    procps_differences: dict[str, str] = field(default_factory=dict)
    """key -> the value `sysctl --system` would leave, where it differs from boot's."""
    runtime: dict[str, str] = field(default_factory=dict)
    """Runtime value (whitespace folded) of every key assigned explicitly, where readable,
    so config rules can compare it with the boot value for keys outside RUNTIME_KEYS."""
    masked: tuple[str, ...] = ()
    """Files that hide a same-named file of a later directory and apply nothing themselves
    (a symlink to /dev/null, or one that points nowhere)."""
    effective: dict[str, BootValue] = field(default_factory=dict)
    """Every key the boot files name (no globs) that boot sets, with the value it gets."""
    unread: dict[str, SysctlAssignment] = field(default_factory=dict)
    """Keys set only in /etc/sysctl.conf when boot does not read that file (no sysctl.d link to
    it, as on Debian 13): key -> its last line there."""


@dataclass(frozen=True, slots=True)
class Facts:
    host: HostInfo
    collected_at: float
    """Unix time of collection; renderers stamp metrics with it instead of reading the clock."""
    sysctl: dict[str, str]
    """Runtime values by dotted key, whitespace folded to single spaces."""
    sysctl_missing: dict[str, str]
    """Keys that could not be read, with the reason (absent on this kernel, permission)."""
    ports: PortRange | Unavailable
    sockstat: dict[str, dict[str, int]] | Unavailable
    """`/proc/net/sockstat` and `sockstat6` merged: {"TCP": {"inuse": .., "tw": ..}, "TCP6": ..}."""
    counters: dict[str, dict[str, int]] | Unavailable
    """`/proc/net/netstat` and `/proc/net/snmp`: {"TcpExt": {...}, "Tcp": {...}, ...}."""
    sockets: SocketTable | Unavailable
    files: FileHandles | Unavailable
    persisted: PersistedSysctl | Unavailable
    rates: dict[str, dict[str, float]] | Unavailable = Unavailable("no earlier run to compare with")
    """Counter increases per minute since the last run ({"TcpExt": {"ListenOverflows": 0.5}})."""
    rp_filter: dict[str, int] | Unavailable = Unavailable("not collected")
    """`net.ipv4.conf.<entry>.rp_filter` per conf entry (all, default, lo, eth0, ...)."""
    port_use: PortUse | Unavailable = Unavailable("not collected")
    """Host-wide distinct port use in the range (facts/portuse.py)."""
    schema: int = SCHEMA


# --- JSON round trip -----------------------------------------------------------------------
# A small converter driven by the type hints above, so `facts` output and `--facts` input can
# never drift apart from the dataclasses. Unavailable is encoded as {"unavailable": reason}.


def to_jsonable(value: Any) -> Any:
    """Plain JSON values for a dataclass tree (dict keys stay as they are; tuples become lists)."""
    import dataclasses

    if isinstance(value, Unavailable):
        return {"unavailable": value.reason}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, DestinationRows)):
        return [to_jsonable(v) for v in value]
    return value


class SnapshotError(ValueError):
    """A snapshot whose shape does not match the dataclasses; the message names the field path."""


@functools.cache
def _type_hints(tp: type) -> dict[str, Any]:
    """`typing.get_type_hints`, once per class: it re-evaluates every annotation each call."""
    return typing.get_type_hints(tp)


def from_jsonable(tp: Any, data: Any, path: str = "$") -> Any:
    """Rebuild a value of type `tp` from its JSON form, checking the shape as it goes."""
    import dataclasses

    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if isinstance(data, dict) and set(data) == {"unavailable"} and Unavailable in options:
            return Unavailable(str(data["unavailable"]))
        if data is None and type(None) in options:
            return None
        errors = []
        for opt in options:
            if opt in (Unavailable, type(None)):
                continue
            try:
                return from_jsonable(opt, data, path)
            except SnapshotError as exc:
                errors.append(str(exc))
        raise SnapshotError(errors[0] if errors else f"{path}: unexpected {type(data).__name__}")
    if origin is Sequence:  # read back as a tuple
        args: tuple[Any, ...] = (typing.get_args(tp)[0], Ellipsis)
        origin = tuple
    else:
        args = typing.get_args(tp)
    if origin is tuple:
        if not isinstance(data, list):
            raise SnapshotError(f"{path}: expected a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_jsonable(args[0], v, f"{path}[{i}]") for i, v in enumerate(data))
        if len(args) != len(data):
            raise SnapshotError(f"{path}: expected {len(args)} items")
        return tuple(
            from_jsonable(a, v, f"{path}[{i}]")
            for i, (a, v) in enumerate(zip(args, data, strict=True))
        )
    if origin is dict:
        _, vt = typing.get_args(tp)
        if not isinstance(data, dict):
            raise SnapshotError(f"{path}: expected an object")
        return {str(k): from_jsonable(vt, v, f"{path}.{k}") for k, v in data.items()}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(data, dict):
            raise SnapshotError(f"{path}: expected an object for {tp.__name__}")
        hints = _type_hints(tp)
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(tp):
            if f.name not in data:
                if (
                    f.default is not dataclasses.MISSING
                    or f.default_factory is not dataclasses.MISSING
                ):
                    continue
                raise SnapshotError(f"{path}.{f.name}: missing")
            kwargs[f.name] = from_jsonable(hints[f.name], data[f.name], f"{path}.{f.name}")
        unknown = set(data) - {f.name for f in dataclasses.fields(tp)}
        if unknown:
            raise SnapshotError(f"{path}: unknown field {sorted(unknown)[0]!r}")
        return tp(**kwargs)
    if tp is float:
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            raise SnapshotError(f"{path}: expected a number")
        return float(data)
    if tp is int:
        if isinstance(data, bool) or not isinstance(data, int):
            raise SnapshotError(f"{path}: expected an integer")
        return data
    if tp is str:
        if not isinstance(data, str):
            raise SnapshotError(f"{path}: expected a string")
        return data
    if tp is bool:
        if not isinstance(data, bool):
            raise SnapshotError(f"{path}: expected true or false")
        return data
    raise SnapshotError(f"{path}: cannot read type {tp!r}")


def facts_from_json(data: Any) -> Facts:
    """A `Facts` from parsed JSON; raises SnapshotError naming the first bad field."""
    if not isinstance(data, dict):
        raise SnapshotError("$: expected an object")
    schema = data.get("schema")
    if schema != SCHEMA:
        raise SnapshotError(f"$.schema: expected {SCHEMA}, got {schema!r}")
    result: Facts = from_jsonable(Facts, data)
    _check_ranges(result)
    return result


def _port_ok(port: int) -> bool:
    return 0 < port <= 65535


def _check_ranges(facts: Facts) -> None:
    """Refuse values no kernel reports: the shape alone lets `-5` through as a port, and a
    rule would then judge, print and propose it (`-5 40098`)."""
    ports = facts.ports
    if isinstance(ports, PortRange):
        if not (_port_ok(ports.low) and ports.low <= ports.high <= 65535):
            raise SnapshotError(f"$.ports: impossible port range {ports.low} {ports.high}")
        for i, (lo, hi) in enumerate(ports.reserved):
            if not (_port_ok(lo) and lo <= hi <= 65535):
                raise SnapshotError(f"$.ports.reserved[{i}]: impossible port range {lo}-{hi}")
        usable = PortRange.count_usable(ports.low, ports.high, ports.reserved)
        if ports.usable != usable:
            raise SnapshotError(
                f"$.ports.usable: {ports.usable}, but the range less reserved ports is {usable}"
            )
    sockets = facts.sockets
    if isinstance(sockets, SocketTable):
        for i, d in enumerate(sockets.destinations):
            if not 0 <= d.dport <= 65535:
                raise SnapshotError(f"$.sockets.destinations[{i}].dport: not a port: {d.dport}")
            if any(n < 0 for n in d.by_state.values()):
                raise SnapshotError(f"$.sockets.destinations[{i}].by_state: a negative count")
            if d.time_wait_reusable is not None and d.time_wait_reusable < 0:
                raise SnapshotError(
                    f"$.sockets.destinations[{i}].time_wait_reusable: a negative count"
                )
        for i, li in enumerate(sockets.listeners):
            if not 0 <= li.port <= 65535:
                raise SnapshotError(f"$.sockets.listeners[{i}].port: not a port: {li.port}")
