"""The TCP socket table from netlink sock_diag, aggregated per destination inside the parse.

Why not `/proc/net/tcp` or pyroute2: the kernel formats every socket as text for `/proc`
(slower than `ss`), and pyroute2 builds a Python object per socket (about 35x slower than `ss`,
gigabytes at 1M sockets; /work/shared/notes/socket-scan.md). Here the kernel does the filtering
(a state bitmask, and an `INET_DIAG_REQ_BYTECODE` program keeping only sockets whose local port
is in the ephemeral range and held by no listener), and the reply is parsed with fixed-layout
`struct` formats straight into a Counter keyed by raw bytes. Runs of messages of one length
(every message of a TIME_WAIT dump) are parsed by `struct.iter_unpack` in C and fed to the
Counter without a Python statement per socket. Only the distinct keys are decoded to text at
the end, so memory grows with destinations, not sockets.

One legacy `TCPDIAG_GETSOCK` request dumps IPv4 and IPv6 in a single walk of the kernel's
socket hash (the per-family `SOCK_DIAG_BY_FAMILY` requests walk it twice); it is used first and
the per-family request is the fallback for a kernel that refuses it.

Layouts: `include/uapi/linux/inet_diag.h`, `include/uapi/linux/netlink.h`,
`include/uapi/linux/sock_diag.h`; bytecode semantics: `net/ipv4/inet_diag.c`
(`inet_diag_bc_run`, `inet_diag_bc_audit`).

Light to import: this module uses `_socket` (the C module under `socket`), `struct` and
`collections`, and the facts model only when a `SocketTable` is built, so a process that just
counts per destination costs little more than the scan itself (facts/tcp.py says why).
"""

from __future__ import annotations

import _socket
import errno
import struct
import sys
from array import array
from collections import Counter

from auditor.errors import AuditorError
from auditor.facts.tcp import STATE_NAMES, TCP_STATES, Dest, DestinationCounter, address_text

TYPE_CHECKING = False  # not `typing.TYPE_CHECKING`: see "Light to import" above
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from auditor.facts.model import SocketTable

    Progress = Callable[[int], None]

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
TCPDIAG_GETSOCK = 18
NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
INET_DIAG_REQ_BYTECODE = 1
INET_DIAG_BC_S_GE = 2
INET_DIAG_BC_S_LE = 3
INET_DIAG_BC_D_LE = 5

NLMSG_HDR = struct.Struct("=IHHII")
"""struct nlmsghdr: len, type, flags, seq, pid (16 bytes, host byte order)."""
INET_DIAG_MSG_LEN = 72
"""struct inet_diag_msg: family, state, timer, retrans, sockid (48), expires, rqueue, wqueue,
uid, inode."""
MIN_SOCKET_MSG = NLMSG_HDR.size + INET_DIAG_MSG_LEN

# Key formats, read from the start of a message (the 16-byte nlmsghdr is skipped: its length
# and type are checked separately, once per buffer); each picks only the fields a dump needs.
# Offsets in the message: family 16, state 17, sport 20, dport 22, src 24..40, dst 40..56,
# rqueue 72, wqueue 76, inode 84.
AGG_FORMAT = "=16xBB4x34s"
"""(family, state, dport+src+dst as 34 raw bytes): the per-destination key."""
COUNT_FORMAT = "=16xBB"
"""(family, state): counting by state only."""
LISTEN_FORMAT = "=16xBB2x2s2x16s16x4x8x4xII"
"""(family, state, sport, src, rqueue, wqueue): one listener."""
INODE_FORMAT = "=16xBB4x34s28xI"
"""(family, state, key, inode): live sockets for attribution."""

TW_AGE_FORMAT = "=16xBB4x34s" + ("13xB" if sys.byteorder == "little" else "14xB")
"""(family, state, key, bits 8-15 of idiag_expires): a TIME_WAIT socket's destination and the
ms left on its timer in 256 ms steps, so a destination has at most 235 keys (60 s / 256 ms)."""
TW_AGE_STEP_MS = 256

ALL_STATES_MASK = sum(1 << (i + 1) for i in range(len(TCP_STATES)))
BOUND_INACTIVE_STATE = 13
"""`TCP_BOUND_INACTIVE` (Linux 6.7, `include/net/tcp_states.h`): a pseudo-state only a dump
request uses. With its bit set, `tcp_diag_dump` also walks the bind hash (`bhash2`, locking
each bucket in use) and reports the sockets bound to a port but neither listening nor
connected (bind() before connect(), a socket that has not connected yet); they come back with
state TCP_CLOSE and no peer. Older kernels ignore the bit and report none, so the caller
decides from the kernel version whether "none" can be believed."""
CLOSE_STATE = TCP_STATES.index("CLOSE") + 1
UDP_STATES_MASK = ALL_STATES_MASK
"""UDP sockets carry TCP_CLOSE (unconnected) or TCP_ESTABLISHED (connected) as their state."""
LISTEN_STATE = TCP_STATES.index("LISTEN") + 1
TIME_WAIT_STATE = TCP_STATES.index("TIME_WAIT") + 1
NOT_LISTEN_MASK = ALL_STATES_MASK & ~(1 << LISTEN_STATE)
LIVE_MASK = NOT_LISTEN_MASK & ~(1 << TIME_WAIT_STATE)

MAX_MESSAGES = 1 << 27
"""No dump is allowed to run past this many messages (a kernel bug must not mean a hang)."""
RECV_BUFFER = 1 << 20
RECV_TIMEOUT = 30.0
PIPELINE_BUFFERS = 4
"""Buffers in flight between `_pipelined`'s reader and counter."""
PIPELINE_ABOVE = 50_000
"""TIME_WAIT sockets (sockstat) above which the scan reads their dump on a second thread:
below it, starting the thread costs more than the overlap gains."""

Key = tuple[object, ...]
"""What a key format unpacks to; each dump's caller knows the field types of its format."""


class NetlinkReplyError(AuditorError):
    """A sock_diag reply that does not parse: truncated, malformed, or an error from the kernel."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(f"netlink sock_diag: {message}")


class NetlinkRefused(Exception):
    """The kernel (or the sandbox) will not answer sock_diag here: use `/proc/net/tcp*`."""


_REFUSED = {
    errno.EPERM,
    errno.EACCES,
    errno.EPROTONOSUPPORT,
    errno.EAFNOSUPPORT,
    errno.ENOENT,
    errno.EOPNOTSUPP,
}


# --- requests ------------------------------------------------------------------------------


_BC_OP = struct.Struct("=BBH")
"""struct inet_diag_bc_op: code, yes (u8 jump), no (u16 jump); a port op is followed by a second
op whose `no` holds the port."""
INET_DIAG_BC_JMP = 1

MAX_EXCLUDED_RANGES = 2048
"""Listening-port ranges a program excludes at most: `no` jumps are 16-bit, and each range costs
the kernel two comparisons per socket. Past this, the rest of the servers' sockets are keyed
as destinations (a host with 2,000 separate listening port ranges inside its ephemeral range)."""

_NEXT, _ACCEPT, _REJECT = -1, -2, -3
"""Jump targets besides an op index: the next op, the end (accept), past the end (reject)."""

_Op = tuple[int, int | None, int, int]
"""(code, port or None for a 4-byte op, yes target, no target)."""


def _assemble(ops: list[_Op]) -> bytes:
    """Byte offsets for symbolic jumps. Every `yes` must be _NEXT (or an accept at the end), so
    the `yes` chain visits every op and ends exactly at the end, as `inet_diag_bc_audit`
    demands; every `no` target is then an op boundary on that chain (its `valid_cc`)."""
    starts = [0]
    for _code, port, _yes, _no in ops:
        starts.append(starts[-1] + (4 if port is None else 8))
    total = starts[-1]

    def jump(i: int, target: int) -> int:
        if target == _NEXT:
            return starts[i + 1] - starts[i]
        if target == _ACCEPT:
            return total - starts[i]
        if target == _REJECT:
            return total - starts[i] + 4
        return starts[target] - starts[i]

    out = bytearray()
    for i, (code, port, yes, no) in enumerate(ops):
        out += _BC_OP.pack(code, jump(i, yes), jump(i, no))
        if port is not None:
            out += _BC_OP.pack(0, 0, port)
    return bytes(out)


def _check_range(low: int, high: int) -> None:
    if not (0 <= low <= 0xFFFF and 0 <= high <= 0xFFFF and low <= high):
        raise ValueError(f"bad port range: {low}-{high}")


def listening_ranges(ports: Iterable[int], low: int, high: int) -> list[tuple[int, int]]:
    """The listening ports inside [low, high] as merged inclusive ranges, at most
    MAX_EXCLUDED_RANGES of them."""
    ranges: list[tuple[int, int]] = []
    for port in sorted(p for p in ports if low <= p <= high and p > 0):
        if ranges and ranges[-1][1] == port - 1:
            ranges[-1] = (ranges[-1][0], port)
        else:
            ranges.append((port, port))
    return ranges[:MAX_EXCLUDED_RANGES]


def _excluded(ranges: Sequence[tuple[int, int]], first: int, inside: int) -> list[_Op]:
    """For each range [a, b]: below a, go to the next range; from a to b, jump to `inside`;
    above b, go on. Ops start at index `first`."""
    ops: list[_Op] = []
    for a, b in ranges:
        after = first + len(ops) + 2
        ops.append((INET_DIAG_BC_S_GE, a, _NEXT, after))
        # sport >= a here, so "sport <= b" fails exactly above b: for b = 65535 test a - 1,
        # which always fails (a listener's port is never 0)
        ops.append(
            (INET_DIAG_BC_S_GE, b + 1, _NEXT, inside)
            if b < 0xFFFF
            else (INET_DIAG_BC_S_LE, a - 1, _NEXT, inside)
        )
    return ops


def port_bytecode(low: int, high: int, listening: Sequence[tuple[int, int]] = ()) -> bytes:
    """An `inet_diag_bc` program keeping the sockets whose local port is in [low, high] and not
    in a `listening` range: the client side of outgoing connections, whose port connect() took
    from the ephemeral range. A server's accepted sockets share its listening port, so when a
    server listens inside the range they must not count as destinations (one per client).

    The kernel walks forward by `yes` or `no` bytes; landing exactly on the end accepts,
    jumping 4 bytes past the end rejects (`inet_diag_bc_run` returns `len == 0`).
    """
    _check_range(low, high)
    ops: list[_Op] = [
        (INET_DIAG_BC_S_GE, low, _NEXT, _REJECT),
        (INET_DIAG_BC_S_LE, high, _NEXT, _REJECT),
    ]
    ops += _excluded(listening, len(ops), _REJECT)
    return _assemble(ops)


def bound_and_clients_bytecode(
    low: int, high: int, listening: Sequence[tuple[int, int]] = ()
) -> bytes:
    """`port_bytecode`'s clients, and every socket with no peer port (bound but not connected,
    the bind-hash sockets of BOUND_INACTIVE_STATE) whose local port is in [low, high],
    listening or not, as `scan_bound_ports` keeps them: one request then answers both. A
    connection's peer port is never 0 (`scan_sockets` checks what comes back)."""
    _check_range(low, high)
    ops: list[_Op] = [
        (INET_DIAG_BC_D_LE, 0, _NEXT, 4),
        (INET_DIAG_BC_S_GE, low, _NEXT, _REJECT),
        (INET_DIAG_BC_S_LE, high, _NEXT, _REJECT),
        (INET_DIAG_BC_JMP, None, _NEXT, _ACCEPT),
        (INET_DIAG_BC_S_GE, low, _NEXT, _REJECT),
        (INET_DIAG_BC_S_LE, high, _NEXT, _REJECT),
    ]
    ops += _excluded(listening, len(ops), _REJECT)
    return _assemble(ops)


def port_complement_bytecode(
    low: int, high: int, listening: Sequence[tuple[int, int]] = ()
) -> bytes | None:
    """The program keeping every other socket (outside the range, or on a listening port
    inside it); None if there can be none."""
    _check_range(low, high)
    if low == 0 and high == 0xFFFF and not listening:
        return None
    ops: list[_Op] = [
        (INET_DIAG_BC_S_GE, low, _NEXT, _ACCEPT),
        (INET_DIAG_BC_S_LE, high, _NEXT, _ACCEPT),
    ]
    ops += _excluded(listening, len(ops), _ACCEPT)
    ops.append((INET_DIAG_BC_JMP, None, _NEXT, _REJECT))  # nothing matched: reject
    return _assemble(ops)


def dump_request(
    seq: int,
    states: int,
    bytecode: bytes = b"",
    *,
    family: int | None = None,
    protocol: int = _socket.IPPROTO_TCP,
) -> bytes:
    """A dump request: legacy TCPDIAG_GETSOCK (both families, TCP only) when `family` is None."""
    sockid = bytes(48)
    if family is None:
        body = struct.pack("=BBBB", 0, 0, 0, 0) + sockid + struct.pack("=II", states, 0)
        msg_type = TCPDIAG_GETSOCK
    else:
        body = struct.pack("=BBBxI", family, protocol, 0, states) + sockid
        msg_type = SOCK_DIAG_BY_FAMILY
    if bytecode:
        body += struct.pack("=HH", 4 + len(bytecode), INET_DIAG_REQ_BYTECODE) + bytecode
    return (
        NLMSG_HDR.pack(NLMSG_HDR.size + len(body), msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
        + body
    )


# --- parsing -------------------------------------------------------------------------------


class DumpParser:
    """Parses the replies of one dump, buffer by buffer, into a Counter of key tuples.

    `feed` takes whatever one `recv` returned and says whether NLMSG_DONE was seen; `finish`
    raises if it was not. Keys are the tuples `fmt` unpacks from each socket message. Fed from
    bytes in tests, from the socket in `DiagSocket`.

    The fast path: a buffer is read as runs of socket messages of one length L (a TIME_WAIT
    dump is one run per buffer; a live socket with extra attributes ends a run). From a
    message of length L, the next k messages are of length L exactly if the length and type
    fields read at L, 2L, ... all say so (by induction, each checked header is where the
    previous message ends). Those six header bytes are compared for the whole buffer at once
    with strided slices, and `iter_unpack` parses the run in C, so Python runs no statement
    per socket. Anything else (a lone message, DONE, ERROR, malformed bytes) takes `_step`.
    """

    __slots__ = (
        "_fast",
        "_prefix",
        "counts",
        "done",
        "fmt",
        "messages",
        "msg_type",
        "ports",
        "runs",
        "seq",
    )

    def __init__(
        self,
        fmt: str,
        msg_type: int,
        seq: int,
        ports: set[int] | list[bytes] | None = None,
    ) -> None:
        self.fmt = fmt
        self.msg_type = msg_type
        self.seq = seq
        self.counts: Counter[Key] = Counter()
        self.messages = 0
        self.done = False
        self._prefix = struct.Struct(fmt)
        self._fast: dict[int, struct.Struct] = {}
        self.runs: list[tuple[struct.Struct, int, int]] | None = None
        """When a list, the runs `feed` found are appended to it as (struct, start, end) in the
        buffer, for another thread to count, instead of being counted here (`_one_pipelined`);
        lone messages are still counted into `counts`."""
        self.ports = ports
        """When a set is given, each socket's `state << 16 | local port` is added to it (see
        `_tally`): the host-wide port use, gathered by the same walk. When a list is given (a
        dump of one state, where the caller knows it), the raw 2-byte port fields are
        appended to it, to be made a set later (`port_set`)."""

    def feed(self, data: bytes | bytearray | memoryview) -> bool:
        mv = memoryview(data).cast("B")
        n = len(mv)
        if self.done:
            if n:
                raise NetlinkReplyError("data after NLMSG_DONE")
            return True
        off = 0
        while off < n and not self.done:
            run = self._run(mv, off, n)
            if run:
                length, fast = run
                count = self._uniform_count(mv, off, n, length)
                if self.runs is None:
                    self.counts.update(fast.iter_unpack(mv[off : off + count * length]))
                else:
                    self.runs.append((fast, off, off + count * length))
                if self.ports is not None:
                    _tally(self.ports, mv, off, count, length)
                self.messages += count
                off += count * length
            else:
                off = self._step(mv, off, n)
        if self.messages > MAX_MESSAGES:
            raise NetlinkReplyError(f"more than {MAX_MESSAGES} messages in one dump")
        return self.done

    def _run(self, mv: memoryview, off: int, n: int) -> tuple[int, struct.Struct] | None:
        """(length, its whole-message struct) when the message at `off` and the next one are
        socket messages of one length: a run worth parsing in C. None leaves one message to
        `_step` (a lone message of another length, DONE, ERROR, or anything malformed)."""
        if n - off < 2 * MIN_SOCKET_MSG:
            return None
        length, mtype = struct.unpack_from("=IH", mv, off)
        if mtype != self.msg_type or length < MIN_SOCKET_MSG or length % 4 or 2 * length > n - off:
            return None
        if struct.unpack_from("=IH", mv, off + length) != (length, mtype):
            return None
        fast = self._fast.get(length)
        if fast is None:
            fast = self._fast[length] = struct.Struct(f"{self.fmt}{length - self._prefix.size}x")
        return length, fast

    def _uniform_count(self, mv: memoryview, off: int, n: int, length: int) -> int:
        """How many messages from `off` have this `length` and type: the first header (at off,
        off + length, ...) whose length or type differs ends the run. Each checked header is
        where the previous message ends, so the run is exact. The fields are compared a column
        at a time (every message's length as one strided copy of 32-bit words, then every
        type), in C; `length` is a multiple of 4 (`_run`), so the words line up."""
        fits = (n - off) // length
        block = mv[off : off + fits * length]
        count = _leading(
            block.cast("I")[:: length // 4].tobytes(), struct.pack("=I", length) * fits, 4
        )
        return _leading(
            block.cast("H")[2 :: length // 2].tobytes()[: 2 * count],
            struct.pack("=H", self.msg_type) * count,
            2,
        )

    def _step(self, mv: memoryview, off: int, n: int) -> int:
        """One message of any kind (the general path); returns where the next one starts."""
        hdr = NLMSG_HDR
        if n - off < hdr.size:
            raise NetlinkReplyError(f"truncated message header ({n - off} bytes)")
        length: int
        length, mtype, _flags, seq, _pid = hdr.unpack_from(mv, off)
        if length < hdr.size or length > n - off:
            raise NetlinkReplyError(
                f"message length {length} does not fit the {n - off} bytes left"
            )
        if mtype == self.msg_type:
            if length < MIN_SOCKET_MSG:
                raise NetlinkReplyError(f"short inet_diag_msg ({length} bytes)")
            self.counts[self._prefix.unpack_from(mv, off)] += 1
            self._keep_port(mv, off)
            self.messages += 1
        elif mtype == NLMSG_DONE:
            self._check_seq(seq, "NLMSG_DONE")
            if length >= hdr.size + 4:
                (status,) = struct.unpack_from("=i", mv, off + hdr.size)
                if status < 0:
                    raise NetlinkReplyError(f"dump ended with error {_errname(-status)}")
            self.done = True
            if off + ((length + 3) & ~3) < n:
                raise NetlinkReplyError("data after NLMSG_DONE")
        elif mtype == NLMSG_ERROR:
            self._check_seq(seq, "NLMSG_ERROR")
            if length < hdr.size + 4:
                raise NetlinkReplyError("truncated NLMSG_ERROR")
            (err,) = struct.unpack_from("=i", mv, off + hdr.size)
            if err == 0:
                raise NetlinkReplyError("unexpected ACK inside a dump")
            if -err in _REFUSED or -err == errno.EINVAL:
                raise NetlinkRefused(_errname(-err))
            raise NetlinkReplyError(f"kernel returned error {_errname(-err)}")
        elif mtype != NLMSG_NOOP:
            raise NetlinkReplyError(f"unexpected message type {mtype}")
        return off + ((length + 3) & ~3)

    def _keep_port(self, mv: memoryview, off: int) -> None:
        """Gather the port of the one socket message at `off` (see `ports`)."""
        if isinstance(self.ports, set):
            state, sport = _STATE_SPORT.unpack_from(mv, off)
            self.ports.add(state << 16 | sport)
        elif self.ports is not None:
            self.ports.append(mv[off + 20 : off + 22].tobytes())

    def _check_seq(self, seq: int, what: str) -> None:
        if seq != self.seq:
            raise NetlinkReplyError(f"{what} for sequence {seq}, expected {self.seq}")

    def finish(self) -> Counter[Key]:
        if not self.done:
            raise NetlinkReplyError("dump ended without NLMSG_DONE (truncated reply)")
        return self.counts


class TimeWaitBoundParser(DumpParser):
    """A TIME_WAIT dump whose request also asks for the bound-but-inactive sockets (state
    CLOSE, from the bind hash; see BOUND_INACTIVE_STATE), so one walk of the socket hash
    answers `scan_bound_ports` too. Their keys are counted as any, under state CLOSE; their
    ports go to `bound_ports`, never among the TIME_WAIT ports: a run holds TIME_WAIT
    messages only (their state byte is checked as one more column), and any other message
    takes `_step`."""

    __slots__ = ("bound_ports",)

    def __init__(self, msg_type: int, seq: int, ports: list[bytes], bound: set[int]) -> None:
        super().__init__(AGG_FORMAT, msg_type, seq, ports)
        self.bound_ports = bound

    def _run(self, mv: memoryview, off: int, n: int) -> tuple[int, struct.Struct] | None:
        if n - off > _STATE_AT and mv[off + _STATE_AT] != TIME_WAIT_STATE:
            return None
        return super()._run(mv, off, n)

    def _uniform_count(self, mv: memoryview, off: int, n: int, length: int) -> int:
        count = super()._uniform_count(mv, off, n, length)
        states = mv[off + _STATE_AT : off + count * length : length].tobytes()
        return _leading(states, bytes((TIME_WAIT_STATE,)) * count, 1)

    def _keep_port(self, mv: memoryview, off: int) -> None:
        if mv[off + _STATE_AT] == TIME_WAIT_STATE:
            super()._keep_port(mv, off)
        else:
            self.bound_ports.add(int.from_bytes(mv[off + 20 : off + 22], "big"))


_STATE_AT = 17
"""Offset of the state byte in a socket message."""


def _leading(column: bytes, expected: bytes, width: int) -> int:
    """How many `width`-byte items `column` and `expected` (of one length) share from the
    start: equal at once in the usual case, else found by halving (C compares, no loop over
    items)."""
    if column == expected:
        return len(column) // width
    same, differ = 0, len(column) // width
    while differ - same > 1:
        mid = (same + differ) // 2
        if column[: mid * width] == expected[: mid * width]:
            same = mid
        else:
            differ = mid
    return same


_STATE_SPORT = struct.Struct(">17xB2xH")
"""(state, local port) of one message; the port is in network order in `inet_diag_sockid`."""
_LITTLE = sys.byteorder == "little"


def _tally(
    ports: set[int] | list[bytes], mv: memoryview, off: int, count: int, length: int
) -> None:
    """Gather the local ports of `count` messages of `length` bytes from `off`, with no
    Python statement per socket.

    Into a list: the raw 2-byte port fields (message offset 20), copied in one strided slice;
    `port_set` makes them a set once, after the dump. This is the TIME_WAIT dump's way: it is
    the big one, and inserting into a set while the kernel fills the next buffer cost twice as
    much (cache), about 150 ns a socket against 70 measured in place at 200k sockets.
    Into a set: `state << 16 | port`, the port bytes (20, 21; big-endian) and the state byte
    (17) copied a column at a time into native 32-bit integers (the live dump: several states).
    """
    end = off + count * length
    if isinstance(ports, list):
        ports.append(mv[off:end].cast("H")[10 :: length // 2].tobytes())
        return
    packed = bytearray(4 * count)
    lo, hi = (0, 1) if _LITTLE else (3, 2)
    packed[lo::4] = mv[off + 21 : end : length]
    packed[hi::4] = mv[off + 20 : end : length]
    packed[2 if _LITTLE else 1 :: 4] = mv[off + 17 : end : length]
    ports.update(memoryview(packed).cast("I"))


def port_set(fields: list[bytes]) -> set[int]:
    """The distinct ports among raw 2-byte port fields (network order) gathered by `_tally`."""
    ports = array("H")
    ports.frombytes(b"".join(fields))
    if _LITTLE:
        ports.byteswap()
    return set(ports)


def parse_dump_bytes(
    chunks: Iterable[bytes], fmt: str = AGG_FORMAT, msg_type: int = TCPDIAG_GETSOCK, seq: int = 1
) -> Counter[Key]:
    """Parse a whole dump given as the buffers `recv` returned (tests feed crafted bytes)."""
    parser = DumpParser(fmt, msg_type, seq)
    for chunk in chunks:
        if parser.feed(chunk):
            break
    return parser.finish()


def _errname(code: int) -> str:
    return f"{errno.errorcode.get(code, str(code))} ({code})"


# --- the socket ----------------------------------------------------------------------------


def _dump_error(exc: OSError) -> Exception:
    """What a failed dump means: refused here (fall back to /proc), or a broken reply."""
    if isinstance(exc, TimeoutError):
        return NetlinkReplyError("no reply before the timeout")
    if exc.errno in _REFUSED:
        return NetlinkRefused(exc.strerror or str(exc))
    return NetlinkReplyError(exc.strerror or str(exc))


class DiagSocket:
    """One NETLINK_SOCK_DIAG socket, reused for the few dumps of one collection."""

    def __init__(self, timeout: float = RECV_TIMEOUT) -> None:
        """`timeout`: seconds one reply may take (a probe's budget is shorter than a scan's)."""
        try:
            self.sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW, NETLINK_SOCK_DIAG)
        except OSError as exc:
            if exc.errno in _REFUSED:
                raise NetlinkRefused(exc.strerror or str(exc)) from None
            raise
        self.sock.settimeout(timeout)
        self.buf = bytearray(RECV_BUFFER)
        self.seq = 0
        self.legacy = True
        self.messages = 0
        """Messages parsed over every dump of this socket (what the progress bar shows)."""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> DiagSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def dump(
        self,
        states: int,
        fmt: str,
        bytecode: bytes = b"",
        progress: Progress | None = None,
        ports: set[int] | list[bytes] | None = None,
        protocol: int = _socket.IPPROTO_TCP,
        bound: set[int] | None = None,
        pipelined: bool = False,
    ) -> Counter[Key]:
        """Both families' sockets in `states` passing `bytecode`, counted by `fmt` keys (and
        their ports gathered into `ports` when given, see `_tally`). The legacy one-walk
        request only exists for TCP. With `bound` (a TIME_WAIT dump, `ports` a list), the
        bound-but-inactive sockets are asked for too (TimeWaitBoundParser). `pipelined`: the
        reply is read on a second thread while this one counts (`_pipelined`), for a dump
        known to be big."""
        tally = ports
        args = (progress, tally, protocol, bound, pipelined)
        if self.legacy and protocol == _socket.IPPROTO_TCP:
            try:
                return self._one(states, fmt, bytecode, None, *args)
            except NetlinkRefused:
                self.legacy = False
        total: Counter[Key] = Counter()
        for family in (_socket.AF_INET, _socket.AF_INET6):
            total.update(self._one(states, fmt, bytecode, family, *args))
        return total

    def _one(
        self,
        states: int,
        fmt: str,
        bytecode: bytes,
        family: int | None,
        progress: Progress | None,
        tally: set[int] | list[bytes] | None = None,
        protocol: int = _socket.IPPROTO_TCP,
        bound: set[int] | None = None,
        pipelined: bool = False,
    ) -> Counter[Key]:
        self.seq += 1
        msg_type = TCPDIAG_GETSOCK if family is None else SOCK_DIAG_BY_FAMILY
        parser: DumpParser
        if bound is not None and isinstance(tally, list) and fmt == AGG_FORMAT:
            states |= 1 << BOUND_INACTIVE_STATE
            parser = TimeWaitBoundParser(msg_type, self.seq, tally, bound)
        else:
            parser = DumpParser(fmt, msg_type, self.seq, tally)
        req = dump_request(self.seq, states, bytecode, family=family, protocol=protocol)
        if pipelined:
            return self._pipelined(req, parser, progress)
        buf, mv = self.buf, memoryview(self.buf)
        try:
            self.sock.sendto(req, (0, 0))
            while True:
                n = self.sock.recv_into(buf)
                if n == 0:
                    break
                if parser.feed(mv[:n]):
                    break
                if progress is not None:
                    progress(self.messages + parser.messages)
        except OSError as exc:
            raise _dump_error(exc) from None
        self.messages += parser.messages
        return parser.finish()

    def _pipelined(self, req: bytes, parser: DumpParser, progress: Progress | None) -> Counter[Key]:
        """`_one`'s loop on two threads: a reader receives each buffer and checks it (the
        kernel walks its hash inside that recv, with the GIL released), while this thread
        counts the runs the reader found, so the walk and the counting overlap on two cores
        instead of taking turns. Buffers go round a small pool; the reader stops at the
        dump's end, so the socket is free for the next request when this returns."""
        import _queue
        import _thread

        free: _queue.SimpleQueue[bytearray] = _queue.SimpleQueue()
        Runs = list[tuple[struct.Struct, int, int]]
        full: _queue.SimpleQueue[tuple[bytearray, Runs] | BaseException | None]
        full = _queue.SimpleQueue()
        free.put(self.buf)
        for _ in range(PIPELINE_BUFFERS - 1):
            free.put(bytearray(RECV_BUFFER))
        sock = self.sock
        stop = False

        def reader() -> None:
            try:
                while True:
                    buf = free.get()
                    if stop:
                        return
                    n = sock.recv_into(buf)
                    runs: Runs = []
                    parser.runs = runs
                    done = n == 0 or parser.feed(memoryview(buf)[:n])
                    full.put((buf, runs))
                    if done:
                        break
                full.put(None)
            except BaseException as exc:  # handed to the counting thread, which raises it
                full.put(exc)

        counted: Counter[Key] = Counter()
        try:
            sock.sendto(req, (0, 0))
            _thread.start_new_thread(reader, ())
            while (item := full.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                buf, runs = item
                mv = memoryview(buf)
                for fast, start, end in runs:
                    counted.update(fast.iter_unpack(mv[start:end]))
                free.put(buf)
                if progress is not None:
                    progress(self.messages + parser.messages)
        except OSError as exc:
            raise _dump_error(exc) from None
        finally:
            stop = True
            free.put(bytearray(0))  # wakes a reader still waiting for a buffer
        parser.counts.update(counted)
        self.messages += parser.messages
        return parser.finish()


# --- the table -----------------------------------------------------------------------------


def _addr(family: int, raw: bytes) -> str:
    return address_text(raw[:4] if family == _socket.AF_INET else raw)


def decode_key(family: int, key: bytes) -> Dest:
    """34 raw bytes (dport, src[16], dst[16]) -> (src, dst, dport), named as /proc names them.
    A host has few local addresses and may have 100,000 destinations: one string per source."""
    src = _SOURCES.get((family, key[2:18]))
    if src is None:
        if len(_SOURCES) > 4096:
            _SOURCES.clear()
        src = _SOURCES[family, key[2:18]] = _addr(family, key[2:18])
    return src, _addr(family, key[18:34]), int.from_bytes(key[0:2], "big")


_SOURCES: dict[tuple[int, bytes], str] = {}
"""Raw local address -> its text, for `decode_key` (bounded: a host has few)."""


_V4_MAPPED = b"\x00" * 10 + b"\xff\xff"
_V4_PAD = b"\x00" * 12


def encode_keys(dest: Dest) -> set[tuple[int, bytes]]:
    """The raw (family, key) forms `decode_key` turns into `dest`: an IPv4 destination may be
    reached from a v4 and from a v6 socket (v4-mapped). The kernel zeroes the unused 12 bytes
    of an IPv4 socket's address fields (inet_diag_msg_common_fill). Computed for the few
    destinations a later dump looks for, instead of keeping every destination's forms."""
    src, dst, dport = dest
    port = dport.to_bytes(2, "big")
    if ":" in src or ":" in dst:
        return {(_socket.AF_INET6, port + _v6(src) + _v6(dst))}
    s4, d4 = _socket.inet_pton(_socket.AF_INET, src), _socket.inet_pton(_socket.AF_INET, dst)
    return {
        (_socket.AF_INET, port + s4 + _V4_PAD + d4 + _V4_PAD),
        (_socket.AF_INET6, port + _V4_MAPPED + s4 + _V4_MAPPED + d4),
    }


def _v6(text: str) -> bytes:
    if ":" in text:
        return _socket.inet_pton(_socket.AF_INET6, text)
    return _V4_MAPPED + _socket.inet_pton(_socket.AF_INET, text)


class NetlinkScan:
    """What the dumps found, before owners are attached."""

    __slots__ = ("_bound", "_time_wait_fields", "_time_wait_ports", "clients", "counts", "ports")

    def __init__(
        self,
        counts: DestinationCounter,
        clients: bytes | None,
        ports: set[int] | None = None,
        time_wait_fields: list[bytes] | None = None,
        bound: tuple[int, int, tuple[set[int], int] | None] | None = None,
    ) -> None:
        self.counts = counts
        self.clients = clients
        """The program that kept the client sockets (None without a port range)."""
        self.ports = ports if ports is not None else set()
        """`state << 16 | port` for every live TCP socket holding a port inside the range: the
        live client sockets and the listeners (facts/portuse.py counts them)."""
        self._time_wait_fields = time_wait_fields or []
        self._time_wait_ports: set[int] | None = None
        self._bound = bound
        """(low, high, what `scan_bound_ports(low, high)` would return) when the scan's
        TIME_WAIT dump answered it too; its answer is None when it did not."""

    def bound_ports(self, low: int, high: int) -> tuple[set[int], int]:
        """`scan_bound_ports(low, high)`: the answer the scan's TIME_WAIT dump got when it
        asked (see `scan_sockets`), else a dump now."""
        if self._bound is None or self._bound[:2] != (low, high) or self._bound[2] is None:
            return scan_bound_ports(low, high)
        return self._bound[2]

    @property
    def time_wait_ports(self) -> set[int]:
        """The distinct ports of the client TIME_WAIT sockets, made from their raw port fields
        on first use (a set insert per socket: the per-destination counts do not need it)."""
        if self._time_wait_ports is None:
            self._time_wait_ports = port_set(self._time_wait_fields)
            self._time_wait_fields = []
        return self._time_wait_ports

    def table(self) -> SocketTable:
        """The table, made once: the per-destination counts are spent making it."""
        return self.counts.table("netlink", consume=True)

    def reusable_time_wait(self, left_below_ms: int, dests: Iterable[Dest]) -> dict[Dest, int]:
        """Per destination in `dests`, its TIME_WAIT sockets with less than `left_below_ms` left
        on their timer: one more TIME_WAIT dump with the scan's own program."""
        wanted = {d: encode_keys(d) for d in dests if self.counts.knows(d)}
        if not wanted or self.clients is None:
            return {}
        with DiagSocket() as diag:
            got = diag.dump(1 << TIME_WAIT_STATE, TW_AGE_FORMAT, self.clients)
        return count_reusable(got, wanted, left_below_ms)

    def live_inodes(self, hot: Iterable[Dest]) -> dict[Dest, set[int]]:
        """Socket inodes of the live (not TIME_WAIT) client sockets to the `hot` destinations.

        One more dump, of live client sockets only, with the scan's own program; the Python
        work is one dict lookup per live socket, and it only runs when some destination is
        under pressure.
        """
        out: dict[Dest, set[int]] = {d: set() for d in hot}
        by_raw = {raw: d for d in out for raw in encode_keys(d)}
        if not by_raw or self.clients is None:
            return out
        with DiagSocket() as diag:
            got = diag.dump(LIVE_MASK, INODE_FORMAT, self.clients)
        for (family, _state, key, inode), _n in got.items():
            hit = by_raw.get((family, key))  # type: ignore[arg-type]
            if hit is not None and isinstance(inode, int) and inode:
                out[hit].add(inode)
        return out


def count_reusable(
    counts: Counter[Key], raw_keys: dict[Dest, set[tuple[int, bytes]]], left_below_ms: int
) -> dict[Dest, int]:
    """Per destination, the TIME_WAIT sockets of a TW_AGE_FORMAT dump whose whole 256 ms step
    of time left is below `left_below_ms` (never counting a socket that may be younger)."""
    by_raw = {raw: d for d, raws in raw_keys.items() for raw in raws}
    out: dict[Dest, int] = {}
    for (family, _state, key, step), n in counts.items():
        assert isinstance(step, int)
        dest = by_raw.get((family, key))  # type: ignore[arg-type]
        if dest is not None and (step + 1) * TW_AGE_STEP_MS <= left_below_ms:
            out[dest] = out.get(dest, 0) + n
    return out


INET_DIAG_SKV6ONLY = 11
"""The attribute carrying IPV6_V6ONLY (one byte) of an IPv6 socket in LISTEN or CLOSE."""
_LISTENER = struct.Struct("=16xBB2xH2x16s16x4x8x4xIIxxxxI")
"""(family, state, sport (network order), src, rqueue, wqueue, inode) of one listener."""
_NLA = struct.Struct("=HH")

ListenerRow = tuple[int, int, bytes, int, int, int, bool | None]
"""(family, port, raw source address, queued, backlog, inode, IPV6_V6ONLY or None)."""


class ListenerParser(DumpParser):
    """A LISTEN dump read message by message, attributes included: listeners are few, and
    IPV6_V6ONLY is an attribute (`INET_DIAG_SKV6ONLY`), not a fixed-offset field."""

    __slots__ = ("rows",)

    def __init__(self, msg_type: int, seq: int) -> None:
        super().__init__(LISTEN_FORMAT, msg_type, seq)
        self.rows: list[ListenerRow] = []

    def _run(self, mv: memoryview, off: int, n: int) -> tuple[int, struct.Struct] | None:
        return None

    def _step(self, mv: memoryview, off: int, n: int) -> int:
        nxt = super()._step(mv, off, n)
        length, mtype = struct.unpack_from("=IH", mv, off)
        if mtype == self.msg_type:
            family, _state, sport, src, rq, wq, inode = _LISTENER.unpack_from(mv, off)
            v6only: bool | None = None
            at, end = off + MIN_SOCKET_MSG, off + length
            while at + _NLA.size <= end:
                alen, atype = _NLA.unpack_from(mv, at)
                if alen < _NLA.size or at + alen > end:
                    raise NetlinkReplyError(f"malformed attribute (length {alen})")
                if atype & 0x3FFF == INET_DIAG_SKV6ONLY and alen > _NLA.size:
                    v6only = bool(mv[at + _NLA.size])
                at += (alen + 3) & ~3
            port = _socket.ntohs(sport)
            self.rows.append((family, port, src, rq, wq, inode, v6only))
        return nxt


def dump_listeners(diag: DiagSocket) -> list[ListenerRow]:
    """Every TCP listener, both families, with its accept queue, backlog, inode and (IPv6)
    IPV6_V6ONLY flag: one walk of the listening hash."""
    families: tuple[int | None, ...] = (None,) if diag.legacy else ()
    families += (_socket.AF_INET, _socket.AF_INET6)
    rows: list[ListenerRow] = []
    for family in families:
        diag.seq += 1
        msg_type = TCPDIAG_GETSOCK if family is None else SOCK_DIAG_BY_FAMILY
        parser = ListenerParser(msg_type, diag.seq)
        try:
            diag.sock.sendto(dump_request(diag.seq, 1 << LISTEN_STATE, family=family), (0, 0))
            while True:
                got = diag.sock.recv_into(diag.buf)
                if got == 0 or parser.feed(memoryview(diag.buf)[:got]):
                    break
            parser.finish()
        except NetlinkRefused:
            if family is None:
                diag.legacy = False
                continue
            raise
        except OSError as exc:
            raise _dump_error(exc) from None
        rows += parser.rows
        if family is None:
            break
    return rows


def sockstat_totals(proc_net: str = "/proc/self/net") -> tuple[int, int] | None:
    """(TCP sockets in the hash, v4 + v6 `inuse`; TIME_WAIT `tw`) of this namespace, read from
    sockstat in microseconds, or None when either cannot be read.

    A dump walks the whole socket hash whatever it returns, so `scan_sockets` skips the ones
    whose answer these totals already give (no live socket, no TIME_WAIT, nothing left over).
    """
    inuse = 0
    tw: int | None = None
    for name in ("sockstat", "sockstat6"):
        try:
            with open(f"{proc_net}/{name}", encoding="ascii") as fh:
                text = fh.read()
        except FileNotFoundError:
            if name == "sockstat6":  # no IPv6 in this kernel: no TCP6 sockets
                continue
            return None
        except (OSError, ValueError):
            return None
        for line in text.splitlines():
            proto, _, rest = line.partition(":")
            if proto not in ("TCP", "TCP6"):
                continue
            fields = rest.split()
            values = dict(zip(fields[::2], fields[1::2], strict=False))
            try:
                inuse += int(values["inuse"])
                if proto == "TCP":
                    tw = int(values["tw"])
            except (KeyError, ValueError):
                return None
    return None if tw is None else (inuse, tw)


def _no_peer(key: Key) -> bool:
    """Whether an AGG_FORMAT key's peer port is 0."""
    raw = key[2]
    return isinstance(raw, bytes) and raw[:2] == b"\0\0"


def _cores() -> int:
    """The CPUs this process may run on."""
    import os

    return len(os.sched_getaffinity(0))


def scan_sockets(
    low: int, high: int, progress: Progress | None = None, bound_above: int | None = None
) -> NetlinkScan:
    """Per-destination counts, totals by state and listeners, from four filtered dumps.

    `low`..`high` is the ephemeral range (`low > high` when it could not be read: then every
    socket is only counted by state).
    1. LISTEN sockets (the listening hash only; cheap), with accept queue and backlog.
    2. Non-LISTEN sockets whose local port is in [low, high] and is not a listening port (the
       client side of outgoing connections: connect() never hands out a port a listener holds),
       keyed per destination; TIME_WAIT and live sockets in two dumps.
    3. Every other non-LISTEN socket, counted by state only: outside the range, or a server's
       accepted or TIME_WAIT socket on its listening port. So `total_by_state` covers every
       socket as the /proc reader's does, and sockets of a server never become Python keys,
       even one listening inside the range (EPH-006), where there would be one per client.
    Every dump walks the whole socket hash whatever it returns, so sockstat's totals skip the
    ones whose answer they already give (`_Plan`). When the TIME_WAIT dump is big, the other
    dumps whose requests do not depend on it run beside it on a socket of their own (`_Beside`):
    the kernel walks the hash for them on the other CPU.
    With `bound_above`, when sockstat's totals say the hash holds more sockets than that, the
    scan also answers `scan_bound_ports` (`NetlinkScan.bound_ports`): the caller asks for it
    when the ports in use pass such a bound, which takes at least as many sockets. Beside a
    big TIME_WAIT dump it is a request of its own; else the TIME_WAIT dump asks for them too.
    Raises NetlinkRefused when sock_diag is not available here.
    """
    counts = DestinationCounter()
    clients: bytes | None = None
    ports: set[int] = set()
    tw_fields: list[bytes] = []
    known = sockstat_totals()
    fold: set[int] | None = None
    n_bound = 0
    with DiagSocket() as diag:
        for af, sport, src, rq, wq, inode, v6only in dump_listeners(diag):
            counts.totals["LISTEN"] += 1
            fam = 4 if af == _socket.AF_INET else 6
            counts.add_listener(_addr(af, src), sport, fam, rq, wq, v6only, inode)
        n_listen = counts.totals["LISTEN"]
        if low > high:  # no range: every socket counted by state
            _add_totals(counts, diag.dump(NOT_LISTEN_MASK, COUNT_FORMAT, b"", progress))
            return NetlinkScan(counts, None, ports, tw_fields, (low, high, None))
        listening = listening_ranges(counts.listening_ports(), low, high)
        ports.update(LISTEN_STATE << 16 | p for a, b in listening for p in range(a, b + 1))
        clients = port_bytecode(low, high, listening)
        rest_bc = port_complement_bytecode(low, high, listening)
        plan = _Plan(known, n_listen, rest_bc is not None)
        live: Counter[Key] = Counter()
        left: Counter[Key] = Counter()
        pipelined = plan.time_wait and known is not None and known[1] > PIPELINE_ABOVE
        pipelined = pipelined and _cores() > 1
        # the bound-but-inactive sockets may be asked for (see the docstring)
        want_bound = plan.time_wait and bound_above is not None
        want_bound = want_bound and (known is None or sum(known) > bound_above)  # type: ignore[operator]
        # with two CPUs their own request runs beside the TIME_WAIT dump: it costs one more
        # walk of the socket hash, but on the other CPU, where folded into the TIME_WAIT dump
        # its walk of the bind hash delays every TIME_WAIT message
        bound_beside = want_bound and pipelined
        answered: list[tuple[set[int], int]] = []

        def beside_work(side: DiagSocket, shown: Progress | None = None) -> None:
            """The dumps that need nothing from the TIME_WAIT dump: beside it, or after it
            (`shown` then), where the leftover walk waits to cover TIME_WAIT too in one walk."""
            if bound_beside:
                answered.append(_bound_ports_on(side, low, high))
            # TIME_WAIT apart from live sockets: the kernel gives live ones more attributes,
            # so each dump's messages have one length and parse in C (DumpParser)
            if plan.live:
                live.update(side.dump(LIVE_MASK, AGG_FORMAT, clients, shown, ports))
            if plan.left_live_first and run_beside:
                assert rest_bc is not None
                left.update(side.dump(LIVE_MASK, COUNT_FORMAT, rest_bc))

        run_beside = pipelined and (plan.beside or bound_beside)
        beside = _Beside(beside_work) if run_beside else None
        try:
            agg: Counter[Key] = Counter()
            if plan.time_wait:
                # The bound-but-inactive sockets come with this dump when they may be asked
                # for, saving the walk of the socket hash their own request costs
                # (TimeWaitBoundParser, bound_and_clients_bytecode).
                if want_bound and not bound_beside:
                    fold = set()
                    both = bound_and_clients_bytecode(low, high, listening)
                    agg = diag.dump(
                        1 << TIME_WAIT_STATE,
                        AGG_FORMAT,
                        both,
                        progress,
                        tw_fields,
                        bound=fold,
                        pipelined=pipelined,
                    )
                    if listening and any(k[1] == TIME_WAIT_STATE and _no_peer(k) for k in agg):
                        # a TIME_WAIT socket with peer port 0 may sit on a listening port,
                        # which the program let through: dump them again without the fold
                        fold = None
                        tw_fields.clear()
                if fold is None:
                    agg = diag.dump(
                        1 << TIME_WAIT_STATE,
                        AGG_FORMAT,
                        clients,
                        progress,
                        tw_fields,
                        pipelined=pipelined,
                    )
                if fold:
                    # bound but inactive: no peer, not a destination (their ports are in `fold`)
                    for k in [k for k in agg if k[1] == CLOSE_STATE]:
                        n_bound += agg.pop(k)
        finally:
            if beside is not None:
                beside.wait()
        if beside is None:
            beside_work(diag, progress)
        agg.update(live)
        # counted raw (decoded only for the rows someone reads), each key's tuple freed
        # as it is counted
        per_state = counts.add_raw_all(agg)  # type: ignore[arg-type]
        del agg
        found_tw = per_state.pop(TIME_WAIT_STATE, 0)
        states = plan.left_over(sum(per_state.values()), found_tw, run_beside)
        if states:
            assert rest_bc is not None
            left.update(diag.dump(states, COUNT_FORMAT, rest_bc, progress))
        _add_totals(counts, left)
    bound = answered[0] if answered else None if fold is None else (fold, n_bound)
    return NetlinkScan(counts, clients, ports, tw_fields, (low, high, bound))


def _add_totals(counts: DestinationCounter, got: Counter[Key]) -> None:
    """Add a COUNT_FORMAT dump's (family, state) counts to the totals by state."""
    for (_family, state), n in got.items():
        assert isinstance(state, int)
        counts.totals[STATE_NAMES.get(state, str(state))] += n


class _Plan:
    """Which of `scan_sockets`' walks can find anything, from sockstat's totals (`known`:
    hashed sockets, listeners included, and TIME_WAIT ones; None when unread) and the
    listeners: a dump walks the whole hash whatever it returns, and the totals cost
    microseconds.

    The walk for the sockets left over (not a client's) covers the live ones unless every
    hashed socket was a listener or a client socket the live dump found and no listener is
    there to hold half-open connections (request sockets, which no total counts); it covers
    TIME_WAIT unless every TIME_WAIT socket was a client's. With listeners it is needed
    whatever the other dumps find, so its live part can run beside a big TIME_WAIT dump
    (`left_live_first`); else it waits for the others and makes one walk."""

    __slots__ = ("beside", "known", "left_live_first", "live", "n_listen", "rest", "time_wait")

    def __init__(self, known: tuple[int, int] | None, n_listen: int, rest: bool) -> None:
        self.known = known
        self.n_listen = n_listen
        self.rest = rest
        """Whether any socket can be left over at all (see `port_complement_bytecode`)."""
        self.time_wait = known is None or known[1] > 0
        self.live = known is None or known[0] > n_listen
        self.left_live_first = rest and (known is None or n_listen > 0)
        self.beside = self.live or self.left_live_first

    def left_over(self, found_live: int, found_tw: int, live_done: bool) -> int:
        """The states the leftover walk must still dump, once the client sockets are counted
        (0: none); `live_done`: its live part ran beside the TIME_WAIT dump."""
        if not self.rest:
            return 0
        known = self.known
        states = 0
        if not live_done and (
            self.left_live_first or known is None or known[0] != found_live + self.n_listen
        ):
            states |= LIVE_MASK
        if known is None or known[1] != found_tw:
            states |= 1 << TIME_WAIT_STATE
        return states


class _Beside:
    """`work(socket)` on a thread of its own with a DiagSocket of its own: dumps run beside the
    big TIME_WAIT dump, so the kernel walks the hashes for them on the other CPU while the
    two threads of `DiagSocket._pipelined` take turns with the GIL. `wait` joins it and
    raises what it raised."""

    def __init__(self, work: Callable[[DiagSocket], None]) -> None:
        import _thread

        self._done = _thread.allocate_lock()
        self._done.acquire()
        self._error: BaseException | None = None
        _thread.start_new_thread(self._run, (work,))

    def _run(self, work: Callable[[DiagSocket], None]) -> None:
        try:
            with DiagSocket() as side:
                work(side)
        except BaseException as exc:  # raised by `wait`, on the scanning thread
            self._error = exc
        finally:
            self._done.release()

    def wait(self) -> None:
        self._done.acquire()
        self._done.release()
        if self._error is not None:
            raise self._error


UDP_FORMAT = "=16xB3x2s"
"""(family, local port) of one socket."""


def scan_bound_ports(low: int, high: int) -> tuple[set[int], int]:
    """(distinct local ports in [low, high] of TCP sockets bound but neither listening nor
    connected, how many such sockets): Linux 6.7+, see BOUND_INACTIVE_STATE.

    A request of its own: besides the bind hash, the kernel then walks the socket hash too,
    rejecting every socket by state, so callers ask only when it can matter."""
    with DiagSocket() as diag:
        return _bound_ports_on(diag, low, high)


def _bound_ports_on(diag: DiagSocket, low: int, high: int) -> tuple[set[int], int]:
    """`scan_bound_ports` on an open socket."""
    got = diag.dump(1 << BOUND_INACTIVE_STATE, UDP_FORMAT, port_bytecode(low, high))
    ports = {int.from_bytes(sport, "big") for (_f, sport) in got if isinstance(sport, bytes)}
    return ports, sum(got.values())


def scan_udp_ports(low: int, high: int) -> tuple[set[int], int]:
    """(distinct local ports in [low, high] held by UDP sockets, sockets holding them), v4 and
    v6 (`SOCK_DIAG_BY_FAMILY` with IPPROTO_UDP; the kernel keeps only ports in the range).
    Raises NetlinkRefused where sock_diag or its UDP module (`udp_diag`) is not available."""
    with DiagSocket() as diag:
        got = diag.dump(
            UDP_STATES_MASK, UDP_FORMAT, port_bytecode(low, high), protocol=_socket.IPPROTO_UDP
        )
    ports: set[int] = set()
    sockets = 0
    for (_family, sport), n in got.items():
        assert isinstance(sport, bytes)
        ports.add(int.from_bytes(sport, "big"))
        sockets += n
    return ports, sockets


UDP_SERVER_FORMAT = "=16xB3x2s2x16s"
"""(family, local port, local address) of one socket."""


def scan_udp_servers(low: int, high: int) -> set[tuple[int, str, int]]:
    """(family 4 or 6, local address, port) of the UDP sockets bound to a port outside
    [low, high]. Raises NetlinkRefused as `scan_udp_ports` does."""
    with DiagSocket() as diag:
        got = diag.dump(
            UDP_STATES_MASK,
            UDP_SERVER_FORMAT,
            port_bytecode(1, 65535, [(low, high)]),
            protocol=_socket.IPPROTO_UDP,
        )
    out: set[tuple[int, str, int]] = set()
    for family, sport, src in got:
        assert isinstance(family, int) and isinstance(sport, bytes) and isinstance(src, bytes)
        out.add(
            (
                4 if family == _socket.AF_INET else 6,
                _addr(family, src),
                int.from_bytes(sport, "big"),
            )
        )
    return out


PORT_INODE_FORMAT = "=16xB3x2s62xI"
"""(family, local port, inode) of one socket."""


def port_inodes(low: int, high: int) -> tuple[set[int], set[int]]:
    """Inodes of the live TCP sockets (with the bound-but-inactive ones) and of the UDP sockets
    holding a port in [low, high]: who holds the ports, for the few hosts near the limit."""
    program = port_bytecode(low, high)
    tcp: set[int] = set()
    udp: set[int] = set()
    with DiagSocket() as diag:
        for (_f, _p, inode), _n in diag.dump(
            LIVE_MASK | 1 << LISTEN_STATE | 1 << BOUND_INACTIVE_STATE, PORT_INODE_FORMAT, program
        ).items():
            if isinstance(inode, int) and inode:
                tcp.add(inode)
        try:
            got = diag.dump(
                UDP_STATES_MASK, PORT_INODE_FORMAT, program, protocol=_socket.IPPROTO_UDP
            )
        except NetlinkRefused:
            got = Counter()
        for (_f, _p, inode), _n in got.items():
            if isinstance(inode, int) and inode:
                udp.add(inode)
    return tcp, udp
