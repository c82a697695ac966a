"""Acceptance: the test suite never touches the host's counter state.

`audit` on the live /proc saves counters to /var/lib/portaudit/counters/net-<inode>.json by
default; a test that audits a namespace it made must not write there (the host's timer owns
that directory, and a reused namespace inode would hand its state to the wrong namespace).
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.netns import make_netns, requires_netns

HOST_STATE = Path("/var/lib/portaudit/counters")


@requires_netns
def test_netns_audit_helper_leaves_the_host_state_alone() -> None:
    with make_netns("pa-acc-state") as ns:
        inode = int(ns.run(["stat", "-L", "-c", "%i", "/proc/self/ns/net"]).stdout.strip())
        state = HOST_STATE / f"net-{inode}.json"
        before = state.stat().st_mtime_ns if state.exists() else None
        run = ns.portaudit("audit", "--format", "json", "--fail-on", "never")
        assert run.returncode == 0, run.stderr
        after = state.stat().st_mtime_ns if state.exists() else None
        assert after == before, f"the test wrote the host's {state}"
        assert os.readlink("/proc/self/ns/net") != f"net:[{inode}]"
