"""`portaudit watch`: the arithmetic of its rows, its JSON lines, and the live view in a pty
(draws, refreshes, reacts to a key, exits cleanly on Ctrl-C and when the terminal closes)."""

from __future__ import annotations

import errno
import json
import os
import pty
import re
import select
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import pytest

from auditor.facts.model import PortRange, PortUse
from auditor.watch.sample import Snapshot
from auditor.watch.view import Row, SortKey, frame, frame_json, rows
from tests.netns import REPO, Netns, make_netns, requires_netns

DEST = ("10.0.0.2", "10.0.0.5", 3306)
OTHER = ("10.0.0.2", "10.0.0.6", 443)
PORTS = PortRange(low=40000, high=40999, reserved=(), usable=1000)


def snap(
    at: float, per_dest: dict[tuple[str, str, int], tuple[int, int]], **kw: object
) -> Snapshot:
    fields: dict[str, object] = {
        "at": at,
        "wall": 1_700_000_000 + at,
        "cost": 0.01,
        "ports": PORTS,
        "per_dest": per_dest,
        "time_wait": sum(tw for _u, tw in per_dest.values()),
        "port_use": PortUse("netlink", 10, {"TIME_WAIT": 10}, 0, 3),
        "listen_overflows": 5,
        "conntrack": (10, 100),
    }
    fields.update(kw)
    return Snapshot(**fields)  # type: ignore[arg-type]


def test_rate_adds_time_wait_expiry_to_growth_and_eta_follows_growth() -> None:
    prev = snap(0.0, {DEST: (400, 300)})
    cur = snap(2.0, {DEST: (500, 360)})
    (row,) = rows(prev, cur)
    assert row.change == 100
    # growth 50/s, plus 360 TIME_WAIT expiring over 60 s: 6/s
    assert row.rate == pytest.approx(56.0)
    assert row.eta == pytest.approx(10.0)  # 500 ports left at 50/s


def test_steady_destination_has_a_rate_but_no_eta() -> None:
    prev = snap(0.0, {DEST: (600, 600)})
    cur = snap(2.0, {DEST: (600, 600)})
    (row,) = rows(prev, cur)
    assert row.rate == pytest.approx(10.0)  # 600 TIME_WAIT renewed every 60 s
    assert row.eta is None


def test_full_destination_reads_zero_and_first_sample_has_no_rates() -> None:
    (row,) = rows(None, snap(0.0, {DEST: (1000, 0)}))
    assert (row.change, row.rate, row.eta) == (None, None, None)
    (row,) = rows(snap(0.0, {DEST: (990, 0)}), snap(1.0, {DEST: (1000, 0)}))
    assert row.eta == 0.0


def test_frame_sorts_filters_and_cuts() -> None:
    prev = snap(0.0, {DEST: (100, 0), OTHER: (50, 0)})
    cur = snap(1.0, {DEST: (110, 0), OTHER: (90, 0)})
    by_used = frame(prev, cur, top=5)
    assert [r.dest for r in by_used.rows] == [DEST, OTHER]
    by_change = frame(prev, cur, top=5, sort=SortKey.CHANGE)
    assert [r.dest for r in by_change.rows] == [OTHER, DEST]
    assert [r.dest for r in frame(prev, cur, filter_text=":443").rows] == [OTHER]
    cut = frame(prev, cur, top=1)
    assert len(cut.rows) == 1 and cut.destinations == 2


def test_json_line_has_the_fields_and_overflow_rate() -> None:
    prev = snap(0.0, {DEST: (100, 40)}, listen_overflows=5)
    cur = snap(2.0, {DEST: (120, 60)}, listen_overflows=9)
    line = frame_json(frame(prev, cur))
    assert line["listen_overflows"] == {"total": 9, "per_s": 2.0}
    assert line["conntrack"] == {"count": 10, "max": 100}
    assert line["port_use"] == {
        "tcp": 10,
        "udp": 3,
        "tcp_by_state": {"TIME_WAIT": 10},
        "tcp_bound": 0,
    }
    (top,) = line["top"]  # type: ignore[misc]
    assert top["used"] == 120 and top["change"] == 20 and top["eta_s"] == pytest.approx(88.0)
    json.dumps(line)


def test_bad_interval_is_one_line_and_exit_2() -> None:
    from tests.helpers import run_cli

    result = run_cli("watch", "--interval", "-1", "--once")
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == "portaudit: --interval: expected seconds between 0 and 3600, got -1.0"
    )


def _time_wait(ns: Netns, n: int) -> None:
    ns.sysctl_write("net.ipv4.ip_local_port_range", "40000 40199")
    ns.sysctl_write("net.ipv4.tcp_tw_reuse", "0")
    run = ns.python("-m", "tests.workloads.exhaust", "--port", "5000", "--max", str(n))
    assert json.loads(run.stdout)["connected"] == n


@requires_netns
def test_json_lines_report_the_busy_destination() -> None:
    with make_netns("pa-watchj") as ns:
        _time_wait(ns, 150)
        result = ns.portaudit("watch", "--format", "json", "--count", "2", "--interval", "0.2")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert len(lines) == 2
    assert [x["seq"] for x in lines] == [2, 3]
    top = lines[-1]["top"][0]
    assert (top["dst"], top["dport"], top["used"], top["time_wait"]) == (
        "127.0.0.1",
        5000,
        150,
        150,
    )
    assert lines[-1]["usable"] == 200
    assert lines[-1]["port_use"]["tcp_by_state"]["TIME_WAIT"] == 150


class Screen:
    """The child's output as text, read from the pty master until a pattern shows."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.text = ""

    def wait_for(self, pattern: str, limit: float = 30.0) -> re.Match[str]:
        deadline = time.monotonic() + limit
        while True:
            found = re.search(pattern, self.text)
            if found:
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{pattern!r} never appeared; screen: {self.text[-2000:]!r}")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    data = os.read(self.fd, 65536)
                except OSError as exc:
                    if exc.errno != errno.EIO:
                        raise
                    data = b""
                if not data:
                    raise AssertionError(f"child ended before {pattern!r}: {self.text[-2000:]!r}")
                self.text += data.decode(errors="replace")

    def drain(self) -> str:
        """What the child wrote before it ended (the master reads EIO once it is gone)."""
        while select.select([self.fd], [], [], 5.0)[0]:
            try:
                data = os.read(self.fd, 65536)
            except OSError:
                break
            if not data:
                break
            self.text += data.decode(errors="replace")
        return self.text


@contextmanager
def watch_in_pty(ns: Netns) -> Iterator[tuple[int, int, Screen]]:
    env = dict(os.environ, PYTHONPATH=str(REPO), TERM="xterm-256color", COLUMNS="160", LINES="40")
    argv = [
        "ip",
        "netns",
        "exec",
        ns.name,
        sys.executable,
        "-m",
        "auditor",
        "watch",
        "--interval",
        "0.3",
    ]
    pid, fd = pty.fork()
    if pid == 0:  # the child: session leader with the pty as its controlling terminal
        try:
            os.chdir(REPO)
            os.execvpe(argv[0], argv, env)
        finally:
            os._exit(127)
    try:
        yield pid, fd, Screen(fd)
    finally:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        with suppress(OSError):
            os.close(fd)


def _wait_exit(pid: int, limit: float = 30.0) -> int:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    raise AssertionError("watch did not exit")


@requires_netns
def test_live_view_draws_refreshes_sorts_and_quits_on_ctrl_c() -> None:
    with make_netns("pa-watcht") as ns:
        _time_wait(ns, 120)
        with watch_in_pty(ns) as (pid, fd, screen):
            screen.wait_for(r"portaudit watch\s+#1")
            screen.wait_for(r"127\.0\.0\.1 -> 127\.0\.0\.1:5000")
            screen.wait_for(r"120/200")
            screen.wait_for(r"#3\b")  # refreshed twice
            screen.wait_for(r"sort \(used\)")
            os.write(fd, b"s")
            screen.wait_for(r"sort \(rate\)")
            os.write(fd, b"f:5000\r")
            screen.wait_for(r"filter \(:5000\)")
            os.write(fd, b"\x03")  # Ctrl-C
            code = _wait_exit(pid)
            after = screen.drain()
    assert code == 0
    assert "Traceback" not in after
    assert "\x1b[?1049l" in after  # left the alternate screen: the terminal is restored


@requires_netns
def test_live_view_exits_when_its_terminal_closes() -> None:
    with make_netns("pa-watchh") as ns:
        with watch_in_pty(ns) as (pid, fd, screen):
            screen.wait_for(r"portaudit watch\s+#1")
            os.close(fd)  # the terminal goes away: the kernel hangs up the session
            code = _wait_exit(pid)
    assert code == 0  # our SIGHUP handler ended it, not the default action (killed by signal)


def _reference(
    prev: Snapshot | None, cur: Snapshot, key: SortKey, top: int, text: str
) -> list[Row]:
    """Every row made, labelled and sorted, then cut: what the view must show."""
    number = {
        SortKey.USED: lambda r: -r.used,
        SortKey.CHANGE: lambda r: -(r.change or 0),
        SortKey.RATE: lambda r: -(r.rate or 0.0),
        SortKey.ETA: lambda r: r.eta if r.eta is not None else float("inf"),
    }[key]
    every = [r for r in rows(prev, cur) if text in r.label]
    return sorted(every, key=lambda r: (number(r), r.label))[:top]


@pytest.mark.parametrize("key", list(SortKey))
def test_the_shown_rows_are_the_first_of_every_row_in_order(key: SortKey) -> None:
    """The view picks its rows by their numbers before it labels or makes any: with many ties
    (equal counts) and a filter, it shows what sorting every row would."""
    import random

    rng = random.Random(7)
    dests = [(f"10.0.{i % 3}.2", f"10.1.{i // 200}.{i % 200}", 80 + i % 4) for i in range(600)]
    prev = snap(0.0, {d: (rng.choice((5, 9, 12)), 0) for d in dests})
    cur = snap(1.5, {d: (rng.choice((5, 9, 12, 12)), rng.choice((0, 3))) for d in dests})
    for top, text in ((1, ""), (10, ""), (40, ":81"), (1000, ""), (7, "10.0.2.2")):
        got = frame(prev, cur, top=top, sort=key, filter_text=text)
        assert list(got.rows) == _reference(prev, cur, key, top, text), (top, text)
        assert got.destinations == len(dests)
