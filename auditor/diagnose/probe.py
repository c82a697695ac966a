"""One TCP connect per address, bounded by a timeout, classified by errno as the client sees it.

The classification is the source document's: ECONNREFUSED is "connection refused" (a RST came
back), no answer before the timeout is "connection timeout", EADDRNOTAVAIL is "cannot assign
requested address" (no local port left for this destination), EHOSTUNREACH / ENETUNREACH
(and EACCES / EPERM / EINVAL from prohibit and blackhole routes or a local OUTPUT rule) mean an
ICMP error or the routing table refused it, EMFILE / ENFILE that no descriptor was left.

The errno alone cannot tell a closed port (RST) from a REJECT rule (ICMP port-unreachable gives
ECONNREFUSED too), nor a REJECT on the server from a router saying the host is unreachable. With
IP_RECVERR set, the kernel also queues the ICMP message itself on the socket's error queue,
with its type, code and the address of the host that sent it (ip(7), `SO_EE_OFFENDER`), so the
probe reads what the network said, not only what the errno summarises.
"""

from __future__ import annotations

import errno
import socket
import struct

from auditor.diagnose.model import ConnectResult, IcmpError
from auditor.facts.model import endpoint

IP_RECVERR = 11
IPV6_RECVERR = 25
MSG_ERRQUEUE = 0x2000
_EE = struct.Struct("=IBBBBII")
"""struct sock_extended_err: errno, origin, type, code, pad, info, data; the offender follows."""
_ORIGIN_ICMP, _ORIGIN_ICMP6 = 2, 3

ICMP4_UNREACH = {
    0: "net-unreachable",
    1: "host-unreachable",
    2: "protocol-unreachable",
    3: "port-unreachable",
    6: "net-unknown",
    7: "host-unknown",
    9: "net-prohibited",
    10: "host-prohibited",
    13: "admin-prohibited",
}
ICMP6_UNREACH = {
    0: "no-route",
    1: "admin-prohibited",
    3: "addr-unreachable",
    4: "port-unreachable",
    5: "policy-fail",
    6: "reject-route",
}

_OUTCOME = {
    errno.ECONNREFUSED: "refused",
    errno.ETIMEDOUT: "timeout",
    errno.EADDRNOTAVAIL: "addr-not-available",
    errno.EHOSTUNREACH: "unreachable",
    errno.ENETUNREACH: "unreachable",
    errno.EACCES: "unreachable",
    errno.EPERM: "unreachable",
    errno.EINVAL: "unreachable",
    errno.EMFILE: "descriptor-limit",
    errno.ENFILE: "descriptor-limit",
    errno.ECONNRESET: "reset",
}
"""ECONNRESET from connect(): the handshake completed and the server reset at once, before
the connect call returned."""


def sockaddr(addr: str, port: int) -> tuple[int, tuple[object, ...]]:
    """(family, sockaddr) for a literal address, scope id included for `fe80::1%eth0`."""
    if "%" not in addr:
        if ":" in addr:
            return socket.AF_INET6, (addr, port, 0, 0)
        return socket.AF_INET, (addr, port)
    info = socket.getaddrinfo(
        addr, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, flags=socket.AI_NUMERICHOST
    )[0]
    return info[0], tuple(info[4])


def classify(exc: OSError) -> ConnectResult:
    if isinstance(exc, TimeoutError) and exc.errno is None:
        return ConnectResult(
            outcome="timeout", errno_name="", message="no answer before the timeout"
        )
    code = exc.errno or 0
    name = errno.errorcode.get(code, str(code))
    outcome = _OUTCOME.get(code, "unreachable")
    return ConnectResult(outcome=outcome, errno_name=name, message=exc.strerror or str(exc))


def icmp_name(origin: int, type_: int, code: int) -> str:
    if origin == _ORIGIN_ICMP:
        if type_ == 3:
            return ICMP4_UNREACH.get(code, f"unreachable code {code}")
        return "time-exceeded" if type_ == 11 else f"icmp type {type_} code {code}"
    if type_ == 1:
        return ICMP6_UNREACH.get(code, f"unreachable code {code}")
    return "time-exceeded" if type_ == 3 else f"icmpv6 type {type_} code {code}"


def parse_errqueue(ancdata: list[tuple[int, int, bytes]]) -> IcmpError | None:
    """The ICMP error in the control messages of a MSG_ERRQUEUE read, if there is one."""
    for _level, _type, data in ancdata:
        if len(data) < _EE.size:
            continue
        _err, origin, type_, code, _pad, _info, _data = _EE.unpack_from(data)
        if origin not in (_ORIGIN_ICMP, _ORIGIN_ICMP6):
            continue
        sender = ""
        off = data[_EE.size :]
        if len(off) >= 8 and struct.unpack_from("=H", off)[0] == socket.AF_INET:
            sender = socket.inet_ntop(socket.AF_INET, off[4:8])
        elif len(off) >= 24 and struct.unpack_from("=H", off)[0] == socket.AF_INET6:
            sender = socket.inet_ntop(socket.AF_INET6, off[8:24])
        return IcmpError(type=type_, code=code, name=icmp_name(origin, type_, code), sender=sender)
    return None


def read_icmp(sock: socket.socket) -> IcmpError | None:
    """Drain the socket's error queue; the last ICMP error queued, or None."""
    found: IcmpError | None = None
    sock.setblocking(False)  # a socket with a timeout would first wait for data to read
    for _ in range(8):
        try:
            _, ancdata, _, _ = sock.recvmsg(512, 1024, MSG_ERRQUEUE | socket.MSG_DONTWAIT)
        except OSError:
            break
        found = parse_errqueue(ancdata) or found
    return found


def connect(addr: str, port: int, timeout: float) -> tuple[ConnectResult, socket.socket | None]:
    """Connect once; the open socket is returned for the protocol check (caller closes it)."""
    family, sa = sockaddr(addr, port)
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        return classify(exc), None
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
    except OSError:
        pass
    sock.settimeout(timeout)
    try:
        sock.connect(sa)
    except OSError as exc:
        icmp = read_icmp(sock)
        sock.close()
        result = classify(exc)
        if icmp is not None:
            result = ConnectResult(
                outcome=result.outcome,
                errno_name=result.errno_name,
                message=result.message,
                icmp=icmp,
            )
        return result, None
    local = sock.getsockname()
    return ConnectResult(outcome="connected", local=endpoint(str(local[0]), local[1])), sock
