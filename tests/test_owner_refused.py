"""When the owner scan may not read other processes' fds, the audit says so instead of naming
nobody: the unit without CAP_SYS_PTRACE, or a user who is not root."""

from __future__ import annotations

import os

import pytest

from auditor.engine.names import owners_text
from auditor.facts.model import Destination, PortRange, SocketTable
from auditor.facts.owners import attach_owners
from auditor.hostfs import HostRoot
from tests.test_nonroot import as_nobody

DEST = ("10.0.0.2", "10.0.0.5", 3306)
PORTS = PortRange(low=40000, high=40009, reserved=(), usable=10)
TABLE = SocketTable(
    source="proc",
    total_by_state={"ESTABLISHED": 9},
    destinations=(
        Destination(src=DEST[0], dst=DEST[1], dport=DEST[2], by_state={"ESTABLISHED": 9}),
    ),
    listeners=(),
)


def scan() -> dict[str, str]:
    """Attribution on the live /proc for a pressured destination whose socket nobody holds."""
    got = attach_owners(HostRoot(), TABLE, PORTS, lambda hot: {hot[0]: {987654321}}, 0.7)
    return {"why": got.owners_unavailable, "text": owners_text(got, *DEST)}


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_refused_scan_says_attribution_is_unavailable_and_why() -> None:
    got = as_nobody(scan)
    assert "attribution unavailable" in got["why"] and "CAP_SYS_PTRACE" in got["why"]
    assert got["text"].startswith("unknown (attribution unavailable")


@pytest.mark.skipif(os.geteuid() != 0, reason="root reads every process's fds")
def test_a_scan_that_may_read_everything_says_nothing() -> None:
    got = scan()
    assert got == {"why": "", "text": ""}
