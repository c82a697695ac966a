"""Runtime sysctl values, and the ephemeral port range derived from them."""

from __future__ import annotations

from auditor.errors import InputError
from auditor.facts.model import PortRange, Unavailable
from auditor.hostfs import HostRoot

RUNTIME_KEYS: tuple[str, ...] = (
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_tw_reuse",
    "net.ipv4.tcp_tw_reuse_delay",
    "net.ipv4.tcp_timestamps",
    "net.ipv4.tcp_max_tw_buckets",
    "net.ipv4.tcp_ehash_entries",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_max_syn_backlog",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.tcp_tw_recycle",
    "net.ipv6.bindv6only",
    "net.core.somaxconn",
    "net.core.netdev_max_backlog",
    "fs.file-max",
    "fs.nr_open",
    "fs.file-nr",
    "net.netfilter.nf_conntrack_count",
    "net.netfilter.nf_conntrack_max",
)
"""The keys rules may read as `sysctl.<key>`. tcp_tw_recycle is read to prove it is gone."""


def collect_sysctls(
    host: HostRoot, keys: tuple[str, ...] = RUNTIME_KEYS
) -> tuple[dict[str, str], dict[str, str]]:
    """(values, missing-with-reason) for `keys` from `<proc>/sys`."""
    values: dict[str, str] = {}
    missing: dict[str, str] = {}
    for key in keys:
        got = host.read_sysctl(key)
        if isinstance(got, Unavailable):
            missing[key] = got.reason
        else:
            values[key] = got
    return values, missing


def parse_reserved_ports(text: str, source: str) -> tuple[tuple[int, int], ...]:
    """`ip_local_reserved_ports` ("8080,9000-9009" or empty) as inclusive ranges."""
    try:
        return PortRange.parse_reserved(text)
    except ValueError as exc:
        raise InputError(source, None, str(exc)) from None


def port_range(
    values: dict[str, str], missing: dict[str, str], host: HostRoot
) -> PortRange | Unavailable:
    """The ephemeral range with reserved ports taken out: what one destination can use."""
    key = "net.ipv4.ip_local_port_range"
    if key not in values:
        return Unavailable(missing.get(key, f"{key} not read"))
    reserved_key = "net.ipv4.ip_local_reserved_ports"
    reserved_text = values.get(reserved_key, "")
    parse_reserved_ports(reserved_text, str(host.sysctl_path(reserved_key)))
    try:
        return PortRange.parse(values[key], reserved_text)
    except ValueError as exc:
        raise InputError(str(host.sysctl_path(key)), 1, str(exc)) from None
