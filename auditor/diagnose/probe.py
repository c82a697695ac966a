"""One TCP connect per address, bounded by a timeout, classified by errno as the client sees it.

The classification is the source document's: ECONNREFUSED is "connection refused" (a RST came
back), no answer before the timeout is "connection timeout", EADDRNOTAVAIL is "cannot assign
requested address" (no local port left for this destination), EHOSTUNREACH / ENETUNREACH
(and EACCES / EPERM / EINVAL from prohibit and blackhole routes or a local OUTPUT rule) mean an
ICMP error or the routing table refused it, EMFILE / ENFILE that no descriptor was left.
"""

from __future__ import annotations

import errno
import socket

from auditor.diagnose.model import ConnectResult

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
}


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


def connect(addr: str, port: int, timeout: float) -> tuple[ConnectResult, socket.socket | None]:
    """Connect once; the open socket is returned for the protocol check (caller closes it)."""
    family, sa = sockaddr(addr, port)
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        return classify(exc), None
    sock.settimeout(timeout)
    try:
        sock.connect(sa)
    except OSError as exc:
        sock.close()
        return classify(exc), None
    local = sock.getsockname()
    host = f"[{local[0]}]" if family == socket.AF_INET6 else str(local[0])
    return ConnectResult(outcome="connected", local=f"{host}:{local[1]}"), sock
