"""Counter rates between runs: two collections over fixture trees whose counters move."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from auditor.facts.collect import collect_facts
from auditor.facts.model import Facts, Unavailable
from auditor.facts.rates import (
    CounterState,
    compute_rates,
    load_state,
    state_path,
    with_rates,
)
from auditor.hostfs import HostRoot

BOOT_A = "0b6e1a52-6f44-4f0c-9a1e-2f6f4a1d2c11"
NETNS = ""
"""A fixture /proc has no ns/net link: the state of an unknown namespace."""
BOOT_B = "5d2c7a40-1e3b-4b8e-8f7e-91c0f6a4b222"


def write_tree(
    base: Path,
    tcpext: dict[str, int],
    tcp: dict[str, int],
    boot_id: str | None = BOOT_A,
) -> HostRoot:
    """A fake /proc with netstat and snmp counters (the layout the kernel prints)."""
    proc = base / "proc"
    (proc / "net").mkdir(parents=True, exist_ok=True)
    (proc / "net" / "netstat").write_text(
        "TcpExt: " + " ".join(tcpext) + "\nTcpExt: " + " ".join(map(str, tcpext.values())) + "\n"
    )
    (proc / "net" / "snmp").write_text(
        "Tcp: " + " ".join(tcp) + "\nTcp: " + " ".join(map(str, tcp.values())) + "\n"
    )
    if boot_id is not None:
        (proc / "sys" / "kernel" / "random").mkdir(parents=True, exist_ok=True)
        (proc / "sys" / "kernel" / "random" / "boot_id").write_text(boot_id + "\n")
    root = base / "root"
    root.mkdir(exist_ok=True)
    return HostRoot(proc=proc, root=root)


def tcp_row(attempt_fails: int, curr_estab: int) -> dict[str, int]:
    return {
        "RtoAlgorithm": 1,
        "RtoMin": 200,
        "RtoMax": 120000,
        "MaxConn": -1,
        "ActiveOpens": 1000,
        "AttemptFails": attempt_fails,
        "CurrEstab": curr_estab,
    }


def run(host: HostRoot, at: float, save: bool = True) -> tuple[Facts, str | None]:
    facts = dataclasses.replace(collect_facts(host), collected_at=at)
    return with_rates(facts, host, save=save)


def test_first_run_has_no_rates_and_saves_state(tmp_path: Path) -> None:
    host = write_tree(tmp_path, {"ListenOverflows": 5}, tcp_row(3, 10))
    facts, warning = run(host, 1000.0)
    assert warning is None
    assert facts.rates == Unavailable("no earlier run to compare with")
    saved = json.loads(state_path(host, NETNS).read_text())
    assert saved["collected_at"] == 1000.0
    assert saved["boot_id"] == BOOT_A
    assert saved["counters"]["TcpExt"]["ListenOverflows"] == 5


def test_two_runs_give_per_minute_rates(tmp_path: Path) -> None:
    host = write_tree(
        tmp_path, {"ListenOverflows": 5, "ListenDrops": 5, "TCPTimeWaitOverflow": 0}, tcp_row(3, 10)
    )
    run(host, 1000.0)
    # 300 s later: +30 overflows, +45 drops, +900 TIME_WAIT overflows, +12 failed connects.
    write_tree(
        tmp_path,
        {"ListenOverflows": 35, "ListenDrops": 50, "TCPTimeWaitOverflow": 900},
        tcp_row(15, 2),
    )
    facts, warning = run(host, 1300.0)
    assert warning is None
    assert not isinstance(facts.rates, Unavailable), facts.rates
    assert facts.rates["TcpExt"] == {
        "ListenOverflows": pytest.approx(6.0),
        "ListenDrops": pytest.approx(9.0),
        "TCPTimeWaitOverflow": pytest.approx(180.0),
    }
    assert facts.rates["Tcp"]["AttemptFails"] == pytest.approx(2.4)
    assert facts.rates["Tcp"]["ActiveOpens"] == 0.0
    # CurrEstab went down from 10 to 2: a gauge, neither a rate nor a reset.
    assert "CurrEstab" not in facts.rates["Tcp"]
    assert "MaxConn" not in facts.rates["Tcp"]


def test_decreasing_counter_gives_no_rates_and_no_false_alarm(tmp_path: Path) -> None:
    host = write_tree(tmp_path, {"ListenOverflows": 5000}, tcp_row(300, 10))
    run(host, 1000.0)
    # Same boot id (or none readable), but a counter went down: the counters were reset.
    write_tree(tmp_path, {"ListenOverflows": 7}, tcp_row(301, 10))
    facts, _ = run(host, 1300.0)
    assert isinstance(facts.rates, Unavailable)
    assert "ListenOverflows went down (5000 -> 7)" in facts.rates.reason
    # The run after that compares with the reset values and has rates again.
    write_tree(tmp_path, {"ListenOverflows": 7}, tcp_row(301, 10))
    facts, _ = run(host, 1600.0)
    assert not isinstance(facts.rates, Unavailable)
    assert facts.rates["TcpExt"]["ListenOverflows"] == 0.0


def test_new_boot_id_means_reboot(tmp_path: Path) -> None:
    host = write_tree(tmp_path, {"ListenOverflows": 5}, tcp_row(3, 10), boot_id=BOOT_A)
    run(host, 1000.0)
    # Every counter is higher, which alone would look like a rise: the boot id says otherwise.
    write_tree(tmp_path, {"ListenOverflows": 50}, tcp_row(30, 10), boot_id=BOOT_B)
    facts, _ = run(host, 1300.0)
    assert isinstance(facts.rates, Unavailable)
    assert "rebooted" in facts.rates.reason


@pytest.mark.parametrize(
    ("now", "reason"),
    [(1000.0, "not earlier"), (900.0, "not earlier"), (1000.0 + 7200, "too long")],
)
def test_interval_must_be_positive_and_recent(tmp_path: Path, now: float, reason: str) -> None:
    prev = CounterState(1000.0, BOOT_A, "net:[1]", {"TcpExt": {"ListenOverflows": 1}})
    cur = CounterState(now, BOOT_A, "net:[1]", {"TcpExt": {"ListenOverflows": 2}})
    got = compute_rates(prev, cur)
    assert isinstance(got, Unavailable)
    assert reason in got.reason


def test_other_namespace_is_not_compared(tmp_path: Path) -> None:
    prev = CounterState(1000.0, BOOT_A, "net:[1]", {"TcpExt": {"ListenOverflows": 1}})
    cur = CounterState(1060.0, BOOT_A, "net:[2]", {"TcpExt": {"ListenOverflows": 2}})
    got = compute_rates(prev, cur)
    assert isinstance(got, Unavailable)
    assert "namespace" in got.reason


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        '{"schema": 99}',
        '{"schema": 1, "collected_at": "x", "boot_id": null, "netns": "", "counters": {}}',
        '{"schema": 1, "collected_at": 1, "boot_id": null, "netns": "", "counters": {"T": 1}}',
    ],
)
def test_damaged_state_is_replaced_not_fatal(tmp_path: Path, content: str) -> None:
    host = write_tree(tmp_path, {"ListenOverflows": 5}, tcp_row(3, 10))
    state = state_path(host, NETNS)
    state.parent.mkdir(parents=True)
    state.write_text(content)
    assert isinstance(load_state(state), Unavailable)
    facts, warning = run(host, 1000.0)
    assert isinstance(facts.rates, Unavailable)
    assert "starting over" in facts.rates.reason
    assert warning is None
    assert isinstance(load_state(state), CounterState)


def test_without_save_the_base_is_left_alone(tmp_path: Path) -> None:
    host = write_tree(tmp_path, {"ListenOverflows": 5}, tcp_row(3, 10))
    run(host, 1000.0)
    write_tree(tmp_path, {"ListenOverflows": 11}, tcp_row(3, 10))
    facts, _ = run(host, 1060.0, save=False)
    assert not isinstance(facts.rates, Unavailable)
    assert facts.rates["TcpExt"]["ListenOverflows"] == pytest.approx(6.0)
    state = load_state(state_path(host, NETNS))
    assert isinstance(state, CounterState)
    assert state.collected_at == 1000.0


def test_unwritable_state_is_a_warning(tmp_path: Path) -> None:
    host = write_tree(tmp_path, {"ListenOverflows": 5}, tcp_row(3, 10))
    # A file where the state directory should be: the save fails whoever runs the test.
    blocker = host.root / "var" / "lib" / "portaudit"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("")
    facts, warning = run(host, 1000.0)
    assert warning is not None
    assert "cannot save counter state" in warning
    assert isinstance(facts.rates, Unavailable)


# --- one base per network namespace ------------------------------------------------------


def in_netns(facts: Facts, netns: str) -> Facts:
    return dataclasses.replace(facts, host=dataclasses.replace(facts.host, netns=netns))


def test_each_namespace_keeps_its_own_base(tmp_path: Path) -> None:
    """A run in another namespace (`ip netns exec X portaudit audit`) must not replace the
    host's base: the host's next run still has its rates."""
    host = write_tree(tmp_path, {"ListenOverflows": 5}, tcp_row(3, 10))
    base = collect_facts(host)
    with_rates(
        dataclasses.replace(in_netns(base, "net:[4026531840]"), collected_at=1000.0), host, True
    )
    with_rates(
        dataclasses.replace(in_netns(base, "net:[4026532999]"), collected_at=1030.0), host, True
    )
    write_tree(tmp_path, {"ListenOverflows": 11}, tcp_row(3, 10))
    again = dataclasses.replace(
        in_netns(collect_facts(host), "net:[4026531840]"), collected_at=1060.0
    )
    facts, warning = with_rates(again, host, True)
    assert warning is None
    assert not isinstance(facts.rates, Unavailable), facts.rates
    assert facts.rates["TcpExt"]["ListenOverflows"] == pytest.approx(6.0)
    names = sorted(p.name for p in state_path(host, "net:[1]").parent.iterdir())
    assert names == ["net-4026531840.json", "net-4026532999.json"]


def test_old_and_surplus_namespace_states_are_pruned(tmp_path: Path) -> None:
    import os
    import time

    from auditor.facts.rates import MAX_STATES

    host = write_tree(tmp_path, {"ListenOverflows": 5}, tcp_row(3, 10))
    counters = state_path(host, "net:[1]").parent
    counters.mkdir(parents=True)
    now = time.time()
    for i in range(MAX_STATES + 20):
        p = counters / f"net-{1000 + i}.json"
        p.write_text("{}")
        os.utime(p, (now - i, now - i))
    stale = counters / "net-7.json"
    stale.write_text("{}")
    os.utime(stale, (now - 7200, now - 7200))
    other = counters / "notes.txt"
    other.write_text("not ours")
    run(host, now)
    kept = {p.name for p in counters.iterdir()}
    assert "net-7.json" not in kept
    assert "notes.txt" in kept
    assert len([n for n in kept if n.startswith("net-")]) == MAX_STATES
    assert "net-1000.json" in kept and f"net-{1000 + MAX_STATES + 19}.json" not in kept


def test_legacy_shared_state_file_is_removed_by_the_next_save(tmp_path: Path) -> None:
    host = write_tree(tmp_path, {"ListenOverflows": 5}, tcp_row(3, 10))
    legacy = host.root / "var/lib/portaudit/counters.json"
    legacy.parent.mkdir(parents=True)
    legacy.write_text("{}")
    run(host, 1000.0)
    assert not legacy.exists()


def test_not_root_says_the_state_cannot_be_saved(tmp_path: Path) -> None:
    """As a user who may not write the state directory, the run says so, in the warning and in
    the reason rates are missing, instead of a silent "no earlier run" every time."""
    import os
    import tempfile

    from tests.test_nonroot import as_nobody

    if os.geteuid() != 0:
        pytest.skip("needs root to drop to another user")
    top = Path(tempfile.mkdtemp(prefix="portaudit-rates-"))
    try:
        host = write_tree(top, {"ListenOverflows": 5}, tcp_row(3, 10))
        (host.root / "var/lib/portaudit").mkdir(parents=True)
        for d in (top, *[p for p in top.rglob("*") if p.is_dir()]):
            d.chmod(0o755)

        def fn() -> dict[str, str | None]:
            facts, warning = run(host, 1000.0)
            assert isinstance(facts.rates, Unavailable)
            return {"reason": facts.rates.reason, "warning": warning}

        got = as_nobody(fn)
    finally:
        import shutil

        shutil.rmtree(top)
    assert got["warning"] is not None and "cannot save counter state" in got["warning"]
    assert "permission denied" in got["warning"].lower() and "root" in got["warning"]
    assert "cannot save" in (got["reason"] or "")
