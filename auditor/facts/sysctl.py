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
    out: list[tuple[int, int]] = []
    for item in text.replace(" ", "").split(","):
        if not item:
            continue
        first, _, last = item.partition("-")
        try:
            lo, hi = int(first), int(last or first)
        except ValueError:
            raise InputError(source, None, f"bad reserved port entry {item!r}") from None
        if not (0 < lo <= hi <= 65535):
            raise InputError(source, None, f"bad reserved port range {item!r}")
        out.append((lo, hi))
    return tuple(out)


def port_range(
    values: dict[str, str], missing: dict[str, str], host: HostRoot
) -> PortRange | Unavailable:
    """The ephemeral range with reserved ports taken out: what one destination can use."""
    key = "net.ipv4.ip_local_port_range"
    if key not in values:
        return Unavailable(missing.get(key, f"{key} not read"))
    source = str(host.sysctl_path(key))
    parts = values[key].split()
    try:
        low, high = (int(p) for p in parts)
    except ValueError:
        raise InputError(source, 1, f"expected two integers, got {values[key]!r}") from None
    if not (0 < low <= high <= 65535):
        raise InputError(source, 1, f"impossible port range {values[key]!r}")
    reserved_key = "net.ipv4.ip_local_reserved_ports"
    reserved = parse_reserved_ports(
        values.get(reserved_key, ""), str(host.sysctl_path(reserved_key))
    )
    taken: set[int] = set()
    for lo, hi in reserved:
        taken.update(range(max(lo, low), min(hi, high) + 1))
    return PortRange(low=low, high=high, reserved=reserved, usable=(high - low + 1) - len(taken))
