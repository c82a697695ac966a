"""Throwaway network namespaces for real-kernel tests.

Each test that touches the kernel makes its own namespace (`ip netns add`), brings up `lo`,
and deletes it afterwards, so nothing it does (sysctl writes, sockets, nftables rules) can
reach the host. Only per-netns sysctls may be written inside it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def netns_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create a network namespace (ip netns add)"
    if shutil.which("ip") is None:
        return "needs iproute2 (the 'ip' command)"
    return None


requires_netns = pytest.mark.skipif(
    netns_skip_reason() is not None, reason=netns_skip_reason() or ""
)


class Netns:
    """A named namespace with `lo` up; `run` executes argv inside it (never a shell string)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 60,
        env: dict[str, str] | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *argv],
            check=check,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            input=input,
        )

    def python(self, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        """Run `python <args>` inside the namespace with the repo importable."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
        return self.run([sys.executable, *args], env=env, **kw)  # type: ignore[arg-type]

    def portaudit(self, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        """`portaudit ARGS` in the namespace; an `audit` that names no state option or root
        gets `--no-state`, so a test never writes the host's /var/lib/portaudit."""
        kw.setdefault("check", False)
        if args[:1] == ("audit",) and not {"--state", "--no-state", "--root", "--facts"} & {
            a.split("=", 1)[0] for a in args
        }:
            args = (*args, "--no-state")
        return self.python("-m", "auditor", *args, **kw)

    def sysctl_write(self, key: str, value: str) -> None:
        """Write a per-netns sysctl inside this namespace only."""
        path = "/proc/sys/" + key.replace(".", "/")
        self.run(["sh", "-c", 'printf "%s\\n" "$1" > "$2"', "sh", value, path])

    def sysctl_read(self, key: str) -> str:
        path = "/proc/sys/" + key.replace(".", "/")
        return " ".join(self.run(["cat", path]).stdout.split())


@contextmanager
def make_netns(prefix: str = "pa") -> Iterator[Netns]:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        subprocess.run(
            ["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"],
            check=True,
            capture_output=True,
        )
        yield Netns(name)
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


@contextmanager
def workload(ns: Netns, script: str, *args: str) -> Iterator[str]:
    """`script` (its `sys.argv[1:]` being `args`) running in `ns` for the block: it prints a
    line starting with "ready" once its sockets exist and waits on stdin, or sleeps; that line
    is what the block gets (it may carry a pid)."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns.name, sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("ready"), line
        yield line
    finally:
        proc.kill()
        proc.wait(timeout=10)


COMPARE_READERS = r"""
import json
from auditor.facts.model import to_jsonable
from auditor.facts.sysctl import collect_sysctls, port_range
from auditor.facts.sockets import collect_sockets_proc
from auditor.facts.netlink import scan_sockets
from auditor.hostfs import HostRoot
host = HostRoot()
values, missing = collect_sysctls(host)
ports = port_range(values, missing, host)
a = scan_sockets(ports.low, ports.high).table()
b = collect_sockets_proc(host, ports)
print(json.dumps({"netlink": to_jsonable(a), "proc": to_jsonable(b)}))
"""
"""Run in a namespace: the socket table from both readers, as JSON, to compare them."""
