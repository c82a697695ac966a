"""The netlink sock_diag reader: same table as the /proc parser on a real kernel, and clear
errors (never a hang) on malformed replies fed as bytes."""

from __future__ import annotations

import json
import socket
import struct

import pytest

from auditor.errors import AuditorError
from auditor.facts import netlink as nl
from tests.netns import COMPARE_READERS, make_netns, requires_netns, workload

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


class StepSpy(nl.DumpParser):
    """Records the messages the one-at-a-time path read, to see what the fast path took."""

    __slots__ = ("steps",)

    def __init__(self) -> None:
        super().__init__(nl.AGG_FORMAT, nl.TCPDIAG_GETSOCK, SEQ)
        self.steps: list[int] = []

    def _step(self, mv: memoryview, off: int, n: int) -> int:
        self.steps.append(off)
        return super()._step(mv, off, n)


def test_uniform_buffer_takes_fast_path_and_counts() -> None:
    tw = nl.TIME_WAIT_STATE
    msgs = b"".join(diag_msg(tw, 40000 + i, 3306, V4A, V4B) for i in range(50))
    spy = StepSpy()
    assert spy.feed(msgs + done())
    assert spy.steps == [len(msgs)]  # only NLMSG_DONE was left to the general path
    assert sum(spy.finish().values()) == 50
    assert parse(msgs, done()) == {("10.0.0.2", "10.0.0.5", 3306, "TIME_WAIT"): 50}
    # DONE in the same buffer as the messages
    assert parse(msgs + done()) == {("10.0.0.2", "10.0.0.5", 3306, "TIME_WAIT"): 50}


def test_bound_sockets_in_a_time_wait_dump_keep_their_ports_apart() -> None:
    # bound-but-inactive sockets (state CLOSE, no peer) of the TIME_WAIT messages' very length,
    # before, among and after them: a run must not take them, whatever their length
    tw, close = nl.TIME_WAIT_STATE, nl.CLOSE_STATE
    bound = [diag_msg(close, 50000 + i, 0, V4A, b"") for i in range(3)]
    run_a = b"".join(diag_msg(tw, 40000 + i, 80, V4A, V4B) for i in range(30))
    run_b = b"".join(diag_msg(tw, 42000 + i, 80, V4A, V4B) for i in range(20))
    longer = diag_msg(close, 50010, 0, V4A, b"", extra=bytes(12))
    fields: list[bytes] = []
    ports: set[int] = set()
    parser = nl.TimeWaitBoundParser(nl.TCPDIAG_GETSOCK, SEQ, fields, ports)
    buffer = bound[0] + bound[1] + run_a + bound[2] + run_b + longer + done()
    assert parser.feed(buffer)
    counts = parser.finish()
    assert ports == {50000, 50001, 50002, 50010}
    assert nl.port_set(fields) == set(range(40000, 40030)) | set(range(42000, 42020))
    assert sum(n for (_f, state, _k), n in counts.items() if state == close) == 4
    assert sum(n for (_f, state, _k), n in counts.items() if state == tw) == 50


def test_a_longer_message_ends_a_run_and_the_next_run_is_fast_again() -> None:
    tw, est = nl.TIME_WAIT_STATE, 1
    run_a = b"".join(diag_msg(tw, 40000 + i, 80, V4A, V4B) for i in range(30))
    live = diag_msg(est, 41000, 80, V4A, V4B, extra=bytes(12))
    run_b = b"".join(diag_msg(tw, 42000 + i, 81, V4A, V4B) for i in range(40))
    spy = StepSpy()
    assert spy.feed(run_a + live + run_b + done())
    # the lone live message and DONE went one at a time; both TIME_WAIT runs in C
    assert spy.steps == [len(run_a), len(run_a) + len(live) + len(run_b)]
    assert parse(run_a + live + run_b, done()) == {
        ("10.0.0.2", "10.0.0.5", 80, "TIME_WAIT"): 30,
        ("10.0.0.2", "10.0.0.5", 80, "ESTABLISHED"): 1,
        ("10.0.0.2", "10.0.0.5", 81, "TIME_WAIT"): 40,
    }


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
    spy = StepSpy()
    with pytest.raises(nl.NetlinkReplyError, match="unexpected message type 77"):
        spy.feed(good * 2 + odd + good * 3)
    assert spy.steps == [2 * len(good)]  # two counted in C, then the bad one read alone
    assert sum(spy.counts.values()) == 2


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


def audit_bc(bc: bytes) -> None:
    """`inet_diag_bc_audit` for the ops we emit, in Python: each op's `yes` within bounds and
    the `yes` chain ending exactly at the end; each `no` within bounds and, when it lands inside
    the program, on an op boundary of that chain (`valid_cc`)."""

    def valid_cc(cc: int) -> bool:
        rest = len(bc)
        while rest >= 0:
            if cc > rest:
                return False
            if cc == rest:
                return True
            yes = bc[len(bc) - rest + 1]
            if yes < 4 or yes & 3:
                return False
            rest -= yes
        return False

    rest = len(bc)
    while rest > 0:
        code, yes, no = struct.unpack_from("=BBH", bc, len(bc) - rest)
        assert code in (
            nl.INET_DIAG_BC_JMP,
            nl.INET_DIAG_BC_S_GE,
            nl.INET_DIAG_BC_S_LE,
            nl.INET_DIAG_BC_D_LE,
        )
        min_len = 4 if code == nl.INET_DIAG_BC_JMP else 8
        assert min_len <= no <= rest + 4 and not no & 3
        assert no >= rest or valid_cc(rest - no)
        assert min_len <= yes <= rest + 4 and not yes & 3
        rest -= yes
    assert rest == 0


def run_bc(bc: bytes, sport: int, dport: int = 1) -> bool:
    """`inet_diag_bc_run` for port ops and JMP, in Python; audited first."""
    audit_bc(bc)
    pos = 0
    while 0 <= pos < len(bc):
        code, yes, no = struct.unpack_from("=BBH", bc, pos)
        if code == nl.INET_DIAG_BC_JMP:
            ok = False
        else:
            port = struct.unpack_from("=BBH", bc, pos + 4)[2]
            if code == nl.INET_DIAG_BC_D_LE:
                ok = dport <= port
            else:
                ok = sport >= port if code == nl.INET_DIAG_BC_S_GE else sport <= port
        pos += yes if ok else no
    return pos == len(bc)


@pytest.mark.parametrize(
    ("low", "high", "listen"),
    [
        (32768, 60999, set()),
        (1, 65535, set()),
        (0, 100, set()),
        (1024, 1024, set()),
        (1024, 65535, {5000, 5001, 5002, 8080, 65535, 80, 70000 - 5000}),
        (0, 65535, {1, 2, 3, 443}),
        (32768, 60999, {32768, 60999, 40000}),
    ],
)
def test_port_bytecode_selects_clients_and_the_complement_the_rest(
    low: int, high: int, listen: set[int]
) -> None:
    ranges = nl.listening_ranges(listen, low, high)
    assert all(low <= a <= b <= high for a, b in ranges)
    inside = nl.port_bytecode(low, high, ranges)
    outside = nl.port_complement_bytecode(low, high, ranges)
    edges = {0, 1, low - 1, low, low + 1, high - 1, high, high + 1, 65535}
    edges |= {p + d for p in listen for d in (-1, 0, 1)}
    for port in {p for p in edges if 0 <= p <= 65535}:
        client = low <= port <= high and port not in listen
        assert run_bc(inside, port) == client, port
        if outside is not None:
            assert run_bc(outside, port) == (not client), port
    assert (outside is None) == (low == 0 and high == 65535 and not ranges)
    # with the bound-but-inactive sockets (no peer port): theirs in the range, listening or not
    both = nl.bound_and_clients_bytecode(low, high, ranges)
    for port in {p for p in edges if 0 <= p <= 65535}:
        client = low <= port <= high and port not in listen
        assert run_bc(both, port, dport=443) == client, port
        assert run_bc(both, port, dport=0) == (low <= port <= high), port


def test_listening_ranges_merge_and_stay_bounded() -> None:
    assert nl.listening_ranges({5000, 5001, 5002, 5004, 80}, 1024, 65535) == [
        (5000, 5002),
        (5004, 5004),
    ]
    many = set(range(2000, 2000 + 2 * (nl.MAX_EXCLUDED_RANGES + 10), 2))
    ranges = nl.listening_ranges(many, 1024, 65535)
    assert len(ranges) == nl.MAX_EXCLUDED_RANGES
    program = nl.port_complement_bytecode(1024, 65535, ranges)
    assert program is not None and len(program) + 4 <= 0xFFFF  # fits an nlattr
    audit_bc(program)


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
# A server listening inside the ephemeral range (20000-40000), v4 and dual-stack v6: its
# accepted sockets, and its TIME_WAIT where it closes first, are on the listening port and must
# not become destinations (one per client); its clients' sockets are.
si = server(socket.AF_INET, "127.0.0.1", 30000)
for _ in range(4): held.extend(pair(si, socket.AF_INET, "127.0.0.1", 30000))
for _ in range(5):
    c, a = pair(si, socket.AF_INET, "127.0.0.1", 30000); a.close(); time.sleep(0.01); c.close()
si6 = server(socket.AF_INET6, "::", 30001, v6only=0)
for _ in range(2): held.extend(pair(si6, socket.AF_INET, "127.0.0.1", 30001))
time.sleep(0.3)
print("ready", flush=True)
sys.stdin.read()
"""


@requires_netns
@pytest.mark.netns
def test_netlink_table_equals_proc_table_for_mixed_states() -> None:
    with make_netns() as ns:
        ns.run(["ip", "addr", "add", "127.0.0.2/8", "dev", "lo"], check=False)
        ns.sysctl_write("net.ipv4.ip_local_port_range", "20000 40000")
        with workload(ns, WORKLOAD) as ready:
            assert ready == "ready"
            got = json.loads(ns.python("-c", COMPARE_READERS).stdout)
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
    # the clients of the server listening inside the range are destinations; the server's
    # own sockets (accepted, and TIME_WAIT where it closed first) only count by state
    assert d[("127.0.0.1", "127.0.0.1", 30000)] == {"ESTABLISHED": 4}
    assert d[("127.0.0.1", "127.0.0.1", 30001)] == {"ESTABLISHED": 2}
    assert len(d) == 6
    assert nlt["total_by_state"]["LISTEN"] == 5
    assert nlt["total_by_state"]["FIN_WAIT2"] == 3
    assert nlt["total_by_state"]["ESTABLISHED"] == 2 * (5 + 2 + 3 + 4 + 2 + 4 + 2)
    assert nlt["total_by_state"]["TIME_WAIT"] == 7 + 4 + 3 + 5
    listeners = {(li["addr"], li["port"]): li for li in nlt["listeners"]}
    assert listeners[("127.0.0.1", 5000)]["backlog"] == 128
    assert listeners[("127.0.0.1", 5000)]["queued"] == 0


def test_refused_netlink_falls_back_to_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where sock_diag is refused (EPERM in a sandbox, no module), /proc/net/tcp* answers."""
    from auditor.facts.livesockets import collect_sockets_and_port_use
    from auditor.facts.model import PortRange, Unavailable
    from auditor.hostfs import HostRoot

    def refused(*_a: object, **_k: object) -> None:
        raise nl.NetlinkRefused("EPERM")

    monkeypatch.setattr(nl, "scan_sockets", refused)
    got, _use = collect_sockets_and_port_use(HostRoot(), PortRange(32768, 60999, (), 28232))
    assert not isinstance(got, Unavailable) and got.source == "proc"


BIG_PROGRAMS = r"""
import json
from auditor.facts import netlink as nl
low, high = 20000, 40000
with nl.DiagSocket() as d:
    assert d.legacy
    sport = "=16xBB2x2s"  # (family, state, local port)
    plain = d.dump(nl.NOT_LISTEN_MASK, sport, nl.port_bytecode(low, high))
    clients = {int.from_bytes(k[2], "big") for k in plain}
    # as many separate ranges as a program may hold, none on a client's port...
    free = [p for p in range(low, high + 1, 2) if p not in clients]
    ranges = nl.listening_ranges(free, low, high)
    kept = d.dump(nl.NOT_LISTEN_MASK, sport, nl.port_bytecode(low, high, ranges))
    rest = d.dump(nl.NOT_LISTEN_MASK, sport, nl.port_complement_bytecode(low, high, ranges))
    # ...then one of them on the first client's port
    first = min(clients)
    hit = sorted(ranges[1:] + [(first, first)])
    kept_hit = d.dump(nl.NOT_LISTEN_MASK, sport, nl.port_bytecode(low, high, hit))
    rest_hit = d.dump(nl.NOT_LISTEN_MASK, sport, nl.port_complement_bytecode(low, high, hit))
    print(json.dumps({
        "legacy": d.legacy, "ranges": len(ranges), "clients": len(clients),
        "plain": sum(plain.values()), "kept": sum(kept.values()), "rest": sum(rest.values()),
        "kept_hit": sum(kept_hit.values()), "rest_hit": sum(rest_hit.values()),
        "on_first": sum(n for k, n in plain.items() if int.from_bytes(k[2], "big") == first),
    }))
"""


@requires_netns
@pytest.mark.netns
def test_the_kernel_accepts_programs_with_the_most_excluded_ranges() -> None:
    """A program the kernel refused (EINVAL) would quietly send the scan to /proc: check the
    largest ones against a real kernel, and that they keep and drop the right sockets."""
    with make_netns() as ns:
        ns.sysctl_write("net.ipv4.ip_local_port_range", "20000 40000")
        with workload(ns, WORKLOAD) as ready:
            assert ready == "ready"
            got = json.loads(ns.python("-c", BIG_PROGRAMS).stdout)
    assert got["legacy"] is True  # no request was refused
    assert got["ranges"] == nl.MAX_EXCLUDED_RANGES
    assert got["clients"] >= 20
    # the workload's sockets in the range: clients, plus the servers' on 30000 and 30001
    assert got["kept"] == got["plain"]
    assert got["rest"] > 0
    assert got["on_first"] >= 1
    assert got["kept_hit"] == got["plain"] - got["on_first"]
    assert got["rest_hit"] == got["rest"] + got["on_first"]


@pytest.mark.parametrize(
    ("family", "src", "dst"),
    [
        (socket.AF_INET, V4A + bytes(12), V4B + bytes(12)),
        (socket.AF_INET6, bytes(10) + b"\xff\xff" + V4A, bytes(10) + b"\xff\xff" + V4B),
        (
            socket.AF_INET6,
            socket.inet_pton(socket.AF_INET6, "2001:db8::2"),
            socket.inet_pton(socket.AF_INET6, "2001:db8::5"),
        ),
    ],
)
def test_a_destination_names_the_raw_keys_it_was_decoded_from(
    family: int, src: bytes, dst: bytes
) -> None:
    """Later dumps (reusable TIME_WAIT, owners) match raw keys that the scan no longer keeps:
    they are encoded again from the destination, and must include the one read."""
    key = (443).to_bytes(2, "big") + src + dst
    dest = nl.decode_key(family, key)
    forms = nl.encode_keys(dest)
    assert (family, key) in forms
    assert all(nl.decode_key(f, k) == dest for f, k in forms)
