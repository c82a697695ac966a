"""The processes behind sockets, read from `/proc` alone: who holds a socket, and how it is doing.

Two questions the audit (FD-003's listener facts, the owners of pressured destinations) and
`diagnose` (the process holding the port it probes) both ask:

- which processes hold these socket inodes: one walk of `/proc/*/fd`, where `readlink` gives
  `socket:[inode]` (inodes are global, so this finds sockets of other namespaces too);
- what one of them is: its command name, its state, its open descriptors and its soft
  RLIMIT_NOFILE (`Max open files` in `/proc/PID/limits`).

The answers are psutil's (`Process.name()`, `status()`, `num_fds()`,
`rlimit(RLIMIT_NOFILE)`; psutil/_pslinux.py), read the same way without importing it: the
import alone cost a third of an idle audit. Only `os` is needed. Every file is read with a
bound, and every failure is a reason string, never an exception.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Generic, TypeVar

from auditor.record import dataclass

MAX_FD_ENTRIES = 2_000_000
"""`/proc/*/fd` entries looked at, at most, to find the processes holding sockets."""

STAT_BYTES = 4096
"""`/proc/PID/stat` is one line of about 300 bytes; the command name is at most 15 of them."""
CMDLINE_BYTES = 8192
"""Enough of `/proc/PID/cmdline` for an argv[0] as long as PATH_MAX (4096)."""
LIMITS_BYTES = 8192
"""`/proc/PID/limits` is 17 lines of about 80 bytes."""

TASK_COMM_LEN = 16
"""The kernel keeps a command name of at most TASK_COMM_LEN - 1 bytes (include/linux/sched.h)."""

STATES = {
    "R": "running",
    "S": "sleeping",
    "D": "disk-sleep",
    "T": "stopped",
    "t": "tracing-stop",
    "Z": "zombie",
    "X": "dead",
    "x": "dead",
    "K": "wake-kill",
    "W": "waking",
    "P": "parked",
    "I": "idle",
}
"""The state letter of `/proc/PID/stat` as psutil's status strings (psutil/_pslinux.py)."""

K = TypeVar("K")


class HeldSockets(Generic[K]):
    """What one walk of `/proc/*/fd` found (a plain class: a record has no generic base)."""

    __slots__ = ("found", "refused", "why")

    def __init__(self, found: dict[K, dict[int, int]], refused: tuple[int, ...], why: str):
        self.found = found
        """Each wanted key -> {pid: how many of its descriptors are one of the key's
        sockets}."""
        self.refused = refused
        """Processes whose `/proc/PID/fd` could not be read (no CAP_SYS_PTRACE)."""
        self.why = why
        """Why the walk is incomplete ("" when it is not): the cap, an unreadable `/proc`, or
        the processes refused."""


def refused_text(count: int) -> str:
    return (
        f"the open files of {count} processes could not be read (/proc/PID/fd: permission"
        " denied; it needs root with CAP_SYS_PTRACE)"
    )


def socket_holders(
    proc: str | os.PathLike[str],
    inodes: Mapping[K, Iterable[int]],
    max_entries: int = MAX_FD_ENTRIES,
) -> HeldSockets[K]:
    """The processes holding the sockets in `inodes` (key -> its socket inodes), in one walk
    of `/proc/*/fd` that stops after `max_entries` descriptors (a host with millions of open
    files is described from what was read, and says so)."""
    link_to_key = {f"socket:[{ino}]": key for key, nodes in inodes.items() for ino in nodes}
    found: dict[K, dict[int, int]] = {}
    if not link_to_key:
        return HeldSockets(found, (), "")
    root = os.fspath(proc)
    try:
        pids = [e.name for e in os.scandir(root) if e.name.isdigit()]
    except OSError as exc:
        return HeldSockets(found, (), f"{root}: {exc.strerror or exc}")
    refused: list[int] = []
    seen = 0
    for pid_text in pids:
        try:
            entries = list(os.scandir(f"{root}/{pid_text}/fd"))
        except PermissionError:
            refused.append(int(pid_text))
            continue
        except OSError:  # gone
            continue
        seen += len(entries)
        if seen > max_entries:
            why = f"more than {max_entries} open descriptors on the host: not all read"
            return HeldSockets(found, tuple(refused), why)
        for entry in entries:
            try:
                key = link_to_key.get(os.readlink(entry.path))
            except OSError:
                continue
            if key is not None:
                per_pid = found.setdefault(key, {})
                pid = int(pid_text)
                per_pid[pid] = per_pid.get(pid, 0) + 1
    return HeldSockets(found, tuple(refused), refused_text(len(refused)) if refused else "")


@dataclass(frozen=True, slots=True)
class Descriptors:
    open: int
    """Entries in `/proc/PID/fd` (psutil's `num_fds()`)."""
    soft_limit: int | None
    """The soft RLIMIT_NOFILE; None when it is "unlimited"."""
    free: int | None = None
    """Descriptor numbers below the soft limit that no open descriptor takes: a new
    descriptor (an accept()ed connection) gets the lowest free number below the limit, so
    EMFILE comes exactly when this is 0, whatever `open` is (a limit lowered after the
    descriptors were opened leaves some above it). None without a limit."""


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    pid: int
    name: str
    """The command name as psutil's `Process.name()` gives it."""
    state: str
    """psutil's status string: running, sleeping, stopped (SIGSTOP), zombie..."""
    descriptors: Descriptors | str
    """The open descriptors and their limit, or why they could not be read (reading another
    user's `/proc/PID/fd` needs CAP_SYS_PTRACE; its name and state need nothing)."""


class _Exited(Exception):
    """The process went away while it was read."""


class _Garbled(Exception):
    """A file did not have the expected form."""


def parse_stat(data: bytes) -> tuple[bytes, str] | None:
    """(command name, state letter) from `/proc/PID/stat`, None when it is not in that form.

    The name sits between the first "(" and the last ")", since it may itself hold spaces
    and parentheses (fs/proc/array.c; psutil does the same)."""
    lpar, rpar = data.find(b"("), data.rfind(b")")
    if lpar < 0 or rpar < lpar:
        return None
    fields = data[rpar + 2 :].split()
    if not fields or len(fields[0]) != 1:
        return None
    return data[lpar + 1 : rpar], fields[0].decode("ascii", "replace")


def first_argument(data: bytes, whole: bool) -> bytes | None:
    """argv[0] from `/proc/PID/cmdline` as psutil's `cmdline()[0]`, None when there is none.

    Arguments are NUL-separated, but a process that rewrote its title (setproctitle) may
    separate them with spaces instead, which psutil detects from the last byte and a lone
    argument with a space in it. `whole` is False when only the first bytes were read: the
    last byte is then unknown, and a NUL in what was read marks the end of argv[0]."""
    if not data:
        return None
    if not whole:
        if b"\0" in data:
            return data.split(b"\0", 1)[0]
        if b" " in data:
            return data.split(b" ", 1)[0]
        return None  # longer than what was read
    if data.endswith(b"\0"):
        parts = data[:-1].split(b"\0")
        if len(parts) == 1 and b" " in data:
            return parts[0].split(b" ")[0]
        return parts[0]
    return data.split(b" ")[0]


def parse_nofile(data: bytes) -> Descriptors | None:
    """The soft limit of `Max open files` in `/proc/PID/limits` (the `open` count left 0),
    None when the line is missing or malformed."""
    for line in data.split(b"\n"):
        if line.startswith(b"Max open files"):
            fields = line[len(b"Max open files") :].split()
            if not fields:
                return None
            if fields[0] == b"unlimited":
                return Descriptors(0, None)
            if fields[0].isdigit():
                return Descriptors(0, int(fields[0]))
            return None
    return None


def _read(path: str, limit: int) -> tuple[bytes, bool]:
    """At most `limit` bytes of `path` and whether that was all of it. A process that exits
    while it is read makes procfs answer ESRCH (or the file disappear): that is `_Exited`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise _Exited from exc
    chunks: list[bytes] = []
    size = 0
    try:
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except ProcessLookupError as exc:
        raise _Exited from exc
    finally:
        os.close(fd)
    data = b"".join(chunks)
    return data[:limit], size <= limit


def _count(path: str, below: int | None) -> tuple[int, int]:
    """(entries of a `/proc/PID/fd` directory, how many are numbered below `below`)."""
    total = under = 0
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                total += 1
                if below is not None and entry.name.isdigit() and int(entry.name) < below:
                    under += 1
    except FileNotFoundError as exc:
        raise _Exited from exc
    return total, under


def _name(root: str, pid: int, comm: bytes) -> str:
    """psutil's `Process.name()`: the kernel cut the command name to 15 bytes, so a name of
    that length is replaced by argv[0]'s basename when that starts with it
    ("portaudit-long-name-server" rather than "portaudit-long-")."""
    name = os.fsdecode(comm)
    if len(name) < TASK_COMM_LEN - 1:
        return name
    try:
        data, whole = _read(f"{root}/{pid}/cmdline", CMDLINE_BYTES)
    except PermissionError:
        return name
    argv0 = first_argument(data, whole)
    if argv0:
        extended = os.path.basename(os.fsdecode(argv0))
        if extended.startswith(name):
            return extended
    return name


def _descriptors(root: str, pid: int) -> Descriptors | str:
    try:
        data, _ = _read(f"{root}/{pid}/limits", LIMITS_BYTES)
        limits = parse_nofile(data)
        soft = limits.soft_limit if limits is not None else None
        fds, under = _count(f"{root}/{pid}/fd", soft)
    except PermissionError:
        return f"pid {pid}: permission denied reading its descriptors or limits"
    except OSError as exc:
        return f"pid {pid}: {exc.strerror or exc}"
    if limits is None:
        if not os.path.isdir(f"{root}/{pid}"):
            raise _Exited
        return f"pid {pid}: {root}/{pid}/limits: no readable 'Max open files' line"
    return Descriptors(fds, soft, None if soft is None else soft - under)


def describe(proc: str | os.PathLike[str], pid: int) -> ProcessInfo | str:
    """What `pid` is and how near its descriptor limit it is, or why it could not be read:
    "pid N exited while it was read", "pid N: permission denied ...", or the OSError's text."""
    root = os.fspath(proc)
    try:
        data, _ = _read(f"{root}/{pid}/stat", STAT_BYTES)
        stat = parse_stat(data)
        if stat is None:
            if not os.path.isdir(f"{root}/{pid}"):
                raise _Exited
            return f"pid {pid}: {root}/{pid}/stat: no command name and state in it"
        comm, letter = stat
        name = _name(root, pid, comm)
        descriptors = _descriptors(root, pid)
    except _Exited:
        return f"pid {pid} exited while it was read"
    except PermissionError:
        return f"pid {pid}: permission denied reading its descriptors or limits"
    except OSError as exc:
        return f"pid {pid}: {exc.strerror or exc}"
    return ProcessInfo(pid, name, STATES.get(letter, "?"), descriptors)
