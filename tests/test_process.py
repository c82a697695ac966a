"""The process behind a socket, read from /proc (auditor/facts/process.py): the parsers over
fixture files (odd names, no limit, cut and garbled files), the holders' walk over a fake /proc
tree, and real processes against what psutil says where psutil happens to be installed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from auditor.facts.model import Listener, SocketTable
from auditor.facts.owners import attach_listener_processes
from auditor.facts.process import (
    STATES,
    Descriptors,
    ProcessInfo,
    describe,
    first_argument,
    parse_nofile,
    parse_stat,
    socket_holders,
)
from auditor.hostfs import HostRoot
from tests.netns import make_netns, requires_netns

FIXTURES = Path(__file__).parent / "fixtures" / "process"

FDS: dict[int, list[str]] = {
    100: ["/dev/null", "/dev/null", "/dev/null", "socket:[4242]", "pipe:[9]"],
    101: ["socket:[5000]"],
    102: [],
    103: ["socket:[5100]"],
    104: ["/dev/null", "/dev/null", "/dev/null", "/dev/null", "/dev/null", "socket:[4242]"],
    105: [],
    106: ["/dev/null"],
    107: [],
    108: [],
}
"""Each fixture pid's descriptors, made as symlinks (what /proc/PID/fd holds)."""


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    """A /proc tree of the fixture processes: stat, cmdline and limits from
    tests/fixtures/process, and an fd directory of symlinks."""
    root = tmp_path / "proc"
    for pid, links in FDS.items():
        d = root / str(pid)
        (d / "fd").mkdir(parents=True)
        for name in ("stat", "cmdline", "limits"):
            shutil.copyfile(FIXTURES / f"{pid}.{name}", d / name)
        for fd, target in enumerate(links):
            os.symlink(target, d / "fd" / str(fd))
    (root / "self").mkdir()  # not a pid: skipped
    return root


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"1 (init) S 0 1", (b"init", "S")),
        (b"7 (a) (b) t 1 7", (b"a) (b", "t")),  # ") " inside the name: the last ")" ends it
        (b"7 ()) R 1", (b")", "R")),
        (b"7 () I 1", (b"", "I")),
        (b"7 (cut", None),
        (b"7 (x)", None),  # no state after the name
        (b"7 (x) SS 1", None),
        (b"", None),
        (b"garbage", None),
    ],
)
def test_parse_stat(data: bytes, expected: tuple[bytes, str] | None) -> None:
    assert parse_stat(data) == expected


@pytest.mark.parametrize(
    ("data", "whole", "expected"),
    [
        (b"/usr/sbin/nginx\0-g\0daemon off;\0", True, b"/usr/sbin/nginx"),
        (b"nginx: master process /usr/sbin/nginx", True, b"nginx:"),  # setproctitle
        (b"nginx: worker process\0", True, b"nginx:"),  # one argument with spaces
        (b"/bin/sh\0", True, b"/bin/sh"),
        (b"", True, None),  # a zombie or a kernel thread
        (b"/long/path/srv\0--fla", False, b"/long/path/srv"),
        (b"srv: title that goes on", False, b"srv:"),
        (b"/" + b"a" * 100, False, None),  # argv[0] longer than what was read
    ],
)
def test_first_argument_as_psutil_splits_cmdline(
    data: bytes, whole: bool, expected: bytes | None
) -> None:
    assert first_argument(data, whole) == expected


def test_parse_nofile_reads_the_soft_limit() -> None:
    assert parse_nofile((FIXTURES / "100.limits").read_bytes()) == Descriptors(0, 1024)
    assert parse_nofile((FIXTURES / "101.limits").read_bytes()) == Descriptors(0, None)
    assert parse_nofile((FIXTURES / "103.limits").read_bytes()) is None
    assert parse_nofile(b"Max open files\n") is None
    assert parse_nofile(b"") is None


def test_describe_over_fixture_files(proc: Path) -> None:
    r = str(proc)
    assert describe(proc, 100) == ProcessInfo(
        100, "my) (weird", "sleeping", Descriptors(5, 1024, 1019)
    )
    assert describe(proc, 101) == ProcessInfo(
        101, "unbounded", "running", Descriptors(1, None, None)
    )
    assert describe(proc, 102) == f"pid 102: {r}/102/stat: no command name and state in it"
    assert describe(proc, 103) == ProcessInfo(
        103, "garbled", "sleeping", f"pid 103: {r}/103/limits: no readable 'Max open files' line"
    )
    # the kernel's 15-byte name, completed from argv[0] as psutil's name() does
    assert describe(proc, 104) == ProcessInfo(
        104, "portaudit-long-name-server", "stopped", Descriptors(6, 64, 58)
    )
    assert describe(proc, 105) == ProcessInfo(
        105, "kworker/u8:2-ev", "idle", Descriptors(0, 1024, 1024)
    )
    assert describe(proc, 106) == ProcessInfo(
        106, "portaudit-long-name-server:", "sleeping", Descriptors(1, 1024, 1023)
    )
    assert describe(proc, 107) == ProcessInfo(
        107, "portaudit-long-", "zombie", Descriptors(0, 1024, 1024)
    )
    assert describe(proc, 108) == f"pid 108: {r}/108/stat: no command name and state in it"
    assert describe(proc, 999) == "pid 999 exited while it was read"


def test_a_process_gone_between_its_files_exited(proc: Path) -> None:
    """The stat was there, the descriptors are not: the process exited while it was read."""
    shutil.rmtree(proc / "100" / "fd")
    assert describe(proc, 100) == "pid 100 exited while it was read"


def test_oversized_files_are_read_only_in_part(proc: Path) -> None:
    """A /proc file is never read whole: a stat line padded past its bound still parses, from
    the part that was read."""
    stat = proc / "105" / "stat"
    stat.write_bytes(stat.read_bytes().rstrip(b"\n") + b" 0" * 100_000)
    got = describe(proc, 105)
    assert isinstance(got, ProcessInfo) and got.state == "idle"


def test_every_state_letter_is_psutils_name() -> None:
    assert STATES == {
        "R": "running", "S": "sleeping", "D": "disk-sleep", "T": "stopped",
        "t": "tracing-stop", "Z": "zombie", "X": "dead", "x": "dead", "K": "wake-kill",
        "W": "waking", "P": "parked", "I": "idle",
    }  # fmt: skip


def test_socket_holders_one_walk(proc: Path) -> None:
    walk = socket_holders(proc, {"a": [4242], "b": {5000}, "none": [7]})
    assert walk.found == {"a": {100: 1, 104: 1}, "b": {101: 1}}
    assert (walk.refused, walk.why) == ((), "")
    assert socket_holders(proc, {"a": []}).found == {}


def test_socket_holders_stop_at_the_cap_and_say_so(proc: Path) -> None:
    walk = socket_holders(proc, {"a": [4242]}, max_entries=3)
    assert walk.why == "more than 3 open descriptors on the host: not all read"


def test_socket_holders_without_proc(tmp_path: Path) -> None:
    walk = socket_holders(tmp_path / "nothing", {"a": [1]})
    assert walk.found == {} and walk.why == f"{tmp_path / 'nothing'}: No such file or directory"


def test_listener_processes_from_the_fixture_tree(proc: Path) -> None:
    """Each listener gets the holder nearest its limit, or the reason it has none."""
    listeners = tuple(
        Listener("0.0.0.0", port, 4) for port in (80, 81, 82, 83)
    )  # fmt: skip
    table = SocketTable("netlink", {"LISTEN": 4}, (), listeners)
    inodes = {
        ("0.0.0.0", 80, 4): {4242},  # pids 100 (5 of 1024) and 104 (6 of 64)
        ("0.0.0.0", 81, 4): {5000},  # pid 101: unlimited
        ("0.0.0.0", 82, 4): {5100},  # pid 103: garbled limits
        ("0.0.0.0", 83, 4): {6000},  # nobody
    }
    got = attach_listener_processes(HostRoot(proc=proc), table, inodes).listeners
    r = str(proc)
    assert [(li.pid, li.command, li.fds, li.fd_limit, li.process_note) for li in got] == [
        (104, "portaudit-long-name-server", 6, 64, ""),
        (101, "", None, None, "pid 101 (unbounded) has no descriptor limit"),
        (103, "", None, None, f"pid 103: {r}/103/limits: no readable 'Max open files' line"),
        (None, "", None, None, "no process holds the socket (or it exited before it was found)"),
    ]


HOLD = r"""
import os, resource, socket, sys
soft, extra = int(sys.argv[1]), int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(8)
held = [os.open("/dev/null", os.O_RDONLY) for _ in range(extra)]
print("ready", os.getpid(), s.getsockname()[1], len(os.listdir("/proc/self/fd")) - 1, flush=True)
sys.stdin.read()
"""


def _long_named_python(tmp_path: Path) -> str:
    """The interpreter under a name the kernel cuts to 15 bytes: the symlink's name is what
    exec records as the command, and argv[0] keeps it whole."""
    link = tmp_path / "portaudit-long-name-server"
    link.symlink_to(os.path.realpath(sys.executable))
    return str(link)


@contextmanager
def _holding(
    tmp_path: Path, soft: int, extra: int, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[subprocess.Popen[str], int, int]]:
    """A process under a long name holding a listener with `extra` more descriptors and a
    soft NOFILE of `soft` (started through `prefix`, e.g. `ip netns exec NS`, which execs it
    in place): (the process, its port, its open descriptors as it counted them)."""
    proc = subprocess.Popen(
        [*prefix, _long_named_python(tmp_path), "-c", HOLD, str(soft), str(extra)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        _, pid, port, fds = proc.stdout.readline().split()
        assert int(pid) == proc.pid
        yield proc, int(port), int(fds)
    finally:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int, int]]:
    with _holding(tmp_path, 50, 7) as got:
        yield got


def _state(pid: int, want: str) -> str:
    """The process's state once it is `want` (a signal is delivered asynchronously)."""
    got = describe("/proc", pid)
    for _ in range(500):
        if isinstance(got, ProcessInfo) and got.state == want:
            break
        time.sleep(0.01)
        got = describe("/proc", pid)
    assert isinstance(got, ProcessInfo), got
    return got.state


def test_a_real_process(holder: tuple[subprocess.Popen[str], int, int]) -> None:
    proc, _, fds = holder
    got = describe("/proc", proc.pid)
    assert got == ProcessInfo(
        proc.pid, "portaudit-long-name-server", "sleeping", Descriptors(fds, 50, 50 - fds)
    )
    assert fds == 3 + 1 + 7  # stdio, the listener, the extra ones
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        assert _state(proc.pid, "stopped") == "stopped"
    finally:
        os.kill(proc.pid, signal.SIGCONT)


def test_an_exited_process(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    pid = int(done.stdout)
    assert describe("/proc", pid) == f"pid {pid} exited while it was read"


def test_the_same_answers_as_psutil(holder: tuple[subprocess.Popen[str], int, int]) -> None:
    """psutil is no dependency any more; where it is installed, its answers are ours."""
    psutil = pytest.importorskip("psutil")
    proc, _, _ = holder

    def theirs() -> tuple[str, str, int, int]:
        p = psutil.Process(proc.pid)
        with p.oneshot():
            return p.name(), p.status(), p.num_fds(), p.rlimit(psutil.RLIMIT_NOFILE)[0]

    def ours() -> tuple[str, str, int, int | None]:
        got = describe("/proc", proc.pid)
        assert isinstance(got, ProcessInfo) and isinstance(got.descriptors, Descriptors)
        return got.name, got.state, got.descriptors.open, got.descriptors.soft_limit

    assert ours() == theirs()
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        _state(proc.pid, "stopped")
        assert ours() == theirs()
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    for p in psutil.process_iter():  # the name and limit of every process psutil can read
        try:
            before = (p.name(), p.rlimit(psutil.RLIMIT_NOFILE)[0])
            got = describe("/proc", p.pid)
            after = (p.name(), p.rlimit(psutil.RLIMIT_NOFILE)[0])
        except psutil.Error:
            continue
        if before != after or isinstance(got, str) or isinstance(got.descriptors, str):
            continue  # it changed (exec, prlimit) or exited while it was read
        limit = got.descriptors.soft_limit
        assert (got.name, psutil.RLIM_INFINITY if limit is None else limit) == before


@requires_netns
@pytest.mark.netns
def test_the_audits_facts_name_the_listeners_process(tmp_path: Path) -> None:
    """`portaudit facts` in a namespace: the listener's holder under its whole long name, its
    exact open descriptors and its lowered soft NOFILE."""
    with make_netns("pa-proc") as ns:
        with _holding(tmp_path, 40, 5, ("ip", "netns", "exec", ns.name)) as (proc, port, fds):
            got = ns.portaudit("facts")
    assert got.returncode == 0, got.stderr
    listeners = json.loads(got.stdout)["sockets"]["listeners"]
    (li,) = [li for li in listeners if li["port"] == port]
    assert (li["pid"], li["command"], li["fds"], li["fd_limit"], li["process_note"]) == (
        proc.pid,
        "portaudit-long-name-server",
        3 + 1 + 5,
        40,
        "",
    )
    assert fds == 3 + 1 + 5


def test_the_holder_nearest_emfile_is_judged_by_the_numbers_taken_below_its_limit(
    tmp_path: Path,
) -> None:
    """Two processes share a listener (SO_REUSEPORT), both with a soft limit of 8: one holds
    10 descriptors but 3 numbers below 8 are free (its limit was lowered after it opened
    them), the other 7, all below 8 (1 free). The second is nearer EMFILE, as FD-003 judges."""
    root = tmp_path / "proc"
    limits = (FIXTURES / "100.limits").read_text().replace("1024", "8")
    for pid, numbers in ((200, (0, 1, 2, 3, 4, 8, 9, 10, 11, 12)), (201, range(7))):
        d = root / str(pid)
        (d / "fd").mkdir(parents=True)
        (d / "stat").write_text(f"{pid} (worker) S 1 1")
        (d / "cmdline").write_bytes(b"worker\0")
        (d / "limits").write_text(limits)
        for fd in numbers:
            os.symlink("socket:[7777]" if fd == 3 else "/dev/null", d / "fd" / str(fd))
    assert "Max open files            8" in limits
    table = SocketTable("netlink", {"LISTEN": 1}, (), (Listener("0.0.0.0", 80, 4),))
    inodes = {("0.0.0.0", 80, 4): {7777}}
    (li,) = attach_listener_processes(HostRoot(proc=root), table, inodes).listeners
    assert (li.pid, li.fds, li.fd_limit, li.fds_free) == (201, 7, 8, 1)
