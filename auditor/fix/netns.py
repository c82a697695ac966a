"""Which network namespace `fix` runs in, and which sysctl keys belong to it.

Inside a container or a test namespace, writing a global key (`fs.file-max`,
`net.core.netdev_max_backlog`) changes the host, not the namespace, so `fix` must know both
things before it writes anything at runtime.

How the kernel shows it (measured on 6.18, and true since net sysctls became per-netns in 2.6.24):
- `/proc/sys/net/...` shows the tables of the *reading task's* namespace. Tables registered only
  for `init_net` (net/core/sysctl_net_core.c `net_core_table`, net/ipv4/sysctl_net_ipv4.c
  `ipv4_table`) are absent from every other namespace; some per-netns entries are made read-only
  outside `init_net` (`net.core.rmem_max`, `nf_conntrack_max`: see `nf_conntrack_standalone.c`).
- So a `net.*` key is per-namespace exactly when it is present *and writable* in a fresh
  namespace. Keys outside `net.*` (`fs.*`, `kernel.*`, `vm.*`) are never per network namespace.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Iterable
from pathlib import Path

from auditor.hostfs import HostRoot, sysctl_relpath

GLOBAL_ONLY_MARKER = "net/core/netdev_max_backlog"
"""Registered for init_net only (`net_core_table`), so present in /proc/sys only there."""

KNOWN_GLOBAL_NET_KEYS: frozenset[str] = frozenset(
    {
        # init_net only: net/core/sysctl_net_core.c net_core_table
        "net.core.netdev_max_backlog",
        "net.core.netdev_budget",
        "net.core.netdev_budget_usecs",
        "net.core.dev_weight",
        "net.core.busy_poll",
        "net.core.busy_read",
        "net.core.default_qdisc",
        "net.core.bpf_jit_enable",
        "net.core.message_cost",
        "net.core.message_burst",
        "net.core.rps_sock_flow_entries",
        # per-netns table but read-only outside init_net (6.x netns_core_table)
        "net.core.rmem_default",
        "net.core.rmem_max",
        "net.core.wmem_default",
        "net.core.wmem_max",
        # init_net only: net/ipv4/sysctl_net_ipv4.c ipv4_table
        "net.ipv4.tcp_mem",
        "net.ipv4.udp_mem",
        "net.ipv4.tcp_max_orphans",
        "net.ipv4.tcp_low_latency",
        "net.ipv4.inet_peer_threshold",
        "net.ipv4.inet_peer_minttl",
        "net.ipv4.inet_peer_maxttl",
        # read-only outside init_net: nf_conntrack_standalone.c
        "net.netfilter.nf_conntrack_max",
        "net.netfilter.nf_conntrack_buckets",
        "net.netfilter.nf_conntrack_expect_max",
        "net.nf_conntrack_max",
    }
)
"""Fallback when no fresh namespace can be probed (not root, no `unshare`, a fixture --proc).
Measured by comparing `find /proc/sys/net -perm /222` in the initial namespace and under
`unshare --net` on Linux 6.18; the source tables are named beside each group."""


def kernel_backed(host: HostRoot) -> bool:
    """True when `host.proc` is a real procfs (writes there reach a kernel), not a fixture tree."""
    return host.is_live or os.path.lexists(host.proc_path("self/ns/net"))


def _readlink(path: Path) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def current_netns(host: HostRoot) -> str:
    """`net:[inode]` of the namespace this process runs in ("" when unknown)."""
    return _readlink(host.proc_path("self/ns/net")) or ""


def in_initial_netns(host: HostRoot) -> bool:
    """Whether this process runs in the host's initial network namespace.

    Two indicators, and both must agree before a global key may be written: pid 1's namespace
    link (unreadable without ptrace rights, and pid 1 is a container's own init inside a pid
    namespace), and the presence of a key that only `init_net` registers.
    """
    mine = _readlink(host.proc_path("self/ns/net"))
    init = _readlink(host.proc_path("1/ns/net"))
    if mine is not None and init is not None and mine != init:
        return False
    return os.path.exists(host.proc_path("sys") / GLOBAL_ONLY_MARKER)


def _writable(path: Path) -> bool:
    try:
        return bool(os.stat(path).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    except OSError:
        return False


def writable(host: HostRoot, key: str) -> bool:
    """Whether `key` has a writable entry in this namespace's /proc/sys (mode bits, not access:
    root passes access() checks for read-only entries too)."""
    return _writable(host.proc / "sys" / sysctl_relpath(key))


def _probe_fresh_netns(host: HostRoot, keys: list[str]) -> dict[str, bool] | None:
    """Ask a throwaway namespace (`unshare --net stat`) which keys it has, writable."""
    unshare = shutil.which("unshare")
    if unshare is None or not keys:
        return None
    paths = {str(host.sysctl_path(k)): k for k in keys}
    try:
        proc = subprocess.run(
            [unshare, "--net", "--", "stat", "-L", "-c", "%a %n", "--", *paths],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode not in (0, 1) or not proc.stdout:
        return None
    found: dict[str, bool] = dict.fromkeys(keys, False)
    for line in proc.stdout.splitlines():
        mode, _, name = line.partition(" ")
        if name in paths:
            found[paths[name]] = bool(int(mode, 8) & 0o222)
    return found


def per_netns_keys(host: HostRoot, keys: Iterable[str]) -> dict[str, bool]:
    """key -> True when writing it changes only the current network namespace."""
    keys = list(keys)
    out = {k: False for k in keys if not k.startswith("net.")}
    net_keys = [k for k in keys if k.startswith("net.")]
    if not net_keys:
        return out
    if kernel_backed(host) and not in_initial_netns(host):
        # We are in a non-initial namespace already: what we can write here is ours.
        for k in net_keys:
            out[k] = _writable(host.proc / "sys" / sysctl_relpath(k))
        return out
    probed = _probe_fresh_netns(host, net_keys) if kernel_backed(host) else None
    for k in net_keys:
        out[k] = probed[k] if probed is not None else k not in KNOWN_GLOBAL_NET_KEYS
    return out
