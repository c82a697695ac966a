"""The TCP socket table, aggregated per destination while it is parsed.

This is the `/proc/net/tcp{,6}` reader: the fallback where netlink sock_diag is refused, and the
cross-check for the netlink reader. It never keeps an object per socket: lines are counted into
a Counter keyed by the raw hex fields, and only the distinct keys are decoded at the end, so
memory grows with destinations, not sockets.
"""

from __future__ import annotations

import _socket
import os
import sys
from collections import Counter
from collections.abc import Iterable

from auditor.errors import InputError
from auditor.facts.model import PortRange, SocketTable, Unavailable
from auditor.facts.tcp import TCP_STATES, DestinationCounter, address_text
from auditor.facts.twreuse import reusable_after_left, reuse_delay_ms
from auditor.hostfs import HostRoot, absent
from auditor.inputfile import open_lines

_STATE_BY_HEX = {f"{i + 1:02X}": name for i, name in enumerate(TCP_STATES)}
_LISTEN_HEX = "0A"
_TIME_WAIT_HEX = "06"
_V6_LOOPBACK = bytes(15) + b"\x01"


def hex_to_packed(h: str) -> bytes:
    """Kernel-printed address -> network-order bytes.

    The kernel prints each 32-bit word of the address with `%08X` in host byte order, so on a
    little-endian machine every 4-byte group reads reversed.
    """
    raw = bytes.fromhex(h)
    if sys.byteorder == "little":
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return raw


def is_loopback(addr: str) -> bool:
    """127.0.0.0/8 or ::1, for an address as the readers print it. `inet_pton` rather than
    `ipaddress`: this runs once per destination, and `ip_address` costs ~8 us a call."""
    try:
        return _socket.inet_pton(_socket.AF_INET, addr)[0] == 127
    except OSError:
        pass
    try:
        return _socket.inet_pton(_socket.AF_INET6, addr) == _V6_LOOPBACK
    except OSError:
        return False


def parse_proc_tcp(
    lines: Iterable[str],
    source: str,
    family: int,
    ports: PortRange | None,
    into: DestinationCounter,
    reuse_delay_ms: int | None = None,
    inodes: dict[tuple[str, str, str], set[int]] | None = None,
) -> None:
    """Count one `/proc/net/tcp` or `tcp6` file into `into`. Malformed lines name file:line.

    The one parser of that format. As the netlink reader does, a socket on a listening port is
    a server's (accepted, or its TIME_WAIT) and is counted by state only, not as a destination,
    even inside the range. The kernel prints a file's LISTEN sockets before the others
    (`tcp_get_idx`), so they are known by the time the server's connections come.

    With `reuse_delay_ms`, a client TIME_WAIT socket whose timer has less than TIMEWAIT_LEN -
    delay left (the `tm->when` field, in clock ticks) is also counted as reusable.

    With `inodes`, the socket inode of every live (not TIME_WAIT) client socket is also kept,
    keyed by the raw hex (local address, remote address, remote port), for owner attribution.
    """
    raw: Counter[tuple[str, str, str, str]] = Counter()
    listen_raw: dict[str, int] = {}
    listening = into.listening_ports()
    low, high = (ports.low, ports.high) if ports else (1, 0)
    addr_len = 8 if family == 4 else 32
    old_raw: Counter[tuple[str, str, str]] = Counter()
    left_limit = None
    if reuse_delay_ms is not None:
        into.measure_reusable()
        ticks_per_s = os.sysconf("SC_CLK_TCK")
        left_limit = reusable_after_left(reuse_delay_ms) * ticks_per_s / 1000
    for lineno, line in enumerate(lines, 1):
        if lineno == 1:
            if "local_address" not in line:
                raise InputError(source, 1, "missing the '  sl  local_address ...' header")
            continue
        fields = line.split(None, 4)
        if not fields:
            continue
        try:
            local, remote, st = fields[1], fields[2], fields[3]
            lip, _, lport_hex = local.partition(":")
            rip, _, rport_hex = remote.partition(":")
            if (
                len(lip) != addr_len
                or len(rip) != addr_len
                or len(lport_hex) != 4
                or len(rport_hex) != 4
                or st not in _STATE_BY_HEX
                or not lport_hex.isalnum()
            ):
                raise ValueError
            lport = int(lport_hex, 16)
            if inodes is not None and st != _TIME_WAIT_HEX and st != _LISTEN_HEX:
                inode = int(fields[4].split()[5])
        except (IndexError, ValueError):
            raise InputError(
                source, lineno, f"malformed socket line: {line.strip()[:80]!r}"
            ) from None
        if st == _LISTEN_HEX:
            listen_raw[local] = max(listen_raw.get(local, 0), _listen_queue(fields, source, lineno))
            listening.add(lport)
            into.totals["LISTEN"] += 1
            continue
        if low <= lport <= high and lport not in listening:
            raw[(lip, rip, rport_hex, st)] += 1
            if st == _TIME_WAIT_HEX and left_limit is not None:
                try:  # "tx:rx tr:when ...": timer 3 and the ticks left on it
                    left = int(fields[4].split(None, 2)[1].partition(":")[2], 16)
                except (IndexError, ValueError):
                    raise InputError(
                        source, lineno, f"malformed timer field: {line.strip()[:80]!r}"
                    ) from None
                if left < left_limit:
                    old_raw[(lip, rip, rport_hex)] += 1
            if inodes is not None and st != _TIME_WAIT_HEX and inode:
                inodes.setdefault((lip, rip, rport_hex), set()).add(inode)
        else:
            into.totals[_STATE_BY_HEX[st]] += 1
    # Addresses are checked once per distinct value here, not once per line above: a table of
    # a million sockets has a few hundred distinct ones.
    for (lip, rip, rport_hex, st), n in raw.items():
        key = (_address(lip, source), _address(rip, source), _port(rport_hex, source))
        into.add(key, _STATE_BY_HEX[st], n)
    for (lip, rip, rport_hex), n in old_raw.items():
        key = (
            address_text(hex_to_packed(lip)),
            address_text(hex_to_packed(rip)),
            int(rport_hex, 16),
        )
        into.add_reusable(key, n)
    for local, queued in listen_raw.items():
        lip, _, lport_hex = local.partition(":")
        into.add_listener(_address(lip, source), _port(lport_hex, source), family, queued, None)


def _listen_queue(fields: list[str], source: str, lineno: int) -> int:
    """The accept queue of a LISTEN line: its `rx_queue` (`sk_ack_backlog`). The kernel prints
    the backlog nowhere in /proc: `tx_queue` is the unsent byte count, 0 for a listener."""
    try:
        return int(fields[4].split(None, 1)[0].partition(":")[2], 16)
    except (IndexError, ValueError):
        raise InputError(source, lineno, f"malformed queue field: {fields[4][:40]!r}") from None


def read_listeners(
    lines: Iterable[str], source: str, family: int, into: DestinationCounter
) -> None:
    """Only the LISTEN lines at the head of a `/proc/net/tcp{,6}` file (the kernel prints a
    file's listeners first), stopping at the first other socket.

    Both files' listeners are read before either file's connections: an IPv4 client socket on
    a port that only an IPv6 listener holds (`[::]:P` with IPV6_V6ONLY lets IPv4 sockets bind
    P) is a server port's socket, as the netlink reader, which dumps every listener first,
    counts it."""
    for lineno, line in enumerate(lines, 1):
        if lineno == 1:
            continue
        fields = line.split(None, 4)
        if len(fields) < 5:
            continue
        if fields[3] != _LISTEN_HEX:
            return
        lip, _, lport_hex = fields[1].partition(":")
        into.add_listener(
            _address(lip, source),
            _port(lport_hex, source),
            family,
            _listen_queue(fields, source, lineno),
            None,
            inode=_inode(fields),
        )


def _inode(fields: list[str]) -> int:
    try:
        return int(fields[4].split()[5])
    except (IndexError, ValueError):
        return 0


_HEX = frozenset("0123456789abcdefABCDEF")


def _address(h: str, source: str) -> str:
    if not _HEX.issuperset(h):
        raise InputError(source, None, f"malformed socket address {h!r}: not hexadecimal")
    return address_text(hex_to_packed(h))


def _port(h: str, source: str) -> int:
    if len(h) != 4 or not _HEX.issuperset(h):
        raise InputError(source, None, f"malformed port {h!r}: expected 4 hex digits")
    return int(h, 16)


def collect_sockets_proc(
    host: HostRoot, ports: PortRange | Unavailable
) -> SocketTable | Unavailable:
    """The socket table from `/proc/net/tcp` and `/proc/net/tcp6`, with reusable TIME_WAIT
    counts where tcp_tw_reuse may apply."""
    counter = DestinationCounter()
    bindv6only = host.read_sysctl("net.ipv6.bindv6only")
    if bindv6only in ("0", "1"):
        counter.v6only_estimate = bindv6only == "1"
    delay = reuse_delay_ms(host)
    read_any = False
    reasons = []
    files = (("net/tcp", 4), ("net/tcp6", 6))
    for rel, family in files:
        path = host.proc_path(rel)
        try:
            with open_lines(path) as lines:
                read_listeners(lines, str(path), family, counter)
        except (OSError, UnicodeDecodeError):
            pass  # the full read below reports it
    for rel, family in files:
        path = host.proc_path(rel)
        try:
            with open_lines(path) as lines:
                parse_proc_tcp(
                    lines,
                    str(path),
                    family,
                    None if isinstance(ports, Unavailable) else ports,
                    counter,
                    delay,
                )
            read_any = True
        except FileNotFoundError:
            reasons.append(absent(path).reason)
        except PermissionError:
            reasons.append(f"{path}: permission denied")
        except UnicodeDecodeError:
            raise InputError(path, None, "not ASCII text") from None
        except OSError as exc:
            raise InputError(path, None, exc.strerror or str(exc)) from None
    if not read_any:
        return Unavailable("; ".join(reasons))
    return counter.table("proc")


def proc_listener_inodes(host: HostRoot) -> dict[tuple[str, int, int], set[int]]:
    """Each listener's socket inodes from the heads of `/proc/net/tcp{,6}` (where sock_diag is
    refused): who holds it is a hint, so a file that cannot be read leaves it unknown."""
    counter = DestinationCounter()
    for rel, family in (("net/tcp", 4), ("net/tcp6", 6)):
        path = host.proc_path(rel)
        try:
            with open_lines(path) as lines:
                read_listeners(lines, str(path), family, counter)
        except (OSError, UnicodeDecodeError, InputError):
            continue
    return counter.listener_inodes
