"""Every network namespace on the host, and a facts snapshot collected inside each.

Containers run in their own network namespaces, each with its own sysctls (the ephemeral
range, `tcp_tw_reuse`), its own socket table and its own exhaustion. Namespaces are found
where `ip netns` names them (bind mounts under `/run/netns`) and through the `/proc/<pid>/ns/net`
link of every process (the unnamed ones Docker and Kubernetes make), deduplicated by the nsfs
inode. To read them, forked workers (one per processor) enter one namespace after another with
`setns(CLONE_NEWNET)` and run the ordinary collectors: after `setns`, `/proc/self/net`,
`/proc/sys/net` and a new netlink socket all show that namespace. Each worker sends every
snapshot back pickled over a pipe, so the parent never leaves its own namespace.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import pickle
import select
import signal
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from auditor.facts.model import Facts, Unavailable
from auditor.hostfs import HostRoot

if TYPE_CHECKING:
    from auditor.facts.persisted import BootFiles

CHILD_TIMEOUT = 120.0
"""A namespace whose collection takes longer than this is reported as skipped, not waited on."""
MAX_SNAPSHOT_BYTES = 256 << 20


@dataclass(frozen=True, slots=True)
class NetnsRef:
    """One network namespace: its nsfs inode and how it was found (a name, else a pid)."""

    inode: int
    path: str
    """What to open for `setns`: `/run/netns/<name>` or `/proc/<pid>/ns/net`."""
    name: str = ""
    pid: int | None = None
    current: bool = False
    """The namespace portaudit itself runs in (collected in-process, no root needed)."""
    owner: str = ""
    """The container or pod it belongs to (`docker 3f2a1b2c3d4e`, `pod <uid>`), when known."""

    @property
    def label(self) -> str:
        """How findings name it: the `ip netns` name, else its container or pod, else the pid
        and inode it was found by."""
        if self.name:
            return self.name
        if self.current:
            return f"net:[{self.inode}]"
        if self.owner:
            return f"{self.owner} net:[{self.inode}]"
        return f"pid {self.pid} net:[{self.inode}]"


def _nsfs_stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def _owner(host: HostRoot, pid: int) -> str:
    """The container or pod a process belongs to, from its cgroup path ("" when none)."""
    from auditor.containers import process_owner

    found = process_owner(host, pid)
    return found.label if found is not None else ""


def list_netns(host: HostRoot) -> tuple[list[NetnsRef], list[tuple[str, str]]]:
    """The namespaces, current first, then named ones, then those found only through a pid.

    Also returns (what, reason) for the places that could not be looked at (without root,
    other users' `/proc/<pid>/ns/net` cannot be read).
    """
    own = _nsfs_stat(str(host.proc_path("self/ns/net")))
    if own is None:
        return [], [("self", f"{host.proc_path('self/ns/net')}: cannot stat")]
    nsfs_dev = own.st_dev
    by_inode: dict[int, NetnsRef] = {}
    order: list[int] = []
    problems: list[tuple[str, str]] = []

    def add(ref: NetnsRef) -> None:
        if ref.inode not in by_inode:
            by_inode[ref.inode] = ref
            order.append(ref.inode)
        elif ref.name and not by_inode[ref.inode].name:
            old = by_inode[ref.inode]
            by_inode[ref.inode] = NetnsRef(ref.inode, ref.path, ref.name, old.pid, old.current)

    add(NetnsRef(own.st_ino, str(host.proc_path("self/ns/net")), pid=os.getpid(), current=True))
    run_netns = host.path("/run/netns")
    try:
        names = sorted(e.name for e in os.scandir(run_netns) if not e.name.startswith("."))
    except FileNotFoundError:
        names = []
    except OSError as exc:
        names = []
        problems.append((str(run_netns), exc.strerror or str(exc)))
    for name in names:
        path = str(run_netns / name)
        st = _nsfs_stat(path)
        if st is None or st.st_dev != nsfs_dev:
            problems.append((f"netns {name}", f"{path}: not a mounted network namespace"))
            continue
        add(NetnsRef(st.st_ino, path, name=name))
    denied = 0
    try:
        pids = sorted(int(e.name) for e in os.scandir(host.proc) if e.name.isdigit())
    except OSError as exc:
        pids = []
        problems.append((str(host.proc), exc.strerror or str(exc)))
    for pid in pids:
        path = str(host.proc_path(f"{pid}/ns/net"))
        try:
            st = os.stat(path)
        except PermissionError:
            denied += 1
            continue
        except OSError:  # the process exited, or a kernel thread without the link
            continue
        if st.st_ino not in by_inode:
            add(NetnsRef(st.st_ino, path, pid=pid, owner=_owner(host, pid)))
    if denied:
        what = f"{denied} process{'es' if denied != 1 else ''}"
        problems.append((what, "its /proc/<pid>/ns/net link is not readable here"))
    return [by_inode[i] for i in order], problems


def collect_in_netns(
    host: HostRoot,
    ref: NetnsRef,
    timeout: float = CHILD_TIMEOUT,
    owners_above: float | None = None,
) -> Facts | Unavailable:
    """A full snapshot collected inside `ref`, or why it could not be."""
    return _collect(host, [ref], timeout, owners_above, workers=1)[0]


def _workers() -> int:
    """Workers run at once: one per processor this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except OSError:
        return max(1, os.cpu_count() or 1)


_HEADER = struct.Struct("=Q")
"""A reply's length, before the pickled reply itself."""
_TASK = struct.Struct("=I")
"""A task: the index of the namespace to read."""
QUEUED = 2
"""Namespaces given to a worker ahead: it starts the next as soon as it has sent a reply,
without waiting for this process (busy evaluating) to hand it one."""


@dataclass
class _Worker:
    """A forked process reading namespaces one after another, and what it has sent so far."""

    pid: int
    tasks: int
    """Write end of its task pipe (closing it tells the worker to exit)."""
    replies: int
    """Read end of its reply pipe."""
    queue: list[int] = field(default_factory=list)
    """The namespaces given to it, in order; it is reading the first."""
    deadline: float = 0.0
    """When the first in `queue` is overdue."""
    data: bytearray = field(default_factory=bytearray)


OnReply = Callable[[int, NetnsRef, "Facts | Unavailable"], None]
"""Called with (index in the refs, ref, snapshot or reason) as each namespace's reply arrives."""


def _collect(
    host: HostRoot,
    refs: list[NetnsRef],
    timeout: float,
    owners_above: float | None,
    workers: int,
    on_reply: OnReply | None = None,
) -> list[Facts | Unavailable]:
    """Each ref's snapshot or reason, in order, read by up to `workers` forked processes.
    `on_reply` sees each one as it arrives, so the caller's own work overlaps the workers'.

    Each worker enters one namespace after another (`setns` needs no way back: the next
    `setns` leaves the last one), so a namespace costs a `setns` and the collectors, not a
    process. What is the same in every namespace (setns itself, the collectors' imports, the
    sysctl files) is resolved here, once, before forking. The current namespace is read in this
    process while the workers run. A worker that dies or overruns `timeout` on one namespace
    costs only that namespace: it is replaced, and the namespaces queued behind it go to the
    next worker.
    """
    from auditor.facts.collect import collect_facts
    from auditor.facts.persisted import read_boot_files

    if host.is_live:  # the collectors' own lazy imports: once here, not in every worker
        importlib.import_module("auditor.facts.livesockets")
    results: list[Facts | Unavailable | None] = [None] * len(refs)
    pending: list[int] = []
    current: list[int] = []
    for i, ref in enumerate(refs):
        if ref.current:
            current.append(i)
        elif os.geteuid() != 0:
            results[i] = Unavailable(
                "entering another network namespace needs root (CAP_SYS_ADMIN)"
            )
        else:
            pending.append(i)
    boot_files = read_boot_files(host)
    pool: dict[int, _Worker] = {}  # read end of the reply pipe -> worker
    if pending:
        _setns_call()
    try:
        for _ in range(min(workers, len(pending))):
            worker = _spawn(host, refs, owners_above, boot_files, pool)
            pool[worker.replies] = worker
        _assign(pool, pending, timeout)
        for i, result in enumerate(results):  # those refused above
            if result is not None and on_reply is not None:
                on_reply(i, refs[i], result)
        for i in current:  # in this process, while the workers read the others
            results[i] = got = collect_facts(host, owners_above, boot_files)
            if on_reply is not None:
                on_reply(i, refs[i], got)
        while pool:
            done = _step(pool, pending, timeout)
            while pending and len(pool) < min(workers, len(pending)):  # replace stopped ones
                worker = _spawn(host, refs, owners_above, boot_files, pool)
                pool[worker.replies] = worker
            _assign(pool, pending, timeout)  # before the caller's work on the replies
            for index, reply in done:
                results[index] = reply
                if on_reply is not None:
                    on_reply(index, refs[index], reply)
    finally:
        for worker in pool.values():
            _stop(worker, kill=bool(worker.queue))
    return [r if r is not None else Unavailable("not collected") for r in results]


def _spawn(
    host: HostRoot,
    refs: list[NetnsRef],
    owners_above: float | None,
    boot_files: BootFiles | Unavailable,
    pool: dict[int, _Worker],
) -> _Worker:
    """Fork a worker. It closes its copies of the other workers' pipes: a worker sees the end
    of its task pipe only when no other process holds the pipe's write end."""
    task_r, task_w = os.pipe2(os.O_CLOEXEC)
    reply_r, reply_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # the worker: never returns
        for fd in [task_w, reply_r, *(fd for w in pool.values() for fd in (w.tasks, w.replies))]:
            with contextlib.suppress(OSError):
                os.close(fd)
        _worker(host, refs, owners_above, boot_files, task_r, reply_w)
    os.close(task_r)
    os.close(reply_w)
    return _Worker(pid, task_w, reply_r)


def _assign(pool: dict[int, _Worker], pending: list[int], timeout: float) -> None:
    """Top up every worker's queue, round the pool; a worker with nothing left to read exits."""
    for _ in range(QUEUED):
        for worker in pool.values():
            if pending and len(worker.queue) < QUEUED:
                if not worker.queue:
                    worker.deadline = time.monotonic() + timeout
                worker.queue.append(pending.pop(0))
                # A worker that died already: its reply pipe's end shows it, and `_fail`
                # hands what is queued here to another.
                with contextlib.suppress(BrokenPipeError):
                    os.write(worker.tasks, _TASK.pack(worker.queue[-1]))
    for rfd, worker in list(pool.items()):
        if not worker.queue:
            del pool[rfd]
            _stop(worker, kill=False)


def _stop(worker: _Worker, kill: bool) -> None:
    """Close the worker's pipes (it exits when its task pipe closes) and reap it."""
    if worker.tasks < 0:
        return
    if kill:
        _kill(worker.pid)
    os.close(worker.tasks)
    os.close(worker.replies)
    worker.tasks = worker.replies = -1
    os.waitpid(worker.pid, 0)


def _step(
    pool: dict[int, _Worker], pending: list[int], timeout: float
) -> list[tuple[int, Facts | Unavailable]]:
    """Wait for output from the workers: (index, reply) for every reply now complete, and the
    reason for the namespace a worker was reading when it died, sent too much or ran out of
    time. Such a worker is stopped and leaves `pool`; what was queued behind goes back to the
    front of `pending`."""
    left = min(w.deadline for w in pool.values()) - time.monotonic()
    ready, _, _ = select.select(list(pool), [], [], max(0.0, left))
    done: list[tuple[int, Facts | Unavailable]] = []
    for rfd in ready:
        worker = pool[rfd]
        chunk = os.read(rfd, 1 << 20)
        failed: Unavailable | None = None
        if not chunk:
            failed = Unavailable("the collecting process exited without a reply")
        worker.data += chunk
        while failed is None and len(worker.data) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(worker.data)
            if size > MAX_SNAPSHOT_BYTES:
                failed = Unavailable(f"the snapshot was larger than {MAX_SNAPSHOT_BYTES >> 20} MiB")
            elif len(worker.data) < _HEADER.size + size:
                break
            else:
                done.append(
                    (worker.queue.pop(0), _reply(worker.data[_HEADER.size : _HEADER.size + size]))
                )
                del worker.data[: _HEADER.size + size]
                worker.deadline = time.monotonic() + timeout
        if failed is not None:
            done.append(_fail(pool, rfd, pending, failed))
    now = time.monotonic()
    for rfd, worker in list(pool.items()):
        if worker.queue and worker.deadline <= now:
            late = Unavailable(f"collection did not finish within {timeout:.0f} s")
            done.append(_fail(pool, rfd, pending, late))
    return done


def _fail(
    pool: dict[int, _Worker], rfd: int, pending: list[int], reason: Unavailable
) -> tuple[int, Unavailable]:
    """Stop a worker: the namespace it was reading gets `reason`, the ones queued behind it go
    back to be read by another."""
    worker = pool.pop(rfd)
    _stop(worker, kill=True)
    pending[:0] = worker.queue[1:]
    return worker.queue[0], reason


def _reply(data: bytes | bytearray) -> Facts | Unavailable:
    """A worker's reply. The worker is this program's own fork, so pickle carries the
    dataclasses as they are: no JSON text and no type-driven rebuilding on either side."""
    try:
        reply = pickle.loads(data)  # noqa: S301 - written by our own fork, below
    except Exception as exc:  # any unpickling failure is this namespace's reason
        return Unavailable(f"bad reply from the collecting process: {exc}")
    if isinstance(reply, (Facts, Unavailable)):
        return reply
    return Unavailable("bad reply from the collecting process")


def _worker(
    host: HostRoot,
    refs: list[NetnsRef],
    owners_above: float | None,
    boot_files: BootFiles | Unavailable,
    tasks: int,
    replies: int,
) -> None:
    """Read the namespaces the parent names, one after another, until it closes the pipe."""
    code = 0
    try:
        from auditor.facts.collect import collect_facts

        while True:
            task = _read_exactly(tasks, _TASK.size)
            if not task:
                break
            (index,) = _TASK.unpack(task)
            reply: Facts | Unavailable | None
            try:
                reply = _enter(refs[index])
                if reply is None:
                    reply = collect_facts(host, owners_above, boot_files)
                payload = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:  # reported to the parent as this namespace's reason
                text = f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc)
                payload = pickle.dumps(Unavailable(text), protocol=pickle.HIGHEST_PROTOCOL)
            view = memoryview(_HEADER.pack(len(payload)) + payload)
            while view:
                view = view[os.write(replies, view) :]
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def _enter(ref: NetnsRef) -> Unavailable | None:
    """Enter `ref`'s namespace (None), or say why it cannot be opened."""
    try:
        fd = os.open(ref.path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        return Unavailable(f"{ref.path}: {exc.strerror or exc}")
    try:
        setns_net(fd)
    finally:
        os.close(fd)
    return None


def _read_exactly(fd: int, n: int) -> bytes:
    """`n` bytes from `fd`, or b"" at end of file."""
    data = b""
    while len(data) < n:
        chunk = os.read(fd, n - len(data))
        if not chunk:
            return b""
        data += chunk
    return data


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


CLONE_NEWNET = 0x40000000


@functools.cache
def _setns_call() -> Callable[[int, int], None]:
    """`os.setns` on Python 3.12+; before that libc's, through ctypes, resolved once.

    The symbol comes from the running process (libc is loaded), so no `find_library`, which
    runs ldconfig; the parent resolves it before forking and every worker inherits it.
    """
    setns = getattr(os, "setns", None)
    if setns is not None:
        fn: Callable[[int, int], None] = setns
        return fn
    import ctypes

    libc_setns = ctypes.CDLL(None, use_errno=True).setns

    def call(fd: int, nstype: int) -> None:
        if libc_setns(fd, nstype) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns: {os.strerror(err)}")

    return call


def setns_net(fd: int) -> None:
    """`setns(fd, CLONE_NEWNET)`."""
    _setns_call()(fd, CLONE_NEWNET)


def collect_all_netns(
    host: HostRoot,
    problems: list[tuple[str, str]] | None = None,
    owners_above: float | None = None,
    on_reply: OnReply | None = None,
) -> list[tuple[NetnsRef, Facts | Unavailable]]:
    """Every namespace with its snapshot, or the reason it was skipped.

    `problems`, when given, receives (what, reason) for places that could not be searched for
    namespaces at all (other users' processes without root), for the report's skipped list.
    Namespaces are read by as many workers as there are processors; `on_reply` is called with
    (index in the returned list, ref, snapshot or reason) as each arrives.
    """
    refs, found_problems = list_netns(host)
    if problems is not None:
        problems.extend(found_problems)
    facts = _collect(host, refs, CHILD_TIMEOUT, owners_above, _workers(), on_reply)
    return list(zip(refs, facts, strict=True))


def require_live(host: HostRoot) -> None:
    """`--all-netns` reads the running kernel; a fixture `--proc` has no namespaces to enter."""
    from auditor.errors import UsageError

    if not host.is_live:
        raise UsageError("--all-netns reads the running kernel; it cannot be used with --proc")
    if not Path("/proc/self/ns/net").exists():
        raise UsageError("--all-netns: this kernel has no network namespaces")
