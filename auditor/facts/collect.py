"""Collect every fact once into a `Facts` snapshot (what `portaudit facts` prints)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from auditor.facts.counters import collect_counters
from auditor.facts.limits import file_handles
from auditor.facts.model import (
    Facts,
    HostInfo,
    PersistedSysctl,
    PortRange,
    PortUse,
    SocketTable,
    Unavailable,
)
from auditor.facts.rpfilter import collect_rp_filter
from auditor.facts.sockets import collect_sockets_proc
from auditor.facts.sockstat import collect_sockstat
from auditor.facts.sysctl import collect_sysctls, port_range
from auditor.hostfs import HostRoot

if TYPE_CHECKING:
    from auditor.facts.persisted import BootFiles


def host_info(host: HostRoot) -> HostInfo:
    def text(key: str) -> str:
        got = host.read_sysctl(key)
        return "" if isinstance(got, Unavailable) else got

    return HostInfo(
        hostname=text("kernel.hostname"), kernel=text("kernel.osrelease"), netns=host.netns()
    )


def collect_sockets_and_port_use(
    host: HostRoot, ports: PortRange | Unavailable, owners_above: float | None = None
) -> tuple[SocketTable | Unavailable, PortUse | Unavailable]:
    """The socket table (netlink on the live host, with the owners of destinations above
    `owners_above` of the usable ports when given; else `/proc/net/tcp*`) and the host-wide
    port use gathered by the same walks (auditor/facts/portuse.py)."""
    if host.is_live:
        from auditor.facts.livesockets import collect_sockets_and_port_use as live

        return live(host, ports, owners_above)
    from auditor.facts.portuse import collect_port_use_proc

    return collect_sockets_proc(host, ports), collect_port_use_proc(host, ports)


def collect_persisted(
    host: HostRoot, files: BootFiles | Unavailable | None = None
) -> PersistedSysctl | Unavailable:
    """The boot view of the sysctl files under `host.root` (auditor/facts/persisted.py)."""
    from auditor.facts.persisted import collect_persisted as collect

    return collect(host, files)


def collect_facts(
    host: HostRoot,
    owners_above: float | None = None,
    boot_files: BootFiles | Unavailable | None = None,
) -> Facts:
    """Every fact, read once. `owners_above`: name the processes behind destinations using
    more than this share of the usable ports (None: attribute none); the audit derives it
    from the rules it runs, so the facts layer holds no rule's threshold. `boot_files`: the
    sysctl files already read (`persisted.read_boot_files`), when reading many namespaces."""
    values, missing = collect_sysctls(host)
    ports = port_range(values, missing, host)
    sockets, port_use = collect_sockets_and_port_use(host, ports, owners_above)
    return Facts(
        host=host_info(host),
        collected_at=time.time(),
        sysctl=values,
        sysctl_missing=missing,
        ports=ports,
        sockstat=collect_sockstat(host),
        counters=collect_counters(host),
        sockets=sockets,
        files=file_handles(values, missing, host),
        persisted=collect_persisted(host, boot_files),
        rp_filter=collect_rp_filter(host),
        port_use=port_use,
    )
