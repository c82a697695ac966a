"""Fill the current network namespace's conntrack table with ASSURED entries over ctnetlink.

Run inside a throwaway namespace (`python -m tests.conntrack_fill`): nf_conntrack_max is global
and read-only there, so the test fills the namespace's own *count* up to it instead of lowering
the limit. The entries must be ASSURED: when the table is full the kernel's early_drop() evicts
entries that are not, so unreplied entries would never block a new SYN. `conntrack -I` per entry
is far too slow for 262144 entries and conntrack 1.4.7 has no batch load, so the messages are
built here and sent many to a datagram (ctnetlink handles each; errors are not awaited).

Prints `count max` when done; exits 3 when the table could not be filled.
"""

from __future__ import annotations

import socket
import struct
import sys
from pathlib import Path

NETLINK_NETFILTER = 12
CT_NEW = (1 << 8) | 0  # NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_NEW
NLM_F_REQUEST, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x200, 0x400
NESTED = 0x8000
IPS_ASSURED, IPS_CONFIRMED = 1 << 2, 1 << 3
PER_SEND = 1500
"""Messages per datagram: about 150 KB, under the socket buffer set below."""
PROC = Path("/proc/sys/net/netfilter")


def _attr(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def _tuple(kind: int, src: bytes, dst: bytes, sport: int, dport: int) -> bytes:
    ip = _attr(NESTED | 1, _attr(1, src) + _attr(2, dst))
    proto = _attr(NESTED | 2, _attr(1, bytes([17])) + _attr(2, struct.pack("!H", sport))
                  + _attr(3, struct.pack("!H", dport)))  # fmt: skip
    return _attr(NESTED | kind, ip + proto)


def message(i: int, dst: bytes, seq: int) -> bytes:
    """One CT_NEW: a UDP flow 172.16.0.0+i:1000 -> dst:9, ASSURED, ten minutes to live."""
    src = struct.pack("!I", 0xAC100000 + i)
    body = struct.pack("=BBH", socket.AF_INET, 0, 0)
    body += _tuple(1, src, dst, 1000, 9) + _tuple(2, dst, src, 9, 1000)
    body += _attr(3, struct.pack("!I", IPS_ASSURED | IPS_CONFIRMED))
    body += _attr(7, struct.pack("!I", 600))
    flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL
    return struct.pack("=IHHII", 16 + len(body), CT_NEW, flags, seq, 0) + body


def count() -> tuple[int, int]:
    return (
        int((PROC / "nf_conntrack_count").read_text()),
        int((PROC / "nf_conntrack_max").read_text()),
    )


def fill(dst: str) -> tuple[int, int]:
    """Create entries until the count reaches the max (a bounded number of rounds)."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    sock.setblocking(False)
    dst_raw = socket.inet_aton(dst)
    now, limit = count()
    i = 0
    for _ in range(4):
        while now < limit:
            todo = min(PER_SEND, limit - now + 16)
            sock.send(b"".join(message(i + k, dst_raw, i + k) for k in range(todo)))
            i += todo
            _drain(sock)
            now, limit = count()
            if i > 2 * limit:
                return now, limit
    sock.close()
    return now, limit


def _drain(sock: socket.socket) -> None:
    """Discard the error replies (ENOMEM once full) so the receive buffer never blocks."""
    while True:
        try:
            sock.recv(1 << 16)
        except (BlockingIOError, OSError):
            return


def main() -> int:
    now, limit = fill(sys.argv[1] if len(sys.argv) > 1 else "10.203.0.2")
    print(now, limit, flush=True)
    return 0 if now >= limit else 3


if __name__ == "__main__":
    raise SystemExit(main())
