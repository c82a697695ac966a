"""What both socket readers share: TCP state names, address text, the per-destination counter.

Kept light on purpose: the netlink reader imports only this, `struct` and `_socket`, so a
process that only counts sockets per destination does not pay for the facts model (dataclasses
and the `inspect` module they pull in) or the `socket` module's enum set-up, which together cost
more than the scan of 100k sockets (measured in benchmarks/README.md). The model is imported when a
`SocketTable` is built, not before.
"""

from __future__ import annotations

from _socket import AF_INET, AF_INET6, inet_ntop, inet_pton
from collections import Counter

TYPE_CHECKING = False  # not `typing.TYPE_CHECKING`: importing typing costs ~10 ms
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from auditor.facts.model import Destination, SocketTable

TCP_STATES: tuple[str, ...] = (
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT1",
    "FIN_WAIT2",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "CLOSING",
    "NEW_SYN_RECV",
)
"""Kernel TCP states in `include/net/tcp_states.h` order: index + 1 is the kernel's number."""

STATE_NAMES: dict[int, str] = {i + 1: name for i, name in enumerate(TCP_STATES)}
"""Kernel state number -> name."""

_V4_MAPPED = b"\x00" * 10 + b"\xff\xff"

Dest = tuple[str, str, int]
"""(local address, remote address, remote port): the unit of port exhaustion."""

_PAD = b"\x00" * 12
_V6_LOOPBACK = b"\x00" * 15 + b"\x01"


def address_text(packed: bytes) -> str:
    """Text form of a 4- or 16-byte address; an IPv4-mapped IPv6 address becomes plain IPv4.

    A v6 socket connected to `::ffff:10.0.0.5` draws from the same local port space as a v4
    socket to `10.0.0.5`, so both must count against the same destination.
    """
    if len(packed) == 16:
        if packed[:12] == _V4_MAPPED:
            return inet_ntop(AF_INET, packed[12:])
        return inet_ntop(AF_INET6, packed)
    return inet_ntop(AF_INET, packed)


def raw_dest(key: bytes, v4: bool, sources: dict[bytes, str]) -> Dest:
    """(src, dst, dport) of a raw key as `DestinationCounter.add_raw` keeps it; `sources`
    caches the text of local addresses (a host has few)."""
    raw_src = key[2:6] if v4 else key[2:18]
    src = sources.get(raw_src)
    if src is None:
        if len(sources) > 4096:
            sources.clear()
        src = sources[raw_src] = address_text(raw_src)
    dst = address_text(key[18:22] if v4 else key[18:34])
    return src, dst, int.from_bytes(key[0:2], "big")


_TIME_WAIT = 6
"""TCP_TIME_WAIT, the kernel's number."""


def _v6_bytes(text: str) -> bytes:
    """16 bytes of an address as the readers print it (IPv4 as IPv4-mapped IPv6)."""
    if ":" in text:
        return inet_pton(AF_INET6, text)
    return _V4_MAPPED + inet_pton(AF_INET, text)


def raw_key(dest: Dest, v4: bool) -> bytes:
    """The raw key `add_raw` keeps `dest` under, in its IPv4 (`v4`) or IPv6 store; b"" when
    `dest` has no such form (an IPv6 address for the IPv4 store, text that is no address)."""
    src, dst, dport = dest
    try:
        port = dport.to_bytes(2, "big")
        if v4:
            if ":" in src or ":" in dst:
                return b""
            return port + inet_pton(AF_INET, src) + _PAD + inet_pton(AF_INET, dst) + _PAD
        if ":" not in src and ":" not in dst:
            return b""
        return port + _v6_bytes(src) + _v6_bytes(dst)
    except (OSError, OverflowError, TypeError, AttributeError):
        return b""


def _text_loopback(dest: Dest) -> bool:
    """Either end of `dest` is 127.0.0.0/8 or ::1 (`sockets.is_loopback`, kept light here)."""
    for addr in dest[:2]:
        try:
            raw = inet_pton(AF_INET6, addr) if ":" in addr else inet_pton(AF_INET, addr)
        except OSError:
            continue
        if raw == _V6_LOOPBACK or (len(raw) == 4 and raw[0] == 127):
            return True
    return False


def _raw_loopback(key: bytes, v4: bool) -> bool:
    """Either end of a raw key is 127.0.0.0/8 or ::1 (`sockets.is_loopback` on its text)."""
    if v4:
        return key[2] == 127 or key[18] == 127
    for addr in (key[2:18], key[18:34]):
        if addr == _V6_LOOPBACK or (addr[:12] == _V4_MAPPED and addr[12] == 127):
            return True
    return False


def dest_uses(dests: Iterable[Destination]) -> list[int]:
    """Each destination's `used`, summed once per distinct `by_state` mapping: the collectors
    give destinations with equal counts one shared mapping, and a host with 100,000
    destinations has a handful of distinct ones."""
    seen: dict[int, int] = {}
    out: list[int] = []
    for d in dests:
        by_state = d.by_state
        used = seen.get(id(by_state))
        if used is None:
            used = seen[id(by_state)] = sum(by_state.values())
        out.append(used)
    return out


class DestinationCounter:
    """Counts by (src, dst, dport) and state, totals by state and listeners: what a reader fills.

    Shared by the `/proc` and netlink readers so both build the same `SocketTable`.
    """

    __slots__ = (
        "_per_dest",
        "listener_inodes",
        "listener_v6only",
        "listeners",
        "raw4",
        "raw6",
        "reusable",
        "totals",
        "v6only_estimate",
    )

    def __init__(self) -> None:
        self._per_dest: dict[Dest, dict[str, int]] = {}
        self.raw4: dict[bytes, int | dict[int, int]] = {}
        """Sockets per IPv4 destination as the kernel keys it (`add_raw`), not yet decoded."""
        self.raw6: dict[bytes, int | dict[int, int]] = {}
        """The same for IPv6 destinations."""
        self.totals: Counter[str] = Counter()
        self.listeners: dict[tuple[str, int, int], tuple[int | None, int | None]] = {}
        """(addr, port, family 4|6) -> (queued, backlog); None where the reader cannot tell."""
        self.listener_v6only: dict[tuple[str, int, int], bool] = {}
        """IPV6_V6ONLY of the IPv6 listeners, where the reader saw it (sock_diag)."""
        self.listener_inodes: dict[tuple[str, int, int], set[int]] = {}
        """Socket inodes of each listener (several for a SO_REUSEPORT group): who holds it."""
        self.v6only_estimate: bool | None = None
        """net.ipv6.bindv6only, for a reader that cannot see the flag itself (`/proc`): the
        flag of an IPv6 listener whose program did not set it."""
        self.reusable: dict[Dest, int] | None = None
        """TIME_WAIT sockets per destination older than tcp_tw_reuse_delay, when measured."""

    def measure_reusable(self) -> None:
        """Ages are read: every destination gets a reusable count (0 unless added)."""
        if self.reusable is None:
            self.reusable = {}

    def add_reusable(self, dest: Dest, n: int) -> None:
        """`n` of `dest`'s TIME_WAIT sockets are old enough for connect() to take over."""
        self.measure_reusable()
        assert self.reusable is not None
        self.reusable[dest] = self.reusable.get(dest, 0) + n

    @property
    def per_dest(self) -> dict[Dest, dict[str, int]]:
        """Sockets per destination by state: plain dicts, one per destination (a `Counter`
        costs twice the time to make, and there may be 100,000). Raw counts (`add_raw`) are
        decoded into it on first use: a reader that wants the table only never pays that."""
        if self.raw4 or self.raw6:
            sources: dict[bytes, str] = {}
            per_dest = self._per_dest
            for store, v4 in ((self.raw4, True), (self.raw6, False)):
                for key, counts in store.items():
                    dest = raw_dest(key, v4, sources)
                    got = per_dest.setdefault(dest, {})
                    if isinstance(counts, int):
                        counts = {counts & 15: counts >> 4}
                    for state, n in counts.items():
                        name = STATE_NAMES.get(state, str(state))
                        got[name] = got.get(name, 0) + n
            self.raw4, self.raw6 = {}, {}
        return self._per_dest

    def used_and_time_wait(
        self, names: dict[tuple[bool, bytes], Dest] | None = None
    ) -> dict[Dest, tuple[int, int]]:
        """(sockets, TIME_WAIT sockets) per destination, without building `per_dest`. Raw
        keys are decoded through `names`, a cache the caller keeps from one scan to the next
        (`portaudit watch`: the same destinations every refresh), left holding this scan's
        keys only, so it stays as large as the table."""
        out: dict[Dest, tuple[int, int]] = {}
        fresh: dict[tuple[bool, bytes], Dest] = {}
        sources: dict[bytes, str] = {}
        for store, v4 in ((self.raw4, True), (self.raw6, False)):
            for key, counts in store.items():
                dest = names.get((v4, key)) if names is not None else None
                if dest is None:
                    dest = raw_dest(key, v4, sources)
                fresh[(v4, key)] = dest
                if isinstance(counts, int):
                    n = counts >> 4
                    tw = n if counts & 15 == _TIME_WAIT else 0
                else:
                    n, tw = sum(counts.values()), counts.get(_TIME_WAIT, 0)
                had = out.get(dest, (0, 0))
                out[dest] = (had[0] + n, had[1] + tw)
        for dest, by_state in self._per_dest.items():
            had = out.get(dest, (0, 0))
            out[dest] = (had[0] + sum(by_state.values()), had[1] + by_state.get("TIME_WAIT", 0))
        if names is not None:
            names.clear()
            names.update(fresh)
        return out

    def add_raw(self, family: int, key: bytes, state: int, n: int) -> None:
        """`n` sockets in kernel state `state` to the destination of a sock_diag key (see
        `add_raw_all`)."""
        self.add_raw_all({(family, state, key): n})

    def add_raw_all(self, counts: dict[tuple[int, int, bytes], int]) -> dict[int, int]:
        """Count sockets per destination from {(family, kernel state, key): sockets}, emptying
        `counts` as it goes (each key's tuple is freed once counted); returns the sockets per
        kernel state. A key is 34 bytes (dport, src[16], dst[16]; an IPv4 socket's addresses
        fill the first 4 bytes of each, the rest zero), kept raw until read: an IPv4-mapped
        IPv6 key becomes the IPv4 one (the same destination, see `address_text`); the counts
        are `n << 4 | state` while a destination has one state (most have), else {state: n}."""
        raw4, raw6 = self.raw4, self.raw6
        per_state: dict[int, int] = {}
        while counts:
            (family, state, key), n = counts.popitem()
            if family == AF_INET:
                store = raw4
            elif key[2:14] == _V4_MAPPED and key[18:30] == _V4_MAPPED:
                store, key = raw4, key[:2] + key[14:18] + _PAD + key[30:34] + _PAD
            else:
                store = raw6
            got = store.get(key)
            if got is None:
                store[key] = n << 4 | state if 0 < state < 16 else {state: n}
            elif isinstance(got, int):
                if got & 15 == state:
                    store[key] = got + (n << 4)
                else:
                    store[key] = {got & 15: got >> 4, state: n}
            else:  # a new mapping: a table already made may share the old one
                store[key] = {**got, state: got.get(state, 0) + n}
            per_state[state] = per_state.get(state, 0) + n
        for state, n in per_state.items():
            self.totals[STATE_NAMES.get(state, str(state))] += n
        return per_state

    def knows(self, dest: Dest) -> bool:
        """Whether some socket to `dest` was counted (without decoding every raw key)."""
        if dest in self._per_dest:
            return True
        return raw_key(dest, True) in self.raw4 or raw_key(dest, False) in self.raw6

    def time_wait_dests(self, loopback_only: bool) -> list[Dest]:
        """Destinations with sockets in TIME_WAIT (with a loopback end, if `loopback_only`):
        those whose reusable TIME_WAIT is worth counting. Raw keys are decoded only here."""
        out = [
            d
            for d, by_state in self._per_dest.items()
            if by_state.get("TIME_WAIT") and not (loopback_only and not _text_loopback(d))
        ]
        sources: dict[bytes, str] = {}
        for store, v4 in ((self.raw4, True), (self.raw6, False)):
            for key, counts in store.items():
                if isinstance(counts, int):
                    if counts & 15 != _TIME_WAIT:
                        continue
                elif not counts.get(_TIME_WAIT):
                    continue
                if not loopback_only or _raw_loopback(key, v4):
                    out.append(raw_dest(key, v4, sources))
        return out

    def add(self, dest: Dest, state: str, n: int) -> None:
        """`n` sockets in `state` whose local port is in the ephemeral range, to `dest`."""
        got = self._per_dest.get(dest)
        if got is None:
            self._per_dest[dest] = {state: n}
        else:
            got[state] = got.get(state, 0) + n
        self.totals[state] += n

    def add_listener(
        self,
        addr: str,
        port: int,
        family: int,
        queued: int | None,
        backlog: int | None,
        v6only: bool | None = None,
        inode: int = 0,
    ) -> None:
        """One listening socket. A SO_REUSEPORT group lists one socket per member, and a
        v4-mapped listener may repeat a v4 one: one entry each, keeping the deepest queue
        (and its own backlog), with every member's inode."""
        key = (addr, port, family)
        prev = self.listeners.get(key)
        if prev is None or (prev[0] or 0) < (queued or 0):
            self.listeners[key] = (queued, backlog)
        if v6only is not None and family == 6:
            self.listener_v6only[key] = v6only or self.listener_v6only.get(key, False)
        if inode:
            self.listener_inodes.setdefault(key, set()).add(inode)

    def _v6only(self, addr: str, port: int, family: int) -> tuple[bool | None, str]:
        """(IPV6_V6ONLY, where it comes from) of one listener: None for IPv4."""
        if family != 6:
            return None, ""
        seen = self.listener_v6only.get((addr, port, family))
        if seen is not None:
            return seen, "sock_diag"
        if self.v6only_estimate is not None:
            return self.v6only_estimate, "estimate: net.ipv6.bindv6only"
        return None, ""

    def listening_ports(self) -> set[int]:
        """Ports some listener holds: a socket on one of them is a server's, not a client's."""
        return {port for _addr, port, _family in self.listeners}

    def table(self, source: str, consume: bool = False) -> SocketTable:
        """The snapshot's `SocketTable`: busiest destinations first, listeners by port.

        With `consume`, each destination's counts are dropped as its row is made, so the
        counts and the table are not both whole in memory at once (100,000 destinations).
        Rows with the same counts share one `by_state` mapping: a table is never mutated."""
        from auditor.facts.model import DestinationRows, Listener, SocketTable

        reusable = self.reusable
        dests: Sequence[Destination]
        if (self.raw4 or self.raw6) and not self._per_dest:
            dests = DestinationRows(v4=self.raw4, v6=self.raw6, reusable=reusable)
            if consume:
                self.raw4, self.raw6 = {}, {}
        else:
            dests = self._decoded_table(consume)
        listeners = tuple(
            Listener(
                addr=addr,
                port=port,
                family=family,
                queued=queued,
                backlog=backlog,
                v6only=self._v6only(addr, port, family)[0],
                v6only_source=self._v6only(addr, port, family)[1],
            )
            for (addr, port, family), (queued, backlog) in sorted(
                self.listeners.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])
            )
        )
        return SocketTable(
            source=source,
            total_by_state=dict(sorted(self.totals.items())),
            destinations=dests,
            listeners=listeners,
        )

    def _decoded_table(self, consume: bool) -> tuple[Destination, ...]:
        """The rows made from decoded counts (`add`, or raw ones read through `per_dest`)."""
        from auditor.facts.model import Destination

        reusable = self.reusable
        per_dest = self.per_dest
        order = sorted((-sum(c.values()), k) for k, c in per_dest.items())
        shared: dict[tuple[tuple[str, int], ...], dict[str, int]] = {}
        made: list[Destination] = []
        for _neg, key in order:
            counts = per_dest.pop(key) if consume else per_dest[key]
            items = tuple(counts.items())
            if len(items) > 1:
                items = tuple(sorted(items))
            by_state = shared.get(items)
            if by_state is None:
                by_state = shared[items] = dict(items)
            s, d, p = key
            made.append(
                Destination(
                    src=s,
                    dst=d,
                    dport=p,
                    by_state=by_state,
                    time_wait_reusable=None if reusable is None else reusable.get(key, 0),
                )
            )
        del order
        return tuple(made)
