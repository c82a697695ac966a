"""Telling a namespace's owner from cgroup paths, and how each owner persists sysctls."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from auditor.containers import NetnsOwner, classify_cgroup, netns_owner, persist_advice
from auditor.facts.netns import NetnsRef
from auditor.hostfs import HostRoot

DOCKER_ID = "3f2a1b2c3d4e" + "5" * 52
POD_UID = "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"


@pytest.mark.parametrize(
    ("cgroup", "owner"),
    [
        (f"0::/system.slice/docker-{DOCKER_ID}.scope\n", NetnsOwner("docker", DOCKER_ID[:12])),
        (f"12:memory:/docker/{DOCKER_ID}\n", NetnsOwner("docker", DOCKER_ID[:12])),
        (
            f"0::/machine.slice/libpod-{DOCKER_ID}.scope/container\n",
            NetnsOwner("podman", DOCKER_ID[:12]),
        ),
        (
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod"
            f"{POD_UID.replace('-', '_')}.slice/cri-containerd-{DOCKER_ID}.scope\n",
            NetnsOwner("kubernetes", POD_UID),
        ),
        (f"0::/kubepods/burstable/pod{POD_UID}/{DOCKER_ID}\n", NetnsOwner("kubernetes", POD_UID)),
        (
            f"0::/system.slice/cri-containerd-{DOCKER_ID}.scope\n",
            NetnsOwner("containerd", DOCKER_ID[:12]),
        ),
        (
            "0::/machine.slice/machine-web\\x2d1.scope/payload\n",
            NetnsOwner("systemd-nspawn", "web-1"),
        ),
        ("0::/lxc.payload.db1/init.scope\n", NetnsOwner("lxc", "db1")),
        ("0::/user.slice/user-1000.slice/session-2.scope\n", None),
        ("0::/\n", None),
    ],
)
def test_cgroup_paths_name_the_runtime(cgroup: str, owner: NetnsOwner | None) -> None:
    assert classify_cgroup(cgroup) == owner


def test_owner_found_from_processes_in_the_namespace(tmp_path: Path) -> None:
    """A fixture /proc: two processes share the namespace file, a third is elsewhere."""
    proc = tmp_path / "proc"
    for pid, cgroup in (("10", f"0::/system.slice/docker-{DOCKER_ID}.scope\n"), ("11", "0::/\n")):
        (proc / pid / "ns").mkdir(parents=True)
        (proc / pid / "cgroup").write_text(cgroup)
    (proc / "10/ns/net").write_text("")
    os.link(proc / "10/ns/net", proc / "11/ns/net")
    (proc / "12/ns").mkdir(parents=True)
    (proc / "12/ns/net").write_text("")
    (proc / "12/cgroup").write_text(f"0::/system.slice/libpod-{DOCKER_ID}.scope\n")
    host = HostRoot(proc=proc, root=tmp_path)
    inode = os.stat(proc / "10/ns/net").st_ino
    assert netns_owner(host, inode) == NetnsOwner("docker", DOCKER_ID[:12])
    assert netns_owner(host, 1) is None


def test_each_runtime_has_its_way_to_persist() -> None:
    values = {"net.ipv4.ip_local_port_range": "10000 65535"}
    docker = "\n".join(persist_advice(NetnsOwner("docker", "abc"), values))
    assert 'docker run --sysctl net.ipv4.ip_local_port_range="10000 65535"' in docker
    assert "compose: sysctls:" in docker
    assert "podman run --sysctl" in "\n".join(persist_advice(NetnsOwner("podman", "a"), values))
    k8s = "\n".join(persist_advice(NetnsOwner("kubernetes", POD_UID), values))
    assert "securityContext" in k8s and "safe set" in k8s
    unsafe = persist_advice(NetnsOwner("kubernetes", POD_UID), {"net.core.somaxconn": "4096"})
    assert any("--allowed-unsafe-sysctls" in line for line in unsafe)
    nspawn = "\n".join(persist_advice(NetnsOwner("systemd-nspawn", "web"), values))
    assert "machine web" in nspawn and "--for-host" in nspawn
    unknown = "\n".join(persist_advice(None, values))
    for runtime in ("docker:", "podman:", "kubernetes:", "systemd-nspawn:", "lxc:"):
        assert runtime in unknown
    assert persist_advice(None, {}) == []


def test_all_netns_label_names_the_container() -> None:
    ref = NetnsRef(inode=7, path="/proc/10/ns/net", pid=10, owner="docker 3f2a1b2c3d4e")
    assert ref.label == "docker 3f2a1b2c3d4e net:[7]"
    assert NetnsRef(inode=7, path="/proc/10/ns/net", pid=10).label == "pid 10 net:[7]"
