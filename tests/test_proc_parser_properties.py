"""Property: whatever sockets the kernel prints, the per-destination counts are exact."""

from __future__ import annotations

import ipaddress
import socket
import sys
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.facts.model import PortRange
from auditor.facts.sockets import DestinationCounter, parse_proc_tcp
from auditor.facts.tcp import TCP_STATES

HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode"
PORTS = PortRange(low=40000, high=40063, reserved=(), usable=64)


def kernel_hex(addr: str) -> str:
    """What `/proc/net/tcp{,6}` prints for an address: each 32-bit word in host byte order."""
    ip = ipaddress.ip_address(addr)
    packed = socket.inet_pton(socket.AF_INET6 if ip.version == 6 else socket.AF_INET, addr)
    words = [packed[i : i + 4] for i in range(0, len(packed), 4)]
    if sys.byteorder == "little":
        words = [w[::-1] for w in words]
    return b"".join(words).hex().upper()


V4 = st.sampled_from(["10.0.0.2", "10.0.0.5", "127.0.0.1", "192.0.2.7"])
V6 = st.sampled_from(["::1", "2001:db8::5", "fe80::1"])
STATES = st.sampled_from([s for s in TCP_STATES if s != "LISTEN"])
SOCK = st.tuples(
    st.booleans(),
    st.integers(0, 3),
    st.integers(0, 3),
    st.sampled_from([80, 3306]),
    st.integers(39990, 40070),
    STATES,
)


@settings(max_examples=150, deadline=None)
@given(st.lists(SOCK, max_size=60), st.sets(st.integers(39990, 40070), max_size=4))
def test_counts_match_a_naive_count(
    socks: list[tuple[bool, int, int, int, int, str]], listen: set[int]
) -> None:
    v4 = ["10.0.0.2", "10.0.0.5", "127.0.0.1", "192.0.2.7"]
    v6 = ["::1", "2001:db8::5", "fe80::1", "2001:db8::9"]
    lines4, lines6 = [HEADER], [HEADER]
    # LISTEN sockets come first in each file, as the kernel prints them; a socket on a
    # listening port is the server's and no destination's
    for port in sorted(listen):
        lines4.append(
            f"   0: 00000000:{port:04X} 00000000:0000 0A 00000000:00000000 00:00000000 "
            "00000000     0        0 1 1 0 100 0 0 10 0"
        )
    expected: Counter[tuple[str, str, int, str]] = Counter()
    for i, (is6, s, d, dport, sport, state) in enumerate(socks):
        pool = v6 if is6 else v4
        src, dst = pool[s], pool[d]
        code = f"{TCP_STATES.index(state) + 1:02X}"
        line = f"{i:>4}: {kernel_hex(src)}:{sport:04X} {kernel_hex(dst)}:{dport:04X} {code} 00000000:00000000 00:00000000 00000000     0        0 {i} 1 0 100 0 0 10 0"
        (lines6 if is6 else lines4).append(line)
        if PORTS.low <= sport <= PORTS.high and sport not in listen:
            expected[
                (str(ipaddress.ip_address(src)), str(ipaddress.ip_address(dst)), dport, state)
            ] += 1
    counter = DestinationCounter()
    parse_proc_tcp(lines4, "tcp", 4, PORTS, counter)
    parse_proc_tcp(lines6, "tcp6", 6, PORTS, counter)
    table = counter.table("proc")
    got: Counter[tuple[str, str, int, str]] = Counter()
    for dest in table.destinations:
        for state, n in dest.by_state.items():
            got[(dest.src, dest.dst, dest.dport, state)] += n
    assert got == expected
    assert sum(table.total_by_state.values()) == len(socks) + len(listen)
    used = [d.used for d in table.destinations]
    assert used == sorted(used, reverse=True)
