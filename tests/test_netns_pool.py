"""Reading many namespaces: the long-lived workers keep each namespace's reply or reason on
that namespace, and the small first read of a kernel file still gets a long sysctl whole."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from auditor.facts import collect
from auditor.facts.model import Facts, PortRange, Unavailable
from auditor.facts.netns import NetnsRef, _collect, list_netns
from auditor.hostfs import HostRoot
from auditor.inputfile import FIRST_READ
from tests.netns import Netns, make_netns, requires_netns

RANGES = ["21000 21099", "22000 22199", "23000 23299"]


@pytest.fixture(scope="module")
def three() -> Iterator[list[Netns]]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    with ExitStack() as stack:
        spaces = [stack.enter_context(make_netns("pa-pool")) for _ in RANGES]
        for ns, rng in zip(spaces, RANGES, strict=True):
            ns.sysctl_write("net.ipv4.ip_local_port_range", rng)
        yield spaces


def _refs(spaces: list[Netns]) -> list[NetnsRef]:
    named = {r.name: r for r in list_netns(HostRoot())[0] if r.name}
    return [named[ns.name] for ns in spaces]


def _range(facts: Facts | Unavailable) -> str:
    assert isinstance(facts, Facts), facts
    assert isinstance(facts.ports, PortRange)
    return f"{facts.ports.low} {facts.ports.high}"


@requires_netns
@pytest.mark.netns
def test_one_worker_reads_many_namespaces_each_with_its_own_facts(three: list[Netns]) -> None:
    """One worker enters every namespace in turn; each reply is that namespace's own."""
    refs = _refs(three)
    order = [2, 0, 1, 0, 2]
    got = _collect(HostRoot(), [refs[i] for i in order], 60.0, None, workers=1)
    assert [_range(f) for f in got] == [RANGES[i] for i in order]


@requires_netns
@pytest.mark.netns
def test_a_worker_that_dies_costs_only_its_namespace(
    three: list[Netns], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker reading the second namespace exits without a reply (as a crash would): that
    namespace gets a reason, a new worker reads the rest, and their facts stay their own."""
    refs = _refs(three)
    doomed = refs[1]
    real = collect.collect_facts
    inode_of_doomed = os.stat(doomed.path).st_ino

    def dies_in_doomed(*args: object, **kw: object) -> Facts:
        if os.stat("/proc/self/ns/net").st_ino == inode_of_doomed:
            os._exit(3)
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(collect, "collect_facts", dies_in_doomed)
    got = _collect(HostRoot(), [refs[0], refs[1], refs[2], refs[0]], 60.0, None, workers=1)
    assert isinstance(got[1], Unavailable)
    assert "without a reply" in got[1].reason
    assert [_range(got[i]) for i in (0, 2, 3)] == [RANGES[0], RANGES[2], RANGES[0]]


@requires_netns
@pytest.mark.netns
def test_a_sysctl_longer_than_the_first_read_is_read_whole(three: list[Netns]) -> None:
    """A sysctl returns its value in one read only; a value longer than the first, small read
    must come back whole, not cut at that read's size."""
    ns = three[0]
    ports = ",".join(str(p) for p in range(40001, 48000, 2))
    assert len(ports) > FIRST_READ
    ns.sysctl_write("net.ipv4.ip_local_reserved_ports", ports)
    try:
        out = ns.python(
            "-c",
            "from auditor.hostfs import HostRoot;"
            "print(HostRoot().read_sysctl('net.ipv4.ip_local_reserved_ports'))",
        ).stdout.strip()
    finally:
        ns.sysctl_write("net.ipv4.ip_local_reserved_ports", "")
    assert out == ports


@requires_netns
@pytest.mark.netns
def test_a_namespace_that_hangs_is_given_up_and_the_rest_are_read(
    three: list[Netns], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Collection stuck in one namespace (a hung /proc read, say) is reported as not finishing
    in time; the namespaces queued behind it are read by a fresh worker."""
    refs = _refs(three)
    stuck = os.stat(refs[0].path).st_ino
    real = collect.collect_facts

    def hangs_in_stuck(*args: object, **kw: object) -> Facts:
        if os.stat("/proc/self/ns/net").st_ino == stuck:
            signal.pause()
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(collect, "collect_facts", hangs_in_stuck)
    got = _collect(HostRoot(), [refs[0], refs[1], refs[2]], 2.0, None, workers=1)
    assert isinstance(got[0], Unavailable)
    assert "did not finish within 2 s" in got[0].reason
    assert [_range(got[i]) for i in (1, 2)] == [RANGES[1], RANGES[2]]
