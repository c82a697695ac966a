"""The netlink sock_diag reader: same table as the /proc parser on a real kernel, and clear
errors (never a hang) on malformed replies fed as bytes."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from auditor.errors import AuditorError
from auditor.facts import netlink as nl
from tests.netns import REPO, Netns, make_netns, requires_netns

# --- parsing crafted bytes -------------------------------------------------------------------

SEQ = 7


def diag_msg(
    state: int,
    sport: int,
    dport: int,
    src: bytes,
    dst: bytes,
    *,
    family: int = socket.AF_INET,
    msg_type: int = nl.TCPDIAG_GETSOCK,
    inode: int = 0,
    extra: bytes = b"",
    seq: int = SEQ,
) -> bytes:
    body = struct.pack("=BBBB", family, state, 0, 0)
    body += struct.pack(">HH", sport, dport) + src.ljust(16, b"\0") + dst.ljust(16, b"\0")
    body += struct.pack("=I8xIIIII", 0, 0, 0, 0, 0, inode)
    body += extra
    return nl.NLMSG_HDR.pack(16 + len(body), msg_type, 2, seq, 0) + body


def done(seq: int = SEQ, status: int = 0) -> bytes:
    return nl.NLMSG_HDR.pack(20, nl.NLMSG_DONE, 2, seq, 0) + struct.pack("=i", status)


def error(err: int, seq: int = SEQ) -> bytes:
    return nl.NLMSG_HDR.pack(36, nl.NLMSG_ERROR, 0, seq, 0) + struct.pack("=i", err) + bytes(16)


V4A, V4B = socket.inet_aton("10.0.0.2"), socket.inet_aton("10.0.0.5")


def parse(*chunks: bytes) -> dict[tuple[str, str, int, str], int]:
    counts = nl.parse_dump_bytes(chunks, seq=SEQ)
    out: dict[tuple[str, str, int, str], int] = {}
    for (fam, state, key), n in counts.items():
        assert isinstance(fam, int) and isinstance(state, int) and isinstance(key, bytes)
        k = (*nl.decode_key(fam, key), nl.STATE_NAMES[state])
        out[k] = out.get(k, 0) + n
    return out


class WalkSpy(nl.DumpParser):
    """Records where the message-by-message path started, to see what the fast path took."""

    __slots__ = ("walks",)

    def __init__(self) -> None:
        super().__init__(nl.AGG_FORMAT, nl.TCPDIAG_GETSOCK, SEQ)
        self.walks: list[int] = []

    def _walk(self, mv: memoryview, off: int, n: int) -> None:
        self.walks.append(off)
        super()._walk(mv, off, n)


def test_uniform_buffer_takes_fast_path_and_counts() -> None:
    tw = nl.TIME_WAIT_STATE
    msgs = b"".join(diag_msg(tw, 40000 + i, 3306, V4A, V4B) for i in range(50))
    spy = WalkSpy()
    assert spy.feed(msgs + done())
    assert spy.walks == [len(msgs)]  # only NLMSG_DONE was left to the general path
    assert sum(spy.finish().values()) == 50
    assert parse(msgs, done()) == {("10.0.0.2", "10.0.0.5", 3306, "TIME_WAIT"): 50}
    # DONE in the same buffer as the messages
    assert parse(msgs + done()) == {("10.0.0.2", "10.0.0.5", 3306, "TIME_WAIT"): 50}


def test_mixed_lengths_and_families_take_the_general_path() -> None:
    mapped = b"\0" * 10 + b"\xff\xff" + V4A
    mapped_dst = b"\0" * 10 + b"\xff\xff" + V4B
    v6a, v6b = (
        socket.inet_pton(socket.AF_INET6, "fd00::2"),
        socket.inet_pton(socket.AF_INET6, "fd00::5"),
    )
    chunk = (
        diag_msg(1, 40001, 3306, V4A, V4B, extra=struct.pack("=HHB3x", 5, 8, 0))
        + diag_msg(nl.TIME_WAIT_STATE, 40002, 3306, V4A, V4B)
        + diag_msg(1, 40003, 3306, mapped, mapped_dst, family=socket.AF_INET6)
        + diag_msg(nl.TIME_WAIT_STATE, 40004, 443, v6a, v6b, family=socket.AF_INET6)
    )
    assert parse(chunk, done()) == {
        ("10.0.0.2", "10.0.0.5", 3306, "ESTABLISHED"): 2,
        ("10.0.0.2", "10.0.0.5", 3306, "TIME_WAIT"): 1,
        ("fd00::2", "fd00::5", 443, "TIME_WAIT"): 1,
    }


def test_fast_path_rejects_a_misaligned_batch() -> None:
    # Two 124-byte messages and one 96-byte one sum to a multiple of neither; a batch whose
    # total happens to divide by the first length must still be read message by message.
    a = diag_msg(1, 40001, 80, V4A, V4B, extra=bytes(28))  # 116 bytes
    b = diag_msg(6, 40002, 80, V4A, V4B, extra=bytes(0))  # 88 bytes
    c = diag_msg(6, 40003, 81, V4A, V4B, extra=bytes(56))  # 144 bytes
    assert len(a) + len(b) + len(c) == 348 == 3 * len(a)
    assert parse(a + b + c, done()) == {
        ("10.0.0.2", "10.0.0.5", 80, "ESTABLISHED"): 1,
        ("10.0.0.2", "10.0.0.5", 80, "TIME_WAIT"): 1,
        ("10.0.0.2", "10.0.0.5", 81, "TIME_WAIT"): 1,
    }


def test_fast_path_checks_every_header_of_a_uniform_batch() -> None:
    # Same length everywhere, but the third message is of another type: the batch must not
    # be counted as sockets, and the general path names the bad message.
    tw = nl.TIME_WAIT_STATE
    good = diag_msg(tw, 40000, 80, V4A, V4B)
    odd = nl.NLMSG_HDR.pack(len(good), 77, 2, SEQ, 0) + good[16:]
    spy = WalkSpy()
    with pytest.raises(nl.NetlinkReplyError, match="unexpected message type 77"):
        spy.feed(good * 2 + odd + good * 3)
    assert spy.walks == [0]


@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        ([diag_msg(6, 1, 2, V4A, V4B)], "without NLMSG_DONE"),
        ([diag_msg(6, 1, 2, V4A, V4B)[:50]], "does not fit"),
        ([b"\x01\x02\x03"], "truncated message header"),
        ([diag_msg(6, 1, 2, V4A, V4B)[:40]], "does not fit"),
        ([nl.NLMSG_HDR.pack(40, nl.TCPDIAG_GETSOCK, 2, SEQ, 0) + bytes(24)], "short inet_diag"),
        ([nl.NLMSG_HDR.pack(8, nl.TCPDIAG_GETSOCK, 2, SEQ, 0)], "length 8"),
        ([nl.NLMSG_HDR.pack(0, nl.TCPDIAG_GETSOCK, 2, SEQ, 0)], "length 0"),
        ([error(-22 - 83)], "kernel returned error"),
        ([done(status=-105)], "ENOBUFS"),
        ([done(seq=99)], "sequence 99"),
        ([done() + diag_msg(6, 1, 2, V4A, V4B)], "after NLMSG_DONE"),
        ([nl.NLMSG_HDR.pack(16, 77, 0, SEQ, 0)], "unexpected message type 77"),
        ([nl.NLMSG_HDR.pack(16, nl.NLMSG_ERROR, 0, SEQ, 0)], "truncated NLMSG_ERROR"),
        ([error(0)], "unexpected ACK"),
        ([b""], "without NLMSG_DONE"),
    ],
)
def test_malformed_replies_raise_one_clear_line(chunks: list[bytes], message: str) -> None:
    with pytest.raises(nl.NetlinkReplyError) as exc:
        nl.parse_dump_bytes(chunks, seq=SEQ)
    assert isinstance(exc.value, AuditorError)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)
    assert str(exc.value).startswith("netlink sock_diag: ")


def test_refusal_is_not_a_parse_error() -> None:
    import errno

    with pytest.raises(nl.NetlinkRefused):
        nl.parse_dump_bytes([error(-errno.EPERM)], seq=SEQ)


def test_every_truncation_of_a_valid_dump_is_an_error_or_a_prefix() -> None:
    """Cut a valid two-buffer dump at every byte: each cut raises or parses, never hangs."""
    tw = nl.TIME_WAIT_STATE
    full = b"".join(diag_msg(tw, 40000 + i, 80, V4A, V4B) for i in range(4)) + done()
    for cut in range(len(full)):
        with pytest.raises(nl.NetlinkReplyError):
            nl.parse_dump_bytes([full[:cut]], seq=SEQ)


def run_bc(bc: bytes, sport: int) -> bool:
    """inet_diag_bc_run for port ops, and inet_diag_bc_audit's yes-chain rule, in Python."""
    ops = list(struct.iter_unpack("=BBH", bc))
    # audit: following `yes` from the start must land exactly on the end
    pos = 0
    while pos < len(bc):
        pos += ops[pos // 4][1]
    assert pos == len(bc)
    pos = 0
    while 0 <= pos < len(bc):
        code, yes, no = ops[pos // 4]
        port = ops[pos // 4 + 1][2]
        ok = sport >= port if code == nl.INET_DIAG_BC_S_GE else sport <= port
        pos += yes if ok else no
    return pos == len(bc)


@pytest.mark.parametrize(("low", "high"), [(32768, 60999), (1, 65535), (0, 100), (1024, 1024)])
def test_port_bytecode_selects_inside_and_outside(low: int, high: int) -> None:
    inside = nl.port_bytecode(low, high)
    outside = nl.port_complement_bytecode(low, high)
    for port in {0, 1, low - 1, low, low + 1, high - 1, high, high + 1, 65535} - {-1, 65536}:
        assert run_bc(inside, port) == (low <= port <= high)
        if outside is not None:
            assert run_bc(outside, port) == (not low <= port <= high)
    assert (outside is None) == (low == 0 and high == 65535)


# --- a real kernel, inside a test-made namespace --------------------------------------------

WORKLOAD = r"""
import socket, sys, time
held = []
def server(family, addr, port, v6only=None):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if v6only is not None:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
    s.bind((addr, port)); s.listen(128); held.append(s); return s
def pair(srv, family, addr, port, src=None):
    c = socket.socket(family, socket.SOCK_STREAM)
    if src: c.bind((src, 0))
    c.connect((addr, port)); a, _ = srv.accept(); return c, a
s4 = server(socket.AF_INET, "127.0.0.1", 5000)
s6 = server(socket.AF_INET6, "::1", 5001)
sd = server(socket.AF_INET6, "::", 5002, v6only=0)
# ESTABLISHED, v4 from two sources, v6, and v4-mapped (v6 socket to ::ffff:127.0.0.1)
for _ in range(5): held.extend(pair(s4, socket.AF_INET, "127.0.0.1", 5000))
for _ in range(2): held.extend(pair(s4, socket.AF_INET, "127.0.0.1", 5000, "127.0.0.2"))
for _ in range(3): held.extend(pair(s6, socket.AF_INET6, "::1", 5001))
for _ in range(4): held.extend(pair(sd, socket.AF_INET6, "::ffff:127.0.0.1", 5002))
for _ in range(2): held.extend(pair(sd, socket.AF_INET, "127.0.0.1", 5002))
# TIME_WAIT (client closes first)
for fam, srv, addr, port, n in ((socket.AF_INET, s4, "127.0.0.1", 5000, 7),
                                (socket.AF_INET6, s6, "::1", 5001, 4),
                                (socket.AF_INET6, sd, "::ffff:127.0.0.1", 5002, 3)):
    for _ in range(n):
        c, a = pair(srv, fam, addr, port); c.close(); a.close()
# CLOSE_WAIT on the client, FIN_WAIT2 on the server (server closes first, client keeps it)
for _ in range(3):
    c, a = pair(s4, socket.AF_INET, "127.0.0.1", 5000)
    a.shutdown(socket.SHUT_WR)
    held.extend((c, a))
time.sleep(0.3)
print("ready", flush=True)
sys.stdin.read()
"""

COMPARE = r"""
import json
from auditor.facts.model import to_jsonable
from auditor.facts.sysctl import collect_sysctls, port_range
from auditor.facts.sockets import collect_sockets_proc
from auditor.facts.netlink import scan_sockets
from auditor.hostfs import HostRoot
host = HostRoot()
values, missing = collect_sysctls(host)
ports = port_range(values, missing, host)
a = scan_sockets(ports.low, ports.high).table()
b = collect_sockets_proc(host, ports)
print(json.dumps({"netlink": to_jsonable(a), "proc": to_jsonable(b)}))
"""


@contextmanager
def workload(ns: Netns, script: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns.name, sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "ready", line
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


@requires_netns
@pytest.mark.netns
def test_netlink_table_equals_proc_table_for_mixed_states() -> None:
    with make_netns() as ns:
        ns.run(["ip", "addr", "add", "127.0.0.2/8", "dev", "lo"], check=False)
        ns.sysctl_write("net.ipv4.ip_local_port_range", "20000 40000")
        with workload(ns, WORKLOAD):
            got = json.loads(ns.python("-c", COMPARE).stdout)
    nlt, proc = got["netlink"], got["proc"]
    assert nlt["source"] == "netlink" and proc["source"] == "proc"

    def dests(t: dict[str, object]) -> dict[tuple[str, str, int], dict[str, int]]:
        return {(d["src"], d["dst"], d["dport"]): d["by_state"] for d in t["destinations"]}  # type: ignore[attr-defined, index]

    assert dests(nlt) == dests(proc)
    assert nlt["total_by_state"] == proc["total_by_state"]
    assert {(li["addr"], li["port"], li["family"]) for li in nlt["listeners"]} == {
        (li["addr"], li["port"], li["family"]) for li in proc["listeners"]
    }
    d = dests(nlt)
    # the expected shape, so an empty or one-sided table cannot pass
    assert d[("127.0.0.1", "127.0.0.1", 5000)] == {
        "CLOSE_WAIT": 3,
        "ESTABLISHED": 5,
        "TIME_WAIT": 7,
    }
    assert d[("127.0.0.2", "127.0.0.1", 5000)] == {"ESTABLISHED": 2}
    assert d[("::1", "::1", 5001)] == {"ESTABLISHED": 3, "TIME_WAIT": 4}
    # v4-mapped v6 sockets and plain v4 sockets to the same server share one destination
    assert d[("127.0.0.1", "127.0.0.1", 5002)] == {"ESTABLISHED": 6, "TIME_WAIT": 3}
    assert nlt["total_by_state"]["LISTEN"] == 3
    assert nlt["total_by_state"]["FIN_WAIT2"] == 3
    assert nlt["total_by_state"]["ESTABLISHED"] == 2 * (5 + 2 + 3 + 4 + 2)
    listeners = {(li["addr"], li["port"]): li for li in nlt["listeners"]}
    assert listeners[("127.0.0.1", 5000)]["backlog"] == 128
    assert listeners[("127.0.0.1", 5000)]["queued"] == 0


def test_refused_netlink_falls_back_to_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where sock_diag is refused (EPERM in a sandbox, no module), /proc/net/tcp* answers."""
    from auditor.facts.livesockets import collect_sockets_live
    from auditor.facts.model import PortRange, Unavailable
    from auditor.hostfs import HostRoot

    def refused(*_a: object, **_k: object) -> None:
        raise nl.NetlinkRefused("EPERM")

    monkeypatch.setattr(nl, "scan_sockets", refused)
    got = collect_sockets_live(HostRoot(), PortRange(32768, 60999, (), 28232))
    assert not isinstance(got, Unavailable) and got.source == "proc"
