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
import stat
from pathlib import Path

from auditor.hostfs import HostRoot, sysctl_relpath

GLOBAL_ONLY_MARKER = "net/core/netdev_max_backlog"
"""Registered for init_net only (`net_core_table`), so present in /proc/sys only there."""


def kernel_backed(host: HostRoot) -> bool:
    """True when `host.proc` is a real procfs (writes there reach a kernel), not a fixture tree."""
    return host.is_live or os.path.lexists(host.proc_path("self/ns/net"))


def _readlink(path: Path) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def in_initial_netns(host: HostRoot) -> bool:
    """Whether this process runs in the host's initial network namespace.

    Two indicators, and both must agree before a global key may be written: pid 1's namespace
    link (unreadable without ptrace rights, and pid 1 is a container's own init inside a pid
    namespace), and the presence of a key that only `init_net` registers.
    """
    mine = host.netns()
    init = _readlink(host.proc_path("1/ns/net"))
    if mine and init is not None and mine != init:
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
