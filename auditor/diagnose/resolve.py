"""Resolve the target the way the client's libc does, and say where the answer came from.

`getaddrinfo` is what almost every client calls, so its answer (every A and AAAA, in its order)
is what the client tries. The hosts file is read separately only to tell the operator that an
answer came from a local override rather than DNS, the classic "name points at the wrong
server" (refused-3, timeout-5).
"""

from __future__ import annotations

import ipaddress
import socket

from auditor.diagnose.model import HostsEntry, Resolution, Target
from auditor.facts.model import Unavailable
from auditor.hostfs import HostRoot


def hosts_entries(host: HostRoot, name: str) -> tuple[HostsEntry, ...]:
    """Lines of `/etc/hosts` (under `host.root`) that name `name`, case-insensitively."""
    path = host.path("/etc/hosts")
    text = host.read_text(path)
    if isinstance(text, Unavailable):
        return ()
    wanted = name.lower().rstrip(".")
    found: list[HostsEntry] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        if any(f.lower().rstrip(".") == wanted for f in fields[1:]):
            found.append(HostsEntry(file="/etc/hosts", line=lineno, address=fields[0]))
    return tuple(found)


_RESOLVER_FAILURES = {socket.EAI_AGAIN, socket.EAI_FAIL}
_NO_SUCH_NAME = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}


def nameservers(host: HostRoot) -> tuple[str, ...]:
    """The `nameserver` addresses of /etc/resolv.conf, in order (empty when unreadable)."""
    text = host.read_text(host.path("/etc/resolv.conf"))
    if isinstance(text, Unavailable):
        return ()
    found: list[str] = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            found.append(fields[1])
    return tuple(found)


def _failure(exc: socket.gaierror) -> str:
    if exc.errno in _RESOLVER_FAILURES:
        return "resolver-failure"
    if exc.errno in _NO_SUCH_NAME:
        return "no-such-name"
    return "other"


def _plain(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """An IPv4-mapped IPv6 address (`::ffff:10.0.0.5`) is the IPv4 address it carries."""
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return str(mapped or ip)


def resolve(target: Target, host: HostRoot, expect_ip: str | None = None) -> Resolution:
    """Every address getaddrinfo gives for the target, deduplicated in the order given."""
    expect = _plain(ipaddress.ip_address(expect_ip)) if expect_ip else None
    if target.is_literal:
        return Resolution(addresses=(target.host,), expect_ip=expect)
    if any(len(label) > 63 for label in target.host.rstrip(".").split(".")):
        return Resolution(
            addresses=(),
            error=f"{target.host[:40]}...: a DNS label is longer than 63 characters",
            expect_ip=expect,
            error_kind="invalid-name",
        )
    try:
        infos = socket.getaddrinfo(
            target.host, target.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
    except socket.gaierror as exc:
        kind = _failure(exc)
        return Resolution(
            addresses=(),
            hosts_entries=hosts_entries(host, target.host),
            error=f"{target.host}: {exc.strerror}",
            expect_ip=expect,
            error_kind=kind,
            nameservers=nameservers(host),
        )
    except UnicodeError as exc:
        return Resolution(
            addresses=(),
            error=f"{target.host}: not a valid DNS name ({exc})",
            expect_ip=expect,
            error_kind="invalid-name",
        )
    addresses: list[str] = []
    for family, _, _, _, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        addr = str(sockaddr[0])
        if addr not in addresses:
            addresses.append(addr)
    return Resolution(
        addresses=tuple(addresses),
        hosts_entries=hosts_entries(host, target.host),
        expect_ip=expect,
    )
