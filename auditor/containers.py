"""Who owns a network namespace (a Docker or Podman container, a Kubernetes pod, a
systemd-nspawn machine, an LXC container, an `ip netns` name), told from the cgroup paths of
the processes inside it, and how that owner persists a namespace's sysctls.

A container's network namespace is made anew at every start, so no file under the host's
/etc/sysctl.d reaches it: its runtime applies the values it was configured with. The cgroup
path names the runtime (systemd's scope names: `docker-<id>.scope`, `libpod-<id>.scope`,
`cri-containerd-<id>.scope` under `kubepods`, `machine-<name>.scope`; cgroupfs drivers use
`/docker/<id>`, `/kubepods/.../pod<uid>/<id>`, `/lxc.payload.<name>`).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from auditor.hostfs import HostRoot

_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("kubernetes", re.compile(r"kubepods.*?pod([0-9a-f]{8}[-_][0-9a-f_\-]{27})")),
    ("podman", re.compile(r"libpod-(?:conmon-)?([0-9a-f]{12,64})")),
    ("docker", re.compile(r"(?:/docker[-/]|docker-)([0-9a-f]{12,64})")),
    ("containerd", re.compile(r"cri-containerd-([0-9a-f]{12,64})")),
    (
        "systemd-nspawn",
        re.compile(r"machine\.slice/(?:machine-|systemd-nspawn@)(.+?)\.(?:scope|service)"),
    ),
    ("lxc", re.compile(r"/lxc(?:\.payload)?[./]([^/\s]+)")),
)

KUBELET_SAFE_SYSCTLS: frozenset[str] = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
        "net.ipv4.tcp_rmem",
        "net.ipv4.tcp_wmem",
    }
)
"""The kubelet's safe set (Kubernetes docs, "Using sysctls in a Kubernetes Cluster", 1.32);
any other key needs `--allowed-unsafe-sysctls` on the node's kubelet."""


@dataclass(frozen=True, slots=True)
class NetnsOwner:
    runtime: str
    """kubernetes | podman | docker | containerd | systemd-nspawn | lxc | ip-netns"""
    ident: str
    """Container id (first 12 hex digits), pod uid, machine or namespace name."""

    @property
    def label(self) -> str:
        kind = {"kubernetes": "pod", "systemd-nspawn": "machine", "ip-netns": "netns"}
        return f"{kind.get(self.runtime, self.runtime)} {self.ident}"


def classify_cgroup(text: str) -> NetnsOwner | None:
    """The owner a `/proc/<pid>/cgroup` file names, or None for a plain host process."""
    for runtime, pattern in _PATTERNS:
        m = pattern.search(text)
        if m is not None:
            ident = m.group(1)
            if runtime == "systemd-nspawn":
                ident = ident.replace("\\x2d", "-")
            elif runtime == "kubernetes":
                ident = ident.replace("_", "-")
            else:
                ident = ident[:12]
            return NetnsOwner(runtime, ident)
    return None


def process_owner(host: HostRoot, pid: int | str) -> NetnsOwner | None:
    """The container or pod process `pid` belongs to, from its `/proc/<pid>/cgroup`; None for
    a host process or one that is gone."""
    try:
        with open(host.proc_path(f"{pid}/cgroup"), encoding="utf-8", errors="replace") as fh:
            return classify_cgroup(fh.read(65536))
    except OSError:
        return None


def _named_netns(host: HostRoot, inode: int) -> str:
    """The `ip netns` name bound to `inode`: /run/netns belongs to the running system, so it
    is read there when /proc is live, whatever --root names."""
    run = Path("/run/netns") if host.is_live else host.path("/run/netns")
    try:
        entries = list(os.scandir(run))
    except OSError:
        return ""
    for e in entries:
        try:
            if os.stat(e.path).st_ino == inode:
                return e.name
        except OSError:
            continue
    return ""


def netns_owner(host: HostRoot, inode: int, limit: int = 4096) -> NetnsOwner | None:
    """The owner of network namespace `inode`, from the processes inside it (most common
    answer wins), else its `ip netns` name; None when nothing tells."""
    seen: Counter[NetnsOwner] = Counter()
    try:
        pids = [e.name for e in os.scandir(host.proc) if e.name.isdigit()][:limit]
    except OSError:
        pids = []
    for pid in pids:
        try:
            if os.stat(host.proc_path(f"{pid}/ns/net")).st_ino != inode:
                continue
        except OSError:
            continue
        owner = process_owner(host, pid)
        if owner is not None:
            seen[owner] += 1
    if seen:
        return seen.most_common(1)[0][0]
    name = _named_netns(host, inode)
    return NetnsOwner("ip-netns", name) if name else None


def current_netns_inode(host: HostRoot) -> int | None:
    try:
        return os.stat(host.proc_path("self/ns/net")).st_ino
    except OSError:
        return None


def persist_advice(owner: NetnsOwner | None, values: dict[str, str]) -> list[str]:
    """How the namespace's owner keeps `values` across restarts, one line per way."""
    if not values:
        return []
    flags = " ".join(f'--sysctl {k}="{v}"' for k, v in values.items())
    name = owner.ident if owner is not None and owner.runtime == "ip-netns" else "NAME"
    compose = ", ".join(f'{k}: "{v}"' for k, v in values.items())
    ways: dict[str, list[str]] = {
        "docker": [
            f"docker run {flags} ...",
            f"compose: sysctls: {{{compose}}}",
        ],
        "podman": [
            f"podman run {flags} ...",
            "quadlet: " + " ".join(f"Sysctl={k}={v}" for k, v in values.items()),
        ],
        "kubernetes": _kubernetes(values),
        "containerd": [
            "the orchestrator's pod spec (Kubernetes: securityContext.sysctls), or"
            f" nerdctl run {flags} ...",
        ],
        "systemd-nspawn": [
            "inside the machine: portaudit fix --for-host (its own systemd-sysctl applies"
            " /etc/sysctl.d at its boot)",
        ],
        "lxc": [
            "container config: " + "; ".join(f"lxc.sysctl.{k} = {v}" for k, v in values.items())
        ],
        "ip-netns": [
            "whatever creates the namespace re-applies them after `ip netns add`: "
            + "; ".join(f'ip netns exec {name} sysctl -w {k}="{v}"' for k, v in values.items()),
        ],
    }
    if owner is not None and owner.runtime in ways:
        head = f"to keep these in {owner.label} across restarts, set them in its runtime:"
        return [head, *(f"  {w}" for w in ways[owner.runtime])]
    out = ["to keep these across restarts, set them where this namespace is created:"]
    for runtime in ("docker", "podman", "kubernetes", "systemd-nspawn", "lxc"):
        out.extend(f"  {runtime}: {w}" for w in ways[runtime])
    return out


def _kubernetes(values: dict[str, str]) -> list[str]:
    items = ", ".join(f'{{name: {k}, value: "{v}"}}' for k, v in values.items())
    out = [f"pod spec: securityContext: {{sysctls: [{items}]}}"]
    unsafe = [k for k in values if k not in KUBELET_SAFE_SYSCTLS]
    if unsafe:
        out.append(
            f"not in the kubelet's safe set: {', '.join(unsafe)}; the node's kubelet must allow"
            " them (--allowed-unsafe-sysctls)"
        )
    else:
        out.append("all of these are in the kubelet's safe set (allowed on any node)")
    return out
